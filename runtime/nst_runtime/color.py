"""Preserve the original colours: keep the stylized image's luminance and the input's chroma.

Gatys et al., "Preserving Color in Neural Artistic Style Transfer" (2016), and neural-style's
``-original_colors``: style transfer paints the style's palette over the photo; with this step only the
luminance (strokes, texture, shading) comes from the network and the colours stay the photo's.

Colour space: **YCbCr** (ITU-R BT.601, full range, as in JPEG), not CIE Lab. Both separate luminance from
chroma; YCbCr is a linear transform of the gamma-encoded RGB values, so the round trip is exact (up to
uint8 rounding and the RGB gamut), costs two 3x3 matrix products per pixel, and is what neural-style (YUV)
and Gatys et al. (YIQ) use. Lab's L* is closer to perceived lightness, but it needs the sRGB decode, a cube
root and the inverse of both per pixel (several times the cost on a 12-megapixel image) and the results
differ only where the stylized luminance moves far from the original's -- where the chroma of either space
leaves the RGB gamut and is clipped anyway. The measured check (tests/runtime/test_color.py): the output's
Cb/Cr equal the input's and its Y equals the stylized Y, within rounding, wherever the result is in gamut.
"""

from __future__ import annotations

import numpy as np

from .strength import mat3_planes

# RGB -> YCbCr (BT.601 full range, JPEG): rows Y, Cb, Cr; Cb/Cr offset by 128
_TO_YCBCR = np.array([[0.299, 0.587, 0.114],
                      [-0.168736, -0.331264, 0.5],
                      [0.5, -0.418688, -0.081312]], np.float32)
_FROM_YCBCR = np.linalg.inv(_TO_YCBCR.astype(np.float64)).astype(np.float32)
_OFFSET = np.array([0.0, 128.0, 128.0], np.float32)


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """uint8 (or float) HxWx3 RGB -> float32 HxWx3 YCbCr (Y in 0..255, Cb/Cr centred on 128)."""
    return np.moveaxis(_ycbcr_planes(rgb), 0, -1)


def ycbcr_to_rgb(ycc: np.ndarray) -> np.ndarray:
    """float HxWx3 YCbCr -> uint8 RGB (rounded, clipped to the gamut)."""
    return _rgb_from_planes(np.moveaxis(ycc, -1, 0).astype(np.float32))


def _ycbcr_planes(rgb: np.ndarray) -> np.ndarray:
    """HxWx3 RGB -> 3xHxW YCbCr planes (computed over planes: contiguous passes)."""
    planes = mat3_planes(np.moveaxis(rgb, -1, 0).astype(np.float32), _TO_YCBCR)
    planes[1:] += np.float32(128.0)
    return planes


def _rgb_from_planes(ycc: np.ndarray) -> np.ndarray:
    """3xHxW YCbCr planes (consumed) -> uint8 HxWx3 RGB."""
    ycc[1:] -= np.float32(128.0)
    rgb = mat3_planes(ycc, _FROM_YCBCR)
    np.rint(rgb, out=rgb)
    np.clip(rgb, 0, 255, out=rgb)
    return np.ascontiguousarray(np.moveaxis(rgb.astype(np.uint8), 0, -1))


def preserve_color(styled: np.ndarray, original: np.ndarray) -> np.ndarray:
    """Luminance of ``styled``, chroma of ``original`` (both uint8 HxWx3 of the same size)."""
    if styled.shape != original.shape:
        raise ValueError(f"styled {styled.shape} and original {original.shape} must have the same shape")
    out = _ycbcr_planes(original)
    s = np.moveaxis(styled, -1, 0)
    out[0] = s[0] * _TO_YCBCR[0, 0] + s[1] * _TO_YCBCR[0, 1] + s[2] * _TO_YCBCR[0, 2]
    return _rgb_from_planes(out)
