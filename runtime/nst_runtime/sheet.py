"""Contact sheets: every style of every given model on one photo, labelled, the original first.

``nst-stylize MODEL... photo.jpg --sheet -o sheet.png``: the photo is reduced once to the size the networks run
at (the longest side ``work_size`` pixels, default the cell size), then each model stylizes that copy, once per
style for a multi-style network (its sidecar names the styles), and each result is reduced to the cell size.
Cells are laid out in rows under a label strip naming the model and the style.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .errors import UsageError

log = logging.getLogger(__name__)

DEFAULT_CELL_SIZE = 320
_PAD = 6


@dataclass(frozen=True)
class SheetCell:
    label: str
    image: np.ndarray  # H x W x 3 uint8


def model_label(model: str | os.PathLike[str]) -> str:
    """The name a cell shows for ``model``: a catalogue name as given, a file by its stem (``candy.fp16.onnx`` ->
    ``candy``)."""
    name = Path(model).name
    for suffix in (".onnx", ".engine", ".plan"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    for suffix in (".fp16", ".fp32", ".int8"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return name


def fit_photo(photo: np.ndarray, cell_size: int) -> np.ndarray:
    """``photo`` reduced (never enlarged) so that its longest side is ``cell_size`` pixels."""
    if cell_size < 16:
        raise UsageError(f"cell size {cell_size}: expected at least 16 pixels.")
    h, w = photo.shape[:2]
    scale = min(1.0, cell_size / max(h, w))
    if scale == 1.0:
        return photo
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(photo).resize(size, Image.Resampling.LANCZOS))


def sheet_cells(models: Sequence[str | os.PathLike[str]], photo: np.ndarray, *, cell_size: int = DEFAULT_CELL_SIZE,
                work_size: int | None = None, open_model: Callable[[str | os.PathLike[str]], Any] | None = None,
                stylize_options: Mapping[str, Any] | None = None,
                labels: Sequence[str] | None = None) -> list[SheetCell]:
    """The cells of a sheet: the original, then each model's styles in order.

    The networks run on the photo reduced to ``work_size`` (default: ``cell_size``; larger shows the strokes as
    they look on a photo of that size), and each result is reduced to ``cell_size``. ``open_model(model)``
    returns an open :class:`~nst_runtime.Stylizer` (default: ``Stylizer.open(model)``); ``stylize_options`` are
    the steps of :meth:`~nst_runtime.Stylizer.stylize` (``strength``...).
    """
    from .stylizer import Stylizer

    opener = open_model or (lambda m: Stylizer.open(m))
    work = fit_photo(np.ascontiguousarray(photo[..., :3], dtype=np.uint8), max(cell_size, work_size or cell_size))
    cells = [SheetCell("original", fit_photo(work, cell_size))]
    names = list(labels) if labels is not None else [model_label(m) for m in models]
    for model, name in zip(models, names, strict=True):
        with opener(model) as stylizer:
            spec = stylizer.sidecar.style
            styles: list[str | None] = list(spec.names) if spec is not None else [None]
            log.info("%s: %d style(s) on %s", name, len(styles), stylizer.backend)
            for style in styles:
                out = stylizer.stylize(work, **({"style": style} if style is not None else {}),
                                       **dict(stylize_options or {}))
                cells.append(SheetCell(name if style is None else f"{name} {style}",
                                       fit_photo(np.asarray(out), cell_size)))
    return cells


def _font(size: int) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def _fit_text(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def contact_sheet(cells: Sequence[SheetCell], *, columns: int | None = None, font_size: int = 15) -> Image.Image:
    """Lay ``cells`` out in rows (``columns`` per row; default: about 3:2 overall), each under its label."""
    if not cells:
        raise UsageError("a contact sheet needs at least one image.")
    if columns is not None and columns < 1:
        raise UsageError(f"columns {columns}: expected at least 1.")
    cw = max(c.image.shape[1] for c in cells)
    ch = max(c.image.shape[0] for c in cells)
    n = len(cells)
    if columns is None:
        columns = max(1, min(n, round(math.sqrt(n * 1.5 * ch / cw))))
    rows = math.ceil(n / columns)
    label_h = font_size + 8
    sheet = Image.new("RGB", (columns * (cw + _PAD) + _PAD, rows * (ch + label_h + _PAD) + _PAD), "white")
    draw = ImageDraw.Draw(sheet)
    font = _font(font_size)
    for i, cell in enumerate(cells):
        r, c = divmod(i, columns)
        x, y = _PAD + c * (cw + _PAD), _PAD + r * (ch + label_h + _PAD)
        draw.text((x + 2, y + 3), _fit_text(draw, cell.label, font, cw - 4), fill="black", font=font)
        h, w = cell.image.shape[:2]
        sheet.paste(Image.fromarray(cell.image), (x + (cw - w) // 2, y + label_h + (ch - h) // 2))
    return sheet
