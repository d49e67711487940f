"""OpenVINO runner: the backend contract (uint8 NHWC in and out, any size, thread-safe), errors, and
agreement with ONNX Runtime on the same file. The shared contract tests run on it too, through the
``stylizer`` fixture (tests/runtime/conftest.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("openvino", reason="openvino is not installed (pip install 'nst[openvino]')")

from nst_runtime import BackendUnavailableError, ModelFileError, Stylizer, UsageError
from nst_runtime.openvino_backend import CompiledModelFromOnnx, OpenVinoRunner
from nst_runtime.sidecar import TensorSpec, read_sidecar


@pytest.fixture(scope="module")
def runner(vivid_onnx):
    with OpenVinoRunner(CompiledModelFromOnnx(vivid_onnx), sidecar=read_sidecar(vivid_onnx), requests=3) as r:
        yield r


def test_matches_onnxruntime_on_the_same_file(runner, vivid_onnx, make_image):
    with Stylizer.open(vivid_onnx, device="cpu", backend="onnxruntime") as ort:
        for hw in ((37, 50), (64, 64), (9, 13)):
            x = make_image(*hw, seed=hw[1])
            got = runner.infer(x[None])[0]
            want = ort.stylize(x)
            assert want.std() > 20, "degenerate reference"
            assert np.abs(got.astype(int) - want).max() <= 1


def test_batches_and_new_shapes_without_recompiling(runner, make_image):
    compiled = runner._compiled
    xs = np.stack([make_image(24, 40, seed=i) for i in range(3)])
    batch = runner.infer(xs)
    assert batch.shape == xs.shape and batch.dtype == np.uint8
    for i in range(3):
        assert np.abs(batch[i].astype(int) - runner.infer(xs[i:i + 1])[0]).max() <= 1
    for hw in ((8, 8), (17, 91), (128, 36)):
        assert runner.infer(make_image(*hw)[None]).shape == (1, *hw, 3)
    assert runner._compiled is compiled  # one compiled model serves every size


def test_output_is_a_copy_not_the_requests_memory(runner, make_image):
    a_in, b_in = make_image(16, 16, seed=1)[None], make_image(16, 16, seed=2)[None]
    a = runner.infer(a_in)
    a_copy = a.copy()
    runner.infer(b_in)  # reuses the same infer request and its output buffer
    np.testing.assert_array_equal(a, a_copy)


def test_threads_share_a_bounded_pool_of_requests(runner, make_image):
    images = [make_image(12 + i % 5, 20, seed=i)[None] for i in range(24)]
    serial = [runner.infer(x) for x in images]
    with ThreadPoolExecutor(8) as pool:
        parallel = list(pool.map(runner.infer, images))
    for a, b in zip(parallel, serial, strict=True):
        np.testing.assert_array_equal(a, b)
    assert 1 <= runner._pool.created <= runner.requests


def test_inactive_and_closed_runner_refuse_calls(vivid_onnx):
    r = OpenVinoRunner(CompiledModelFromOnnx(vivid_onnx), sidecar=read_sidecar(vivid_onnx))
    with pytest.raises(UsageError, match="not active"):
        r.infer(np.zeros((1, 8, 8, 3), np.uint8))
    r.activate()
    r.close()
    r.close()  # idempotent
    with pytest.raises(UsageError, match="not active"):
        r.infer(np.zeros((1, 8, 8, 3), np.uint8))


def test_sidecar_that_names_other_tensors_is_refused(vivid_onnx):
    import dataclasses

    meta = dataclasses.replace(read_sidecar(vivid_onnx), input=TensorSpec("image"))
    with pytest.raises(ModelFileError, match=r"the sidecar says \[?'image'"):
        OpenVinoRunner(CompiledModelFromOnnx(vivid_onnx), sidecar=meta).activate()


def test_bad_options_are_usage_errors(vivid_onnx):
    with pytest.raises(UsageError, match="threads=0"):
        CompiledModelFromOnnx(vivid_onnx, threads=0)
    with pytest.raises(UsageError, match="requests=0"):
        OpenVinoRunner(CompiledModelFromOnnx(vivid_onnx), sidecar=read_sidecar(vivid_onnx), requests=0)


def test_threads_option_reaches_openvino(vivid_onnx):
    loader = CompiledModelFromOnnx(vivid_onnx, threads=1)
    assert int(loader().get_property("INFERENCE_NUM_THREADS")) == 1


def test_unknown_device_is_a_backend_error(vivid_onnx):
    with pytest.raises(BackendUnavailableError, match="no NPU9 device"):
        CompiledModelFromOnnx(vivid_onnx, device="NPU9")()


def test_missing_openvino_says_how_to_install_it(vivid_onnx):
    # a fresh interpreter where `import openvino` fails: the explicit backend names the extra to install
    code = (
        "import sys, json\n"
        "sys.modules['openvino'] = None\n"
        "from nst_runtime.openvino_backend import CompiledModelFromOnnx\n"
        "from nst_runtime.errors import BackendUnavailableError\n"
        "try:\n"
        "    CompiledModelFromOnnx(sys.argv[1])()\n"
        "except BackendUnavailableError as exc:\n"
        "    print(json.dumps(str(exc)))\n"
    )
    res = subprocess.run([sys.executable, "-c", code, str(vivid_onnx)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "pip install 'nst[openvino]'" in json.loads(res.stdout)


def test_stylizer_on_openvino_uses_the_threads_option(vivid_onnx, make_image):
    with Stylizer.open(vivid_onnx, device="cpu", backend="openvino", intra_op_threads=1) as s:
        assert s.backend == "openvino"
        assert s.stylize(make_image(20, 30)).shape == (20, 30, 3)
