"""The Gatys et al. baseline on CPU with a random VGG-16 (losses real, image quality not judged)."""

from __future__ import annotations

import itertools

import pytest
import torch
from nst_runtime.errors import UsageError
from nst_train.gatys import GatysResult, IterationRecord, gatys_stylize
from nst_train.imageio import load_image_tensor
from nst_train.losses import LossWeights


@pytest.fixture(scope="module")
def pair(samples):
    """A generated 32 px 'photo' and a 40 px brush-stroke texture (see conftest)."""
    content = load_image_tensor(samples / "content" / "sample_000.jpg", size=32)
    style = load_image_tensor(samples / "style.png", size=40)
    return content, style


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
@pytest.mark.parametrize("init", ["content", "noise"])
def test_gatys_lowers_the_loss(random_vgg, pair, optimizer, init):
    content, style = pair
    seen: list[IterationRecord] = []
    result = gatys_stylize(content, style, vgg=random_vgg, iterations=12, optimizer=optimizer, init=init,
                           progress=False, callback=seen.append)
    assert isinstance(result, GatysResult)
    h = result.history
    assert [r.iteration for r in h] == list(range(1, 13)) and seen == h
    assert h[-1].loss < 0.5 * h[0].loss, [r.loss for r in h]
    assert all(r.loss == pytest.approx(r.content + r.style + r.tv) for r in h)
    elapsed = [r.elapsed_s for r in h]
    assert all(b > a for a, b in itertools.pairwise(elapsed))  # cumulative wall time
    assert result.seconds >= elapsed[-1]
    img = result.image
    assert img.shape == content.shape and not img.requires_grad
    assert float(img.min()) >= 0 and float(img.max()) <= 255
    assert not torch.equal(img, content.clamp(0, 255))
    if init == "content":
        assert h[0].content == 0.0  # the first pass evaluates the content image itself


def test_gatys_weights_and_seed(random_vgg, pair):
    content, style = pair
    kw = dict(vgg=random_vgg, iterations=2, optimizer="adam", init="noise", progress=False)
    a = gatys_stylize(content, style, seed=1, **kw)
    b = gatys_stylize(content, style, seed=1, **kw)
    c = gatys_stylize(content, style, seed=2, **kw)
    assert torch.equal(a.image, b.image) and not torch.equal(a.image, c.image)
    only_style = gatys_stylize(content, style, weights=LossWeights(content=0.0, style=1e10, tv=1.0), **kw)
    assert all(r.content == 0.0 and r.tv > 0 for r in only_style.history)


@pytest.mark.parametrize("kwargs,match", [
    ({"iterations": 0}, "at least 1"),
    ({"optimizer": "sgd"}, "lbfgs"),
    ({"init": "zeros"}, "content"),
])
def test_gatys_bad_arguments(random_vgg, pair, kwargs, match):
    with pytest.raises(UsageError, match=match):
        gatys_stylize(*pair, vgg=random_vgg, progress=False, **kwargs)


def test_gatys_bad_tensors(random_vgg, pair):
    content, style = pair
    with pytest.raises(UsageError, match=r"expected a 1x3xHxW.*\(3, 32, 32\)"):
        gatys_stylize(content[0], style, vgg=random_vgg)
    with pytest.raises(UsageError, match=r"dtype torch\.uint8"):
        gatys_stylize(content.to(torch.uint8), style, vgg=random_vgg)
