"""Preserve colour (nst_runtime.color): luminance from the network, chroma from the input, checked numerically."""

from __future__ import annotations

import numpy as np


def test_ycbcr_round_trip_is_exact():
    from nst_runtime.color import rgb_to_ycbcr, ycbcr_to_rgb

    x = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    assert np.array_equal(ycbcr_to_rgb(rgb_to_ycbcr(x)), x)
    # JPEG's BT.601 full-range values for pure red
    assert np.allclose(rgb_to_ycbcr(np.array([[[255, 0, 0]]], np.uint8))[0, 0], [76.245, 84.97, 255.5], atol=0.01)


def _in_gamut(ycc):
    """Pixels whose target Y/Cb/Cr maps inside the RGB cube (elsewhere clipping must change something)."""
    from nst_runtime.color import _FROM_YCBCR, _OFFSET

    rgb = (ycc - _OFFSET) @ _FROM_YCBCR.T
    return ((rgb >= 0.5) & (rgb <= 254.5)).all(-1)


def test_preserve_color_takes_luma_from_styled_and_chroma_from_original(stylizer):
    import skimage.data
    from nst_runtime.color import preserve_color, rgb_to_ycbcr

    photo = skimage.data.coffee()[::4, ::4]
    styled = stylizer.stylize(photo)
    out = preserve_color(styled, photo)
    want = rgb_to_ycbcr(photo)
    want[..., 0] = rgb_to_ycbcr(styled)[..., 0]
    got = rgb_to_ycbcr(out)
    ok = _in_gamut(want)
    assert ok.mean() > 0.5  # the check covers most pixels
    assert np.abs(got - want)[ok].max() < 1.5  # uint8 rounding of R, G, B only
    # and it does something: the stylized chroma differs from the photo's
    assert np.abs(rgb_to_ycbcr(styled)[..., 1:] - rgb_to_ycbcr(photo)[..., 1:]).mean() > 5


def test_stylizer_preserve_color(stylizer, make_image):
    from nst_runtime.color import preserve_color

    img = make_image(48, 64, seed=3)
    assert np.array_equal(stylizer.stylize(img, preserve_color=True), preserve_color(stylizer.stylize(img), img))
    # at a processed size the chroma comes from what the network saw
    small = stylizer.stylize(img, scale=0.5, output_size="processed", preserve_color=True)
    assert small.shape == (24, 32, 3)
