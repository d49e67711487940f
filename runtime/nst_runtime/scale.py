"""Stroke scale and a size limit: run the network at another resolution, then return the input's size.

A network trained on 256x256 crops paints strokes of a fixed size in *pixels*, so on a 12-megapixel photo they
are tiny (the photo looks barely stylized) and the run is slow. Running the network on a smaller copy
(``scale=0.5``, or ``max_size=1024`` for the longest side) paints strokes that are larger relative to the
picture, at a quarter or less of the cost. The result is then brought back to the input's size.

Upsampling: plain bicubic enlarges the stylized image with soft content edges (the network never saw the
detail of the full-resolution photo). :func:`guided_upsample` keeps the bicubic enlargement of the stylized
image -- the strokes, colours and texture the network painted -- and adds back the content detail that the
downscaling removed, mapped into the stylized image's tones:

    out = up(S) + up(a) * (Y_full - up(Y_small))

``S`` is the network's output, ``Y_small`` the luminance of the image the network saw, ``Y_full`` that of the
original, ``up`` bilinear/bicubic enlargement, and ``a`` the per-pixel, per-channel gain of the guided filter
(He et al., "Guided Image Filtering", 2010/2013; its fast variant computes ``a`` at low resolution and enlarges
it, He & Sun 2015) fitted at the network's resolution: ``a_c = cov(Y_small, S_c) / (var(Y_small) + eps)`` over
a small window. Where the stylization follows the content's tones, the detail band comes back with the same
gain and sign; where it does not (painted texture unrelated to the content), ``a`` is near 0 and nothing is
added. The cost is a few full-resolution array passes (measured numbers: docs/runtime.md).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from PIL import Image

from .errors import UsageError

Upsampler = Literal["guided", "bicubic"]
UPSAMPLERS: tuple[str, ...] = ("guided", "bicubic")
#: largest accepted scale factor (beyond it the network runs on an enlargement of 16x the pixels)
MAX_SCALE = 4.0
#: guided filter window radius and regularisation, at the network's resolution, in uint8 units
GUIDE_RADIUS = 2
GUIDE_EPS = (0.03 * 255.0) ** 2
#: bound on the gain, so that noise in flat regions of the guide is never amplified
MAX_GAIN = 2.0
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601, the weights of color.py's YCbCr


def check_scale(scale: float, max_size: int | None) -> None:
    """Refuse impossible values with the fix."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale <= MAX_SCALE:
        raise UsageError(f"scale {scale!r}: expected a number in (0, {MAX_SCALE:g}]; 0.5 runs the network at half "
                         "the width and height (strokes twice as large relative to the picture).")
    if max_size is not None and (isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1):
        raise UsageError(f"max_size {max_size!r}: expected a positive number of pixels for the longest side "
                         "(e.g. 1024), or None for no limit.")


def processed_size(height: int, width: int, *, scale: float = 1.0, max_size: int | None = None) -> tuple[int, int]:
    """(H, W) the network runs at: ``scale`` times the input, then shrunk to ``max_size`` on the longest side.

    The aspect ratio is kept (each side rounded, at least 1 pixel); ``max_size`` never enlarges.
    """
    check_scale(scale, max_size)
    factor = float(scale)
    if max_size is not None and max(height, width) * factor > max_size:
        factor = max_size / max(height, width)
    if factor == 1.0:
        return height, width
    return max(1, round(height * factor)), max(1, round(width * factor))


def resize_rgb(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 HxWx3 (or HxW) to ``size`` = (H, W): Lanczos when shrinking (antialiased), bicubic when enlarging."""
    h, w = size
    if rgb.shape[:2] == (h, w):
        return rgb
    shrink = h * w < rgb.shape[0] * rgb.shape[1]
    method = Image.Resampling.LANCZOS if shrink else Image.Resampling.BICUBIC
    img = Image.fromarray(np.ascontiguousarray(rgb))
    return np.asarray(img.resize((w, h), method, reducing_gap=3.0 if shrink else None))


def _resize_float(plane: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """float32 HxW, bilinear (Pillow's ``F`` mode: C speed, no uint8 rounding)."""
    h, w = size
    return np.asarray(Image.fromarray(np.ascontiguousarray(plane, np.float32), "F").resize(
        (w, h), Image.Resampling.BILINEAR), dtype=np.float32)


def _box(x: np.ndarray, r: int) -> np.ndarray:
    """Mean over a (2r+1)^2 window, edges replicated, by cumulative sums (O(1) per pixel); x is HxW[xC]."""
    pad = [(r + 1, r), (r + 1, r)] + [(0, 0)] * (x.ndim - 2)
    c = np.pad(x, pad, mode="edge").cumsum(0).cumsum(1)
    k = 2 * r + 1
    s = c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]
    return s / np.float32(k * k)


def luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float32) @ _LUMA


def guided_gain(styled: np.ndarray, guide: np.ndarray, *, radius: int = GUIDE_RADIUS,
                eps: float = GUIDE_EPS) -> np.ndarray:
    """Per-pixel, per-channel gain ``a`` of the guided filter of ``styled`` (HxWx3) on ``guide``'s luminance."""
    y = luminance(guide)
    s = styled.astype(np.float32)
    mean_y = _box(y, radius)
    mean_s = _box(s, radius)
    cov = _box(y[..., None] * s, radius) - mean_y[..., None] * mean_s
    var = _box(y * y, radius) - mean_y * mean_y
    a = cov / (np.maximum(var, 0.0)[..., None] + np.float32(eps))
    return np.clip(a, -MAX_GAIN, MAX_GAIN).astype(np.float32)


def guided_upsample(styled: np.ndarray, guide_small: np.ndarray, original: np.ndarray, *,
                    radius: int = GUIDE_RADIUS, eps: float = GUIDE_EPS) -> np.ndarray:
    """Enlarge ``styled`` (the network's output for ``guide_small``) to ``original``'s size, adding back the
    content detail the downscaling removed (see the module docstring). All uint8 HxWx3."""
    h, w = original.shape[:2]
    base = resize_rgb(styled, (h, w)).astype(np.float32)
    gain = guided_gain(styled, guide_small, radius=radius, eps=eps)
    detail = luminance(original) - _resize_float(luminance(guide_small), (h, w))
    for c in range(3):
        base[..., c] += _resize_float(gain[..., c], (h, w)) * detail
    return np.clip(np.rint(base), 0, 255).astype(np.uint8)


def upsample(styled: np.ndarray, guide_small: np.ndarray, original: np.ndarray, *,
             method: Upsampler = "guided") -> np.ndarray:
    """Bring the network's output back to the original's size with ``method``; shrinking is always Lanczos."""
    size = original.shape[:2]
    if styled.shape[:2] == size:
        return styled
    if method not in UPSAMPLERS:
        raise UsageError(f"upsampler {method!r}: expected one of {', '.join(UPSAMPLERS)}.")
    if method == "bicubic" or styled.shape[0] * styled.shape[1] >= size[0] * size[1]:
        return resize_rgb(styled, size)
    return guided_upsample(styled, guide_small, original)
