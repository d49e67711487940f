"""The one table of which backend runs which artifact on which device (nst_runtime.backends)."""

from __future__ import annotations

import importlib.util

import pytest
from nst_runtime import BackendUnavailableError, UsageError
from nst_runtime import backends as B


@pytest.fixture
def machine(monkeypatch):
    """Pretend-machine: which packages exist, the CPU architecture, ONNX Runtime's GPU providers."""
    state = {"modules": {"onnxruntime", "openvino"}, "arch": "x86_64", "gpu_providers": []}

    def find_spec(name, *a, **k):
        return object() if name in state["modules"] else None

    monkeypatch.setattr(B.importlib.util, "find_spec", find_spec)
    monkeypatch.setattr(B.platform, "machine", lambda: state["arch"])
    monkeypatch.setattr(B, "_gpu_providers", lambda: list(state["gpu_providers"]))
    return state


def test_cpu_prefers_openvino_on_x86_when_installed(machine):
    choice = B.choose_backend("onnx", device="cpu")
    assert (choice.backend, choice.place) == ("openvino", "cpu")
    assert [c.backend for c in choice.candidates] == ["openvino", "onnxruntime"]


def test_cpu_without_openvino_or_off_x86_uses_onnxruntime(machine):
    machine["modules"].discard("openvino")
    choice = B.choose_backend("onnx", device="cpu")
    assert choice.backend == "onnxruntime"
    assert "not installed" in choice.candidates[0].reason and "nst[openvino]" in choice.summary()
    machine["modules"].add("openvino")
    machine["arch"] = "aarch64"
    assert B.choose_backend("onnx", device="cpu").backend == "onnxruntime"


def test_gpu_rows_come_first_when_a_gpu_provider_exists(machine):
    machine["gpu_providers"] = ["CUDAExecutionProvider"]
    choice = B.choose_backend("onnx", device="auto")
    assert (choice.backend, choice.place) == ("onnxruntime", "cuda")
    # without the GPU provider, auto falls through to the CPU rows in order
    machine["gpu_providers"] = []
    choice = B.choose_backend("onnx", device=0)
    assert (choice.backend, choice.place) == ("openvino", "cpu")
    assert [(c.backend, c.place) for c in choice.candidates] == [
        ("onnxruntime", "cuda"), ("openvino", "cpu"), ("onnxruntime", "cpu")]


def test_engines_go_to_tensorrt_and_nowhere_else(machine):
    machine["modules"].add("tensorrt")
    assert B.choose_backend("tensorrt", device="auto").backend == "tensorrt"
    machine["modules"].discard("tensorrt")
    with pytest.raises(BackendUnavailableError, match="tensorrt package is not installed"):
        B.choose_backend("tensorrt", device="auto")
    for name in ("onnxruntime", "openvino"):
        with pytest.raises(UsageError, match=f"runs only on the tensorrt backend, not {name}"):
            B.choose_backend("tensorrt", requested=name)


def test_explicit_cuda_refuses_instead_of_falling_back_to_the_cpu(machine):
    with pytest.raises(BackendUnavailableError, match="no TensorRT/CUDA provider"):
        B.choose_backend("onnx", device="cuda:1")
    with pytest.raises(UsageError, match="openvino backend runs on the CPU"):
        B.choose_backend("onnx", device="cuda", requested="openvino")
    with pytest.raises(UsageError, match="tensorrt backend runs engines"):
        B.choose_backend("onnx", requested="tensorrt")


def test_explicit_backend_that_is_missing_says_how_to_install_it(machine):
    machine["modules"].discard("openvino")
    with pytest.raises(BackendUnavailableError, match=r"pip install 'nst\[openvino\]'"):
        B.choose_backend("onnx", device="cpu", requested="openvino")
    with pytest.raises(UsageError, match="expected one of"):
        B.choose_backend("onnx", requested="tflite")


def test_cpu_only_providers_keep_auto_on_the_cpu(machine):
    machine["gpu_providers"] = ["CUDAExecutionProvider"]
    choice = B.choose_backend("onnx", device="auto", providers=["CPUExecutionProvider"])
    assert choice.place == "cpu"


def test_the_table_is_documented_in_order():
    # the module docstring's table and PREFERENCE must not drift apart
    doc_rows = [line.split()[:3] for line in B.__doc__.splitlines() if line.strip()[:1].isdigit()]
    assert [(b, a) for _, b, a in doc_rows] == [
        (e.backend, "engine" if e.artifact == "tensorrt" else "onnx") for e in B.PREFERENCE]


def test_backends_present_matches_this_machine():
    present = B.backends_present("onnx", place="cpu")
    assert present[-1] == "onnxruntime"
    assert ("openvino" in present) == (importlib.util.find_spec("openvino") is not None
                                       and B.platform.machine().lower() in B.X86_MACHINES)


def test_stylizer_reports_the_chosen_backend(vivid_onnx, caplog):
    import logging

    from nst_runtime import Stylizer

    with caplog.at_level(logging.INFO, logger="nst_runtime.backends"), Stylizer.open(vivid_onnx, device="cpu") as s:
        name = s.backend
    assert name == B.backends_present("onnx", place="cpu")[0]
    assert f"backend {name} on cpu" in caplog.text and "order:" in caplog.text


@pytest.mark.parametrize("backend", ["auto", "tensorrt"])
def test_an_engine_on_the_cpu_is_refused_by_the_backend_table(tmp_path, backend):
    """Stylizer.open has no check of its own for this: choose_backend refuses it before any TensorRT code."""
    import hashlib
    import sys

    from nst_runtime import Stylizer
    from nst_runtime.errors import NstError
    from nst_runtime.sidecar import Sidecar, sidecar_path

    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan" * 64)
    sidecar_path(engine).write_text(Sidecar(kind="tensorrt", precision="fp16", tensorrt_version="10.16.1",
                                            artifact_sha256=hashlib.sha256(engine.read_bytes()).hexdigest()).to_json())
    with pytest.raises(NstError, match=r"GPU|on cpu"):
        Stylizer.open(engine, device="cpu", backend=backend)
    assert "tensorrt" not in sys.modules


def test_one_device_mapping_and_one_name_rule():
    from nst_runtime.cli import open_device
    from nst_runtime.devices import parse_device
    from nst_runtime.models.catalog import NAME_RE
    from nst_serve import config

    assert [open_device(parse_device(d)) for d in ("cpu", "auto", "cuda", "cuda:1")] == ["cpu", 0, "cuda:0", "cuda:1"]
    assert config._NAME_RE is NAME_RE
    import inspect

    from nst_runtime import info

    assert "backend_present" in inspect.getsource(info) and "_present" not in inspect.getsource(info).replace(
        "backend_present", "")
