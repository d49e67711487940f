"""Shared fixtures. Every test here runs on CPU with a RANDOMLY INITIALISED VGG-16 (the ImageNet weights cannot
be downloaded in CI): losses and gradients are real, stylization quality is not measured anywhere in the tests."""

from __future__ import annotations

import importlib.util
import warnings

import pytest


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU; this machine has none")
    skip_trt = pytest.mark.skip(reason="needs the tensorrt package and a GPU; `import tensorrt` fails here")
    has_trt = importlib.util.find_spec("tensorrt") is not None and _has_cuda()
    for item in items:
        # markers, not keywords: a parametrize id such as [gpu] is a keyword too
        if item.get_closest_marker("gpu") is not None and not _has_cuda():
            item.add_marker(skip_gpu)
        if item.get_closest_marker("tensorrt") is not None and not has_trt:
            item.add_marker(skip_trt)


@pytest.fixture(scope="session")
def random_vgg():
    """VGG-16 of the real shape with random weights (the warning it raises is expected here)."""
    from nst_train.vgg import load_vgg16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_vgg16("random")


def _seeded_net(seed: int = 0):
    import torch
    from nst_train.model import TransformerNet

    torch.manual_seed(seed)
    net = TransformerNet().eval()
    # Random init leaves every InstanceNorm affine at (1, 0); perturb them so the test network is less
    # degenerate than a fresh one (a fresh net flatters FP16 parity and tiling metrics). A fresh net's
    # output also sits near 0 (93% of uint8 pixels clamp to 0), which would let parity, tiling and thread
    # tests pass whatever the code does: scale the last convolution so the output spans 0..255 (mean ~128)
    # like a trained network's.
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.split(".")[-2].startswith("in"):
                p.add_(torch.randn_like(p) * 0.3)
        net.deconv3.conv2d.weight.mul_(180.0)
        net.deconv3.conv2d.bias.mul_(180.0).add_(127.5)
    return net


@pytest.fixture(scope="session")
def tiny_net():
    """A seeded TransformerNet (random weights, perturbed norms, output spanning 0..255; not trained)."""
    return _seeded_net()


@pytest.fixture(scope="session")
def checkpoint_path(tmp_path_factory, tiny_net):
    """An nst checkpoint of ``tiny_net`` on disk."""
    from nst_train.checkpoint import CheckpointMetadata, save_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    return save_checkpoint(path, tiny_net, CheckpointMetadata(steps=0))


@pytest.fixture(scope="session")
def onnx_fp32_path(tmp_path_factory, checkpoint_path):
    """FP32 ONNX (uint8 NHWC contract, dynamic N/H/W) with its sidecar, exported from ``checkpoint_path``.

    Owned by the export stage: it must go through the same public function ``nst-export`` uses."""
    from nst_export.onnx_export import onnx_from_checkpoint

    out = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    return onnx_from_checkpoint(checkpoint_path, out)


@pytest.fixture(scope="session")
def onnx_fp16_path(tmp_path_factory, onnx_fp32_path, checkpoint_path):
    """FP16 ONNX (convolutions FP16, InstanceNorm and I/O FP32) with its sidecar, made from ``onnx_fp32_path``
    by the same public function ``nst-export --fp16`` uses, parity-gated against the PyTorch model."""
    from nst_export.fp16 import fp16_onnx_from_onnx

    out = tmp_path_factory.mktemp("onnx16") / "tiny.fp16.onnx"
    return fp16_onnx_from_onnx(onnx_fp32_path, out, checkpoint=checkpoint_path)
