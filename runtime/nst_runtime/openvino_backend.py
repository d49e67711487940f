"""OpenVINO backend: a loader (``CompiledModelFromOnnx``) and a runner (``OpenVinoRunner``).

OpenVINO reads nst's ONNX files directly (no conversion step, no second artifact) and runs them on the CPU
with its own kernels, which on x86 are faster than ONNX Runtime's for this network, and run the INT8 QDQ file
(``NAME.int8.onnx``) with integer kernels. Facts this module relies on, measured with openvino 2026.4:

* Dynamic N/H/W are kept dynamic: one compiled model serves every size. The first call of a new shape costs
  shape inference and kernel selection (about 25 ms at 64x64 on 2 cores), later calls of that shape none; no
  recompilation happens.
* ``CompiledModel`` is thread-safe, an ``InferRequest`` is not. The runner keeps a pool of infer requests
  (each thread takes an idle one, at most ``requests`` exist) — the same pool the TensorRT runner uses for its
  execution contexts.
* The CPU plugin may pick bf16 on CPUs that have it (AMX, AVX-512 BF16); the runner asks for f32
  (``INFERENCE_PRECISION_HINT``) so that an FP32 file keeps its parity with PyTorch. INT8 QDQ files still run
  their quantized convolutions in int8: the hint only governs the operations that are not quantized.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ._lazy import import_optional
from .errors import BackendUnavailableError, ModelFileError, UsageError
from .pool import ContextPool
from .sidecar import Sidecar

logger = logging.getLogger(__name__)

#: infer requests the runner creates at most (one per concurrently calling thread; a call already uses all
#: the cores it is given, so more only queue)
DEFAULT_REQUESTS = 2


def _ov() -> Any:
    return import_optional("openvino", purpose="the OpenVINO backend", install="pip install 'nst[openvino]'")


def _ov_frontend() -> Any:
    return import_optional("openvino.frontend", purpose="the OpenVINO backend", install="pip install 'nst[openvino]'")


_core: Any = None
_core_lock = threading.Lock()


def shared_core() -> Any:
    """The process's one ``openvino.Core``, created on first use and never released.

    OpenVINO's CPU plugin replaces the calling thread's signal stack (``sigaltstack``) when a Core first
    compiles a model and puts the previous one back when that Core is released. Two Cores released in another
    order than they were made (two Stylizers closed first-opened-first, an AdaIN model's two graphs, a server
    with several models) leave the thread pointing at a freed stack, and the next signal it handles — Ctrl-C,
    SIGTERM — crashes the process with SIGSEGV instead of stopping cleanly (openvino 2026.4, measured). One
    Core for the process keeps that stack alive. ``Core.compile_model`` is thread-safe.
    """
    global _core
    with _core_lock:
        if _core is None:
            _core = _ov().Core()
        return _core


def openvino_version() -> str | None:
    """The installed openvino's version, or None where it cannot be imported (never raises)."""
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("openvino")
    except (ImportError, PackageNotFoundError):
        return None


