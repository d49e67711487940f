"""TensorRT backend: a loader (``EngineFromPath``) and a runner (``TensorRTRunner``) on cuda-python.

Written against the API TensorRT 10.x and 11.x share: named I/O tensors, ``set_input_shape`` +
``set_tensor_address`` + ``execute_async_v3`` (no binding indices, no ``execute_async_v2``). CUDA calls go
through ``cuda.bindings.runtime`` (cuda-python), as NVIDIA's own samples do.

Design:

* Buffers are sized once, for the optimization profile's maximum shape: per execution context one pinned
  host input, one pinned host output, one device input, one device output, and one CUDA stream. Tensor
  addresses are therefore set once per context; a call only sets the input shape.
* Thread safety: an execution context is never shared. A :class:`ContextPool` hands each calling thread an
  idle slot (context + stream + buffers) and takes it back after the call; at most ``contexts`` run at once,
  which also overlaps one call's copies with another's compute.
* CUDA graphs (optional): per input shape, the first call captures H2D copy → enqueue → D2H copy on the
  slot's stream into a graph; later calls of that shape replay it (less CPU launch overhead).
* Version-compatible engines are deserialized with ``tensorrt_lean`` (the lean runtime, ~100 MB) when the
  sidecar says ``version_compatible``; plain engines with ``tensorrt``.

The GPU-free parts (buffer sizing, shape checks against the profile, the pool) are plain Python and tested
on CPU; the rest runs only where TensorRT and a GPU are present.
"""

from __future__ import annotations

import ctypes
import logging
import os
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np

from ._lazy import import_optional
from .artifact import check_compute_capability, check_tensorrt_version, fallback_hint
from .errors import BackendUnavailableError, ModelFileError, UsageError
from .sidecar import ShapeProfile, Sidecar

logger = logging.getLogger(__name__)

T = TypeVar("T")
CHANNELS = 3


# ----------------------------------------------------------------------------------------- GPU-free logic
@dataclass(frozen=True)
class BufferPlan:
    """Byte sizes of the per-context buffers, fixed by the profile's maximum (uint8 NHWC in and out)."""

    max_shape: tuple[int, int, int]
    input_bytes: int
    output_bytes: int


def plan_buffers(profile: ShapeProfile) -> BufferPlan:
    n, h, w = profile.max
    size = n * h * w * CHANNELS  # uint8: one byte per element
    return BufferPlan(max_shape=(n, h, w), input_bytes=size, output_bytes=size)


def check_in_profile(shape: tuple[int, ...], profile: ShapeProfile) -> None:
    """Raise :class:`UsageError` unless ``shape`` (N, H, W, 3) lies within the profile's min..max."""
    if len(shape) != 4 or shape[3] != CHANNELS:
        raise UsageError(f"expected a batch of shape (N, H, W, 3), got {tuple(shape)}.")
    for axis, lo, hi, value in zip("NHW", profile.min, profile.max, shape[:3], strict=True):
        if not lo <= value <= hi:
            raise UsageError(
                f"input {tuple(shape)}: {axis}={value} is outside the engine's optimization profile "
                f"{profile.min}..{profile.max} (N, H, W). Fix: the Stylizer tiles and pads to fit; for "
                "larger calls rebuild the engine with a larger --max-shape."
            )


def profile_from_sidecar(meta: Sidecar, path: Path) -> ShapeProfile:
    if meta.profile is None:
        raise ModelFileError(f"{path}: the sidecar holds no optimization profile. Fix: re-export with nst-export.")
    return meta.profile


class ContextPool(Generic[T]):
    """Hands out objects one thread at a time; creates up to ``size`` lazily; never shares one.

    Used for TensorRT execution contexts (each with its stream and buffers): ``with pool.acquire() as slot``.
    """

    def __init__(self, factory: Callable[[], T], *, size: int) -> None:
        if size < 1:
            raise UsageError(f"contexts={size}: expected at least 1.")
        self._factory = factory
        self.size = size
        self._idle: queue.LifoQueue[T] = queue.LifoQueue()
        self._created: list[T] = []
        self._lock = threading.Lock()
        self._closed = False

    @property
    def created(self) -> int:
        return len(self._created)

    @contextmanager
    def acquire(self) -> Iterator[T]:
        if self._closed:
            raise UsageError("the execution-context pool is closed (the Stylizer was closed).")
        item = self._take()
        try:
            yield item
        finally:
            self._idle.put(item)

    def _take(self) -> T:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            if len(self._created) < self.size:
                item = self._factory()
                self._created.append(item)
                return item
        return self._idle.get()  # all created and busy: wait for one to come back

    def close(self, destroy: Callable[[T], None]) -> None:
        with self._lock:
            self._closed = True
            items, self._created = self._created, []
        for item in items:
            destroy(item)


