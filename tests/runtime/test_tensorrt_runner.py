"""TensorRTRunner and EngineFromPath driven through fake cuda-python and TensorRT objects, on CPU.

The fakes model the parts of CUDA and TensorRT whose misuse breaks a first GPU run:

* ``execute_async_v3`` does TensorRT's per-shape resource update on the host when it is called (also while a
  stream is being captured: the update is host work, not part of the graph), and enqueues a kernel that
  bakes the input shape; a kernel that runs while the context's resources are for another shape writes
  garbage, as a stale CUDA graph would on a GPU;
* a capture can fail (``fail_capture``): ``execute_async_v3`` returns False and the capture is invalidated;
* the current device is per thread; frees check that the owning device is current and that no call is using
  the buffers.
"""

from __future__ import annotations

import ctypes
import hashlib
import threading
import types
from pathlib import Path

import numpy as np
import pytest
from nst_runtime.errors import ModelFileError
from nst_runtime.sidecar import ShapeProfile, Sidecar

PROFILE = ShapeProfile(min=(1, 8, 8), opt=(1, 16, 16), max=(2, 32, 32))
OK = "ok"


class _Err:
    cudaSuccess = OK
    cudaErrorStreamCaptureInvalidated = "capture-invalidated"


class FakeStream:
    def __init__(self, n: int) -> None:
        self.n = n
        self.capturing = False
        self.captured: list = []
        self.invalidated = False

    def __int__(self) -> int:
        return 1000 + self.n


class FakeGraph:
    def __init__(self, ops: list) -> None:
        self.ops = ops

    def __int__(self) -> int:
        return id(self)


class FakeCudart:
    """The subset of ``cuda.bindings.runtime`` the runner uses, on host memory."""

    cudaError_t = _Err
    cudaMemcpyKind = types.SimpleNamespace(cudaMemcpyHostToDevice="h2d", cudaMemcpyDeviceToHost="d2h")
    cudaStreamCaptureMode = types.SimpleNamespace(cudaStreamCaptureModeThreadLocal="thread-local")

    def __init__(self, devices: int = 2) -> None:
        self.devices = devices
        self.local = threading.local()
        self.buffers: dict[int, tuple[ctypes.Array, int]] = {}  # ptr -> (buffer, device)
        self.busy: set[int] = set()  # device pointers a running kernel is using
        self.log: list[tuple] = []
        self.pending_error = None
        self.streams = 0
        self.lock = threading.Lock()

    # --- device and memory
    def current(self) -> int:
        return getattr(self.local, "device", 0)

    def cudaGetDeviceCount(self):
        return OK, self.devices

    def cudaSetDevice(self, device):
        self.local.device = device
        self.log.append(("set_device", threading.get_ident(), device))
        return (OK,)

    def cudaGetDeviceProperties(self, device):
        return OK, types.SimpleNamespace(name=b"Fake GPU\x00", major=9, minor=0)

    def _alloc(self, nbytes):
        buf = ctypes.create_string_buffer(nbytes)
        ptr = ctypes.addressof(buf)
        self.buffers[ptr] = (buf, self.current())
        return OK, ptr

    cudaMalloc = _alloc
    cudaMallocHost = _alloc

    def _free(self, ptr):
        _, device = self.buffers.pop(ptr)
        self.log.append(("free", threading.get_ident(), ptr, device == self.current(), ptr in self.busy))
        return (OK,)

    cudaFree = _free
    cudaFreeHost = _free

    def cudaStreamCreate(self):
        self.streams += 1
        return OK, FakeStream(self.streams)

    def cudaStreamDestroy(self, stream):
        return (OK,)

    def cudaStreamSynchronize(self, stream):
        return (OK,)

    # --- work on a stream: run now, or record while capturing
    def submit(self, stream, op):
        if stream.capturing:
            stream.captured.append(op)
        else:
            op()

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):
        self.submit(stream, lambda: ctypes.memmove(dst, src, nbytes))
        return (OK,)

    def cudaStreamBeginCapture(self, stream, mode):
        stream.capturing, stream.captured, stream.invalidated = True, [], False
        self.log.append(("begin_capture",))
        return (OK,)

    def cudaStreamEndCapture(self, stream):
        stream.capturing = False
        self.log.append(("end_capture",))
        if stream.invalidated:
            self.pending_error = _Err.cudaErrorStreamCaptureInvalidated
            return _Err.cudaErrorStreamCaptureInvalidated, None
        return OK, FakeGraph(stream.captured)

    def cudaGraphInstantiate(self, graph, flags):
        return OK, FakeGraph(graph.ops)

    def cudaGraphLaunch(self, exec_, stream):
        self.log.append(("launch",))
        for op in exec_.ops:
            op()
        return (OK,)

    def cudaGraphExecDestroy(self, exec_):
        return (OK,)

    def cudaGraphDestroy(self, graph):
        self.log.append(("graph_destroy",))
        return (OK,)

    def cudaGetLastError(self):
        err, self.pending_error = self.pending_error or OK, None
        self.log.append(("get_last_error",))
        return (err,)

    def cudaGetErrorName(self, err):
        return OK, str(err).encode()