class CompiledModelFromOnnx:
    """Loader: ONNX file → ``openvino.CompiledModel`` on ``device`` (called lazily, on activation).

    ``threads``: CPU threads per inference (``INFERENCE_NUM_THREADS``; default: OpenVINO's choice, all
    physical cores). ``performance_hint``: ``"LATENCY"`` (one request uses every core; what one image at a
    time wants) or ``"THROUGHPUT"`` (several streams sharing the cores).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        device: str = "CPU",
        threads: int | None = None,
        performance_hint: str = "LATENCY",
    ) -> None:
        if threads is not None and threads < 1:
            raise UsageError(f"threads={threads}: expected at least 1 (or None for all cores).")
        if performance_hint not in ("LATENCY", "THROUGHPUT"):
            raise UsageError(f"performance_hint {performance_hint!r}: expected 'LATENCY' or 'THROUGHPUT'.")
        self.path = Path(path)
        self.device = device
        self.threads = threads
        self.performance_hint = performance_hint

    def config(self) -> dict[str, str]:
        cfg = {"PERFORMANCE_HINT": self.performance_hint, "INFERENCE_PRECISION_HINT": "f32"}
        if self.threads:
            cfg["INFERENCE_NUM_THREADS"] = str(self.threads)
        return cfg

    def __call__(self) -> Any:
        core = shared_core()
        if self.device not in core.available_devices:
            raise BackendUnavailableError(
                f"OpenVINO {openvino_version()} has no {self.device} device here (it has "
                f"{core.available_devices}). Fix: use --backend onnxruntime, or run on a machine with that device."
            )
        try:
            # the ONNX frontend only: core.read_model tries every frontend on a file it cannot parse, and the
            # TensorFlow one writes raw (non-UTF-8) parser lines to the process's stderr
            frontend = _ov_frontend().FrontEndManager().load_by_framework("onnx")
            model = frontend.convert(frontend.load(str(self.path)))
            return core.compile_model(model, self.device, self.config())
        except Exception as exc:  # openvino raises RuntimeError/its own classes with the parser's message
            raise ModelFileError(
                f"{self.path}: OpenVINO cannot load it: not a valid ONNX file, or one with operators it does not "
                f"support ({type(exc).__name__}: {str(exc).strip()[:300]}). Fix: re-export with nst-export, or "
                "use --backend onnxruntime."
            ) from None


class OpenVinoRunner:
    """Runner: uint8 NHWC batch in, uint8 NHWC batch out. A context manager; ``infer`` is thread-safe."""

    name = "openvino"
    on_gpu = False

    def __init__(self, load: CompiledModelFromOnnx, *, sidecar: Sidecar, requests: int = DEFAULT_REQUESTS) -> None:
        if requests < 1:
            raise UsageError(f"requests={requests}: expected at least 1.")
        self._load = load
        self.sidecar = sidecar
        self.requests = requests
        self._compiled: Any = None
        self._pool: ContextPool[Any] | None = None
        #: largest (N, H, W) one call takes; None: no limit but memory
        self.max_shape: tuple[int, int, int] | None = None

    def activate(self) -> OpenVinoRunner:
        if self._compiled is not None:
            return self
        compiled = self._load()
        inputs = [sorted(p.get_names()) for p in compiled.inputs]
        outputs = [n for p in compiled.outputs for n in p.get_names()]
        want_in, want_out = self.sidecar.input.name, self.sidecar.output.name
        wanted = self.sidecar.input_names
        if (len(inputs) != len(wanted) or not all(any(w in names for names in inputs) for w in wanted)
                or want_out not in outputs):
            raise ModelFileError(
                f"{self._load.path}: graph inputs {inputs} / outputs {outputs}; the sidecar says "
                f"{wanted} -> {want_out!r}. Fix: re-export with nst-export, which writes both together."
            )
        in_type = compiled.input(want_in).get_element_type().get_type_name()
        if in_type != "u8":
            raise ModelFileError(
                f"{self._load.path}: input {want_in!r} is {in_type}; expected u8 (the uint8 NHWC contract). "
                "Fix: re-export with nst-export."
            )
        self._compiled = compiled
        self._output = compiled.output(want_out)
        self._pool = ContextPool(compiled.create_infer_request, size=self.requests)
        logger.info("%s: openvino %s on %s (%s)", self._load.path.name, openvino_version(), self._load.device,
                    ", ".join(f"{k}={v}" for k, v in self._load.config().items()))
        return self

    def infer(self, batch: np.ndarray, extra: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """Run one uint8 [N, H, W, 3] batch (H, W >= the sidecar's min_size); ``extra``: the other inputs
        (a multi-style network's style weights)."""
        if self._pool is None:
            raise UsageError("the runner is not active; use it inside `with` or call activate() first.")
        batch = np.ascontiguousarray(batch)
        feeds = {name: np.ascontiguousarray(value) for name, value in (extra or {}).items()}
        with self._pool.acquire() as request:
            # the input is read in place; the output lives in the request's memory, reused by its next call
            request.infer({self.sidecar.input.name: batch, **feeds}, share_inputs=True)
            return np.array(request.get_tensor(self._output).data, copy=True)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close(lambda _request: None)
        self._pool = None
        self._compiled = None

    def __enter__(self) -> OpenVinoRunner:
        return self.activate()

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Port:
    """``name`` and ``shape`` of a graph input or output, as ONNX Runtime's ``NodeArg`` has them."""

    def __init__(self, port: Any) -> None:
        self.name = port.get_any_name()
        self.shape = [d.get_length() if d.is_static else None for d in port.get_partial_shape()]


class _Meta:
    def __init__(self, custom: dict[str, str]) -> None:
        self.custom_metadata_map = custom


class OpenVinoSession:
    """A small graph (the tiling graph, its stems) on OpenVINO's CPU plugin with the surface of an ONNX Runtime
    ``InferenceSession`` that ``nst_runtime.tiling`` uses: ``get_inputs``, ``get_outputs``, ``get_modelmeta``
    (the ONNX file's metadata), ``get_providers`` and a thread-safe ``run(names, feed)``.

    ``source``: the ONNX file, or its bytes (a graph carried in the tiling graph's metadata), or an
    ``openvino.Model`` (:meth:`bake`'s copies, with ``config`` and ``meta`` of the session they came from)."""

    def __init__(self, source: str | os.PathLike[str] | bytes | Any, *, threads: int | None = None,
                 requests: int = DEFAULT_REQUESTS, label: str | None = None, config: dict[str, str] | None = None,
                 meta: dict[str, str] | None = None) -> None:
        import io

        self.label = label or (str(source) if not isinstance(source, bytes) else "an embedded graph")
        self._config = config or CompiledModelFromOnnx(self.label, threads=threads).config()
        self._requests = requests
        try:
            if isinstance(source, (str, os.PathLike, bytes)):
                frontend = _ov_frontend().FrontEndManager().load_by_framework("onnx")
                model = frontend.convert(frontend.load(io.BytesIO(source) if isinstance(source, bytes)
                                                       else str(source)))
            else:  # an openvino.Model already made (bake)
                model = source
            framework = model.get_rt_info()["framework"] if "framework" in model.get_rt_info() else {}
            self._meta = meta if meta is not None else {str(k): v.astype(str) for k, v in dict(framework).items()}
            self._compiled = shared_core().compile_model(model, "CPU", self._config)
        except Exception as exc:  # openvino raises RuntimeError/its own classes with the parser's message
            raise ModelFileError(
                f"{self.label}: OpenVINO cannot load it ({type(exc).__name__}: {str(exc).strip()[:300]}). "
                "Fix: re-export with nst-export, or use --backend onnxruntime."
            ) from None
        self._model = model
        self._setup()

    def bake(self, values: Mapping[str, np.ndarray]) -> OpenVinoSession:
        """A copy compiled with the inputs in ``values`` fixed to those arrays (constants: OpenVINO folds them
        into the operations that use them, e.g. per-channel scales into the convolutions before them)."""
        ov = _ov()
        model = self._model.clone()
        params = {p.get_friendly_name(): p for p in model.get_parameters()}
        missing = sorted(set(values) - set(params))
        if missing:
            raise ModelFileError(f"{self.label}: no inputs {missing} to fix (it has {sorted(params)}). "
                                 "Fix: re-export it with nst-export.")
        try:
            for name, value in values.items():
                param = params[name]
                constant = ov.opset13.constant(np.ascontiguousarray(value))
                for target in list(param.output(0).get_target_inputs()):
                    target.replace_source_output(constant.output(0))
                model.remove_parameter(param)
            model.validate_nodes_and_infer_types()
        except Exception as exc:  # openvino's own classes, with the shape or type it objects to
            raise ModelFileError(f"{self.label}: OpenVINO cannot fix its inputs {sorted(values)} "
                                 f"({type(exc).__name__}: {str(exc).strip()[:300]}). Fix: re-export it with "
                                 "nst-export, or use --backend onnxruntime.") from None
        return OpenVinoSession(model, threads=None, requests=self._requests, label=f"{self.label} (baked)",
                               config=self._config, meta=self._meta)

    def _setup(self) -> None:
        self._inputs = [_Port(p) for p in self._compiled.inputs]
        self._outputs = [_Port(p) for p in self._compiled.outputs]
        self._pool: ContextPool[Any] = ContextPool(self._compiled.create_infer_request, size=self._requests)
        self._running = 0
        self._lock = threading.Lock()

    def get_inputs(self) -> list[_Port]:
        return list(self._inputs)

    def get_outputs(self) -> list[_Port]:
        return list(self._outputs)

    def get_modelmeta(self) -> _Meta:
        return _Meta(dict(self._meta))

    def get_providers(self) -> list[str]:
        return ["OpenVINO:CPU"]

    def run(self, names: list[str] | None, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        names = names or [p.name for p in self._outputs]
        with self._lock:
            self._running += 1
        try:
            with self._pool.acquire() as request:
                request.infer({k: np.ascontiguousarray(v) for k, v in feed.items()}, share_inputs=True)
                return [np.array(request.get_tensor(name).data, copy=True) for name in names]
        finally:
            with self._lock:
                self._running -= 1

    def release_memory(self) -> None:
        """Give back the intermediate tensors OpenVINO keeps after a call (``CompiledModel.release_memory``),
        unless a call is running. OpenVINO holds them until the next call of another shape, so the stems'
        buffers would otherwise sit beside the tiling graph's (a 9000x9000 image: 3 GiB over the budget)."""
        with self._lock:
            if self._running == 0:
                self._compiled.release_memory()
