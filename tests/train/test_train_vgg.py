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


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network and an empty torch.hub cache."""
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    return tmp_path / "hub" / "checkpoints"


@pytest.mark.parametrize("arch,name,filename", [
    ("vgg16", "imagenet", "vgg16-397923af.pth"), ("vgg16", "caffe", "vgg16-00b39a1b.pth"),
    ("vgg19", "imagenet", "vgg19-dcbb9e9d.pth"), ("vgg19", "caffe", "vgg19-d01eb7cb.pth")])
def test_offline_named_weights_say_how_to_fix(offline, arch, name, filename):
    from nst_train.vgg import load_vgg

    with pytest.raises(WeightsUnavailableError) as info:
        load_vgg(arch, name)
    msg = str(info.value)
    assert filename in msg and str(offline / filename) in msg
    assert "--vgg-weights PATH" in msg and "--vgg-weights random" in msg


def _known_file(monkeypatch, tmp_path, arch: str, name: str, *, seed: int = 0):
    """A random state dict standing in for a published file: its real hash goes into the known-weights table."""
    import dataclasses
    import hashlib

    import nst_train.vgg as vgg_module
    from nst_train.vgg import KNOWN_WEIGHTS, VGGFeatures

    torch.manual_seed(seed)
    path = tmp_path / "candidate.pth"
    torch.save(VGGFeatures(arch).state_dict(), path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    known = dataclasses.replace(KNOWN_WEIGHTS[(arch, name)], sha256_prefix=digest[:8])
    monkeypatch.setitem(vgg_module.KNOWN_WEIGHTS, (arch, name), known)
    return path, known


def test_cached_caffe_weights_load_offline_with_their_preprocessing(offline, monkeypatch, tmp_path):
    from nst_train.vgg import load_vgg

    path, known = _known_file(monkeypatch, tmp_path, "vgg19", "caffe")
    offline.mkdir(parents=True)
    path.rename(offline / known.filename)
    net = load_vgg("vgg19", "caffe", last_layer="relu4_1", preprocessing="torchvision")
    assert not net.is_random and net.preprocessing == "caffe" and net.weights_name == "caffe"


def test_a_known_file_is_recognised_by_hash_and_a_damaged_one_refused(monkeypatch, tmp_path):
    from nst_train.vgg import load_vgg

    path, known = _known_file(monkeypatch, tmp_path, "vgg16", "caffe")
    # any name: the hash says it is the Caffe VGG-16, so it gets the Caffe preprocessing
    assert load_vgg("vgg16", path, preprocessing="torchvision").preprocessing == "caffe"
    # the published name with other bytes: a damaged download, refused with both hashes
    damaged = tmp_path / known.filename
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    damaged.write_bytes(bytes(data))
    with pytest.raises(WeightsUnavailableError, match=rf"must start {known.sha256_prefix}.*damaged"):
        load_vgg("vgg16", damaged)
    # the right file for the wrong network
    with pytest.raises(WeightsUnavailableError, match="a vgg19 is needed"):
        load_vgg("vgg19", path)


def test_caffe_preprocessing_is_bgr_minus_the_mean_pixel():
    from nst_train.vgg import VGGFeatures

    rgb = torch.rand(1, 3, 4, 5) * 255
    caffe = VGGFeatures("vgg16", "caffe").preprocess(rgb)
    expected = torch.stack([rgb[:, 2] - 103.939, rgb[:, 1] - 116.779, rgb[:, 0] - 123.68], 1)
    torch.testing.assert_close(caffe, expected)
    tv = VGGFeatures("vgg16", "torchvision").preprocess(rgb)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(tv, (rgb / 255 - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1))


def test_non_finite_vgg_weights_are_refused(tmp_path):
    state = VGG16Features().state_dict()
    state["features.5.weight"][0, 0, 0, 0] = float("nan")
    path = tmp_path / "nan.pth"
    torch.save(state, path)
    with pytest.raises(WeightsUnavailableError, match=r"features\.5\.weight holds NaN"):
        load_vgg16(path)


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