class FakeContext:
    """An execution context: output = 255 - input, computed by a kernel that bakes the shape it was enqueued
    with and needs the context's shape-dependent resources to match it."""

    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.shape = None
        self.resources_shape = None
        self.addresses: dict[str, int] = {}
        self.executes = 0

    def set_input_shape(self, name, shape):
        self.shape = tuple(shape)
        return True

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = ptr

    def execute_async_v3(self, stream_handle):
        eng = self.engine
        stream = eng.streams_by_handle(stream_handle)
        self.executes += 1
        if stream.capturing and eng.fail_capture:
            stream.invalidated = True
            return False
        self.resources_shape = self.shape  # host-side, at enqueue time: never part of a graph
        baked = self.shape
        src, dst = self.addresses["input"], self.addresses["output"]
        nbytes = int(np.prod(baked))

        def kernel():
            cudart = eng.cudart
            cudart.busy.update({src, dst})
            try:
                if eng.gate is not None:
                    eng.entered.set()
                    eng.gate.wait(5)
                data = np.frombuffer(ctypes.string_at(src, nbytes), np.uint8)
                good = self.resources_shape == baked
                out = (255 - data) if good else np.zeros_like(data)  # stale resources: garbage
                ctypes.memmove(dst, out.tobytes(), nbytes)
            finally:
                cudart.busy.difference_update({src, dst})

        eng.cudart.submit(stream, kernel)
        return True


class FakeEngine:
    def __init__(self, cudart: FakeCudart) -> None:
        self.cudart = cudart
        self.fail_capture = False
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self.contexts: list[FakeContext] = []
        self.stream_registry: dict[int, FakeStream] = {}

    def streams_by_handle(self, handle):
        return self.stream_registry[handle]

    def create_execution_context(self):
        ctx = FakeContext(self)
        self.contexts.append(ctx)
        return ctx


@pytest.fixture
def fakes(monkeypatch):
    from nst_runtime import tensorrt_backend as tb

    cudart = FakeCudart()
    engine = FakeEngine(cudart)
    original_create = cudart.cudaStreamCreate

    def create():
        err, stream = original_create()
        engine.stream_registry[int(stream)] = stream
        return err, stream

    cudart.cudaStreamCreate = create
    monkeypatch.setattr(tb, "_cudart", lambda: cudart)
    return cudart, engine


def _runner(fakes, *, contexts=1, cuda_graphs=True, device=1):
    from nst_runtime.tensorrt_backend import LoadedEngine, TensorRTRunner

    _, engine = fakes
    loaded = LoadedEngine(None, None, engine, device, "input", "output", PROFILE)
    return TensorRTRunner(lambda: loaded, contexts=contexts, cuda_graphs=cuda_graphs).activate()


def _batch(n, h, w, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), np.uint8)


