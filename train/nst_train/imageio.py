"""Images between files and tensors: PIL in, 1x3xHxW float RGB in [0, 255] (the TransformerNet/VGG scale) out."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch
from nst_runtime.errors import ImageError, UsageError
from PIL import Image

from .atomic import atomic_write

__all__ = ["load_image_tensor", "open_rgb", "resize_shorter_side", "resize_to_fit", "save_image_tensor"]


def open_rgb(path: str | os.PathLike[str], *, exif_orientation: bool = True) -> Image.Image:
    """Decode an image file to RGB, upright (EXIF orientation applied), through the runtime's guarded decoder:
    only the accepted formats' decoders run, decompression bombs are refused from the header, 16-bit images
    are scaled (not clipped) and alpha is dropped. Raises :class:`ImageError` naming the file.

    ``exif_orientation=False`` decodes as pytorch/examples does (``Image.open(path).convert("RGB")``, the
    stored orientation), still under Pillow's decompression-bomb limit."""
    from nst_runtime.images import pil_to_planes, read_image

    path = Path(path)
    if not path.is_file() and not path.is_dir():
        raise ImageError(f"{path}: no such image file.")
    if not exif_orientation:
        try:
            with Image.open(path) as img:
                return img.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise ImageError(f"{path}: cannot decode as an image: {type(exc).__name__}: {exc}.") from None
    try:
        frame = read_image(path).frames[0]
        rgb, _alpha = pil_to_planes(frame)
    except ImageError as exc:
        detail = str(exc).removeprefix(f"{path}: ").rstrip(".")
        raise ImageError(f"{path}: cannot decode as an image: {detail}.") from None
    return Image.fromarray(rgb, "RGB")


def resize_shorter_side(img: Image.Image, size: int) -> Image.Image:
    """Scale so that the shorter side is ``size`` pixels, keeping the aspect ratio."""
    w, h = img.size
    scale = size / min(w, h)
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    if new == (w, h):
        return img
    return img.resize(new, Image.Resampling.BICUBIC if scale > 1 else Image.Resampling.LANCZOS)


def resize_to_fit(img: Image.Image, size: int, fit: str) -> Image.Image:
    """Resize for a loss target or a Gatys image, each ``fit`` with the resampling of the code it reproduces:

    * ``"shorter-side"``: :func:`resize_shorter_side` (nst);
    * ``"longer-side"``: the longer side to ``size``, bilinear (Torch7 ``image.scale(img, size)`` as
      jcjohnson/fast-neural-style and neural-style call it);
    * ``"square"``: ``size x size``, LANCZOS (pytorch/examples' ``utils.load_image`` with ``Image.ANTIALIAS``).
    """
    w, h = img.size
    if fit == "shorter-side":
        return resize_shorter_side(img, size)
    if fit == "longer-side":
        scale = size / max(w, h)
        new = (max(1, round(w * scale)), max(1, round(h * scale)))
        return img if new == (w, h) else img.resize(new, Image.Resampling.BILINEAR)
    if fit == "square":
        return img if (w, h) == (size, size) else img.resize((size, size), Image.Resampling.LANCZOS)
    raise UsageError(f"image fit {fit!r}: expected shorter-side, longer-side or square.")


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL RGB → uint8 tensor 3xHxW."""
    return torch.from_numpy(np.array(img, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()


def load_image_tensor(path: str | os.PathLike[str], *, size: int | None = None,
                      device: torch.device | str = "cpu", fit: str = "shorter-side",
                      exif_orientation: bool = True, to_float: str = "direct") -> torch.Tensor:
    """Read an image as a 1x3xHxW float32 tensor in [0, 255] on ``device``.

    ``size``: if given, the image is resized per ``fit`` (:func:`resize_to_fit`; by default so that its
    **shorter side** is ``size`` pixels, aspect kept); ``None`` keeps the file's resolution. ``to_float``:
    ``"div255-mul255"`` rounds as torchvision's ``ToTensor`` followed by ``mul(255)``.
    """
    if size is not None and size < 1:
        raise UsageError(f"image size must be a positive number of pixels, got {size}.")
    img = open_rgb(path, exif_orientation=exif_orientation)
    if size is not None:
        img = resize_to_fit(img, size, fit)
    x = pil_to_tensor(img).unsqueeze(0).float()
    if to_float == "div255-mul255":
        x = x.div(255).mul(255)
    return x.to(device)


def tensor_to_pil(t: torch.Tensor) -> Image.Image:
    """1x3xHxW or 3xHxW float in [0, 255] (clamped and rounded) → PIL RGB."""
    if t.dim() == 4:
        if t.shape[0] != 1:
            raise UsageError(f"expected one image (1x3xHxW), got a batch of shape {tuple(t.shape)}.")
        t = t[0]
    if t.dim() != 3 or t.shape[0] != 3:
        raise UsageError(f"expected an RGB image tensor 3xHxW or 1x3xHxW, got shape {tuple(t.shape)}.")
    arr = t.detach().float().clamp(0, 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr)


def save_image_tensor(t: torch.Tensor, path: str | os.PathLike[str], *, quality: int = 95) -> Path:
    """Write a [0, 255] image tensor atomically; the format follows the suffix (.png, .jpg, .webp, ...)."""
    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise UsageError(f"{path}: unknown image extension {path.suffix!r}; use .png, .jpg or .webp.")
    buf = io.BytesIO()
    tensor_to_pil(t).save(buf, format=fmt, **({"quality": quality} if fmt in ("JPEG", "WEBP") else {}))
    with atomic_write(path) as f:
        f.write(buf.getvalue())
    return path
