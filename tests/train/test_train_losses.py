"""Gram matrices, content/style/TV terms."""

from __future__ import annotations

import torch
from nst_train.losses import LossWeights, gram_matrix, perceptual_loss, total_variation


def _naive_gram(f: torch.Tensor) -> torch.Tensor:
    b, c, h, w = f.shape
    out = torch.zeros(b, c, c, dtype=torch.float64)
    for n in range(b):
        for i in range(c):
            for j in range(c):
                s = 0.0
                for y in range(h):
                    for x in range(w):
                        s += float(f[n, i, y, x]) * float(f[n, j, y, x])
                out[n, i, j] = s / (c * h * w)
    return out


def test_gram_matches_naive_loop():
    torch.manual_seed(0)
    f = torch.randn(2, 4, 3, 5)
    g = gram_matrix(f)
    assert g.shape == (2, 4, 4)
    torch.testing.assert_close(g.double(), _naive_gram(f), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g, g.transpose(1, 2))  # symmetric


def test_gram_is_float32_under_half_inputs():
    f = (torch.randn(1, 8, 16, 16) * 100).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        g = gram_matrix(f)
    assert g.dtype == torch.float32
    torch.testing.assert_close(g, gram_matrix(f.float()))


def test_total_variation_zero_on_flat_and_positive_on_edges():
    flat = torch.full((1, 3, 8, 8), 100.0)
    assert float(total_variation(flat)) == 0.0
    edge = flat.clone()
    edge[..., :, 4:] = 200.0
    assert float(total_variation(edge)) > 0


def test_perceptual_loss_terms(random_vgg):
    torch.manual_seed(1)
    x = torch.rand(1, 3, 32, 32) * 255
    w = LossWeights(tv=1.0)
    feats = random_vgg(x, w.layers)
    grams = {k: gram_matrix(v) for k, v in feats.items()}
    same = perceptual_loss(feats, feats[w.content_layer], grams, x, w)
    assert float(same.content) == 0.0 and float(same.style) == 0.0
    assert float(same.tv) == float(total_variation(x))
    other = torch.rand(1, 3, 32, 32) * 255
    diff = perceptual_loss(random_vgg(other, w.layers), feats[w.content_layer], grams, other, w)
    assert float(diff.content) > 0 and float(diff.style) > 0
    torch.testing.assert_close(diff.total, diff.content + diff.style + diff.tv)
