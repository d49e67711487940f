"""ONNX Runtime backend: a loader (``SessionFromOnnx``) and a runner (``OnnxRuntimeRunner``).

Providers (:func:`select_providers`): CUDA → CPU by default, keeping those this onnxruntime build has.

* TensorRT's execution provider only when asked for (``providers=["TensorrtExecutionProvider", ...]``): it
  builds an engine inside ``run`` and rebuilds whenever an input falls outside the shapes it has built for
  (calls of 40-100 s are reported in onnxruntime's issue tracker), so it always gets an explicit optimization
  profile, from the tile limits (:func:`tensorrt_ep_profile`; the Stylizer tiles anything larger), and an
  engine cache folder, so a process builds each engine once and later processes not at all.
* CUDA's ``cudnn_conv_algo_search`` is ``HEURISTIC`` by default instead of ONNX Runtime's ``EXHAUSTIVE``,
  which benchmarks every convolution again for every new input shape (634 ms per new shape against 1.9 ms in
  one report) while images, tiles and video sizes vary; ``EXHAUSTIVE`` stays available for fixed sizes.
* ``device`` speaks the shared vocabulary (:mod:`nst_runtime.devices`): ``auto`` (GPU providers when the
  build has them, else the CPU), ``cpu``, ``cuda``/``cuda:N`` (a GPU provider is required), or an int N.

``InferenceSession.run`` is thread-safe, so one session serves every thread.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._lazy import import_optional
from .devices import Device, parse_device
from .errors import BackendUnavailableError, ModelFileError, UsageError
from .sidecar import ShapeProfile, Sidecar

logger = logging.getLogger(__name__)

#: default order when no providers are named: TensorRT's provider is never picked silently
PREFERENCE = ("CUDAExecutionProvider", "CPUExecutionProvider")
GPU_PROVIDERS = frozenset({"TensorrtExecutionProvider", "CUDAExecutionProvider"})
CUDNN_CONV_ALGO_SEARCH = ("HEURISTIC", "EXHAUSTIVE", "DEFAULT")
DEFAULT_CUDNN_CONV_ALGO_SEARCH = "HEURISTIC"
#: largest square side of one call on TensorRT's provider when no tile size is given (1080p either way up)
DEFAULT_TRT_EP_TILE = 2048

ProviderSpec = str | tuple[str, dict[str, Any]]


def _ort() -> Any:
    ort = import_optional("onnxruntime", purpose="the ONNX Runtime backend",
                          install="pip install 'nst[runtime]' (or onnxruntime-gpu for CUDA)")
    global _ort_quiet
    if not _ort_quiet:
        # ONNX Runtime's own (coloured, multi-line) warnings would reach stderr raw, even under -q: keep its
        # errors only; nst reports what went wrong in its own one-line messages
        ort.set_default_logger_severity(3)
        _ort_quiet = True
    return ort


_ort_quiet = False


def default_tensorrt_cache_dir() -> Path:
    """Where TensorRT's provider keeps the engines it builds: ``$XDG_CACHE_HOME/nst/onnxruntime-tensorrt``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "nst" / "onnxruntime-tensorrt"


def tensorrt_ep_profile(*, tile: int | None, batch_size: int = 1, min_size: int = 8) -> ShapeProfile:
    """The optimization profile TensorRT's provider builds for: any image from ``min_size`` up to the tile
    limit (``tile``, else :data:`DEFAULT_TRT_EP_TILE`) on each side, up to ``batch_size`` images; tuned for
    the largest single tile, the size most calls of a tiled image have."""
    side = tile if tile is not None else DEFAULT_TRT_EP_TILE
    if side < min_size or batch_size < 1:
        raise UsageError(f"TensorRT provider profile: tile {side} must be >= {min_size} and batch >= 1.")
    return ShapeProfile(min=(1, min_size, min_size), opt=(1, side, side), max=(batch_size, side, side))


def _shapes(input_name: str, shape: tuple[int, int, int]) -> str:
    return f"{input_name}:{shape[0]}x{shape[1]}x{shape[2]}x3"


def provider_options(
    name: str, *, device_id: int, cudnn_conv_algo_search: str = DEFAULT_CUDNN_CONV_ALGO_SEARCH,
    tensorrt_profile: ShapeProfile | None = None, tensorrt_cache_dir: str | os.PathLike[str] | None = None,
    input_name: str = "input",
) -> dict[str, Any]:
    """The provider options nst sets for a GPU provider (ONNX Runtime's documented option names)."""
    if name == "CUDAExecutionProvider":
        return {"device_id": device_id, "cudnn_conv_algo_search": cudnn_conv_algo_search}
    if name == "TensorrtExecutionProvider":
        profile = tensorrt_profile or tensorrt_ep_profile(tile=None)
        cache = Path(tensorrt_cache_dir) if tensorrt_cache_dir is not None else default_tensorrt_cache_dir()
        return {
            "device_id": device_id,
            "trt_profile_min_shapes": _shapes(input_name, profile.min),
            "trt_profile_opt_shapes": _shapes(input_name, profile.opt),
            "trt_profile_max_shapes": _shapes(input_name, profile.max),
            "trt_engine_cache_enable": "True",
            "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": "True",
            "trt_timing_cache_path": str(cache),
        }
    return {}


