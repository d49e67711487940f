"""TensorRT backend: a loader (``EngineFromPath``) and a runner (``TensorRTRunner``) on cuda-python.

Written against the API TensorRT 10.x and 11.x share: named I/O tensors, ``set_input_shape`` +
``set_tensor_address`` + ``execute_async_v3`` (no binding indices, no ``execute_async_v2``). CUDA calls go
through ``cuda.bindings.runtime`` (cuda-python), as NVIDIA's own samples do.

Design:

* Buffers are sized once, for the optimization profile's maximum shape: per execution context one pinned
  host input, one pinned host output, one device input, one device output, and one CUDA stream. Tensor
  addresses are therefore set once per context; a call only sets the input shape, and only when it changes.
* Thread safety: an execution context is never shared. A :class:`ContextPool` hands each calling thread an
  idle slot (context + stream + buffers + its CUDA graph) and takes it back after the call; at most
  ``contexts`` run at once, which also overlaps one call's copies with another's compute. A call prefers an
  idle context that already runs its shape, so alternating shapes settle on one context each.
* CUDA graphs (optional), decided by :class:`GraphPlanner` (plain Python, tested on CPU with fakes): a graph is
  captured for a context only after the context has run that shape once (TensorRT does its per-shape setup in
  that plain enqueue), replayed only while the context's input shape is unchanged since the capture, and
  dropped when the shape changes. A capture that fails is ended, the CUDA error cleared, and that shape runs
  without a graph from then on (as trtexec does).
* ``close()`` waits for calls in flight, then frees every context's memory with the engine's device current.
* Engines are executable artifacts. The bytes deserialized are the bytes whose SHA-256 was checked against
  the sidecar (read once); a sidecar without a hash is refused unless ``verify_hash=False``. A version-
  compatible plan that embeds the lean runtime is host code and is loaded only with
  ``allow_engine_host_code=True``. Version-compatible engines are deserialized with ``tensorrt_lean`` where
  installed (falling back to ``tensorrt``); plain ones with ``tensorrt``.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ._lazy import import_optional
from .artifact import (
    check_compute_capability,
    check_engine_hash_present,
    check_tensorrt_version,
    engine_needs_host_code,
    fallback_hint,
)
from .errors import BackendUnavailableError, ModelFileError, UsageError
from .pool import ContextPool
from .sidecar import ShapeProfile, Sidecar

logger = logging.getLogger(__name__)

CHANNELS = 3
Shape = tuple[int, int, int]


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


Action = Literal["enqueue", "capture", "replay"]


@dataclass(frozen=True)
class GraphStep:
    """What one call does on its execution context.

    ``set_shape``: call ``set_input_shape`` first (the context's shape changes). ``drop``: a graph (opaque
    handle) to destroy first, captured for a shape the context is leaving. ``action``: ``"enqueue"`` (a plain
    ``execute_async_v3``), ``"capture"`` (capture a graph of copy-in, enqueue, copy-out, then launch it) or
    ``"replay"`` (launch the graph captured for this very shape)."""

    set_shape: bool
    action: Action
    drop: Any = None


class GraphPlanner:
    """The CUDA-graph decisions of one execution context (pure Python; the runner does the CUDA calls).

    TensorRT updates shape-dependent resources of a context in the first ``execute_async_v3`` after
    ``set_input_shape``; that host-side work is not part of a captured graph. So a graph is valid only while
    the context's input shape is the one it was captured at, and the enqueue right after a shape change must
    be a plain one (which also serves as the warm-up trtexec runs before capturing). Rules:

    * shape differs from the context's: drop the context's graph, set the shape, plain enqueue;
    * same shape, a graph captured at it: replay;
    * same shape, no graph yet, the shape has not failed to capture: capture (then launch);
    * a shape whose capture failed runs plain enqueues from then on (``capture_failed``).

    With ``enabled=False`` every call is a plain enqueue (the shape is still set only when it changes).
    """

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        #: the input shape the context was last set to and ran (None: never)
        self.context_shape: Shape | None = None
        self.graph: Any = None
        self.graph_shape: Shape | None = None
        self.failed: set[Shape] = set()
        self.captures = 0

    def plan(self, shape: Shape) -> GraphStep:
        if shape != self.context_shape:
            drop, self.graph, self.graph_shape = self.graph, None, None
            return GraphStep(set_shape=True, action="enqueue", drop=drop)
        if not self.enabled or shape in self.failed:
            return GraphStep(set_shape=False, action="enqueue")
        if self.graph is not None and self.graph_shape == shape:
            return GraphStep(set_shape=False, action="replay")
        return GraphStep(set_shape=False, action="capture")

    def ran(self, shape: Shape) -> None:
        """The context ran ``shape`` (its shape is now this one)."""
        self.context_shape = shape

    def captured(self, shape: Shape, graph: Any) -> None:
        self.graph, self.graph_shape = graph, shape
        self.captures += 1

    def capture_failed(self, shape: Shape) -> None:
        self.failed.add(shape)

    def take_graph(self) -> Any:
        """Hand over the graph for destruction (on close)."""
        graph, self.graph, self.graph_shape = self.graph, None, None
        return graph


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


def _is_null(handle: Any) -> bool:
    if handle is None:
        return True
    try:
        return int(handle) == 0
    except (TypeError, ValueError):
        return False


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
    #: inputs besides the image, each with its fixed shape (a multi-style engine's style weights: ``(S,)``,
    #: float32): fed through a small buffer of their own on every call
    extra_inputs: dict[str, tuple[int, ...]] = field(default_factory=dict)


class EngineFromPath:
    """Loader: engine file → deserialized engine, after the sidecar checks that avoid a crash.

    ``verify_hash``: the bytes handed to TensorRT must match the sidecar's SHA-256 (a sidecar without one is
    refused). ``allow_engine_host_code``: let TensorRT run host code embedded in the plan (the lean runtime of
    a version-compatible engine); off unless the caller trusts the file.
    """

    def __init__(self, path: str | os.PathLike[str], *, sidecar: Sidecar, device: int = 0, verify_hash: bool = True,
                 allow_engine_host_code: bool = False, verified_bytes: bytes | None = None) -> None:
        self.path = Path(path)
        #: the engine's bytes as ``open_artifact(keep_bytes=True)`` read and hashed them: deserialized as they are
        #: (handed over once: the loader drops its reference when it has used them)
        self._verified_bytes = verified_bytes
        self.sidecar = sidecar
        self.device = device
        self.verify_hash = verify_hash
        self.allow_engine_host_code = allow_engine_host_code

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
        check_engine_hash_present(path, meta, verify_hash=self.verify_hash)
        host_code = engine_needs_host_code(path, meta, allow_engine_host_code=self.allow_engine_host_code)
        blob, self._verified_bytes = self._verified_bytes, None
        if blob is None:  # read here: these bytes, not the file, are what is checked and deserialized
            blob = path.read_bytes()
            verified = False
        else:
            verified = True
        if self.verify_hash and not verified and hashlib.sha256(blob).hexdigest() != meta.artifact_sha256:
            raise ModelFileError(f"{path}: its content changed after its hash was checked (the bytes read now do "
                                 "not match the sidecar). Fix: do not replace model files while they load.")
        trt_logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(trt_logger)
        runtime.engine_host_code_allowed = host_code
        if host_code:
            logger.warning("%s: running the lean runtime embedded in this version-compatible engine "
                           "(allow_engine_host_code=True)", path.name)
        engine = runtime.deserialize_cuda_engine(blob)
        if engine is None:
            raise ModelFileError(
                f"{path}: TensorRT could not deserialize the engine (corrupt file, or built by another "
                "TensorRT/GPU than the sidecar says). Fix: rebuild it here." + fallback_hint(path)
            )
        # matched by name (the sidecar's), which needs no TensorIOMode enum and no binding indices
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        if not all(n in names for n in meta.input_names) or meta.output.name not in names:
            raise ModelFileError(f"{path}: engine tensors {names}; the sidecar says "
                                 f"{meta.input_names} -> {meta.output.name!r}. Fix: re-export.")
        lo, opt, hi = (tuple(int(d) for d in s) for s in engine.get_tensor_profile_shape(meta.input.name, 0))
        engine_profile = ShapeProfile(min=lo[:3], opt=opt[:3], max=hi[:3])  # type: ignore[arg-type]
        if engine_profile != profile:
            logger.warning("%s: engine profile %s differs from the sidecar's %s; using the engine's",
                           path, engine_profile, profile)
        extra = dict(meta.extra_inputs)  # a multi-style engine's style weights, an AdaIN engine's statistics
        return LoadedEngine(trt, runtime, engine, self.device, meta.input.name, meta.output.name, engine_profile,
                            extra)


# ----------------------------------------------------------------------------------------- runner
@dataclass
class _Slot:
    """One execution context with everything it owns: stream, pinned host and device buffers, its graph."""

    context: Any
    stream: Any
    host_in: int
    host_out: int
    dev_in: int
    dev_out: int
    plan: BufferPlan
    graphs: GraphPlanner = field(default_factory=lambda: GraphPlanner(enabled=False))
    #: inputs besides the image: name -> (pinned host pointer, device pointer, bytes), float32, fixed shape
    extras: dict[str, tuple[int, int, int]] = field(default_factory=dict)


class TensorRTRunner:
    """Runner over a TensorRT engine; ``infer`` is thread-safe through a pool of execution contexts."""

    name = "tensorrt"

    def __init__(self, load_engine: Callable[[], LoadedEngine], *, contexts: int = 2,
                 cuda_graphs: bool = False) -> None:
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
        """One context with its stream and buffers; a failure part-way frees what was made before it."""
        eng = self._engine
        if eng is None:
            raise UsageError("the runner is not active.")
        cudart = _cudart()
        _check(cudart.cudaSetDevice(eng.device), "cudaSetDevice")
        plan = plan_buffers(eng.profile)
        made: list[tuple[Callable[[Any], Any], Any]] = []  # (free, handle), freed in reverse on failure

        def keep(result: Any, what: str, free: Callable[[Any], Any]) -> Any:
            handle = _check(result, what)
            made.append((free, handle))
            return handle

        context = None
        try:
            context = eng.engine.create_execution_context()
            if context is None:
                raise BackendUnavailableError("TensorRT could not create an execution context (out of GPU memory?).")
            stream = keep(cudart.cudaStreamCreate(), "cudaStreamCreate", cudart.cudaStreamDestroy)
            host_in = keep(cudart.cudaMallocHost(plan.input_bytes), "cudaMallocHost", cudart.cudaFreeHost)
            host_out = keep(cudart.cudaMallocHost(plan.output_bytes), "cudaMallocHost", cudart.cudaFreeHost)
            dev_in = keep(cudart.cudaMalloc(plan.input_bytes), "cudaMalloc", cudart.cudaFree)
            dev_out = keep(cudart.cudaMalloc(plan.output_bytes), "cudaMalloc", cudart.cudaFree)
            # addresses never change: the buffers are sized for the largest shape the profile allows
            context.set_tensor_address(eng.input_name, int(dev_in))
            context.set_tensor_address(eng.output_name, int(dev_out))
            extras: dict[str, tuple[int, int, int]] = {}
            for name, shape in eng.extra_inputs.items():  # fixed shapes: address and shape set once, like the image's
                nbytes = int(np.prod(shape)) * 4
                host = keep(cudart.cudaMallocHost(nbytes), "cudaMallocHost", cudart.cudaFreeHost)
                dev = keep(cudart.cudaMalloc(nbytes), "cudaMalloc", cudart.cudaFree)
                extras[name] = (int(host), int(dev), nbytes)
                context.set_tensor_address(name, int(dev))
                if not context.set_input_shape(name, tuple(shape)):
                    raise UsageError(f"TensorRT refused the shape {tuple(shape)} of input {name!r}.")
        except BaseException:
            context = None  # the execution context before the buffers it points at
            for free, handle in reversed(made):
                free(handle)
            raise
        return _Slot(context, stream, int(host_in), int(host_out), int(dev_in), int(dev_out), plan,
                     GraphPlanner(enabled=self.cuda_graphs), extras)

    def _enqueue(self, slot: _Slot, nbytes: int) -> bool:
        """Copy in, run, copy out on the slot's stream. False if TensorRT refused to enqueue (CUDA copy
        errors raise)."""
        cudart = _cudart()
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _check(cudart.cudaMemcpyAsync(slot.dev_in, slot.host_in, nbytes, h2d, slot.stream), "cudaMemcpyAsync")
        for host, dev, size in slot.extras.values():  # part of a captured graph too: replays read the host buffer
            _check(cudart.cudaMemcpyAsync(dev, host, size, h2d, slot.stream), "cudaMemcpyAsync")
        if not slot.context.execute_async_v3(int(slot.stream)):
            return False
        _check(cudart.cudaMemcpyAsync(slot.host_out, slot.dev_out, nbytes, d2h, slot.stream), "cudaMemcpyAsync")
        return True

    def _capture(self, slot: _Slot, nbytes: int, shape: Shape) -> Any:
        """Capture copy-in, enqueue, copy-out into a graph and instantiate it; None if that fails.

        A failed capture is always ended (a stream left capturing breaks every later call), its partial graph
        destroyed and the CUDA error cleared, like trtexec's ``endCaptureOnError``."""
        cudart = _cudart()
        ok = False
        _check(cudart.cudaStreamBeginCapture(slot.stream, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal),
               "cudaStreamBeginCapture")
        try:
            ok = self._enqueue(slot, nbytes)
        except BackendUnavailableError as exc:  # a copy refused under capture
            logger.debug("CUDA graph capture: %s", exc)
        finally:
            err, graph = cudart.cudaStreamEndCapture(slot.stream)
        exec_ = None
        if ok and err == cudart.cudaError_t.cudaSuccess and not _is_null(graph):
            err, exec_ = cudart.cudaGraphInstantiate(graph, 0)
            if err == cudart.cudaError_t.cudaSuccess and not _is_null(exec_):
                return graph, exec_
        if not _is_null(graph):
            cudart.cudaGraphDestroy(graph)
        cudart.cudaGetLastError()  # clear the capture's error so later calls do not see it
        logger.warning("CUDA graph capture failed for input shape %s; running that shape without a graph "
                       "(TensorRT enqueued work that cannot be captured)", shape)
        return None

    def _destroy_graph(self, graph: Any) -> None:
        if graph is None:
            return
        cudart = _cudart()
        g, exec_ = graph
        cudart.cudaGraphExecDestroy(exec_)
        cudart.cudaGraphDestroy(g)

    def infer(self, batch: np.ndarray, extra: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """Run one uint8 [N, H, W, 3] batch; ``extra``: the engine's other inputs (a multi-style engine's style
        weights, float32 of their fixed shape), copied to the device with the batch."""
        eng, pool = self._engine, self._pool
        if eng is None or pool is None:
            raise UsageError("the runner is not active; use it inside `with` or call activate() first.")
        check_in_profile(batch.shape, eng.profile)
        extra = extra or {}
        if set(extra) != set(eng.extra_inputs):
            raise UsageError(f"the engine's inputs besides the image are {sorted(eng.extra_inputs)}; this call gave "
                             f"{sorted(extra)}.")
        values = {}
        for name, shape in eng.extra_inputs.items():
            value = np.ascontiguousarray(extra[name], dtype=np.float32)
            if value.size != int(np.prod(shape)):
                raise UsageError(f"input {name!r}: {value.size} values, the engine takes {int(np.prod(shape))}.")
            values[name] = value.reshape(-1)
        cudart = _cudart()
        n, h, w, _ = batch.shape
        nbytes = batch.nbytes
        key = (n, h, w)
        with pool.acquire(prefer=lambda s: s.graphs.context_shape == key) as slot:
            _check(cudart.cudaSetDevice(eng.device), "cudaSetDevice")  # the current device is per thread
            _host_view(slot.host_in, nbytes)[:] = np.ascontiguousarray(batch, dtype=np.uint8).reshape(-1)
            for name, value in values.items():
                host, _dev, size = slot.extras[name]
                _host_view(host, size)[:] = value.view(np.uint8)
            step = slot.graphs.plan(key)
            self._destroy_graph(step.drop)
            if step.set_shape and not slot.context.set_input_shape(eng.input_name, (n, h, w, CHANNELS)):
                raise UsageError(f"TensorRT refused input shape {(n, h, w, CHANNELS)}.")
            if step.action == "capture":
                graph = self._capture(slot, nbytes, key)
                if graph is None:
                    slot.graphs.capture_failed(key)
                    step = GraphStep(set_shape=False, action="enqueue")
                else:
                    slot.graphs.captured(key, graph)
                    step = GraphStep(set_shape=False, action="replay")
            if step.action == "replay":
                _check(cudart.cudaGraphLaunch(slot.graphs.graph[1], slot.stream), "cudaGraphLaunch")
            elif not self._enqueue(slot, nbytes):
                raise BackendUnavailableError("TensorRT execute_async_v3 failed (see the TensorRT log above).")
            slot.graphs.ran(key)
            _check(cudart.cudaStreamSynchronize(slot.stream), "cudaStreamSynchronize")
            return _host_view(slot.host_out, nbytes).reshape(n, h, w, CHANNELS).copy()

    def _destroy(self, slot: _Slot) -> None:
        """Free one slot. Runs on the closing thread, which may not be the one that allocated: set the device."""
        eng = self._engine
        cudart = _cudart()
        if eng is not None:
            cudart.cudaSetDevice(eng.device)
        cudart.cudaStreamSynchronize(slot.stream)
        self._destroy_graph(slot.graphs.take_graph())
        slot.context = None  # the execution context (and its activation memory) before the buffers it uses
        cudart.cudaFree(slot.dev_in)
        cudart.cudaFree(slot.dev_out)
        cudart.cudaFreeHost(slot.host_in)
        cudart.cudaFreeHost(slot.host_out)
        for host, dev, _size in slot.extras.values():
            cudart.cudaFree(dev)
            cudart.cudaFreeHost(host)
        cudart.cudaStreamDestroy(slot.stream)

    def close(self) -> None:
        """Wait for calls in flight, free every context (contexts before the engine). Idempotent."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.close(self._destroy)
        self._engine = None

    def __enter__(self) -> TensorRTRunner:
        return self.activate()

    def __exit__(self, *exc: object) -> None:
        self.close()
