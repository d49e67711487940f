"""Checkpoint format: pytorch/examples state dicts, wrong architectures, corrupt files, safetensors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from nst_runtime.errors import CheckpointError
from nst_train.checkpoint import CheckpointMetadata, load_checkpoint, save_checkpoint
from nst_train.model import TransformerNet

# pytorch/examples fast_neural_style TransformerNet, written out as (prefix, kind, in, out, kernel, stride):
# conv -> ConvLayer (reflection pad k//2, conv2d), norm -> InstanceNorm2d(affine), up -> upsample x2 first.
_EXAMPLES_LAYOUT = [
    ("conv1", "conv", 3, 32, 9, 1), ("in1", "norm", 32), ("conv2", "conv", 32, 64, 3, 2), ("in2", "norm", 64),
    ("conv3", "conv", 64, 128, 3, 2), ("in3", "norm", 128),
    *[(f"res{i}", "res", 128) for i in range(1, 6)],
    ("deconv1", "up", 128, 64, 3, 1), ("in4", "norm", 64), ("deconv2", "up", 64, 32, 3, 1), ("in5", "norm", 32),
    ("deconv3", "conv", 32, 3, 9, 1),
]


def _examples_state_dict(seed: int) -> dict[str, torch.Tensor]:
    """A state dict with pytorch/examples' parameter names, random values, and the stale InstanceNorm
    running statistics that checkpoints saved with torch < 0.4 carry."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}

    def conv(name, cin, cout, k):
        sd[f"{name}.conv2d.weight"] = torch.randn(cout, cin, k, k, generator=g) * (1.0 / (cin * k * k)) ** 0.5
        sd[f"{name}.conv2d.bias"] = torch.randn(cout, generator=g) * 0.1

    def norm(name, c):
        sd[f"{name}.weight"] = 1 + 0.3 * torch.randn(c, generator=g)
        sd[f"{name}.bias"] = 0.3 * torch.randn(c, generator=g)
        sd[f"{name}.running_mean"] = torch.randn(c, generator=g)  # must be ignored
        sd[f"{name}.running_var"] = torch.rand(c, generator=g) + 0.5

    for entry in _EXAMPLES_LAYOUT:
        name, kind = entry[0], entry[1]
        if kind in ("conv", "up"):
            conv(name, entry[2], entry[3], entry[4])
        elif kind == "norm":
            norm(name, entry[2])
        else:
            conv(f"{name}.conv1", 128, 128, 3)
            norm(f"{name}.in1", 128)
            conv(f"{name}.conv2", 128, 128, 3)
            norm(f"{name}.in2", 128)
    sd["deconv3.conv2d.weight"] *= 60.0  # an output spread like a trained net's (about [0, 255])
    sd["deconv3.conv2d.bias"] += 127.0
    return sd