def select_providers(
    available: Sequence[str],
    *,
    device: Device | int | str | None = "auto",
    requested: Sequence[str] | None = None,
    cudnn_conv_algo_search: str = DEFAULT_CUDNN_CONV_ALGO_SEARCH,
    tensorrt_profile: ShapeProfile | None = None,
    tensorrt_cache_dir: str | os.PathLike[str] | None = None,
    input_name: str = "input",
    gpu_required: bool = True,
) -> list[ProviderSpec]:
    """Providers to use, best first, with nst's options on the GPU ones.

    ``device``: ``"auto"`` uses the GPU providers this build has, else the CPU; ``"cpu"`` only the CPU;
    ``"cuda"``/``"cuda:N"`` (or an int N) needs a GPU provider (:class:`BackendUnavailableError` with the fix
    otherwise, unless ``gpu_required=False``, which falls back to the CPU). ``requested``: providers named
    explicitly (each must be available; the only way to get TensorRT's provider); otherwise CUDA → CPU.
    ``cudnn_conv_algo_search``: CUDA's convolution algorithm search (HEURISTIC, EXHAUSTIVE or DEFAULT).
    ``tensorrt_profile`` / ``tensorrt_cache_dir``: TensorRT's provider's optimization profile and engine cache.
    The CPU provider is always last, as the fallback for anything a GPU provider does not take.
    """
    algo = str(cudnn_conv_algo_search).upper()
    if algo not in CUDNN_CONV_ALGO_SEARCH:
        raise UsageError(f"cudnn_conv_algo_search {cudnn_conv_algo_search!r}: expected one of "
                         f"{', '.join(CUDNN_CONV_ALGO_SEARCH)} (HEURISTIC unless every input has one size).")
    dev = parse_device(device)
    if dev.kind not in ("auto", "cpu", "cuda"):
        raise UsageError(f"device {dev}: ONNX Runtime runs on cpu or cuda.")
    if requested:
        missing = [p for p in requested if p not in available]
        if missing:
            raise BackendUnavailableError(
                f"ONNX Runtime providers {missing} are not in this onnxruntime build (it has "
                f"{list(available)}). Fix: install onnxruntime-gpu for CUDA/TensorRT, or drop --providers."
            )
        names = list(dict.fromkeys(requested))
    else:
        names = [p for p in PREFERENCE if p in available]
    if dev.kind == "cpu":
        dropped = [p for p in names if p in GPU_PROVIDERS]
        if dropped and requested:
            logger.info("device cpu: not using %s", ", ".join(dropped))
        names = [p for p in names if p not in GPU_PROVIDERS]
    elif dev.kind == "cuda" and not any(p in GPU_PROVIDERS for p in names):
        if gpu_required:
            raise BackendUnavailableError(
                f"device {dev} needs ONNX Runtime's CUDA (or TensorRT) provider, and this onnxruntime build has "
                f"only {list(available)}. Fix: pip install onnxruntime-gpu (with a CUDA driver on this machine), "
                "or pass --device cpu (or auto, which uses a GPU only where one is usable)."
            )
        logger.info("device %s: no GPU provider in this onnxruntime build; using the CPU", dev)
    if "CPUExecutionProvider" not in names:
        names.append("CPUExecutionProvider")
    if "TensorrtExecutionProvider" in names and tensorrt_profile is None:
        tensorrt_profile = tensorrt_ep_profile(tile=None)
    chosen: list[ProviderSpec] = []
    for p in names:
        if p in GPU_PROVIDERS:
            chosen.append((p, provider_options(p, device_id=dev.gpu_index, cudnn_conv_algo_search=algo,
                                               tensorrt_profile=tensorrt_profile,
                                               tensorrt_cache_dir=tensorrt_cache_dir, input_name=input_name)))
        else:
            chosen.append(p)
    return chosen


def provider_names(providers: Sequence[ProviderSpec]) -> list[str]:
    return [p[0] if isinstance(p, tuple) else p for p in providers]


#: CPU sessions' memory settings (measured with tools/cpu_memory.py, docs/runtime.md "Memory"): ONNX Runtime's
#: CPU arena grows in powers of two and keeps what it took (peak 3.0 GiB at 1920x1080; off: 1.4 GiB, and not
#: slower). Memory patterns (one block per input shape, reused within a run) stay on: off saves another
#: 0.25 GiB at 1080p (1.1 GiB at 3840x2160) but every tensor then comes from fresh pages, 25-60 % slower
CPU_MEMORY_ARENA = False
CPU_MEMORY_PATTERNS = True


