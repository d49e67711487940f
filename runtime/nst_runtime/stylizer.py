"""``Stylizer``: one exported style network, opened on a backend, applied to images, batches and frames."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

import numpy as np
from PIL import Image

from .artifact import ModelArtifact, fp16_sibling, open_artifact
from .errors import ModelFileError, NstError, UsageError
from .images import (
    DEFAULT_MAX_PIXELS,
    ImageSource,
    array_to_planes,
    encode_image,
    merge_planes,
    output_format_for,
    pad_to_min_size,
    pil_to_planes,
    read_image,
)
from .memory import (
    APPLY_ARENA_CALL_COST,
    CallCost,
    call_cost,
    format_bytes,
    largest_tile_side,
    resolve_memory_limit,
)
from .pipeline import Stage, run_pipeline
from .sidecar import Sidecar
from .steps import StepKwargs, StepPlan, fit_plane
from .styles import StyleSpec, missing_style_message, style_weights
from .temporal import TemporalOptions, TemporalSmoother
from .tiling import (
    DEFAULT_FAST_HALO,
    DEFAULT_TILE_HALO,
    TilingGraph,
    fast_stats_pixels,
    fast_window_pixels,
    find_tiling_graph,
    stylize_exact,
    stylize_fast,
    stylize_tiled,
    tiling_graph_path,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

logger = logging.getLogger(__name__)

Backend = Literal["auto", "onnxruntime", "tensorrt", "openvino"]
TileMode = Literal["fast", "exact"]
ImageT = TypeVar("ImageT", Image.Image, np.ndarray)
DEFAULT_TILE_OVERLAP = 64


class Runner(Protocol):
    """What a backend runner offers the Stylizer. ``infer`` must be safe to call from several threads."""

    name: str
    #: the largest (N, H, W) one call takes, or None where only memory limits it
    max_shape: tuple[int, int, int] | None

    def infer(self, batch: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


class Stylizer:
    """Run an exported style network (ONNX file or TensorRT engine) on images, batches and video frames.

    Open it with :meth:`open` and use it as a context manager so that sessions, GPU buffers and CUDA
    streams are freed on exit::

        from nst_runtime import Stylizer
        with Stylizer.open("candy.onnx") as s:
            out = s.stylize(Image.open("photo.jpg"))     # PIL in, PIL out; numpy HxWx3 uint8 in, numpy out

    All calls are thread-safe: one Stylizer can serve many threads. :meth:`close` from another thread lets
    calls already inside the network finish (TensorRT and OpenVINO wait for them; ONNX Runtime keeps the session
    those calls hold); a call that starts after it raises :class:`UsageError` ("this Stylizer is closed").
    """

    def __init__(
        self,
        runner: Runner,
        artifact: ModelArtifact,
        *,
        tile: int | None = None,
        tile_overlap: int = DEFAULT_TILE_OVERLAP,
        batch_size: int = 1,
        parallel_calls: int = 1,
        tile_halo: int | None = None,
        tiling_graph: Callable[[], TilingGraph] | None = None,
        tile_mode: TileMode = "fast",
        memory_limit: int | str | None = None,
        check_contract: bool = False,
        style: StyleSpec | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        style_graph: Callable[..., Any] | None = None,
    ) -> None:
        if tile is not None and tile < artifact.sidecar.min_size:
            raise UsageError(f"tile {tile}: expected at least the model's minimum size {artifact.sidecar.min_size}.")
        if batch_size < 1:
            raise UsageError(f"batch_size {batch_size}: expected >= 1.")
        if tile_mode not in ("fast", "exact"):
            raise UsageError(f"tile_mode {tile_mode!r}: expected 'fast' (statistics from a downscaled copy, one "
                             "tiled pass) or 'exact' (whole-image statistics, 16 passes).")
        if tile_halo is None:
            tile_halo = DEFAULT_FAST_HALO if tile_mode == "fast" else DEFAULT_TILE_HALO
        if tile_halo < 0:
            raise UsageError(f"tile_halo {tile_halo}: expected >= 0 pixels (default {DEFAULT_TILE_HALO}).")
        self._runner: Runner | None = runner
        self.artifact = artifact
        self.tile = tile
        self.tile_overlap = tile_overlap
        #: exact and fast tiling: context pixels around each tile's core (see nst_runtime.tiling)
        self.tile_halo = tile_halo
        #: how tiles get whole-image statistics when the tiling graph is there: "fast" or "exact"
        self.tile_mode: TileMode = tile_mode
        #: bytes one call may use (None: no budget); larger calls run in tiles (nst_runtime.memory)
        self.memory_limit = resolve_memory_limit(memory_limit)
        self._budget_logged = False
        self._progress = threading.local()
        self.batch_size = batch_size
        #: AdaIN style images: refused above this many pixels (as read_image refuses content images)
        self.max_pixels = max_pixels
        # AdaIN: opens the style graph (StyleStatistics) with the model's threads and hash setting, on first use
        self._load_style_graph = style_graph
        self._adain_styles: Any = None
        # the tiling graph is opened on the first image that needs tiles (most never do)
        self._load_tiling = tiling_graph
        self._tiling: TilingGraph | None = None
        self._tiling_checked = False
        self._tiling_lock = threading.Lock()
        #: the tiling graphs hold buffers (OpenVINO) from the last tiled image, outside the memory budget
        self._tiling_holds = False
        #: how many calls may usefully run at once (overlapping upload, compute, download)
        self.parallel_calls = max(1, parallel_calls)
        # engines also have a profile minimum; images smaller than it are padded on the host like tiny ones
        min_shape = getattr(runner, "min_shape", None)
        self.min_size = max(artifact.sidecar.min_size, *(min_shape[1:] if min_shape else (0,)))
        #: multi-style networks: the style used when a call names none (None: every call must name one)
        self.style: StyleSpec | None = None
        try:
            if style is not None:
                self.style_feeds(style)  # an unknown name or a one-style network fails here, before any image
            self.style = style
        except BaseException:
            self.close()
            raise
        if check_contract:
            try:
                self._check_contract()
            except BaseException:
                self.close()
                raise

    # ----------------------------------------------------------------------------------------- opening
    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        device: int | str = "auto",
        backend: Backend = "auto",
        providers: Sequence[str] | None = None,
        tile: int | None = None,
        tile_overlap: int = DEFAULT_TILE_OVERLAP,
        batch_size: int = 1,
        prefer_fp16: bool = True,
        verify_hash: bool = True,
        intra_op_threads: int | None = None,
        contexts: int = 2,
        cuda_graphs: bool = False,
        tile_halo: int | None = None,
        tile_mode: TileMode = "fast",
        memory_limit: int | str | None = None,
        cudnn_conv_algo_search: str = "HEURISTIC",
        tensorrt_cache_dir: str | os.PathLike[str] | None = None,
        allow_engine_host_code: bool = False,
        style: StyleSpec | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ) -> Stylizer:
        """Open ``path`` (``.onnx``, or a TensorRT ``.engine``/``.plan``) after checking its sidecar; or a model
        name of nst's catalogue or cache (``"mosaic"``: its cached artifact, see ``nst-models``).

        Args:
            device: ``"auto"`` (a GPU when one is usable, else the CPU), ``"cpu"``, ``"cuda"``/``"cuda:N"`` (a
                GPU is required), or an int N (the older form: GPU N, else the CPU).
            backend: ``"auto"`` walks the table in :mod:`nst_runtime.backends`: TensorRT for engines; for ONNX
                files ONNX Runtime's GPU providers, then OpenVINO (x86 CPUs, when installed), then ONNX
                Runtime on the CPU. Or ``"onnxruntime"``, ``"openvino"``, ``"tensorrt"``.
            providers: ONNX Runtime providers to use instead of CUDA → CPU; TensorRT's provider runs only when
                named here, then with an optimization profile from ``tile``/``batch_size`` (larger images are
                tiled) and an engine cache in ``tensorrt_cache_dir``.
            tile: largest height/width of one network call; larger images run in overlapping tiles.
                Engines are also limited by their optimization profile's maximum.
            tile_overlap: fallback tiling (no ``NAME.tiling.onnx``): pixels neighbouring tiles share
                (cross-faded).
            tile_halo: fast and exact tiling (``NAME.tiling.onnx`` beside the model): context pixels around
                each tile's core. Exact mode: that many (default 64), lowered where the tile size leaves no room.
                Fast mode: an upper bound (default 32): the plan takes the fewest tiles any halo of 16 px up to
                it allows, then the largest halo those tiles hold.
            tile_mode: with the tiling graph, ``"fast"`` (default: whole-image statistics estimated from one
                pass over a downscaled copy, the first two layers' found exactly by the graph's stems, then
                one pass over the tiles) or ``"exact"`` (the statistics of the whole image itself, 16 passes
                over the tiles).
            memory_limit: bytes one call may use (an int, or ``"8G"``, ``"512MiB"``, ``"60%"`` of the memory
                available now, ``"none"``); default (None): half the memory available when the model is
                opened. A call whose estimated peak is larger runs in tiles (:mod:`nst_runtime.memory`).
            batch_size: images per call in :meth:`stylize_batch` / :meth:`stylize_frames`.
            prefer_fp16: on a GPU provider, use ``model.fp16.onnx`` when it lies beside ``model.onnx``.
            verify_hash: check the file's SHA-256 against the sidecar before loading it.
            intra_op_threads: ONNX Runtime CPU threads per call (default: all cores).
            contexts: TensorRT execution contexts (each with its own stream and buffers) in the pool.
            cuda_graphs: TensorRT: capture a CUDA graph per input shape and replay it.
            cudnn_conv_algo_search: ONNX Runtime CUDA provider: ``"HEURISTIC"`` (default: no re-benchmark per
                new input shape), ``"EXHAUSTIVE"`` (ONNX Runtime's default; best for one fixed size) or
                ``"DEFAULT"``.
            tensorrt_cache_dir: ONNX Runtime TensorRT provider engine cache (default
                ``$XDG_CACHE_HOME/nst/onnxruntime-tensorrt``).
            allow_engine_host_code: let a version-compatible TensorRT engine run the lean runtime embedded in
                it: this runs code from the file on this machine, so pass True only for engines whose source
                you trust. Without it such engines are refused (plain engines need no host code).
            verify_hash: also refuses an engine whose sidecar holds no hash (``False``: ``--no-verify``).
            style: multi-style networks: the style of calls that name none (a name, an index, ``"I:W,J:W"``…;
                see :mod:`nst_runtime.styles`); each call's ``style=`` overrides it.
            max_pixels: AdaIN models: style images larger than this are refused (as :func:`read_image` refuses
                content images); None: no limit (trusted files only).

        Raises:
            ModelFileError: missing/mismatched sidecar, hash mismatch, corrupt or foreign file.
            BackendUnavailableError: the backend, GPU, or matching TensorRT version is not here.
            UsageError: an invalid option.
        """
        from .artifact import fallback_hint
        from .backends import BACKEND_NAMES, choose_backend
        from .errors import BackendUnavailableError

        if backend not in BACKEND_NAMES:
            raise UsageError(f"backend {backend!r}: expected one of {', '.join(map(repr, BACKEND_NAMES))}.")
        from .models.store import resolve_model

        # a model name ("mosaic") opens the cached artifact of nst's catalogue (nst-models pull NAME)
        target = Path(resolve_model(path))
        # each file is hashed once: an engine here (before TensorRT is imported), its bytes kept for the loader;
        # an ONNX file once the backend has chosen which one it runs (model.onnx, or its FP16 sibling on a GPU)
        is_engine = _is_engine_path(target)
        artifact = open_artifact(target, verify_hash=verify_hash and is_engine, keep_bytes=is_engine)
        engine_bytes, artifact = artifact.verified_bytes, dataclasses.replace(artifact, verified_bytes=None)
        tiling = dict(tile_halo=tile_halo, tile_mode=tile_mode, memory_limit=memory_limit, check_contract=True,
                      style=style, max_pixels=max_pixels,
                      style_graph=_style_graph_loader(verify_hash=verify_hash, intra_op_threads=intra_op_threads),
                      tiling_graph=_tiling_loader(
            artifact.path, device=device, providers=providers, intra_op_threads=intra_op_threads,
            verify_hash=verify_hash))
        # one table decides (nst_runtime.backends.PREFERENCE); -v shows the walk
        try:
            choice = choose_backend(artifact.kind, device=device, requested=backend, providers=providers)
        except UsageError as exc:
            raise UsageError(f"{artifact.path}: {exc}") from None
        except BackendUnavailableError as exc:
            hint = fallback_hint(artifact.path) if artifact.kind == "tensorrt" else ""
            raise BackendUnavailableError(f"{artifact.path}: {exc}{hint}") from None
        chosen = choice.backend
        if chosen == "openvino":
            from .openvino_backend import CompiledModelFromOnnx, OpenVinoRunner

            artifact = open_artifact(artifact.path, verify_hash=verify_hash)

            runner_ov = OpenVinoRunner(CompiledModelFromOnnx(artifact.path, threads=intra_op_threads),
                                       sidecar=artifact.sidecar).activate()
            # its tiling graph on OpenVINO too (faster there than on ONNX Runtime's CPU provider; docs/runtime.md)
            tiling["tiling_graph"] = _tiling_loader(artifact.path, device=device, providers=providers,
                                                    intra_op_threads=intra_op_threads, verify_hash=verify_hash,
                                                    backend="openvino")
            return cls(runner_ov, artifact, tile=tile, tile_overlap=tile_overlap, batch_size=batch_size,
                       parallel_calls=1, **tiling)
        if chosen == "tensorrt":
            from .artifact import fallback_hint
            from .devices import parse_device
            from .errors import BackendUnavailableError
            from .tensorrt_backend import EngineFromPath, TensorRTRunner

            try:  # device="cpu" never gets here: choose_backend refuses it for engines
                runner_trt = TensorRTRunner(
                    EngineFromPath(artifact.path, sidecar=artifact.sidecar, device=parse_device(device).gpu_index,
                                   verify_hash=verify_hash, allow_engine_host_code=allow_engine_host_code,
                                   verified_bytes=engine_bytes),
                    contexts=contexts, cuda_graphs=cuda_graphs,
                ).activate()
            except BackendUnavailableError as exc:
                if "ONNX" in str(exc):
                    raise
                raise BackendUnavailableError(str(exc) + fallback_hint(artifact.path)) from exc
            return cls(runner_trt, artifact, tile=tile, tile_overlap=tile_overlap, batch_size=batch_size,
                       parallel_calls=contexts, **tiling)

        from .devices import parse_device
        from .onnxruntime_backend import (
            GPU_PROVIDERS,
            OnnxRuntimeRunner,
            SessionFromOnnx,
            _ort,
            provider_names,
            select_providers,
            tensorrt_ep_profile,
        )

        ort_device = ("cpu" if choice.place == "cpu" else
                      device if isinstance(device, int) else parse_device(device).gpu_index)
        # TensorRT's provider (only when named in providers) builds for the tile limits; larger images tile
        trt_profile = (tensorrt_ep_profile(tile=tile, batch_size=batch_size, min_size=artifact.sidecar.min_size)
                       if providers and "TensorrtExecutionProvider" in providers else None)
        chosen_providers = select_providers(_ort().get_available_providers(), device=ort_device,
                                            requested=providers, cudnn_conv_algo_search=cudnn_conv_algo_search,
                                            tensorrt_profile=trt_profile, tensorrt_cache_dir=tensorrt_cache_dir,
                                            input_name=artifact.sidecar.input.name)
        on_gpu = any((p[0] if isinstance(p, tuple) else p) in GPU_PROVIDERS for p in chosen_providers)
        if on_gpu and prefer_fp16 and artifact.sidecar.precision == "fp32":
            sibling = fp16_sibling(artifact.path)
            if sibling is not None:
                logger.info("GPU provider: using the FP16 graph %s", sibling.name)
                artifact = open_artifact(sibling, verify_hash=False)
        artifact = open_artifact(artifact.path, verify_hash=verify_hash)  # the one file this session runs
        runner = OnnxRuntimeRunner(
            SessionFromOnnx(artifact.path, providers=chosen_providers, intra_op_threads=intra_op_threads),
            sidecar=artifact.sidecar,
            max_shape=(trt_profile.max if trt_profile and "TensorrtExecutionProvider" in provider_names(chosen_providers)
                       else None),
        ).activate()
        return cls(runner, artifact, tile=tile, tile_overlap=tile_overlap, batch_size=batch_size,
                   parallel_calls=2 if runner.on_gpu else 1, **tiling)

    # ----------------------------------------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Free the backend (session, GPU buffers, streams). Idempotent."""
        if self._runner is not None:
            self._runner.close()
            self._runner = None
        self._tiling = None
        styles, self._adain_styles = self._adain_styles, None
        if styles is not None:
            styles.close()

    def __enter__(self) -> Stylizer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def sidecar(self) -> Sidecar:
        return self.artifact.sidecar

    @property
    def path(self) -> Path:
        return self.artifact.path

    @property
    def backend(self) -> str:
        return self._active().name

    def _active(self) -> Runner:
        if self._runner is None:
            raise UsageError("this Stylizer is closed; open a new one with Stylizer.open(...).")
        return self._runner

    # ----------------------------------------------------------------------------------------- core
    def _call_cost(self, *, tiling_graph: bool = False, stats_graph: bool = False) -> CallCost:
        runner = self._active()
        on_gpu = bool(getattr(runner, "on_gpu", runner.name == "tensorrt"))
        backend = runner.name
        if tiling_graph:
            on_gpu = self._tiling.on_gpu if self._tiling is not None else False
            backend = self._tiling.backend if self._tiling is not None else "onnxruntime"
        return call_cost(backend, on_gpu=on_gpu, tiling_graph=tiling_graph, stats_graph=stats_graph,
                         family="adain" if self.sidecar.adain is not None else None)

    def _call_budget(self) -> int | None:
        """Bytes one call may use: the memory limit shared by the calls that run at once."""
        return None if self.memory_limit is None else self.memory_limit // self.parallel_calls

    def estimate_call_bytes(self, n: int, h: int, w: int) -> int:
        """Estimated peak memory of one untiled call on ``n`` images of ``h`` x ``w`` pixels (nst_runtime.memory)."""
        return self._call_cost().bytes_for(n * max(h, self.min_size) * max(w, self.min_size))

    def _over_budget(self, n: int, h: int, w: int) -> bool:
        budget = self._call_budget()
        return budget is not None and self.estimate_call_bytes(n, h, w) > budget

    def _call_limits(self) -> tuple[int, int]:
        """The largest H and W one call takes: ``tile`` and the engine's profile (not the memory budget)."""
        limit_h = limit_w = self.tile if self.tile is not None else 1 << 30
        max_shape = self._active().max_shape
        if max_shape is not None:
            limit_h, limit_w = min(limit_h, max_shape[1]), min(limit_w, max_shape[2])
        return limit_h, limit_w

    def _tile_limits(self, *, tiling_graph: bool = False) -> tuple[int, int]:
        """Tile size: the call limits, and the largest square tile the memory budget allows."""
        limit_h, limit_w = self._call_limits()
        budget = self._call_budget()
        if budget is not None:
            side = largest_tile_side(budget, self._call_cost(tiling_graph=tiling_graph))
            limit_h, limit_w = min(limit_h, side), min(limit_w, side)
        return limit_h, limit_w

    def _needs_tiles(self, h: int, w: int) -> bool:
        limit_h, limit_w = self._call_limits()
        return max(h, self.min_size) > limit_h or max(w, self.min_size) > limit_w or self._over_budget(1, h, w)

    def _batch_fitting(self, batch_size: int, h: int, w: int) -> int:
        """``batch_size``, lowered so that one call of that many ``h`` x ``w`` images fits the budget."""
        budget = self._call_budget()
        if budget is None:
            return batch_size
        per_image = max(h, self.min_size) * max(w, self.min_size)
        return max(1, min(batch_size, self._call_cost().pixels_within(budget) // per_image))

    def style_feeds(self, style: StyleSpec | None = None, *, strength: float = 1.0
                    ) -> dict[str, np.ndarray] | None:
        """The graph inputs besides the image for ``style`` (default: :attr:`style`): ``{name: weights}`` for a
        multi-style network, the style images' statistics and ``strength`` as alpha for an AdaIN network
        (:mod:`nst_runtime.adain`), None for a one-style one. :class:`UsageError` listing the styles when a
        multi-style network gets no style, or an unknown one."""
        if self.sidecar.adain is not None:
            style = self.style if style is None else style
            if style is None:
                raise UsageError(f"{self.path} is an arbitrary-style (AdaIN) network: give the style image with "
                                 "--style-image painting.jpg (Python: style=\"painting.jpg\"), or a blend "
                                 "a.jpg:0.7,b.jpg:0.3.")
            return self._style_statistics().feeds(style, self.sidecar.adain, strength)
        spec = self.sidecar.style
        if spec is None:
            if style is not None:
                raise UsageError(f"{self.path}: style {style!r}: this network holds one style; --style / style= "
                                 "chooses among the styles of a multi-style network.")
            return None
        style = self.style if style is None else style
        if style is None:
            raise UsageError(missing_style_message(spec, str(self.path)))
        return {spec.name: style_weights(style, spec, what=str(self.path))}

    def _style_statistics(self) -> Any:
        """The AdaIN style graph beside the model (opened on first use, on ONNX Runtime's CPU provider, with the
        model's threads and hash check), its calls bounded by the memory budget."""
        with self._tiling_lock:
            if self._adain_styles is None:
                from .adain import StyleStatistics
                from .memory import call_cost

                spec = self.sidecar.adain
                if not spec or not spec.style_graph:
                    raise ModelFileError(f"{self.path}: the sidecar names no AdaIN style graph. Fix: re-export "
                                         "the AdaIN checkpoint with nst-export.")
                path = self.path.with_name(spec.style_graph)
                if not path.is_file():
                    raise ModelFileError(f"{self.path}: its style graph {path.name} is not beside it; an AdaIN "
                                         "model is two files (NAME.onnx and NAME.style.onnx, with sidecars). "
                                         "Fix: copy both, or re-export with nst-export.")
                load = self._load_style_graph or StyleStatistics
                self._adain_styles = load(path, min_size=16, max_pixels=self.max_pixels,
                                          memory_limit=self.memory_limit,
                                          cost=call_cost("onnxruntime", on_gpu=False, family="adain-style"))
            return self._adain_styles

    def _infer_same_size(self, rgbs: Sequence[np.ndarray],
                         feeds: dict[str, np.ndarray] | None = None) -> list[np.ndarray]:
        h, w = rgbs[0].shape[:2]
        if self._tiling_holds and self._tiling is not None:
            # an untiled call after a tiled image: the tiling graphs give back what they hold, so this call has
            # its whole budget (the next tiled image would reuse it: giving it back there cost 2.5 s per image)
            self._tiling_holds = False
            self._tiling.release_memory()
        batch = np.stack([pad_to_min_size(x, self.min_size) for x in rgbs])
        out = self._active().infer(batch) if feeds is None else self._active().infer(batch, extra=feeds)
        if out.shape != batch.shape or out.dtype != np.uint8:
            raise ModelFileError(
                f"{self.path}: the network returned {out.dtype} {tuple(out.shape)} for a uint8 {tuple(batch.shape)} "
                "input; nst models return uint8 NHWC RGB of the input's size. Fix: re-export it with nst-export.")
        return [np.ascontiguousarray(o[:h, :w]) for o in out]

    def _check_contract(self) -> None:
        """One call at the smallest size before any user image: a graph that does not take and return uint8
        NHWC RGB of the input's size (NCHW, float output, resizing) is refused here in one line naming the file,
        instead of failing on every image with the backend's own words."""
        try:
            spec, adain = self.sidecar.style, self.sidecar.adain
            feeds = (None if spec is None else self.style_feeds(self.style if self.style is not None else 0))
            if adain is not None:  # neutral statistics: no style image is needed to check the contract
                feeds = {adain.mean: np.zeros(adain.channels, np.float32),
                         adain.std: np.ones(adain.channels, np.float32), adain.alpha: np.ones(1, np.float32)}
            self._infer_same_size([np.zeros((1, 1, 3), np.uint8)], feeds)
        except NstError:
            raise
        except Exception as exc:  # each backend raises its own classes (onnxruntime's Fail, openvino's, …)
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()] or [type(exc).__name__]
            raise ModelFileError(
                f"{self.path}: the network fails on a uint8 NHWC RGB batch of 1x{self.min_size}x{self.min_size}x3 "
                f"({type(exc).__name__}: {' '.join(lines)[:300]}); nst models take and return uint8 NHWC RGB "
                "(an NCHW or float32 graph does not). Fix: re-export it with nst-export (nst-export FILE.onnx "
                "imports an ONNX style network from elsewhere).") from None

    @contextlib.contextmanager
    def tile_progress(self, callback: Callable[[int, int], None] | None) -> Iterator[None]:
        """Within the block, tiled images stylized *in this thread* call ``callback(done, total)`` after each
        network call (for a progress bar per tile; untiled images make no calls to it)."""
        previous = getattr(self._progress, "callback", None)
        self._progress.callback = callback
        try:
            yield
        finally:
            self._progress.callback = previous

    def stylize_rgb(self, rgb: np.ndarray, *, style: StyleSpec | None = None,
                    feeds: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """The core: RGB uint8 HxWx3 in, RGB uint8 HxWx3 out, any size (padded or tiled as needed).
        ``style``: multi-style networks (see :meth:`stylize`); ``feeds``: the style already resolved."""
        h, w = rgb.shape[:2]
        if h < 1 or w < 1:
            raise UsageError(f"image of {w}x{h} pixels: expected at least 1x1.")
        if feeds is None:
            feeds = self.style_feeds(style)
        if not self._needs_tiles(h, w):
            return self._infer_same_size([rgb], feeds)[0]
        padded = pad_to_min_size(rgb, self.min_size)
        # the tiling graph takes no style input: a multi-style network's tiles keep their own statistics
        graph = self._tiling_graph() if feeds is None else None
        limit_h, limit_w = self._tile_limits(tiling_graph=graph is not None)
        self._log_tiling(h, w, limit_h, limit_w, graph)
        on_tile = getattr(self._progress, "callback", None)
        if graph is not None and self.tile_mode == "exact":
            return stylize_exact(padded, graph, tile_h=limit_h, tile_w=limit_w, halo=self.tile_halo,
                                 on_tile=on_tile)[:h, :w]
        if graph is not None:
            budget = self._call_budget()
            ph, pw = padded.shape[:2]
            stats_pixels = fast_stats_pixels(ph, pw)
            cost = self._call_cost(tiling_graph=True)
            # the pass over the copy runs the statistics graph where the file carries one (less memory per pixel)
            stats_cost = self._call_cost(tiling_graph=True, stats_graph=getattr(graph, "has_stats", False))
            if budget is not None:
                stats_pixels = min(stats_pixels, stats_cost.pixels_within(budget))
            # what the statistics pass leaves allocated (OpenVINO) beside a tile's call: give it back between
            # the steps only where both together could pass the budget (giving back costs the next image time)
            held = stats_cost.bytes_for(stats_pixels) + cost.bytes_for(min(limit_h, ph) * min(limit_w, pw))
            # ONNX Runtime's arena speeds up the tiles (their buffers reused, not fresh pages) where its larger
            # peak fits the windows the plan runs (balanced: often smaller than the limits); the tiles are not
            # made smaller for it
            window = fast_window_pixels(ph, pw, tile_h=limit_h, tile_w=limit_w, halo=self.tile_halo)
            apply_arena = budget is None or APPLY_ARENA_CALL_COST.bytes_for(window) <= budget
            out = stylize_fast(padded, graph, tile_h=limit_h, tile_w=limit_w, halo=self.tile_halo,
                               stats_pixels=stats_pixels, on_tile=on_tile, apply_arena=apply_arena,
                               release_memory=budget is not None and held > budget)
            # what the graphs keep would sit beside the next untiled call's budget: given back before that call
            self._tiling_holds = budget is not None
            return out[:h, :w]
        out = stylize_tiled(padded, lambda t: self._infer_same_size([t], feeds)[0], tile_h=limit_h, tile_w=limit_w,
                            overlap=min(self.tile_overlap, max(0, min(limit_h, limit_w) // 2 - 1)), on_tile=on_tile)
        return out[:h, :w]

    def _log_tiling(self, h: int, w: int, limit_h: int, limit_w: int, graph: TilingGraph | None) -> None:
        """One line per tiled image: why it is tiled and how; a warning the first time the budget is the cause."""
        mode = self.tile_mode if graph is not None else "feathered"
        level = logging.INFO
        if self._over_budget(1, h, w):
            why = (f"an untiled call would need about {format_bytes(self.estimate_call_bytes(1, h, w))}, more than "
                   f"the memory budget of {format_bytes(self._call_budget() or 0)} (memory_limit / --memory-limit)")
            if not self._budget_logged:
                self._budget_logged, level = True, logging.WARNING
        else:
            why = "it is larger than one call takes (tile= / --tile, or the engine's profile)"
        logger.log(level, "%dx%d image: %s; running it in %s tiles of at most %dx%d px", w, h, why, mode,
                   limit_w, limit_h)

    @property
    def tiling_mode(self) -> str:
        """How large images are tiled: ``"fast"`` or ``"exact"`` (``tile_mode``, with NAME.tiling.onnx found:
        whole-image statistics), or ``"feathered"`` (no tiling graph: per-tile statistics, cross-faded)."""
        return self.tile_mode if self._tiling_graph() is not None else "feathered"

    def _tiling_graph(self) -> TilingGraph | None:
        with self._tiling_lock:
            if not self._tiling_checked:
                self._tiling_checked = True
                self._tiling = self._open_tiling_graph()
            return self._tiling

    def _open_tiling_graph(self) -> TilingGraph | None:
        from .errors import BackendUnavailableError

        expected = tiling_graph_path(self.path)
        if self._load_tiling is not None:
            try:
                return self._load_tiling()
            except BackendUnavailableError as exc:
                reason = f"it cannot run here ({exc})"
            except FileNotFoundError:
                reason = f"there is no {expected.name} (with its sidecar) beside the model"
        else:
            reason = "no tiling graph was given"
        logger.warning(
            "%s: large images run in feathered tiles with per-tile instance-norm statistics, which shows as "
            "colour/contrast seams (about 16 dB PSNR against the untiled output on the test image), because %s. "
            "Fix for exact whole-image statistics: export the tiling graph (nst_export.tiling_graph."
            "tiling_onnx_from_checkpoint; nst-export writes NAME.tiling.onnx) and put it beside the model.",
            self.path.name, reason)
        return None

    # ----------------------------------------------------------------------------------------- public calls
    def stylize(self, image: ImageT, *, style: StyleSpec | None = None, **steps: Unpack[StepKwargs]) -> ImageT:
        """Stylize one image: a PIL image (any mode) → PIL RGB/RGBA; a numpy array → numpy uint8.

        ``style``: for a multi-style network (``sidecar.style``), which style or blend: a name, an index,
        ``"3:0.5,12:0.5"``, ``{"mosaic": 0.7, "udnie": 0.3}`` or the weight vector (:mod:`nst_runtime.styles`);
        default: the ``style`` given to :meth:`open`.

        numpy input: uint8 or uint16, HxW / HxWx1 (gray → HxWx3 out), HxWx3 RGB, HxWx4 RGBA (alpha kept).
        ``steps`` run around the network (:class:`nst_runtime.steps.StepOptions`): ``scale=0.5`` and/or
        ``max_size=1024`` (network at a smaller size: larger strokes, faster), ``output_size="input"|"processed"``,
        ``upsampler="guided"|"bicubic"``, ``preserve_color=True``, ``strength=0..1``.
        """
        return self.stylize_batch([image], style=style, **steps)[0]

    def stylize_bytes(
        self,
        data: ImageSource,
        *,
        format: str | None = None,
        quality: int = 95,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        **options: Any,
    ) -> bytes:
        """Encoded image in, encoded image out: for web apps and services that hold uploads, not files.

        ``data`` is the encoded image (``bytes``, or a binary file object such as an upload). It is decoded
        exactly as :func:`nst_runtime.read_image` decodes a file (the same decoders, ``max_pixels`` limit,
        EXIF orientation and errors; every frame of an animation is stylized), and the result is encoded
        as ``nst-stylize`` would write it: ``format`` ``"png"``, ``"jpeg"``, ``"webp"``… (default: the
        input's format where sensible, else PNG), ``quality`` 0..100 for JPEG and WebP. ``options`` go to
        :meth:`stylize` for every frame. ::

            png = stylizer.stylize_bytes(request_body, format="png")

        Raises:
            ImageError: undecodable or unsupported data (:class:`ImageTooLargeError` over ``max_pixels``).
            UsageError: an unknown ``format`` or a ``quality`` outside 0..100.
        """
        if isinstance(quality, bool) or not isinstance(quality, int) or not 0 <= quality <= 100:
            raise UsageError(f"quality {quality!r}: expected an integer from 0 to 100 (JPEG/WebP; default 95).")
        fmt = output_format_for(None, format) if format else None  # refuse a bad format before the work
        style = options.pop("style", None)
        plan, feeds = self._plan_and_feeds(style, options, max_pixels=max_pixels)  # once for all frames
        decoded = read_image(data, max_pixels=max_pixels, all_frames=True)
        frames = [self._stylize_planned([frame], batch_size=1, plan=plan, feeds=feeds)[0] for frame in decoded.frames]
        fmt = fmt or output_format_for(decoded.format, None, animated=decoded.is_animated)
        return encode_image(frames, format=fmt, quality=quality, durations=decoded.durations, loop=decoded.loop)

    def stylize_batch(self, images: Sequence[ImageT], *, batch_size: int | None = None,
                      style: StyleSpec | None = None, **steps: Unpack[StepKwargs]) -> list[ImageT]:
        """Stylize several images; same-size ones share calls of up to ``batch_size`` images. ``style`` and
        ``steps``: as in :meth:`stylize`."""
        plan, feeds = self._plan_and_feeds(style, steps)
        return self._stylize_planned(images, batch_size=batch_size, plan=plan, feeds=feeds)

    def _plan_and_feeds(self, style: StyleSpec | None, steps: dict[str, Any], *,
                        max_pixels: int | Literal["default"] | None = "default",
                        ) -> tuple[StepPlan, dict[str, np.ndarray] | None]:
        """The steps around the network and the graph's style inputs: resolved once per call or stream. The
        size the network sees (``scale`` up to 4) is bounded by ``max_pixels`` (default :attr:`max_pixels`) and
        the memory budget."""
        steps = dict(steps)
        strength = 1.0
        if self.sidecar.adain is not None:  # AdaIN: strength is alpha on features, not the pixel blend step
            strength = float(steps.pop("strength", 1.0))
        plan = StepPlan.of(**steps, max_pixels=self.max_pixels if max_pixels == "default" else max_pixels,
                           memory_limit=self.memory_limit)
        return plan, self.style_feeds(style, strength=strength)

    def _stylize_planned(self, images: Sequence[ImageT], *, batch_size: int | None, plan: StepPlan,
                         feeds: dict[str, np.ndarray] | None) -> list[ImageT]:
        bs = batch_size or self.batch_size
        max_shape = self._active().max_shape
        if max_shape is not None:
            bs = min(bs, max_shape[0])
        if self.sidecar.profile is not None:  # also an ONNX graph whose batch is fixed (a foreign import)
            bs = min(bs, self.sidecar.profile.max[0])
        # decode → pre-steps → network (tiled or not) → post-steps → encode (nst_runtime.steps)
        planes = [_to_planes(im) for im in images]
        seen = [plan.before(rgb) for rgb, _ in planes]
        results: list[np.ndarray | None] = [None] * len(planes)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, rgb in enumerate(seen):
            h, w = rgb.shape[:2]
            if h < 1 or w < 1 or self._needs_tiles(h, w) or bs == 1:
                results[i] = self.stylize_rgb(rgb, feeds=feeds)
            else:
                groups.setdefault((h, w), []).append(i)
        for (h, w), idx in groups.items():
            step = self._batch_fitting(bs, h, w)
            for start in range(0, len(idx), step):
                chunk = idx[start:start + step]
                for i, out in zip(chunk, self._infer_same_size([seen[i] for i in chunk], feeds), strict=True):
                    results[i] = out
        if plan.after:
            results = [plan.finish(out, rgb, small) if out is not None else None
                       for out, (rgb, _), small in zip(results, planes, seen, strict=True)]
        return [_from_planes(im, rgb_out, fit_plane(alpha, rgb_out.shape[:2]) if rgb_out is not None else alpha)
                for im, rgb_out, (_, alpha) in zip(images, results, planes, strict=True)]

    def stylize_frames(
        self, frames: Iterable[ImageT], *, batch_size: int | None = None, prefetch: int = 4,
        temporal: TemporalOptions | None = None, style: StyleSpec | None = None, **steps: Unpack[StepKwargs],
    ) -> Iterator[ImageT]:
        """Stylize a stream of frames lazily, in order. The source is read in a background thread while the
        network runs, and up to ``parallel_calls`` batches are in flight, so decoding overlaps compute.

        ``temporal``: steady video (:mod:`nst_runtime.temporal`): each result is blended with the previous one
        warped along the input's optical flow, in order, after the other ``steps`` (as in :meth:`stylize`).
        ``style``: as in :meth:`stylize`."""
        bs = batch_size or self.batch_size
        # once per stream (a bad option or style fails here, not in the pipeline's thread): an AdaIN style
        # image is read and encoded once, not per chunk
        plan, feeds = self._plan_and_feeds(style, dict(steps))
        chunks = _chunked(iter(frames), bs)
        stage = Stage("stylize", lambda chunk: (chunk, self._stylize_planned(chunk, batch_size=bs, plan=plan,
                                                                             feeds=feeds)),
                      workers=self.parallel_calls)
        smoother = TemporalSmoother(temporal) if temporal is not None else None
        for outcome in run_pipeline(chunks, [stage], depth=max(prefetch, self.parallel_calls)):
            if outcome.error is not None:
                raise outcome.error
            chunk, styled = outcome.value
            if smoother is not None:
                styled = [_steady(smoother, frame, out) for frame, out in zip(chunk, styled, strict=True)]
            yield from styled


def _tiling_loader(
    model: Path, *, device: int | str, providers: Sequence[str] | None, intra_op_threads: int | None,
    verify_hash: bool, backend: str = "onnxruntime",
) -> Callable[[], TilingGraph]:
    """Opens ``NAME.tiling.onnx`` beside ``model`` on ONNX Runtime (providers picked as for ONNX files) or on
    OpenVINO (``backend``); FileNotFoundError when it is not there."""

    def load() -> TilingGraph:
        from .onnxruntime_backend import _ort, select_providers
        from .tiling import open_tiling_graph

        path = find_tiling_graph(model)
        if path is None:
            raise FileNotFoundError(tiling_graph_path(model))
        if backend == "openvino":
            try:  # its stems and apply graph too: a failure shows here, not in the middle of an image
                return open_tiling_graph(path, providers=[], intra_op_threads=intra_op_threads,
                                         verify_hash=verify_hash, backend=backend).prepare()
            except ModelFileError as exc:
                logger.warning("%s; its tiling graph runs on ONNX Runtime instead.", exc)
        # the GPU when ONNX Runtime has one here, else the CPU (an engine's tiling graph still runs exactly)
        chosen = select_providers(_ort().get_available_providers(), device=device, requested=providers,
                                  gpu_required=False)
        return open_tiling_graph(path, providers=chosen, intra_op_threads=intra_op_threads,
                                 verify_hash=verify_hash)

    return load


def _is_engine_path(path: Path) -> bool:
    from .artifact import kind_from_path

    try:
        return kind_from_path(path) == "tensorrt"
    except ModelFileError:  # an unknown suffix: open_artifact says so in its own words
        return False


def _style_graph_loader(*, verify_hash: bool, intra_op_threads: int | None) -> Callable[..., Any]:
    """Opens an AdaIN model's style graph (:class:`nst_runtime.adain.StyleStatistics`) with these settings."""

    def load(path: Path, **kwargs: Any) -> Any:
        from .adain import StyleStatistics

        return StyleStatistics(path, verify_hash=verify_hash, intra_op_threads=intra_op_threads, **kwargs)

    return load


def _steady(smoother: TemporalSmoother, frame: Any, styled: Any) -> Any:
    """One temporal step on PIL or numpy frames (RGB; an alpha plane passes through unchanged)."""
    rgb, _ = _to_planes(frame)
    out_rgb, alpha = _to_planes(styled)
    return _from_planes(styled, smoother.step(rgb, out_rgb), alpha)


def _chunked(it: Iterator[Any], n: int) -> Iterator[list[Any]]:
    while chunk := list(itertools.islice(it, n)):
        yield chunk


def _to_planes(image: Any) -> tuple[np.ndarray, np.ndarray | None]:
    if isinstance(image, Image.Image):
        return pil_to_planes(image)
    if isinstance(image, np.ndarray):
        return array_to_planes(image)
    raise UsageError(f"expected a PIL image or a numpy HxWx3 uint8 array, got {type(image).__name__}.")


def _from_planes(original: Any, rgb: np.ndarray | None, alpha: np.ndarray | None) -> Any:
    if rgb is None:  # every index is filled by stylize_batch; reaching this is a bug, not a user error
        raise RuntimeError("internal error: an image of the batch was not stylized")
    merged = merge_planes(rgb, alpha)
    if isinstance(original, Image.Image):
        return Image.fromarray(merged, "RGBA" if alpha is not None else "RGB")
    return merged