def _examples_forward(sd: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Independent functional re-statement of the pytorch/examples network, reading the state dict by name."""

    def conv(name, h, stride, k, up=False):
        if up:
            h = F.interpolate(h, scale_factor=2, mode="nearest")
        h = F.pad(h, (k // 2,) * 4, mode="reflect")
        return F.conv2d(h, sd[f"{name}.conv2d.weight"], sd[f"{name}.conv2d.bias"], stride=stride)

    def norm(name, h):  # instance norm: per image and channel, biased variance, eps 1e-5
        return F.instance_norm(h, weight=sd[f"{name}.weight"], bias=sd[f"{name}.bias"], eps=1e-5)

    h = F.relu(norm("in1", conv("conv1", x, 1, 9)))
    h = F.relu(norm("in2", conv("conv2", h, 2, 3)))
    h = F.relu(norm("in3", conv("conv3", h, 2, 3)))
    for i in range(1, 6):
        r = F.relu(norm(f"res{i}.in1", conv(f"res{i}.conv1", h, 1, 3)))
        h = norm(f"res{i}.in2", conv(f"res{i}.conv2", r, 1, 3)) + h
    h = F.relu(norm("in4", conv("deconv1", h, 1, 3, up=True)))
    h = F.relu(norm("in5", conv("deconv2", h, 1, 3, up=True)))
    return conv("deconv3", h, 1, 9)


def test_pytorch_examples_state_dict_loads_and_matches(tmp_path):
    sd = _examples_state_dict(seed=7)
    assert "in1.running_mean" in sd and "res3.in2.running_var" in sd
    path = tmp_path / "mosaic.pth"
    torch.save(sd, path)  # a plain state dict, as pytorch/examples saves it
    ckpt = load_checkpoint(path)
    assert "pytorch/examples" in ckpt.metadata.source
    net = ckpt.model()
    x = torch.rand(2, 3, 36, 40) * 255
    with torch.no_grad():
        ours, ref = net(x), _examples_forward(sd, x)
    assert ours.shape == ref.shape == x.shape
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-2)
    assert float(ref.std()) > 10.0  # a non-degenerate output, so the comparison means something


def test_nst_checkpoint_round_trip_with_metadata(tmp_path, tiny_net):
    meta = CheckpointMetadata(style_image_sha256="ab" * 32, loss_weights={"content": 1.0}, image_size=256,
                              steps=10, vgg_weights="imagenet")
    path = save_checkpoint(tmp_path / "m.pth", tiny_net, meta)
    ckpt = load_checkpoint(path)
    assert ckpt.metadata == meta
    for k, v in tiny_net.state_dict().items():
        assert torch.equal(ckpt.state_dict[k], v)


def test_safetensors_round_trip(tmp_path, tiny_net):
    meta = CheckpointMetadata(steps=3, image_size=64, loss_weights={"style": 1e10})
    path = save_checkpoint(tmp_path / "m.safetensors", tiny_net, meta)
    ckpt = load_checkpoint(path)
    assert ckpt.metadata == meta
    x = torch.rand(1, 3, 32, 32) * 255
    with torch.no_grad():
        torch.testing.assert_close(ckpt.model()(x), tiny_net(x), rtol=0, atol=0)


def test_wrong_architecture_names_file_and_mismatch(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"fc.weight": torch.zeros(10, 4), "fc.bias": torch.zeros(10)}, path)
    with pytest.raises(CheckpointError, match=r"resnet\.pth.*not a TransformerNet.*missing"):
        load_checkpoint(path)


def test_wrong_width_names_parameter_and_shapes(tmp_path):
    sd = TransformerNet().state_dict()
    sd["conv1.conv2d.weight"] = torch.zeros(16, 3, 9, 9)
    path = tmp_path / "narrow.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match=r"narrow\.pth.*conv1\.conv2d\.weight.*\(16, 3, 9, 9\)"):
        load_checkpoint(path)


@pytest.mark.parametrize("content,expected", [(b"", "empty"), (b"\x80\x02garbage" * 50, "cannot load")])
def test_corrupt_or_empty_file_names_file(tmp_path, content, expected):
    path = tmp_path / "broken.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=rf"broken\.pth.*{expected}"):
        load_checkpoint(path)


def test_truncated_checkpoint_is_a_checkpoint_error(tmp_path, checkpoint_path):
    data = checkpoint_path.read_bytes()
    path = tmp_path / "cut.pth"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut\.pth"):
        load_checkpoint(path)


def test_corrupt_safetensors_names_file(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(CheckpointError, match=r"bad\.safetensors.*safetensors"):
        load_checkpoint(path)


def test_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    path = tmp_path / "evil.pth"
    torch.save({"x": Evil()}, path)
    with pytest.raises(CheckpointError, match=r"evil\.pth.*refused"):
        load_checkpoint(path)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path, tiny_net, bad, suffix):
    state = {k: v.clone() for k, v in tiny_net.state_dict().items()}
    state["res3.conv2.conv2d.weight"][1, 2, 0, 0] = bad
    path = save_checkpoint(tmp_path / f"diverged{suffix}", state, CheckpointMetadata(steps=5))
    with pytest.raises(CheckpointError, match=r"diverged\.\w+: parameter res3\.conv2\.conv2d\.weight holds") as info:
        load_checkpoint(path)
    assert info.value.exit_code == 3
    kind = "1 NaN and 0 Inf" if bad != bad else "0 NaN and 1 Inf"
    assert kind in str(info.value)


def test_non_finite_plain_state_dict_is_refused(tmp_path, tiny_net):
    state = {k: v.clone() for k, v in tiny_net.state_dict().items()}
    state["in5.bias"][0] = float("nan")
    torch.save(state, tmp_path / "theirs.pth")  # a pytorch/examples file
    with pytest.raises(CheckpointError, match=r"in5\.bias holds 1 NaN"):
        load_checkpoint(tmp_path / "theirs.pth")
