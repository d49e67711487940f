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
        if "gpu" in item.keywords and not _has_cuda():
            item.add_marker(skip_gpu)
        if "tensorrt" in item.keywords and not has_trt:
            item.add_marker(skip_trt)


@pytest.fixture(scope="session")
def random_vgg():
    """VGG-16 of the real shape with random weights (the warning it raises is expected here)."""
    from nst_train.vgg import load_vgg16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_vgg16("random")
