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

__all__ = ["load_image_tensor", "open_rgb", "resize_shorter_side", "save_image_tensor"]


def open_rgb(path: str | os.PathLike[str]) -> Image.Image:
    """Decode an image file to RGB, upright (EXIF orientation applied), through the runtime's guarded decoder:
    only the accepted formats' decoders run, decompression bombs are refused from the header, 16-bit images
    are scaled (not clipped) and alpha is dropped. Raises :class:`ImageError` naming the file."""
    from nst_runtime.images import pil_to_planes, read_image

    path = Path(path)
    if not path.is_file() and not path.is_dir():
        raise ImageError(f"{path}: no such image file.")
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


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL RGB → uint8 tensor 3xHxW."""
    return torch.from_numpy(np.array(img, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()


def load_image_tensor(path: str | os.PathLike[str], *, size: int | None = None,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """Read an image as a 1x3xHxW float32 tensor in [0, 255] on ``device``.

    ``size``: if given, the image is resized so that its **shorter side** is ``size`` pixels (aspect kept);
    ``None`` keeps the file's resolution.
    """
    if size is not None and size < 1:
        raise UsageError(f"image size must be a positive number of pixels, got {size}.")
    img = open_rgb(path)
    if size is not None:
        img = resize_shorter_side(img, size)
    return pil_to_tensor(img).unsqueeze(0).float().to(device)


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
