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
    """The project's random test network (nst_train.samples.vivid_random_net): perturbed norms (a fresh net
    flatters FP16 parity and tiling metrics) and an output spanning 0..255 (a fresh net's clamps to black, which
    would let parity, tiling and thread tests pass whatever the code does)."""
    from nst_train.samples import vivid_random_net

    return vivid_random_net(seed)


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


@pytest.fixture(scope="session")
def tiling_onnx_path(tmp_path_factory, checkpoint_path, onnx_fp32_path):
    """The tiling graph of ``checkpoint_path`` (``nst_export.tiling_graph.tiling_onnx_from_checkpoint``), in a
    folder of its own beside a copy of ``onnx_fp32_path`` (``tiny.onnx`` + ``tiny.tiling.onnx``, each with its
    sidecar: the exact tiling mode's layout). One export per session for every folder's tests."""
    import shutil

    from nst_export.tiling_graph import tiling_onnx_from_checkpoint
    from nst_runtime.sidecar import sidecar_path

    folder = tmp_path_factory.mktemp("tiling")
    for path in (onnx_fp32_path, sidecar_path(onnx_fp32_path)):
        shutil.copy(path, folder / path.name)
    return tiling_onnx_from_checkpoint(checkpoint_path, folder / "tiny.tiling.onnx")