class SessionFromOnnx:
    """Loader: ONNX file → ``onnxruntime.InferenceSession`` (called lazily, on activation).

    ``memory_arena`` / ``memory_patterns`` apply to CPU-only sessions (GPU sessions keep ONNX Runtime's
    defaults); the defaults, :data:`CPU_MEMORY_ARENA` and :data:`CPU_MEMORY_PATTERNS`, halve peak memory
    without losing speed; ``memory_patterns=False`` trades speed for the lowest peak.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        providers: Sequence[ProviderSpec],
        intra_op_threads: int | None = None,
        memory_arena: bool = CPU_MEMORY_ARENA,
        memory_patterns: bool = CPU_MEMORY_PATTERNS,
        data: bytes | None = None,
    ) -> None:
        self.path = Path(path)
        #: the model's bytes when it is not the file at ``path`` (a graph carried inside it; path names it)
        self.data = data
        self.providers = list(providers)
        self.intra_op_threads = intra_op_threads
        self.memory_arena = memory_arena
        self.memory_patterns = memory_patterns

    def __call__(self) -> Any:
        ort = _ort()
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if self.intra_op_threads:
            opts.intra_op_num_threads = self.intra_op_threads
        if all((p[0] if isinstance(p, tuple) else p) not in GPU_PROVIDERS for p in self.providers):
            opts.enable_cpu_mem_arena = self.memory_arena
            opts.enable_mem_pattern = self.memory_patterns
        for p in self.providers:
            cache = p[1].get("trt_engine_cache_path") if isinstance(p, tuple) else None
            if cache:
                try:
                    Path(cache).mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise UsageError(f"TensorRT provider engine cache {cache}: cannot create it "
                                     f"({exc.strerror or exc}). Fix: pass a writable tensorrt_cache_dir.") from None
        try:
            return ort.InferenceSession(str(self.path) if self.data is None else self.data, sess_options=opts,
                                        providers=self.providers)
        except Exception as exc:  # onnxruntime raises its own pybind classes (InvalidProtobuf, Fail, …)
            raise ModelFileError(
                f"{self.path}: ONNX Runtime cannot load it ({type(exc).__name__}: {str(exc).strip()[:300]}). "
                "The file is corrupt or not an nst ONNX export. Fix: re-export with nst-export."
            ) from None


class OnnxRuntimeRunner:
    """Runner: uint8 NHWC batch in, uint8 NHWC batch out. A context manager; ``infer`` is thread-safe."""

    name = "onnxruntime"

    def __init__(self, load_session: SessionFromOnnx, *, sidecar: Sidecar,
                 max_shape: tuple[int, int, int] | None = None) -> None:
        self._load = load_session
        self.sidecar = sidecar
        self._session: Any = None
        #: largest (N, H, W) one call takes; None: no limit but memory. With TensorRT's provider: its
        #: profile's maximum, so the Stylizer tiles instead of making the provider build another engine
        self.max_shape: tuple[int, int, int] | None = max_shape

    @property
    def providers(self) -> list[str]:
        return list(self._session.get_providers()) if self._session is not None else []

    @property
    def on_gpu(self) -> bool:
        return any(p in GPU_PROVIDERS for p in self.providers)

    def activate(self) -> OnnxRuntimeRunner:
        if self._session is not None:
            return self
        session = self._load()
        inputs, outputs = session.get_inputs(), session.get_outputs()
        want_in, want_out = self.sidecar.input.name, self.sidecar.output.name
        names = sorted(i.name for i in inputs)
        if names != sorted(self.sidecar.input_names) or want_out not in [o.name for o in outputs]:
            raise ModelFileError(
                f"{self._load.path}: graph inputs {[i.name for i in inputs]} / outputs "
                f"{[o.name for o in outputs]}; the sidecar says {self.sidecar.input_names} -> {want_out!r}. "
                "Fix: re-export with nst-export, which writes both together."
            )
        image = next(i for i in inputs if i.name == want_in)
        if image.type != "tensor(uint8)":
            raise ModelFileError(
                f"{self._load.path}: input {want_in!r} is {image.type}; expected tensor(uint8) "
                "(the uint8 NHWC contract). Fix: re-export with nst-export."
            )
        self._session = session
        logger.info("%s: onnxruntime providers %s", self._load.path.name, session.get_providers())
        return self

    def infer(self, batch: np.ndarray, extra: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """Run one uint8 [N, H, W, 3] batch (H, W >= the sidecar's min_size); ``extra``: the other inputs
        (a multi-style network's style weights)."""
        session = self._session  # read once: close() in another thread may clear it between two reads
        if session is None:
            raise UsageError("this Stylizer is closed (or its runner not active); open a new one with "
                             "Stylizer.open(...).")
        (out,) = session.run([self.sidecar.output.name], {self.sidecar.input.name: batch, **(extra or {})})
        return out

    def close(self) -> None:
        self._session = None

    def __enter__(self) -> OnnxRuntimeRunner:
        return self.activate()

    def __exit__(self, *exc: object) -> None:
        self.close()
