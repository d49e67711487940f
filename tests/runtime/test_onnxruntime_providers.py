"""ONNX Runtime providers on GPU machines, with fake provider lists (no GPU here).

Rules: CUDA → CPU by default (TensorRT's provider never silently: it builds engines inside run()); TensorRT's
provider only when named, then with a profile from the tile limits and an engine cache folder; CUDA's
cudnn_conv_algo_search HEURISTIC unless told otherwise; the device vocabulary of nst_runtime.devices.
"""

from __future__ import annotations

import types

import numpy as np
import pytest
from nst_runtime.errors import BackendUnavailableError, UsageError
from nst_runtime.onnxruntime_backend import provider_names, select_providers, tensorrt_ep_profile

ALL = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
CPU_ONLY = ["CPUExecutionProvider"]


def _options(chosen, name):
    return next(p[1] for p in chosen if isinstance(p, tuple) and p[0] == name)


def test_default_is_cuda_then_cpu_never_tensorrt_silently():
    chosen = select_providers(ALL)
    assert provider_names(chosen) == ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_cuda_conv_algo_search_defaults_to_heuristic_and_can_be_changed():
    assert _options(select_providers(ALL), "CUDAExecutionProvider") == {
        "device_id": 0, "cudnn_conv_algo_search": "HEURISTIC"}
    chosen = select_providers(ALL, device="cuda:1", cudnn_conv_algo_search="exhaustive")
    assert _options(chosen, "CUDAExecutionProvider") == {"device_id": 1, "cudnn_conv_algo_search": "EXHAUSTIVE"}
    with pytest.raises(UsageError, match="HEURISTIC"):
        select_providers(ALL, cudnn_conv_algo_search="FASTEST")


def test_tensorrt_provider_only_when_asked_with_profile_and_cache(tmp_path):
    profile = tensorrt_ep_profile(tile=512, batch_size=2, min_size=8)
    chosen = select_providers(ALL, requested=["TensorrtExecutionProvider", "CUDAExecutionProvider"],
                              tensorrt_profile=profile, tensorrt_cache_dir=tmp_path / "cache", device="cuda:0")
    assert provider_names(chosen) == ALL
    opts = _options(chosen, "TensorrtExecutionProvider")
    assert opts["trt_profile_min_shapes"] == "input:1x8x8x3"
    assert opts["trt_profile_opt_shapes"] == "input:1x512x512x3"
    assert opts["trt_profile_max_shapes"] == "input:2x512x512x3"
    assert opts["trt_engine_cache_enable"] == "True" and opts["trt_engine_cache_path"] == str(tmp_path / "cache")
    # named without a profile: still gets one (never the unbounded shape-by-shape rebuilds)
    bare = _options(select_providers(ALL, requested=["TensorrtExecutionProvider"]), "TensorrtExecutionProvider")
    assert bare["trt_profile_max_shapes"].startswith("input:1x") and bare["trt_engine_cache_path"]


@pytest.mark.parametrize(("device", "available", "expected"), [
    ("auto", ALL, ["CUDAExecutionProvider", "CPUExecutionProvider"]),
    ("auto", CPU_ONLY, ["CPUExecutionProvider"]),
    (None, CPU_ONLY, ["CPUExecutionProvider"]),
    ("cpu", ALL, ["CPUExecutionProvider"]),
    ("cuda", ALL, ["CUDAExecutionProvider", "CPUExecutionProvider"]),
    (1, ALL, ["CUDAExecutionProvider", "CPUExecutionProvider"]),   # an int is still accepted: cuda:1
])
def test_device_vocabulary(device, available, expected):
    chosen = select_providers(available, device=device)
    assert provider_names(chosen) == expected
    if device == 1:
        assert _options(chosen, "CUDAExecutionProvider")["device_id"] == 1


def test_cuda_device_requires_a_gpu_provider_and_says_how_to_get_one():
    for device in ("cuda", "cuda:1", 0):
        with pytest.raises(BackendUnavailableError, match=r"onnxruntime-gpu.*--device cpu"):
            select_providers(CPU_ONLY, device=device)
    # where a CPU fallback is acceptable (the tiling graph of an engine), it says so instead of failing
    assert provider_names(select_providers(CPU_ONLY, device="cuda:1", gpu_required=False)) == CPU_ONLY
    with pytest.raises(UsageError, match="cuda:N"):
        select_providers(ALL, device="gpu0")


def test_requested_providers_must_exist():
    with pytest.raises(BackendUnavailableError, match="onnxruntime-gpu"):
        select_providers(CPU_ONLY, requested=["CUDAExecutionProvider"])


