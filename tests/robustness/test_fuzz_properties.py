"""Property tests (hypothesis) over the runtime's pre- and post-processing in nst_runtime.images: any size,
mode and dtype either converts to the documented planes or raises nst's own error — never anything else."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nst_runtime.errors import NstError
from nst_runtime.images import (
    array_to_planes,
    merge_planes,
    pad_to_min_size,
    pil_to_planes,
    scale_16bit,
)
from PIL import Image

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
sizes = st.tuples(st.integers(1, 40), st.integers(1, 40))
MODES = ["RGB", "RGBA", "RGBa", "L", "1", "LA", "La", "I;16", "I;16B", "I;16L", "I", "F", "P", "PA", "CMYK",
         "YCbCr", "LAB", "HSV"]


@st.composite
def pil_images(draw):
    mode = draw(st.sampled_from(MODES))
    w, h = draw(sizes)
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    base = Image.new(mode, (w, h))
    nbytes = len(base.tobytes())
    img = Image.frombytes(mode, (w, h), rng.integers(0, 256, nbytes, dtype=np.uint8).tobytes())
    if mode == "P" and draw(st.booleans()):
        img.info["transparency"] = int(rng.integers(0, 256))
    return img


@FAST
@given(pil_images())
def test_pil_to_planes_any_mode(img):
    rgb, alpha = pil_to_planes(img)
    w, h = img.size
    assert rgb.shape == (h, w, 3) and rgb.dtype == np.uint8 and rgb.flags.c_contiguous
    if alpha is not None:
        assert alpha.shape == (h, w) and alpha.dtype == np.uint8
    has_alpha = img.mode in ("RGBA", "RGBa", "LA", "La", "PA") or (img.mode == "P" and "transparency" in img.info)
    assert (alpha is not None) == has_alpha
    merged = merge_planes(rgb, alpha)
    assert merged.shape == (h, w, 4 if has_alpha else 3)


@FAST
@given(st.sampled_from(["uint8", "uint16", "int8", "int16", "int32", "float16", "float32", "float64", "bool",
                        "complex64"]),
       st.integers(1, 4), sizes, st.sampled_from([0, 1, 2, 3, 4, 5]))
def test_array_to_planes_any_dtype_and_shape(dtype, ndim, size, channels):
    h, w = size
    shape = {1: (h,), 2: (h, w), 3: (h, w, channels), 4: (1, h, w, channels)}[ndim]
    arr = np.zeros(shape, dtype=dtype)
    ok_dtype = dtype in ("uint8", "uint16")
    ok_shape = ndim == 2 or (ndim == 3 and channels in (1, 3, 4))
    if not (ok_dtype and ok_shape):
        with pytest.raises(NstError):
            array_to_planes(arr)
        return
    rgb, alpha = array_to_planes(arr)
    assert rgb.shape == (h, w, 3) and rgb.dtype == np.uint8
    assert (alpha is not None) == (ndim == 3 and channels == 4)


@FAST
@given(st.lists(st.integers(0, 65535), min_size=1, max_size=64))
def test_scale_16bit_is_monotone_and_spans_the_range(values):
    v = np.array(values, dtype=np.uint16)
    out = scale_16bit(v)
    assert out.dtype == np.uint8
    exact = v.astype(np.float64) * 255 / 65535
    assert np.all(np.abs(out - exact) <= 0.5 + 1e-9)  # rounded, never clipped
    order = np.argsort(v, kind="stable")
    assert np.all(np.diff(out[order].astype(int)) >= 0)
    assert scale_16bit(np.array([0, 65535], np.uint16)).tolist() == [0, 255]


@FAST
@given(sizes, st.integers(1, 64), st.integers(0, 2**32 - 1))
def test_pad_then_crop_is_identity(size, min_size, seed):
    h, w = size
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    padded = pad_to_min_size(rgb, min_size)
    assert padded.shape == (max(h, min_size), max(w, min_size), 3)
    assert np.array_equal(padded[:h, :w], rgb)
    # mirrored padding only repeats the image's own colours
    colours = {tuple(c) for c in rgb.reshape(-1, 3)}
    assert {tuple(c) for c in padded.reshape(-1, 3)} <= colours


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(pil_images())
def test_stylize_any_mode_same_size(stylizer, img):
    out = stylizer.stylize(img)
    assert out.size == img.size and out.mode in ("RGB", "RGBA")


def test_float_mode_extremes_do_not_overflow():
    import warnings

    f = np.array([[np.nan, np.inf, -np.inf, 3e38, -1.0, 0.5]], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow RuntimeWarning is a failure
        rgb, _ = pil_to_planes(Image.fromarray(f, "F"))
    assert rgb[0, :, 0].tolist() == [0, 255, 0, 255, 0, 128]
