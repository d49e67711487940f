"""TensorRT backend: the GPU-free logic (buffers, profile checks, context pool) and the API names used."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from nst_runtime import UsageError
from nst_runtime.pool import ContextPool
from nst_runtime.sidecar import ShapeProfile, Sidecar
from nst_runtime.tensorrt_backend import check_in_profile, plan_buffers

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


# ----------------------------------------------------------------------------------------- version rules
@pytest.mark.parametrize(("built", "excluded", "installed", "ok"), [
    ("10.8.0.43", False, "10.16.1.11", True),     # lean runtime embedded: later 10.x runs it
    ("10.8.0.43", False, "10.8.0.43", True),
    ("10.16.1.11", False, "10.8.0.43", False),    # never an older release
    ("10.16.1.11", False, "11.4.0.106", False),   # never another major
    ("10.8.0.43", True, "10.16.1.11", False),     # lean runtime excluded: only the building version
    ("10.8.0.43", True, "10.8.0.43", True),
    ("10.8.0.43", True, "10.9.0.34", False),
])
def test_version_compatible_rule_follows_tensorrt(built, excluded, installed, ok):
    from nst_runtime.artifact import check_tensorrt_version
    from nst_runtime.errors import BackendUnavailableError

    meta = Sidecar(kind="tensorrt", precision="fp16", tensorrt_version=built, version_compatible=True,
                   exclude_lean_runtime=excluded)
    if ok:
        check_tensorrt_version(Path("m.engine"), meta, installed)
    else:
        with pytest.raises(BackendUnavailableError, match=f"this machine has {installed}") as info:
            check_tensorrt_version(Path("m.engine"), meta, installed)
        if excluded:
            assert "excluded" in str(info.value) and "exactly TensorRT" in str(info.value)


def test_host_code_policy_from_the_sidecar():
    from nst_runtime.artifact import engine_needs_host_code
    from nst_runtime.errors import ModelFileError

    embedded = Sidecar(kind="tensorrt", precision="fp16", version_compatible=True)
    excluded = Sidecar(kind="tensorrt", precision="fp16", version_compatible=True, exclude_lean_runtime=True)
    plain = Sidecar(kind="tensorrt", precision="fp16")
    with pytest.raises(ModelFileError, match="executable code"):
        engine_needs_host_code(Path("m.engine"), embedded, allow_engine_host_code=False)
    assert engine_needs_host_code(Path("m.engine"), embedded, allow_engine_host_code=True) is True
    for meta in (excluded, plain):
        assert engine_needs_host_code(Path("m.engine"), meta, allow_engine_host_code=False) is False
        assert engine_needs_host_code(Path("m.engine"), meta, allow_engine_host_code=True) is False


# ----------------------------------------------------------------------------------------- CUDA graph decisions
def test_graph_planner_captures_after_a_plain_run_and_replays_only_at_the_captured_shape():
    from nst_runtime.tensorrt_backend import GraphPlanner

    p = GraphPlanner(enabled=True)
    a, b = (1, 64, 64), (1, 32, 48)
    actions = []
    graph_id = 0
    for shape in (a, a, a, b, a, a, b, b):
        step = p.plan(shape)
        actions.append((step.set_shape, step.action, step.drop))
        if step.action == "capture":
            graph_id += 1
            p.captured(shape, f"graph{graph_id}")
        p.ran(shape)
    assert actions == [
        (True, "enqueue", None),       # new shape: set it, plain run (TensorRT's per-shape setup)
        (False, "capture", None),      # same shape again: capture
        (False, "replay", None),
        (True, "enqueue", "graph1"),   # shape changed: the graph captured at A is dropped, never replayed
        (True, "enqueue", None),
        (False, "capture", None),      # recaptured at A after the context ran A plainly
        (True, "enqueue", "graph2"),
        (False, "capture", None),
    ]


def test_graph_planner_remembers_failed_captures_and_can_be_off():
    from nst_runtime.tensorrt_backend import GraphPlanner

    p = GraphPlanner(enabled=True)
    a = (1, 16, 16)
    p.ran(a)
    assert p.plan(a).action == "capture"
    p.capture_failed(a)
    assert [p.plan(a).action for _ in range(3)] == ["enqueue"] * 3
    off = GraphPlanner(enabled=False)
    off.ran(a)
    assert off.plan(a).action == "enqueue" and off.plan((1, 8, 8)).set_shape


def test_pool_prefers_a_context_already_at_the_shape_and_close_waits():
    items = iter(range(100))
    pool = ContextPool(lambda: {"id": next(items), "shape": None}, size=2)
    with pool.acquire() as first:
        first["shape"] = "A"
    with pool.acquire(prefer=lambda s: s["shape"] == "B") as second:  # none at B: a new one, not first
        assert second["id"] != first["id"]
        second["shape"] = "B"
    for _ in range(3):
        with pool.acquire(prefer=lambda s: s["shape"] == "A") as got:
            assert got is first
    held = pool.acquire()
    slot = held.__enter__()
    closed = threading.Event()
    destroyed = []
    closer = threading.Thread(target=lambda: (pool.close(destroyed.append), closed.set()))
    closer.start()
    assert not closed.wait(0.3) and destroyed == []  # waits for the call in flight
    held.__exit__(None, None, None)
    assert closed.wait(5) and {d["id"] for d in destroyed} == {first["id"], second["id"]} and slot in destroyed


def test_the_pool_creates_outside_its_lock_and_a_failed_creation_frees_its_place():
    import threading

    gate, started = threading.Event(), threading.Event()
    calls = {"n": 0}

    def factory():
        calls["n"] += 1
        if calls["n"] == 1:
            return "first"
        if calls["n"] == 2:
            started.set()
            gate.wait(10)  # a slow creation (GPU allocations)
            raise RuntimeError("cudaMalloc failed")
        return "third"

    pool = ContextPool(factory, size=2)
    with pool.acquire():
        pass  # "first" is idle now
    errors = []

    def slow():
        try:
            with pool.acquire(prefer=lambda item: False):
                pass
        except RuntimeError as exc:
            errors.append(exc)

    t = threading.Thread(target=slow)
    t.start()
    assert started.wait(10)
    took = []
    other = threading.Thread(target=lambda: took.append(pool._take(None)))
    other.start()
    other.join(2)
    assert took == ["first"], "an idle object waited behind another thread's creation"
    gate.set()
    t.join(10)
    assert len(errors) == 1 and pool.created == 1 and pool.in_use == 1
    with pool.acquire(prefer=lambda item: False) as item:
        assert item == "third"  # the failed creation's place was given back
    assert pool.created == 2