def test_alternating_shapes_never_replay_a_stale_graph(fakes):
    """A, A (captured), B, A, A, B ...: a graph captured at A must not be replayed after the context ran B."""
    cudart, _engine = fakes
    runner = _runner(fakes, contexts=1)
    shapes = [(1, 16, 16), (1, 16, 16), (1, 8, 24), (1, 16, 16), (1, 16, 16), (1, 16, 16), (1, 8, 24),
              (1, 8, 24), (1, 8, 24), (1, 16, 16)]
    for i, shape in enumerate(shapes):
        x = _batch(*shape, seed=i)
        np.testing.assert_array_equal(runner.infer(x), 255 - x, err_msg=f"call {i} at {shape}")
    planner = runner._pool._idle[0].graphs
    assert planner.captures >= 2  # graphs were used: the test is not passing by never capturing
    assert ("launch",) in cudart.log
    runner.close()


def test_two_contexts_keep_one_shape_each_and_replay(fakes):
    cudart, _engine = fakes
    runner = _runner(fakes, contexts=2)
    for i in range(8):
        shape = (1, 16, 16) if i % 2 == 0 else (2, 8, 8)
        x = _batch(*shape, seed=i)
        np.testing.assert_array_equal(runner.infer(x), 255 - x)
    slots = runner._pool._idle
    assert sorted(s.graphs.context_shape for s in slots) == [(1, 16, 16), (2, 8, 8)]
    assert [s.graphs.captures for s in slots] == [1, 1]  # one capture per context, replays afterwards
    assert sum(1 for e in cudart.log if e == ("launch",)) == 6
    runner.close()


def test_failed_capture_ends_it_clears_the_error_and_falls_back(fakes):
    cudart, engine = fakes
    engine.fail_capture = True
    runner = _runner(fakes, contexts=1)
    x = _batch(1, 16, 16, seed=0)
    for _ in range(4):
        np.testing.assert_array_equal(runner.infer(x), 255 - x)
    assert cudart.log.count(("begin_capture",)) == 1 == cudart.log.count(("end_capture",))  # remembered
    assert ("get_last_error",) in cudart.log and cudart.pending_error is None
    assert not any(s.capturing for s in engine.stream_registry.values())
    assert (1, 16, 16) in runner._pool._idle[0].graphs.failed
    runner.close()


def test_without_cuda_graphs_shape_is_set_only_on_change_and_nothing_is_captured(fakes):
    cudart, _engine = fakes
    runner = _runner(fakes, cuda_graphs=False)
    for shape in [(1, 8, 8), (1, 8, 8), (1, 32, 32)]:
        x = _batch(*shape, seed=1)
        np.testing.assert_array_equal(runner.infer(x), 255 - x)
    assert ("begin_capture",) not in cudart.log and ("launch",) not in cudart.log
    runner.close()


def test_close_waits_for_calls_in_flight_and_sets_the_device_before_freeing(fakes):
    cudart, engine = fakes
    runner = _runner(fakes, contexts=1, cuda_graphs=False, device=1)
    engine.gate = threading.Event()
    x = _batch(1, 16, 16, seed=3)
    result = {}
    worker = threading.Thread(target=lambda: result.setdefault("out", runner.infer(x)))
    worker.start()
    assert engine.entered.wait(5)
    closer = threading.Thread(target=runner.close)
    closer.start()
    closer.join(0.3)
    assert closer.is_alive(), "close() returned while a call was still running"
    assert not [e for e in cudart.log if e[0] == "free"]
    engine.gate.set()
    worker.join(5)
    closer.join(5)
    np.testing.assert_array_equal(result["out"], 255 - x)
    frees = [e for e in cudart.log if e[0] == "free"]
    assert len(frees) == 4 and all(on_device and not busy for _, _, _, on_device, busy in frees)
    closer_id = frees[0][1]
    sets = [e for e in cudart.log if e[0] == "set_device" and e[1] == closer_id]
    assert sets and sets[0][2] == 1  # the closing thread made the engine's GPU current
    from nst_runtime.errors import UsageError

    with pytest.raises(UsageError, match="not active"):
        runner.infer(x)


# ----------------------------------------------------------------------------------------- the loader
class FakeTrtRuntime:
    def __init__(self, logger, owner) -> None:
        self.owner = owner
        self.engine_host_code_allowed = False

    def deserialize_cuda_engine(self, blob):
        self.owner.deserialized.append((bytes(blob), self.engine_host_code_allowed))
        return self.owner.engine


