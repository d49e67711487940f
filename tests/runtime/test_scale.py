"""Stroke scale and size limit (nst_runtime.scale, Stylizer.stylize(scale=, max_size=, output_size=))."""

from __future__ import annotations

import numpy as np
import pytest


def _psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def test_processed_size():
    from nst_runtime.scale import processed_size

    assert processed_size(3000, 4000, scale=0.5) == (1500, 2000)
    assert processed_size(3000, 4000, max_size=1024) == (768, 1024)
    assert processed_size(3000, 4000, scale=0.25, max_size=800) == (600, 800)
    assert processed_size(300, 400, max_size=1024) == (300, 400)  # max_size never enlarges
    assert processed_size(3, 5, scale=0.1) == (1, 1)  # never below one pixel


@pytest.mark.parametrize("kwargs", [dict(scale=0), dict(scale=-1), dict(scale=5), dict(scale=True),
                                    dict(max_size=0), dict(max_size=1.5)])
def test_bad_values_are_usage_errors(kwargs):
    from nst_runtime.errors import UsageError
    from nst_runtime.scale import processed_size

    with pytest.raises(UsageError):
        processed_size(100, 100, **kwargs)


def _pointwise_style(x):
    """A stylization that does not depend on resolution (a colour/tone map), so the full-resolution result is
    the ground truth an upsampler should approach."""
    m = np.array([[0.9, 0.3, -0.1], [0.1, 0.6, 0.3], [-0.2, 0.4, 0.9]], np.float32)
    y = (x.astype(np.float32) / 255) @ m.T
    return np.clip(255 / (1 + np.exp(-(y - 0.5) * 5)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("photo", ["astronaut", "coffee"])
@pytest.mark.parametrize("factor", [0.5, 0.25])
def test_guided_upsampling_recovers_content_edges_better_than_bicubic(photo, factor):
    import skimage.data
    from nst_runtime.scale import processed_size, resize_rgb, upsample

    img = getattr(skimage.data, photo)()
    small = resize_rgb(img, processed_size(*img.shape[:2], scale=factor))
    styled, truth = _pointwise_style(small), _pointwise_style(img)
    bicubic = upsample(styled, small, img, method="bicubic")
    guided = upsample(styled, small, img, method="guided")
    assert guided.shape == bicubic.shape == img.shape
    assert _psnr(guided, truth) > _psnr(bicubic, truth) + 3.0  # measured: +5.5..+8 dB on these photos


def test_guided_upsampling_keeps_the_stylized_image(stylizer):
    """Downscaled again, the guided result is the network's output about as well as bicubic's (it adds only the
    detail band the network could not see), and its edges follow the photo's more."""
    import skimage.data
    from nst_runtime.scale import luminance, processed_size, resize_rgb, upsample

    img = skimage.data.astronaut()[::2, ::2]
    small = resize_rgb(img, processed_size(*img.shape[:2], scale=0.25))
    styled = stylizer.stylize(small)
    bicubic, guided = (upsample(styled, small, img, method=m) for m in ("bicubic", "guided"))
    assert _psnr(resize_rgb(guided, styled.shape[:2]), styled) > _psnr(resize_rgb(bicubic, styled.shape[:2]),
                                                                        styled) - 1.0

    def grad(x):
        y = luminance(x)
        return np.hypot(np.diff(y, axis=0)[:, :-1], np.diff(y, axis=1)[:-1]).ravel()

    edges = grad(img)
    assert np.corrcoef(grad(guided), edges)[0, 1] > np.corrcoef(grad(bicubic), edges)[0, 1] + 0.05


def test_stylizer_runs_the_network_at_the_scaled_size(stylizer, make_image):
    from nst_runtime.scale import resize_rgb, upsample

    img = make_image(90, 120, seed=5)
    small = resize_rgb(img, (45, 60))
    processed = stylizer.stylize(img, scale=0.5, output_size="processed")
    assert processed.shape == (45, 60, 3)
    assert np.array_equal(processed, stylizer.stylize(small))  # exactly the network on the smaller copy
    full = stylizer.stylize(img, scale=0.5)
    assert full.shape == img.shape
    assert np.array_equal(full, upsample(processed, small, img, method="guided"))
    assert stylizer.stylize(img, max_size=60, output_size="processed").shape == (45, 60, 3)


def test_alpha_follows_the_processed_size(stylizer, make_image):
    rgba = np.dstack([make_image(40, 64, seed=6), np.full((40, 64), 200, np.uint8)])
    out = stylizer.stylize(rgba, scale=0.5, output_size="processed")
    assert out.shape == (20, 32, 4) and (out[..., 3] == 200).all()
    assert stylizer.stylize(rgba, scale=0.5).shape == (40, 64, 4)


def test_unknown_step_option_is_a_usage_error(stylizer, make_image):
    from nst_runtime.errors import UsageError

    with pytest.raises(UsageError, match="scale, max_size"):
        stylizer.stylize(make_image(16, 16), scael=0.5)