class _FakeOrt:
    """onnxruntime with a GPU build's provider list; sessions echo their input and record their providers."""

    def __init__(self, available):
        self.available = available
        self.sessions = []
        outer = self

        class Session:
            def __init__(self, path, sess_options=None, providers=None):
                self.providers = providers
                outer.sessions.append(self)

            def get_inputs(self):
                return [types.SimpleNamespace(name="input", type="tensor(uint8)")]

            def get_outputs(self):
                return [types.SimpleNamespace(name="output")]

            def get_providers(self):
                return provider_names(self.providers)

            def run(self, names, feed):
                return [feed["input"].copy()]

        self.InferenceSession = Session
        self.SessionOptions = lambda: types.SimpleNamespace()

    def get_available_providers(self):
        return list(self.available)


@pytest.fixture
def fake_gpu_ort(monkeypatch):
    from nst_runtime import onnxruntime_backend

    fake = _FakeOrt(ALL)
    monkeypatch.setattr(onnxruntime_backend, "_ort", lambda: fake)
    return fake


def test_stylizer_open_passes_the_gpu_options_through(fake_gpu_ort, onnx_fp32_path, tmp_path):
    from nst_runtime import Stylizer

    with Stylizer.open(onnx_fp32_path, device="cuda:1", cudnn_conv_algo_search="EXHAUSTIVE") as s:
        providers = fake_gpu_ort.sessions[-1].providers
        assert provider_names(providers) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
        assert _options(providers, "CUDAExecutionProvider") == {"device_id": 1,
                                                                "cudnn_conv_algo_search": "EXHAUSTIVE"}
        assert s._active().max_shape is None
    with Stylizer.open(onnx_fp32_path, providers=["TensorrtExecutionProvider", "CUDAExecutionProvider"],
                       tile=256, batch_size=2, tensorrt_cache_dir=tmp_path / "trt") as s:
        opts = _options(fake_gpu_ort.sessions[-1].providers, "TensorrtExecutionProvider")
        assert opts["trt_profile_max_shapes"] == "input:2x256x256x3"
        assert (tmp_path / "trt").is_dir()
        assert s._active().max_shape == (2, 256, 256)  # larger images tile instead of rebuilding engines
        x = np.random.default_rng(0).integers(0, 256, (100, 120, 3), np.uint8)
        np.testing.assert_array_equal(s.stylize(x), x)  # the fake session echoes


class _Stop(Exception):
    pass


@pytest.mark.parametrize(("argv", "expected"), [
    ([], dict(allow_engine_host_code=False, cudnn_conv_algo_search="HEURISTIC", device=0)),
    (["--allow-engine-host-code", "--cudnn-conv-algo-search", "exhaustive", "--device", "cuda:1"],
     dict(allow_engine_host_code=True, cudnn_conv_algo_search="EXHAUSTIVE", device="cuda:1")),
    (["--device", "cpu"], dict(device="cpu")),
])
def test_nst_stylize_passes_gpu_and_trust_options_to_the_stylizer(tmp_path, monkeypatch, argv, expected):
    """What nst-stylize hands Stylizer.open: --allow-engine-host-code (off unless given), the conv search,
    and --device cuda:N as a requirement (not a GPU index that may fall back to the CPU)."""
    from nst_runtime.cli import main
    from nst_runtime.stylizer import Stylizer
    from PIL import Image

    seen = {}

    def fake_open(cls, model, **kwargs):
        seen.update(kwargs)
        raise _Stop

    monkeypatch.setattr(Stylizer, "open", classmethod(fake_open))
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    (tmp_path / "m.onnx").write_bytes(b"onnx")
    with pytest.raises(_Stop):
        main([str(tmp_path / "m.onnx"), str(tmp_path / "x.png"), "-o", str(tmp_path / "out"), *argv])
    for key, value in expected.items():
        assert seen[key] == value, key


def test_nst_stylize_help_says_host_code_runs_code_from_the_file(capsys):
    from nst_runtime.cli import main

    assert main(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--allow-engine-host-code" in text and "RUNS CODE FROM THE FILE" in text
    assert "--cudnn-conv-algo-search" in text


def test_infer_reads_the_session_once_so_a_concurrent_close_is_a_usage_error(vivid_onnx):
    """close() in another thread between a check and a use of the session must not become AttributeError."""
    import numpy as np
    from nst_runtime.errors import UsageError
    from nst_runtime.onnxruntime_backend import OnnxRuntimeRunner, SessionFromOnnx
    from nst_runtime.sidecar import read_sidecar

    runner = OnnxRuntimeRunner(SessionFromOnnx(vivid_onnx, providers=["CPUExecutionProvider"]),
                               sidecar=read_sidecar(vivid_onnx)).activate()
    session = runner._session

    class ClosedAfterFirstRead(OnnxRuntimeRunner):
        reads = 0

        @property
        def _session(self):
            type(self).reads += 1
            return session if type(self).reads == 1 else None

        @_session.setter
        def _session(self, value):
            pass

    runner.__class__ = ClosedAfterFirstRead
    out = runner.infer(np.zeros((1, 16, 16, 3), np.uint8))  # the one read saw an open session: it runs
    assert out.shape == (1, 16, 16, 3)
    with pytest.raises(UsageError, match="closed"):
        runner.infer(np.zeros((1, 16, 16, 3), np.uint8))
