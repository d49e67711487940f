"""TensorRT backend: the GPU-free logic (buffers, profile checks, context pool) and the API names used."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from nst_runtime import UsageError
from nst_runtime.sidecar import ShapeProfile
from nst_runtime.tensorrt_backend import ContextPool, check_in_profile, plan_buffers

PROFILE = ShapeProfile(min=(1, 8, 8), opt=(1, 512, 512), max=(4, 1088, 1920))
RUNTIME = Path(__file__).resolve().parents[2] / "runtime" / "nst_runtime"


def test_buffers_sized_once_for_the_profile_max():
    plan = plan_buffers(PROFILE)
    assert plan.max_shape == (4, 1088, 1920)
    assert plan.input_bytes == plan.output_bytes == 4 * 1088 * 1920 * 3


@pytest.mark.parametrize(("shape", "ok"), [((1, 8, 8, 3), True), ((4, 1088, 1920, 3), True),
                                           ((5, 64, 64, 3), False), ((1, 7, 64, 3), False),
                                           ((1, 64, 1921, 3), False), ((1, 64, 64, 4), False)])
def test_shape_checked_against_profile(shape, ok):
    if ok:
        check_in_profile(shape, PROFILE)
    else:
        with pytest.raises(UsageError, match=r"expected|outside"):
            check_in_profile(shape, PROFILE)


def test_pool_never_shares_a_context_and_creates_at_most_size():
    made = []
    pool = ContextPool(lambda: made.append(object()) or made[-1], size=3)
    users: dict[int, int] = {}
    clash = []
    lock = threading.Lock()

    def work():
        for _ in range(20):
            with pool.acquire() as ctx:
                with lock:
                    users[id(ctx)] = users.get(id(ctx), 0) + 1
                    if users[id(ctx)] > 1:
                        clash.append(ctx)
                time.sleep(0.0005)
                with lock:
                    users[id(ctx)] -= 1

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not clash and 1 <= pool.created <= 3
    destroyed = []
    pool.close(destroyed.append)
    assert len(destroyed) == pool.size or len(destroyed) == len(made)
    with pytest.raises(UsageError, match="closed"), pool.acquire():
        pass


FORBIDDEN = ("execute_async_v2", "get_binding_index", "get_binding_shape", "binding_is_input", "num_bindings",
             "BuilderFlag.FP16", "BuilderFlag.INT8", "set_binding_shape", "pycuda")


def test_runtime_uses_no_removed_tensorrt_api():
    for path in RUNTIME.glob("*.py"):
        code = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))
        code = re.sub(r'"""[\s\S]*?"""', "", code)
        for name in FORBIDDEN:
            assert name not in code, f"{path.name} uses {name}, absent from TensorRT 10/11"


@pytest.mark.tensorrt
def test_engine_matches_its_onnx_on_gpu():  # runs only where TensorRT and a GPU exist
    import os

    from nst_runtime import Stylizer
    from nst_runtime.artifact import onnx_fallback_for

    engine = os.environ.get("NST_TEST_ENGINE")
    if not engine:
        pytest.skip("set NST_TEST_ENGINE to an engine built by nst-export (its ONNX file beside it)")
    onnx = onnx_fallback_for(Path(engine))
    x = np.random.default_rng(0).integers(0, 256, (67, 101, 3), np.uint8)
    with Stylizer.open(engine, cuda_graphs=True) as trt, Stylizer.open(onnx, device="cpu") as ort:
        a, b, again = trt.stylize(x), ort.stylize(x), trt.stylize(x)
    np.testing.assert_array_equal(a, again)  # replayed CUDA graph == captured run
    assert np.abs(a.astype(int) - b).mean() < 2.0
