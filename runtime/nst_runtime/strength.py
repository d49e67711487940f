"""Style strength: a blend of the stylized image with the original, in the Oklab colour space.

What it is: these networks bake the style weight into their weights at training time, so the runtime cannot
ask one for "less style". ``strength`` 0..1 mixes the network's output with the photo per pixel:
``out = original + strength * (stylized - original)``, computed in Oklab (Ottosson 2020), a perceptual
colour space in which equal steps look like equal changes. So 0.5 looks half-way: its perceptual distance
(Oklab ΔE) to the photo equals its distance to the full stylization at every pixel. Measured on four
scikit-image photos stylized by a trained network (tools/measure_steps.py quality), the share of the
photo-to-style distance that a 0.5 blend covers, 10th..90th percentile over pixels: Oklab 0.496..0.505, a
blend of the sRGB values 0.46..0.63, a blend of linear light 0.27..0.78 (and 0.03..0.05 lighter in Oklab L).
Oklab needs the sRGB decode and a cube root per pixel; the cost is in docs/runtime.md ("Style strength").

A better control at inference time would change the network's features, not its pixels (AdaIN's alpha, issue
18's encoder/decoder family, does exactly that); a TransformerNet has no such knob that stays within the
style it was trained on, so strength is documented as a blend.
"""

from __future__ import annotations

import numpy as np

from .errors import UsageError

# Oklab (Björn Ottosson, 2020): linear sRGB -> LMS -> cube root -> Lab
_M1 = np.array([[0.4122214708, 0.5363325363, 0.0514459929],
                [0.2119034982, 0.6806995451, 0.1073969566],
                [0.0883024619, 0.2817188376, 0.6299787005]], np.float32)
_M2 = np.array([[0.2104542553, 0.7936177850, -0.0040720468],
                [1.9779984951, -2.4285922050, 0.4505937099],
                [0.0259040371, 0.7827717662, -0.8086757660]], np.float32)
_M1_INV = np.linalg.inv(_M1.astype(np.float64)).astype(np.float32)
_M2_INV = np.linalg.inv(_M2.astype(np.float64)).astype(np.float32)


def _srgb_decode_table() -> np.ndarray:
    v = np.arange(256, dtype=np.float64) / 255.0
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4).astype(np.float32)


_DECODE = _srgb_decode_table()


def mat3(x: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``x @ m.T`` for HxWx3 float32 (computed over planes: see :func:`mat3_planes`)."""
    return np.moveaxis(mat3_planes(np.moveaxis(x, -1, 0), m), 0, -1)


def mat3_planes(x: np.ndarray, m: np.ndarray) -> np.ndarray:
    """3xHxW planes -> 3xHxW, ``out[i] = sum_j m[i, j] * x[j]``: contiguous passes, several times faster than a
    matrix product over interleaved pixels."""
    out = np.empty(x.shape, np.float32)
    for i in range(3):
        np.multiply(x[0], np.float32(m[i, 0]), out=out[i])
        out[i] += x[1] * np.float32(m[i, 1])
        out[i] += x[2] * np.float32(m[i, 2])
    return out


def srgb_to_linear(rgb: np.ndarray) -> np.ndarray:
    """uint8 sRGB -> float32 linear light 0..1 (a table lookup)."""
    return _DECODE[rgb]


def _srgb_encode_table(steps: int = 1 << 16) -> np.ndarray:
    """uint8 sRGB for linear light quantized to ``steps`` levels (1/65535: at most 0.05 sRGB levels apart)."""
    v = np.arange(steps, dtype=np.float64) / (steps - 1)
    srgb = np.where(v <= 0.0031308, v * 12.92, 1.055 * v ** (1 / 2.4) - 0.055)
    return np.clip(np.rint(srgb * 255.0), 0, 255).astype(np.uint8)


_ENCODE = _srgb_encode_table()


def linear_to_srgb(lin: np.ndarray) -> np.ndarray:
    """float linear light -> uint8 sRGB (rounded, clipped), by a 65536-entry table instead of a power per value."""
    index = np.clip(lin, 0.0, 1.0) * np.float32(len(_ENCODE) - 1)
    index += np.float32(0.5)
    return _ENCODE[index.astype(np.uint16)]


def _oklab_planes(rgb: np.ndarray) -> np.ndarray:
    """uint8 HxWx3 sRGB -> float32 3xHxW Oklab planes."""
    lms = mat3_planes(_DECODE[np.moveaxis(rgb, -1, 0)], _M1)
    np.maximum(lms, 0.0, out=lms)  # rounding of the matrix can give -1e-9 for black
    return mat3_planes(np.power(lms, np.float32(1 / 3), out=lms), _M2)


def _rgb_from_oklab_planes(lab: np.ndarray) -> np.ndarray:
    """float 3xHxW Oklab planes -> uint8 HxWx3 sRGB."""
    lms = mat3_planes(lab, _M2_INV)
    lms *= lms * lms
    return np.ascontiguousarray(np.moveaxis(linear_to_srgb(mat3_planes(lms, _M1_INV)), 0, -1))


def rgb_to_oklab(rgb: np.ndarray) -> np.ndarray:
    """uint8 HxWx3 sRGB -> float32 HxWx3 Oklab (L 0..1)."""
    return np.moveaxis(_oklab_planes(rgb), 0, -1)


def oklab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """float HxWx3 Oklab -> uint8 sRGB."""
    return _rgb_from_oklab_planes(np.ascontiguousarray(np.moveaxis(lab, -1, 0), np.float32))


def check_strength(strength: float) -> None:
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0.0 <= strength <= 1.0:
        raise UsageError(f"strength {strength!r}: expected a number from 0 (the original photo) to 1 (the full "
                         "stylization, the default).")


def blend(original: np.ndarray, styled: np.ndarray, strength: float) -> np.ndarray:
    """``strength`` of the way from ``original`` to ``styled`` in Oklab (uint8 HxWx3 of the same shape)."""
    check_strength(strength)
    if strength == 1.0:
        return styled
    if strength == 0.0:
        return original
    a, b = _oklab_planes(original), _oklab_planes(styled)
    b -= a
    b *= np.float32(strength)
    b += a
    return _rgb_from_oklab_planes(b)