class FakeTrtModule:
    def __init__(self, version: str, engine) -> None:
        self.__version__ = version
        self.engine = engine
        self.deserialized: list[tuple[bytes, bool]] = []
        self.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})

    def Runtime(self, logger):
        return FakeTrtRuntime(logger, self)


class FakeDeserialized:
    num_io_tensors = 2

    def get_tensor_name(self, i):
        return ["input", "output"][i]

    def get_tensor_profile_shape(self, name, profile):
        return [(*PROFILE.min, 3), (*PROFILE.opt, 3), (*PROFILE.max, 3)]


@pytest.fixture
def engine_file(tmp_path):
    path = tmp_path / "m.fp16.engine"
    path.write_bytes(b"plan bytes " * 50)
    return path


def _load(monkeypatch, path: Path, *, installed="10.16.1.11", verify_hash=True, allow=False, **meta):
    from nst_runtime import tensorrt_backend as tb

    cudart = FakeCudart()
    trt = FakeTrtModule(installed, FakeDeserialized())
    monkeypatch.setattr(tb, "_cudart", lambda: cudart)
    monkeypatch.setattr(tb, "_tensorrt_module", lambda m: trt)
    fields = dict(kind="tensorrt", precision="fp16", profile=PROFILE, tensorrt_version="10.16.1.11",
                  compute_capability="9.0", artifact_sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    fields.update(meta)
    loader = tb.EngineFromPath(path, sidecar=Sidecar(**fields), device=0, verify_hash=verify_hash,
                               allow_engine_host_code=allow)
    return loader, trt


def test_host_code_only_with_explicit_opt_in(monkeypatch, engine_file):
    loader, trt = _load(monkeypatch, engine_file, version_compatible=True)
    with pytest.raises(ModelFileError, match="allow-engine-host-code"):
        loader()
    assert trt.deserialized == []  # refused before a byte reached TensorRT
    loader, trt = _load(monkeypatch, engine_file, version_compatible=True, allow=True)
    loader()
    assert trt.deserialized[0][1] is True


@pytest.mark.parametrize("meta", [dict(), dict(version_compatible=True, exclude_lean_runtime=True)])
def test_plans_without_embedded_runtime_load_with_host_code_disallowed(monkeypatch, engine_file, meta):
    loader, trt = _load(monkeypatch, engine_file, allow=True, **meta)
    loader()
    assert trt.deserialized == [(engine_file.read_bytes(), False)]


def test_missing_hash_is_refused_unless_verification_is_off(monkeypatch, engine_file):
    loader, trt = _load(monkeypatch, engine_file, artifact_sha256=None)
    with pytest.raises(ModelFileError, match=r"no artifact_sha256.*--no-verify"):
        loader()
    assert trt.deserialized == []
    loader, trt = _load(monkeypatch, engine_file, artifact_sha256=None, verify_hash=False)
    loader()
    assert len(trt.deserialized) == 1


def test_the_bytes_deserialized_are_the_bytes_verified(monkeypatch, engine_file):
    loader, trt = _load(monkeypatch, engine_file)
    engine_file.write_bytes(b"swapped after open_artifact checked it")
    with pytest.raises(ModelFileError, match="changed after its hash was checked"):
        loader()
    assert trt.deserialized == []


# ----------------------------------------------------------------------------------------- multi-style engines
class StyleContext(FakeContext):
    """A multi-style engine's context: output = (255 - input) x style[0], reading the style weights from their
    own device buffer when the kernel runs (as TensorRT reads its input tensors)."""

    def __init__(self, engine: FakeEngine) -> None:
        super().__init__(engine)
        self.shapes: dict[str, tuple] = {}

    def set_input_shape(self, name, shape):
        self.shapes[name] = tuple(shape)
        return super().set_input_shape(name, shape) if name == "input" else True

    def execute_async_v3(self, stream_handle):
        ok = super().execute_async_v3(stream_handle)
        if not ok:
            return ok
        stream = self.engine.streams_by_handle(stream_handle)
        dst, style, nbytes = self.addresses["output"], self.addresses["style"], int(np.prod(self.shape))

        def weigh():
            w = np.frombuffer(ctypes.string_at(style, 8), np.float32)
            out = np.frombuffer(ctypes.string_at(dst, nbytes), np.uint8)
            ctypes.memmove(dst, np.rint(out * w[0]).astype(np.uint8).tobytes(), nbytes)

        self.engine.cudart.submit(stream, weigh)
        return ok


def test_style_weights_travel_with_every_call_also_through_a_replayed_graph(fakes):
    from nst_runtime.errors import UsageError
    from nst_runtime.tensorrt_backend import LoadedEngine, TensorRTRunner

    cudart, engine = fakes
    engine.create_execution_context = lambda: engine.contexts.append(StyleContext(engine)) or engine.contexts[-1]
    loaded = LoadedEngine(None, None, engine, 1, "input", "output", PROFILE, {"style": (2,)})
    runner = TensorRTRunner(lambda: loaded, contexts=1, cuda_graphs=True).activate()
    x = _batch(1, 16, 16, 0)
    full = runner.infer(x, extra={"style": np.array([1.0, 0.0], np.float32)})
    assert np.array_equal(full, 255 - x)
    for weight in (0.5, 0.25, 1.0):  # same shape: the second call captures, the later ones replay the graph
        out = runner.infer(x, extra={"style": np.array([weight, 1 - weight], np.float32)})
        assert np.array_equal(out, np.rint((255 - x) * np.float32(weight)).astype(np.uint8)), weight
    assert engine.contexts[0].shapes["style"] == (2,)
    assert ("launch",) in cudart.log  # the replay path ran
    with pytest.raises(UsageError, match=r"inputs besides the image are \['style'\]"):
        runner.infer(x)
    with pytest.raises(UsageError, match="3 values, the engine takes 2"):
        runner.infer(x, extra={"style": np.ones(3, np.float32)})
    runner.close()
    frees = [e for e in cudart.log if e[0] == "free"]
    assert len(frees) == 6  # image in/out host and device, and the style's host and device buffers


def test_engine_loader_requires_the_style_tensor_the_sidecar_names(monkeypatch, engine_file):
    from nst_runtime.sidecar import StyleInput

    loader, _trt = _load(monkeypatch, engine_file, style=StyleInput("style", 2, ("a", "b")))
    with pytest.raises(ModelFileError, match=r"engine tensors \['input', 'output'\]; the sidecar says "
                                             r"\['input', 'style'\]"):
        loader()
    monkeypatch.setattr(FakeDeserialized, "num_io_tensors", 3)
    monkeypatch.setattr(FakeDeserialized, "get_tensor_name", lambda self, i: ["input", "style", "output"][i])
    assert loader().extra_inputs == {"style": (2,)}


@pytest.mark.parametrize("fail_at", [1, 2, 3, 4])
def test_a_failing_allocation_frees_what_the_slot_made_before_it(fakes, fail_at):
    """Slot creation (stream, 2 pinned host and 2 device buffers) that fails at its fail_at-th allocation frees
    the buffers and stream made before it, and the pool's place: the next call creates a slot again."""
    from nst_runtime.errors import BackendUnavailableError

    cudart, _engine = fakes
    destroyed = []
    cudart.cudaStreamDestroy = lambda stream: destroyed.append(stream) or (OK,)
    count = {"n": 0}
    real = FakeCudart._alloc

    def alloc(nbytes):
        count["n"] += 1
        if count["n"] == fail_at:
            return "cudaErrorMemoryAllocation", None
        return real(cudart, nbytes)

    cudart.cudaMalloc = cudart.cudaMallocHost = alloc
    runner = _runner(fakes, contexts=1)
    with pytest.raises(BackendUnavailableError, match="cudaMalloc"):
        runner.infer(_batch(1, 16, 16, 0))
    assert cudart.buffers == {} and len(destroyed) == 1
    count["n"] = -100  # allocations succeed from now on
    x = _batch(1, 16, 16, 1)
    np.testing.assert_array_equal(runner.infer(x), 255 - x)
    runner.close()
    assert cudart.buffers == {}
