"""Loss-network weights: random warns, a path loads, missing or offline weights fail with the fix."""

from __future__ import annotations

import urllib.error
import warnings

import pytest
import torch
from nst_runtime.errors import WeightsUnavailableError
from nst_train.vgg import VGG16Features, load_vgg16


def test_random_weights_warn_loudly():
    with pytest.warns(UserWarning, match="RANDOMLY INITIALISED.*meaningless"):
        net = load_vgg16("random")
    assert net.is_random


def test_missing_path_is_weights_unavailable(tmp_path):
    with pytest.raises(WeightsUnavailableError, match=r"nope\.pth: no such VGG-16 weights file.*random"):
        load_vgg16(tmp_path / "nope.pth")


def test_offline_imagenet_says_how_to_fix(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsUnavailableError) as info:
        load_vgg16("imagenet")
    msg = str(info.value)
    assert "vgg16-397923af.pth" in msg and "--vgg-weights PATH" in msg and "--vgg-weights random" in msg


def test_path_with_torchvision_keys_loads(tmp_path):
    torch.manual_seed(0)
    src = VGG16Features()
    # torchvision's file has the whole network; the classifier keys must be ignored
    state = {**src.state_dict(), "classifier.0.weight": torch.zeros(2, 2), "features.24.weight": torch.zeros(1)}
    path = tmp_path / "vgg16.pth"
    torch.save(state, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no random-weights warning for real weights
        net = load_vgg16(path)
    assert not net.is_random
    assert all(not p.requires_grad for p in net.parameters())
    x = torch.rand(1, 3, 32, 32) * 255
    torch.testing.assert_close(net(x)["relu3_3"], src(x)["relu3_3"])


def test_path_missing_layers_is_an_error(tmp_path):
    state = {k: v for k, v in VGG16Features().state_dict().items() if not k.startswith("features.21")}
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(WeightsUnavailableError, match=r"missing 2 tensors.*features\.21"):
        load_vgg16(path)