# ----------------------------------------------------------------------------------------- CUDA helpers
def _cudart() -> Any:
    mod = import_optional("cuda.bindings.runtime", purpose="the TensorRT backend",
                          install="pip install cuda-python (12.x or 13.x, matching your CUDA driver)")
    return mod


def _check(result: Any, what: str) -> Any:
    """cuda-python returns (error, *values); raise on error, return the value(s)."""
    cudart = _cudart()
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        _, name = cudart.cudaGetErrorName(err)
        raise BackendUnavailableError(f"CUDA call {what} failed: {name.decode() if isinstance(name, bytes) else name}.")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def _host_view(ptr: int, nbytes: int) -> np.ndarray:
    return np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_uint8)), shape=(nbytes,))


def _tensorrt_module(meta: Sidecar) -> Any:
    if meta.version_compatible:
        try:
            return import_optional("tensorrt_lean", purpose="a version-compatible engine",
                                   install="pip install tensorrt-lean")
        except BackendUnavailableError:
            logger.info("tensorrt_lean not found; trying the full tensorrt package for a version-compatible engine")
    return import_optional("tensorrt", purpose="the TensorRT backend", install="pip install tensorrt")


# ----------------------------------------------------------------------------------------- loader
@dataclass
class LoadedEngine:
    trt: Any
    runtime: Any
    engine: Any
    device: int
    input_name: str
    output_name: str
    profile: ShapeProfile


class EngineFromPath:
    """Loader: engine file → deserialized engine, after the sidecar checks that avoid a crash."""

    def __init__(self, path: str | os.PathLike[str], *, sidecar: Sidecar, device: int = 0) -> None:
        self.path = Path(path)
        self.sidecar = sidecar
        self.device = device

    def __call__(self) -> LoadedEngine:
        meta, path = self.sidecar, self.path
        profile = profile_from_sidecar(meta, path)
        cudart = _cudart()
        count = _check(cudart.cudaGetDeviceCount(), "cudaGetDeviceCount")
        if not count or self.device >= count:
            raise BackendUnavailableError(
                f"GPU {self.device} requested; this machine has {count or 0} CUDA device(s)." + fallback_hint(path)
            )
        _check(cudart.cudaSetDevice(self.device), "cudaSetDevice")
        props = _check(cudart.cudaGetDeviceProperties(self.device), "cudaGetDeviceProperties")
        name = props.name.decode(errors="replace").rstrip("\x00") if isinstance(props.name, bytes) else str(props.name)
        check_compute_capability(path, meta, f"{props.major}.{props.minor}", name)
        trt = _tensorrt_module(meta)
        check_tensorrt_version(path, meta, trt.__version__)
        trt_logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(trt_logger)
        if meta.version_compatible:
            runtime.engine_host_code_allowed = True
        engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise ModelFileError(
                f"{path}: TensorRT could not deserialize the engine (corrupt file, or built by another "
                "TensorRT/GPU than the sidecar says). Fix: rebuild it here." + fallback_hint(path)
            )
        # matched by name (the sidecar's), which needs no TensorIOMode enum and no binding indices
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        if meta.input.name not in names or meta.output.name not in names:
            raise ModelFileError(f"{path}: engine tensors {names}; the sidecar says "
                                 f"{meta.input.name!r} -> {meta.output.name!r}. Fix: re-export.")
        lo, opt, hi = (tuple(int(d) for d in s) for s in engine.get_tensor_profile_shape(meta.input.name, 0))
        engine_profile = ShapeProfile(min=lo[:3], opt=opt[:3], max=hi[:3])  # type: ignore[arg-type]
        if engine_profile != profile:
            logger.warning("%s: engine profile %s differs from the sidecar's %s; using the engine's",
                           path, engine_profile, profile)
        return LoadedEngine(trt, runtime, engine, self.device, meta.input.name, meta.output.name, engine_profile)


# ----------------------------------------------------------------------------------------- runner
@dataclass
class _Slot:
    """One execution context with everything it owns: stream, pinned host and device buffers, graphs."""

    context: Any
    stream: Any
    host_in: int
    host_out: int
    dev_in: int
    dev_out: int
    plan: BufferPlan
    graphs: dict[tuple[int, int, int], Any] = field(default_factory=dict)


