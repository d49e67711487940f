"""TransformerNet shapes and ranges, and where the gradients go (random VGG-16: see conftest)."""

from __future__ import annotations

import pytest
import torch
from nst_train.losses import LossWeights, gram_matrix, perceptual_loss
from nst_train.model import TransformerNet


@pytest.mark.parametrize("hw", [(32, 32), (36, 44), (33, 47), (17, 21)])
def test_stylize_keeps_shape_and_range(tiny_net, hw):
    x = torch.rand(2, 3, *hw) * 255
    with torch.no_grad():
        y = tiny_net.stylize(x)
    assert y.shape == x.shape
    assert y.dtype == torch.float32
    assert float(y.min()) >= 0.0 and float(y.max()) <= 255.0
    # the network is not the identity and the two images of the batch are processed independently
    assert not torch.allclose(y[0], y[1])


def test_raw_forward_keeps_multiple_of_4_shape(tiny_net):
    x = torch.rand(1, 3, 40, 28) * 255
    with torch.no_grad():
        assert tiny_net(x).shape == x.shape


def test_vgg_outputs_named_features(random_vgg):
    x = torch.rand(1, 3, 32, 48) * 255
    feats = random_vgg(x)
    assert list(feats) == ["relu1_2", "relu2_2", "relu3_3", "relu4_3"]
    assert feats["relu1_2"].shape == (1, 64, 32, 48)
    assert feats["relu2_2"].shape == (1, 128, 16, 24)
    assert feats["relu3_3"].shape == (1, 256, 8, 12)
    assert feats["relu4_3"].shape == (1, 512, 4, 6)
    assert all(float(f.min()) >= 0 for f in feats.values())  # ReLU outputs


def test_gradients_reach_only_the_transformer(random_vgg):
    torch.manual_seed(0)
    net = TransformerNet()
    x = torch.rand(2, 3, 32, 32) * 255
    style = torch.rand(1, 3, 32, 32) * 255
    w = LossWeights(tv=1e-3)
    with torch.no_grad():
        grams = {k: gram_matrix(v) for k, v in random_vgg(style).items()}
        target = random_vgg(x, (w.content_layer,))[w.content_layer]
    y = net(x)
    loss = perceptual_loss(random_vgg(y, w.layers), target, grams, y, w).total
    loss.backward()
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in net.parameters())
    assert all(not p.requires_grad and p.grad is None for p in random_vgg.parameters())
    assert not random_vgg.training
