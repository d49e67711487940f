"""Style strength (nst_runtime.strength): an Oklab blend, checked against Oklab's definition and numerically."""

from __future__ import annotations

import numpy as np
import pytest


def test_oklab_reference_values():
    """Ottosson's published values for sRGB white and red."""
    from nst_runtime.strength import rgb_to_oklab

    lab = rgb_to_oklab(np.array([[[255, 255, 255], [255, 0, 0]]], np.uint8))[0]
    assert np.allclose(lab[0], [1.0, 0.0, 0.0], atol=2e-4)
    assert np.allclose(lab[1], [0.62796, 0.22486, 0.12585], atol=2e-4)


def test_oklab_round_trip():
    from nst_runtime.strength import oklab_to_rgb, rgb_to_oklab

    x = np.random.default_rng(1).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    assert np.abs(oklab_to_rgb(rgb_to_oklab(x)).astype(int) - x).max() <= 1


def test_blend_ends_and_midpoint():
    from nst_runtime.strength import blend, rgb_to_oklab

    rng = np.random.default_rng(2)
    a, b = (rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(2))
    assert np.array_equal(blend(a, b, 0.0), a) and np.array_equal(blend(a, b, 1.0), b)
    mid = blend(a, b, 0.5)
    la, lb, lm = rgb_to_oklab(a), rgb_to_oklab(b), rgb_to_oklab(mid)
    d_a, d_b = np.linalg.norm(lm - la, axis=-1), np.linalg.norm(lm - lb, axis=-1)
    far = np.linalg.norm(la - lb, axis=-1) > 0.1  # where the two differ visibly, 0.5 is perceptually half-way
    assert np.median(np.abs(d_a - d_b)[far] / (d_a + d_b)[far]) < 0.02
    # distance to the original grows with strength
    dists = [np.linalg.norm(rgb_to_oklab(blend(a, b, s)) - la, axis=-1).mean() for s in (0.25, 0.5, 0.75)]
    assert dists[0] < dists[1] < dists[2]


@pytest.mark.parametrize("bad", [-0.1, 1.5, "0.5", True])
def test_bad_strength(bad):
    from nst_runtime.errors import UsageError
    from nst_runtime.strength import blend

    z = np.zeros((2, 2, 3), np.uint8)
    with pytest.raises(UsageError, match="strength"):
        blend(z, z, bad)


def test_stylizer_strength(stylizer, make_image):
    from nst_runtime.strength import blend

    img = make_image(40, 56, seed=9)
    full = stylizer.stylize(img)
    assert np.array_equal(stylizer.stylize(img, strength=0.0), img)
    assert np.array_equal(stylizer.stylize(img, strength=0.4), blend(img, full, 0.4))
    assert np.array_equal(stylizer.stylize(img, strength=1.0), full)