class TensorRTRunner:
    """Runner over a TensorRT engine; ``infer`` is thread-safe through a pool of execution contexts."""

    name = "tensorrt"

    def __init__(self, load_engine: EngineFromPath, *, contexts: int = 2, cuda_graphs: bool = False) -> None:
        self._load = load_engine
        self.contexts = contexts
        self.cuda_graphs = cuda_graphs
        self._engine: LoadedEngine | None = None
        self._pool: ContextPool[_Slot] | None = None
        self.max_shape: tuple[int, int, int] | None = None
        self.min_shape: tuple[int, int, int] | None = None

    def activate(self) -> TensorRTRunner:
        if self._engine is None:
            self._engine = self._load()
            self.max_shape = self._engine.profile.max
            self.min_shape = self._engine.profile.min
            self._pool = ContextPool(self._new_slot, size=self.contexts)
        return self

    def _new_slot(self) -> _Slot:
        eng = self._engine
        if eng is None:
            raise UsageError("the runner is not active.")
        cudart = _cudart()
        _check(cudart.cudaSetDevice(eng.device), "cudaSetDevice")
        plan = plan_buffers(eng.profile)
        context = eng.engine.create_execution_context()
        if context is None:
            raise BackendUnavailableError("TensorRT could not create an execution context (out of GPU memory?).")
        stream = _check(cudart.cudaStreamCreate(), "cudaStreamCreate")
        host_in = _check(cudart.cudaMallocHost(plan.input_bytes), "cudaMallocHost")
        host_out = _check(cudart.cudaMallocHost(plan.output_bytes), "cudaMallocHost")
        dev_in = _check(cudart.cudaMalloc(plan.input_bytes), "cudaMalloc")
        dev_out = _check(cudart.cudaMalloc(plan.output_bytes), "cudaMalloc")
        # addresses never change: the buffers are sized for the largest shape the profile allows
        context.set_tensor_address(eng.input_name, int(dev_in))
        context.set_tensor_address(eng.output_name, int(dev_out))
        return _Slot(context, stream, int(host_in), int(host_out), int(dev_in), int(dev_out), plan)

    def _enqueue(self, slot: _Slot, nbytes: int) -> None:
        cudart = _cudart()
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _check(cudart.cudaMemcpyAsync(slot.dev_in, slot.host_in, nbytes, h2d, slot.stream), "cudaMemcpyAsync")
        if not slot.context.execute_async_v3(int(slot.stream)):
            raise BackendUnavailableError("TensorRT execute_async_v3 failed (see the TensorRT log above).")
        _check(cudart.cudaMemcpyAsync(slot.host_out, slot.dev_out, nbytes, d2h, slot.stream), "cudaMemcpyAsync")

    def infer(self, batch: np.ndarray) -> np.ndarray:
        eng, pool = self._engine, self._pool
        if eng is None or pool is None:
            raise UsageError("the runner is not active; use it inside `with` or call activate() first.")
        check_in_profile(batch.shape, eng.profile)
        cudart = _cudart()
        n, h, w, _ = batch.shape
        nbytes = batch.nbytes
        with pool.acquire() as slot:
            _check(cudart.cudaSetDevice(eng.device), "cudaSetDevice")  # the current device is per thread
            _host_view(slot.host_in, nbytes)[:] = np.ascontiguousarray(batch, dtype=np.uint8).reshape(-1)
            if not slot.context.set_input_shape(eng.input_name, (n, h, w, CHANNELS)):
                raise UsageError(f"TensorRT refused input shape {(n, h, w, CHANNELS)}.")
            key = (n, h, w)
            if self.cuda_graphs and key not in slot.graphs:
                self._enqueue(slot, nbytes)  # a plain run first: TensorRT finishes shape-dependent setup
                _check(cudart.cudaStreamSynchronize(slot.stream), "cudaStreamSynchronize")
                mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
                _check(cudart.cudaStreamBeginCapture(slot.stream, mode), "cudaStreamBeginCapture")
                self._enqueue(slot, nbytes)
                graph = _check(cudart.cudaStreamEndCapture(slot.stream), "cudaStreamEndCapture")
                slot.graphs[key] = (graph, _check(cudart.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate"))
            if self.cuda_graphs:
                _check(cudart.cudaGraphLaunch(slot.graphs[key][1], slot.stream), "cudaGraphLaunch")
            else:
                self._enqueue(slot, nbytes)
            _check(cudart.cudaStreamSynchronize(slot.stream), "cudaStreamSynchronize")
            return _host_view(slot.host_out, nbytes).reshape(n, h, w, CHANNELS).copy()

    def _destroy(self, slot: _Slot) -> None:
        cudart = _cudart()
        for graph, exec_ in slot.graphs.values():
            cudart.cudaGraphExecDestroy(exec_)
            cudart.cudaGraphDestroy(graph)
        cudart.cudaFree(slot.dev_in)
        cudart.cudaFree(slot.dev_out)
        cudart.cudaFreeHost(slot.host_in)
        cudart.cudaFreeHost(slot.host_out)
        cudart.cudaStreamDestroy(slot.stream)
        slot.context = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close(self._destroy)
            self._pool = None
        self._engine = None

    def __enter__(self) -> TensorRTRunner:
        return self.activate()

    def __exit__(self, *exc: object) -> None:
        self.close()
