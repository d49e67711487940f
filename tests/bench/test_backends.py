"""Backends: absent ones say why; sizes parse; the CPU backends run the same network."""

from __future__ import annotations

import numpy as np
import pytest
from nst_bench.backends import FEED_FORWARD, ModelSource, Workload, make_backend
from nst_bench.run import BenchConfig, parse_size
from nst_runtime.errors import UsageError

# the random network's ONNX export is the session's (tests/bench/conftest.py)
pytestmark = pytest.mark.usefixtures("shared_network_export")


@pytest.fixture(scope="module")
def source():
    s = ModelSource(seed=0)
    yield s
    s.close()


def _has_cuda():
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(_has_cuda(), reason="checks the CPU-only skip reasons")
@pytest.mark.parametrize("name", ["torch-fp16", "torch-compile", "ort-fp16", "trt", "trt-fp16"])
def test_gpu_backends_on_cpu_give_a_reason(name, source):
    ok, why = make_backend(name, device="cpu", source=source).available()
    assert not ok and len(why) > 20 and ("cuda" in why.lower() or "gpu" in why.lower())


@pytest.mark.skipif(_has_cuda(), reason="checks the CPU-only skip reasons")
@pytest.mark.parametrize("name", FEED_FORWARD)
def test_cuda_device_without_a_gpu_gives_a_reason(name, source):
    ok, why = make_backend(name, device="cuda", source=source).available()
    assert not ok and why


def test_unknown_backend_and_bad_config():
    with pytest.raises(UsageError, match="choose from"):
        make_backend("tensorflow", device="cpu", source=None)
    with pytest.raises(UsageError):
        BenchConfig(backends=("torch", "nope"))
    with pytest.raises(UsageError):
        BenchConfig(device="tpu")


@pytest.mark.parametrize("text,expected", [("256", (256, 256)), ("1920x1080", (1080, 1920)),
                                           ("64×32", (32, 64))])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["abc", "4", "10x"])
def test_parse_size_rejects(text):
    with pytest.raises(UsageError):
        parse_size(text)


def test_torch_and_ort_e2e_agree_on_cpu(source):
    """Both e2e views return the uint8 NHWC image the deploy contract promises, and the same one."""
    wl = Workload(21, 30, 2)
    outs = {}
    for name in ("torch", "ort"):
        be = make_backend(name, device="cpu", source=source)
        assert be.available() == (True, "")
        be.setup(wl)
        outs[name] = be.step("e2e")()
        be.close()
    for out in outs.values():
        assert out.shape == (2, 21, 30, 3) and out.dtype == np.uint8
    assert np.abs(outs["torch"].astype(int) - outs["ort"].astype(int)).max() <= 1
