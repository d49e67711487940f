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
    """``x @ m.T`` for HxWx3 float32, one channel at a time (several times faster than matmul on 3x3)."""
    out = np.empty(x.shape, np.float32)
    for i in range(3):
        np.multiply(x[..., 0], m[i, 0], out=out[..., i])
        out[..., i] += x[..., 1] * m[i, 1]
        out[..., i] += x[..., 2] * m[i, 2]
    return out


def srgb_to_linear(rgb: np.ndarray) -> np.ndarray:
    """uint8 sRGB -> float32 linear light 0..1 (a table lookup)."""
    return _DECODE[rgb]


def linear_to_srgb(lin: np.ndarray) -> np.ndarray:
    """float linear light -> uint8 sRGB (rounded, clipped)."""
    lin = np.clip(lin, 0.0, 1.0)
    v = np.where(lin <= 0.0031308, lin * 12.92, 1.055 * np.power(lin, 1 / 2.4, dtype=np.float32) - 0.055)
    return np.clip(np.rint(v * 255.0), 0, 255).astype(np.uint8)


def rgb_to_oklab(rgb: np.ndarray) -> np.ndarray:
    """uint8 HxWx3 sRGB -> float32 Oklab (L 0..1)."""
    lms = mat3(srgb_to_linear(rgb), _M1)
    np.maximum(lms, 0.0, out=lms)  # rounding of the matrix can give -1e-9 for black
    return mat3(np.power(lms, np.float32(1 / 3), out=lms), _M2)


def oklab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """float Oklab -> uint8 sRGB."""
    lms = mat3(lab, _M2_INV)
    lms *= lms * lms
    return linear_to_srgb(mat3(lms, _M1_INV))


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
    a, b = rgb_to_oklab(original), rgb_to_oklab(styled)
    return oklab_to_rgb(a + np.float32(strength) * (b - a))
