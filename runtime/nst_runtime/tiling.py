"""Images larger than one call allows: tiles with whole-image instance-norm statistics (exact mode), or
overlapping tiles with per-tile statistics, cross-faded (fallback).

**Exact mode** needs the tiling graph ``NAME.tiling.onnx`` that ``nst_export.tiling_graph`` writes beside
``NAME.onnx``: its InstanceNorm layers take their mean/variance as inputs and it reports the moments of each
layer's input over the pixels a tile owns. The whole image is reflection-padded to a multiple of 4 (as the
deploy graph pads it), cut into *cores* that partition it (boundaries at multiples of 4, so every strided
convolution samples the whole-image grid), and each core is run inside a window that adds a *halo* of
context. Statistics are found layer by layer: pass k runs every tile with the whole-image statistics of
layers < k already known, and combines the tiles' moments of layer k (Chan et al.'s parallel mean/variance,
in float64). A 16th pass runs with all 15 statistics and keeps each tile's core. With a halo at least the
network's receptive-field reach (~54 px) the result equals the untiled output up to float rounding; the cost
is 16 network passes over the tiles (tiling is for images beyond the engine's profile or memory).

**Fallback** (no tiling graph, e.g. only an engine was shipped): each tile is an ordinary network call with
its own statistics, and overlaps are cross-faded with linear ramps. That hides hard edges, not the per-tile
colour/contrast shift. See docs/runtime.md for both modes' measured PSNR.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelFileError, UsageError

#: fast tiling's last pass: ``apply(window, last=False)`` -> the stylized window (``last``: the pass's last call)
Applier = Callable[..., np.ndarray]

logger = logging.getLogger(__name__)

#: tile windows and cores start and end at multiples of this (the network's two stride-2 convolutions)
TILE_MULTIPLE = 4
#: context around each core in exact mode; >= the network's receptive-field reach (~54 px), so exact
DEFAULT_TILE_HALO = 64
#: the tiling graph's I/O (nst_export.tiling_graph); graphs exported before fast tiling lack ``norm_own``
TILING_INPUTS = ("input", "mask", "norm_mean", "norm_var", "norm_own")
_TILING_INPUTS_V1 = TILING_INPUTS[:4]
TILING_OUTPUTS = ("output", "tile_count", "tile_mean", "tile_m2")
#: the tiling graph's metadata carries *stems* (nst_export.tiling_graph.build_stem_module): small ONNX models
#: (base64) that run only the first ``depth`` layers and report their inputs' moments, so fast tiling finds
#: those layers' statistics exactly at full resolution (both passes together: about a sixth of a network call)
STEM_KEY = "nst.tiling.stem.{depth}"
STEM_DEPTH = 2
#: the context the stems need to be exact (conv1's 9x9 reaches 4 px, conv2's 3x3 one more; a multiple of 4)
STEM_MIN_HALO = 8
#: ... and the *apply graph* (nst_export.tiling_graph.build_apply_module): the network normalizing with given
#: statistics and computing nothing else, for fast tiling's last pass (on OpenVINO with the statistics baked in)
APPLY_KEY = "nst.tiling.apply"
#: ... and the *statistics graph* (nst_export.tiling_graph.build_stats_module): the network normalizing every
#: layer with its input's own statistics and reporting them, nothing else (no mask, no output image): fast
#: tiling's pass over the downscaled copy (OpenVINO 1.6 s/MP against the tiling graph's 2.2; docs/runtime.md)
STATS_KEY = "nst.tiling.stats"
#: the apply graph again, opened with ONNX Runtime's CPU arena: fast tiling's last pass where the arena's
#: larger peak fits the budget (nst_runtime.memory.APPLY_ARENA_CALL_COST; open_tiling_graph)
APPLY_ARENA_KEY = APPLY_KEY + "+arena"
#: TransformerNet's InstanceNorm layers in forward order (used when the graph's metadata does not say)
NORM_CHANNELS = (32, 64, 128) + (128,) * 10 + (64, 32)
_MODEL_SUFFIXES = (".onnx", ".engine", ".plan", ".trt")
_PRECISION_SUFFIXES = (".fp16", ".fp32")


@dataclass(frozen=True)
class Tile:
    y: int
    x: int
    h: int
    w: int


# ------------------------------------------------------------------------------------------------- fallback
def _starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile + 1, step))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


def plan_tiles(height: int, width: int, *, tile_h: int, tile_w: int, overlap: int) -> list[Tile]:
    """Tiles of at most ``tile_h`` x ``tile_w`` covering the image, neighbours overlapping by >= ``overlap``."""
    if tile_h < 1 or tile_w < 1:
        raise UsageError(f"tile size {tile_h}x{tile_w}: expected positive sizes.")
    if overlap < 0 or (height > tile_h and 2 * overlap >= tile_h) or (width > tile_w and 2 * overlap >= tile_w):
        raise UsageError(
            f"tile overlap {overlap} with tiles of {tile_h}x{tile_w}: expected 0 <= overlap < half the tile. "
            "Fix: use a smaller --tile-overlap or a larger --tile."
        )
    th, tw = min(tile_h, height), min(tile_w, width)
    return [Tile(y, x, th, tw) for y in _starts(height, th, overlap) for x in _starts(width, tw, overlap)]


def _ramp(n: int, start: bool, end: bool, overlap: int) -> np.ndarray:
    r = np.ones(n, dtype=np.float32)
    if overlap:
        up = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
        if start:
            r[:overlap] = up
        if end:
            r[n - overlap:] = np.minimum(r[n - overlap:], up[::-1])
    return r


def stylize_tiled(
    rgb: np.ndarray,
    run: Callable[[np.ndarray], np.ndarray],
    *,
    tile_h: int,
    tile_w: int,
    overlap: int,
    on_tile: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Fallback: stylize ``rgb`` (HxWx3 uint8) tile by tile with ``run`` (HxWx3 -> HxWx3), each tile with its
    own statistics, and cross-fade the overlaps; ``on_tile(done, total)`` after each tile."""
    h, w = rgb.shape[:2]
    tiles = plan_tiles(h, w, tile_h=tile_h, tile_w=tile_w, overlap=overlap)
    acc = np.zeros((h, w, 3), dtype=np.float32)
    weight = np.zeros((h, w, 1), dtype=np.float32)
    for i, t in enumerate(tiles):
        out = run(np.ascontiguousarray(rgb[t.y:t.y + t.h, t.x:t.x + t.w])).astype(np.float32)
        wy = _ramp(t.h, t.y > 0, t.y + t.h < h, overlap)
        wx = _ramp(t.w, t.x > 0, t.x + t.w < w, overlap)
        wgt = (wy[:, None] * wx[None, :])[..., None]
        acc[t.y:t.y + t.h, t.x:t.x + t.w] += out * wgt
        weight[t.y:t.y + t.h, t.x:t.x + t.w] += wgt
        if on_tile is not None:
            on_tile(i + 1, len(tiles))
    return np.clip(np.rint(acc / weight), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------- exact plan
@dataclass(frozen=True)
class CoreTile:
    """One network call of exact mode: the ``window`` it runs on and the ``core`` it owns (image coordinates)."""

    window: Tile
    core: Tile


def _split(length: int, limit: int, halo: int) -> list[tuple[int, int]] | None:
    """Cores ``[a, b)`` partitioning ``[0, length)`` whose windows (core + halo, clipped) fit ``limit``;
    None when impossible. All numbers are multiples of :data:`TILE_MULTIPLE`."""
    if length <= limit:
        return [(0, length)]
    edge, mid = limit - halo, limit - 2 * halo
    min_core = TILE_MULTIPLE
    if edge < min_core:
        return None
    if 2 * edge >= length:
        caps = [edge, edge]
    elif mid >= TILE_MULTIPLE:
        caps = [edge] + [mid] * -(-(length - 2 * edge) // mid) + [edge]
    else:
        return None
    # shrink the cores with the largest windows until they sum to the length, keeping windows balanced
    sizes = list(caps)
    excess = sum(sizes) - length
    while excess > 0:
        i = max(range(len(sizes)), key=lambda j: (sizes[j] + halo * (1 + (0 < j < len(sizes) - 1)), sizes[j]))
        if sizes[i] - TILE_MULTIPLE < min_core:
            break
        sizes[i] -= TILE_MULTIPLE
        excess -= TILE_MULTIPLE
    if excess:
        return None
    bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(int).tolist()
    return list(itertools.pairwise(bounds))


def _economic(length: int, limit: int, halo: int) -> bool:
    """A plan exists whose middle cores (if any are needed) are at least as wide as the halo, so no window
    spends most of its pixels on context."""
    if length <= limit:
        return True
    edge, mid = limit - halo, limit - 2 * halo
    return edge >= TILE_MULTIPLE and (2 * edge >= length or mid >= max(TILE_MULTIPLE, halo))


def feasible_halo(height: int, width: int, *, tile_h: int, tile_w: int, halo: int) -> int:
    """The largest halo <= ``halo`` (a multiple of 4) that tiles of ``tile_h`` x ``tile_w`` leave room for,
    with middle cores at least as wide as the halo (a larger halo would cost more passes than it gains)."""
    halo -= halo % TILE_MULTIPLE
    while halo > 0 and not (_economic(height, tile_h, halo) and _economic(width, tile_w, halo)):
        halo -= TILE_MULTIPLE
    return max(halo, 0)


def _window(a: int, b: int, halo: int, length: int) -> tuple[int, int]:
    """Core ``[a, b)`` plus ``halo`` each side, clipped to the image, and grown to the graph's minimum of 8 px
    (only with tiny halos; more context never hurts)."""
    lo, hi = max(0, a - halo), min(length, b + halo)
    if hi - lo < 8:
        hi = min(length, lo + 8)
        lo = max(0, hi - 8)
    return lo, hi


def plan_core_tiles(height: int, width: int, *, tile_h: int, tile_w: int, halo: int) -> list[CoreTile]:
    """Exact-mode plan for an image of ``height`` x ``width`` (multiples of 4, >= 8).

    Cores partition the image, with origins and sizes at multiples of 4; each window is its core plus
    ``halo`` pixels of context on every side that has image there (at least 8 px), and at most
    ``tile_h`` x ``tile_w``.
    """
    for name, v in (("height", height), ("width", width), ("halo", halo)):
        if v % TILE_MULTIPLE or v < 0:
            raise UsageError(f"{name} {v}: expected a non-negative multiple of {TILE_MULTIPLE} (pad the image first).")
    if min(height, width) < 8:
        raise UsageError(f"image {width}x{height}: expected at least 8x8 (pad it first).")
    tile_h, tile_w = tile_h - tile_h % TILE_MULTIPLE, tile_w - tile_w % TILE_MULTIPLE
    if min(tile_h, tile_w) < 8:
        raise UsageError(f"tile {tile_w}x{tile_h}: exact tiling needs tiles of at least 8x8. Fix: a larger --tile.")
    rows, cols = _split(height, tile_h, halo), _split(width, tile_w, halo)
    if rows is None or cols is None:
        raise UsageError(
            f"halo {halo} px with tiles of at most {tile_w}x{tile_h}: no tile plan for a {width}x{height} image. "
            f"Fix: a smaller halo (at most {feasible_halo(height, width, tile_h=tile_h, tile_w=tile_w, halo=halo)}) "
            "or a larger --tile."
        )
    tiles = []
    for y0, y1 in rows:
        wy0, wy1 = _window(y0, y1, halo, height)
        for x0, x1 in cols:
            wx0, wx1 = _window(x0, x1, halo, width)
            tiles.append(CoreTile(Tile(wy0, wx0, wy1 - wy0, wx1 - wx0), Tile(y0, x0, y1 - y0, x1 - x0)))
    return tiles


# ------------------------------------------------------------------------------------------------- statistics
def combine_moments(count: np.ndarray, mean: np.ndarray, m2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Whole-image mean and biased variance from per-tile moments (Chan, Golub & LeVeque's parallel update).

    ``count`` [T] or [T, C] (pixels each tile owns), ``mean`` [T, C], ``m2`` [T, C] (sums of squared
    deviations from each tile's mean). Returns float64 ``(mean, var)`` of shape [C]; ``var = M2 / n`` like
    PyTorch's InstanceNorm (biased). Tiles owning nothing contribute nothing.
    """
    count = np.asarray(count, np.float64)
    mean, m2 = np.asarray(mean, np.float64), np.asarray(m2, np.float64)
    if count.ndim == 1:
        count = np.broadcast_to(count[:, None], mean.shape)
    total = count.sum(axis=0)
    if np.any(total <= 0):
        raise UsageError("combine_moments: expected at least one pixel per channel across the tiles, got none.")
    grand = (count * mean).sum(axis=0) / total
    # M2 of the union = sum of the parts' M2 + each part's mean offset, weighted by its size
    m2_total = m2.sum(axis=0) + (count * (mean - grand) ** 2).sum(axis=0)
    return grand, m2_total / total


# ------------------------------------------------------------------------------------------------- the graph
def tiling_graph_path(model: Path) -> Path:
    """Where the tiling graph of ``model`` lies: ``NAME.tiling.onnx`` for ``NAME.onnx``, ``NAME.fp16.onnx``,
    ``NAME.fp16.engine``, ``NAME.plan``, …"""
    name = model.name
    for suffixes in (_MODEL_SUFFIXES, _PRECISION_SUFFIXES):
        for suffix in suffixes:
            if name.lower().endswith(suffix):
                name = name[: -len(suffix)]
                break
    if name.endswith(".tiling"):
        name = name[: -len(".tiling")]
    return model.with_name(name + ".tiling.onnx")


class TilingGraph:
    """An opened tiling graph (an ONNX Runtime session, or an ``OpenVinoSession`` with the same surface), its
    stems and its layer layout. ``run`` and ``run_stem`` are thread-safe."""

    def __init__(self, session: Any, path: Path, *, open_embedded: Callable[[bytes, str], Any] | None = None,
                 arena_keys: frozenset[str] = frozenset()) -> None:
        self.path = path
        names_in = [i.name for i in session.get_inputs()]
        names_out = [o.name for o in session.get_outputs()]
        if names_in not in (list(TILING_INPUTS), list(_TILING_INPUTS_V1)) or not set(TILING_OUTPUTS) <= set(names_out):
            raise ModelFileError(
                f"{path}: inputs {names_in} / outputs {names_out}; a tiling graph has {list(TILING_INPUTS)} -> "
                f"{list(TILING_OUTPUTS)}. Fix: re-export it with nst_export.tiling_graph (nst-export)."
            )
        meta = session.get_modelmeta().custom_metadata_map
        channels = tuple(int(c) for c in meta["nst.tiling.channels"].split(",")) \
            if "nst.tiling.channels" in meta else NORM_CHANNELS
        stat_dim = session.get_inputs()[2].shape[0]
        if isinstance(stat_dim, int) and stat_dim != sum(channels):
            raise ModelFileError(
                f"{path}: norm_mean has {stat_dim} entries but the layers' channels sum to {sum(channels)}. "
                "Fix: re-export the tiling graph."
            )
        self._session = session
        #: the graph can normalize with each tile's own statistics (one pass finds a whole image's statistics)
        self.has_own_stats = names_in == list(TILING_INPUTS)
        providers = session.get_providers() if hasattr(session, "get_providers") else []
        #: the backend it runs on (its memory cost differs: nst_runtime.memory.TILING_CALL_COST)
        self.backend = "openvino" if any(str(p).startswith("OpenVINO") for p in providers) else "onnxruntime"
        #: runs on a GPU provider (its memory is then not host memory; nst_runtime.memory)
        self.on_gpu = any(p in ("CUDAExecutionProvider", "TensorrtExecutionProvider") for p in providers)
        self.channels = channels
        self.offsets = tuple(np.concatenate([[0], np.cumsum(channels)]).astype(int).tolist())
        # the graphs carried in the metadata (stems, apply graph), by key; opened on first use
        self._embedded_data: dict[str, str] = {}
        if open_embedded is not None:
            for depth in range(1, STEM_DEPTH + 1):  # only consecutive depths from 1 are of use
                if not meta.get(STEM_KEY.format(depth=depth)):
                    break
                self._embedded_data[STEM_KEY.format(depth=depth)] = meta[STEM_KEY.format(depth=depth)]
            for key in (APPLY_KEY, STATS_KEY):
                if meta.get(key):
                    self._embedded_data[key] = meta[key]
            if meta.get(APPLY_KEY) and APPLY_ARENA_KEY in arena_keys:
                self._embedded_data[APPLY_ARENA_KEY] = meta[APPLY_KEY]
        self._open_embedded = open_embedded
        # embedded graphs opened with ONNX Runtime's CPU arena (the stems: see open_tiling_graph), whose arena
        # is shrunk after the last call of each pass (run options), so it never sits beside the next pass
        self._arena_keys = arena_keys
        self._embedded: dict[str, Any] = {}
        self._embedded_lock = threading.Lock()
        # OpenVINO: the apply graph last compiled with an image's statistics, kept until the next is compiled.
        # Measured on a 2000x3000 photo: the next image's first tile then takes 2.1 s instead of 3.0 (its other
        # tiles 1.8 s either way); giving back its buffers instead (release_memory) loses the saving
        self._last_baked: Any = None

    def drop_arenas(self) -> None:
        """Close the embedded sessions that run with ONNX Runtime's arena (reopened on next use): what a pass
        that stopped before its last call (an error, a cancelled progress callback) left in their arenas."""
        with self._embedded_lock:
            for key in self._arena_keys:
                self._embedded.pop(key, None)

    def _opened(self, key: str) -> Any:
        """The session of the graph carried under ``key``, opened once (thread-safe)."""
        with self._embedded_lock:
            if key not in self._embedded:
                assert self._open_embedded is not None
                self._embedded[key] = self._open_embedded(base64.b64decode(self._embedded_data[key]), key)
            return self._embedded[key]

    @property
    def has_apply(self) -> bool:
        """The graph carries an apply graph (exports since it was added)."""
        return APPLY_KEY in self._embedded_data

    @property
    def has_apply_arena(self) -> bool:
        """The apply graph can run with ONNX Runtime's CPU arena (:meth:`applier` ``arena=True``)."""
        return APPLY_ARENA_KEY in self._embedded_data

    def applier(self, mean: np.ndarray, var: np.ndarray, *, arena: bool = False) -> Applier:
        """A function ``(window, last=False)`` (window uint8 HxWx3) -> stylized window, normalizing every layer
        with ``mean``/``var``: the apply graph (on OpenVINO compiled with the statistics as constants, which it
        folds into the convolutions), or the tiling graph itself where there is no apply graph. ``arena``: on
        ONNX Runtime's CPU, run with its memory arena (:attr:`has_apply_arena`; faster, more memory: see
        :func:`open_tiling_graph`), given back by the call with ``last=True``."""
        if not self.has_apply:
            return _plain_applier(self, mean, var)
        key = APPLY_ARENA_KEY if arena and self.has_apply_arena else APPLY_KEY
        session = self._opened(key)
        stats = {"norm_mean": np.ascontiguousarray(mean, np.float32), "norm_var": np.ascontiguousarray(var, np.float32)}
        if hasattr(session, "bake"):
            baked = session.bake(stats)
            self._last_baked = baked  # the one before it goes only now (see __init__)
            return lambda w, last=False: baked.run(None, {"input": w[None]})[0][0]
        if key in self._arena_keys:
            return lambda w, last=False: session.run(None, {"input": w[None], **stats},
                                                     _shrink_arena() if last else None)[0][0]
        return lambda w, last=False: session.run(None, {"input": w[None], **stats})[0][0]

    @property
    def has_stats(self) -> bool:
        """The graph carries a statistics graph (exports since it was added)."""
        return STATS_KEY in self._embedded_data

    def run_stats(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every layer's (mean, biased variance) over all of ``image`` (uint8 HxWx3, sides multiples of 4),
        each layer normalized with its own, from the statistics graph (:attr:`has_stats`)."""
        if not self.has_stats:
            raise ModelFileError(f"{self.path}: this tiling graph carries no statistics graph. "
                                 "Fix: re-export it with nst-export.")
        mean, var = self._opened(STATS_KEY).run(None, {"input": image[None]})
        return mean[0].astype(np.float32), var[0].astype(np.float32)

    def prepare(self) -> TilingGraph:
        """Open the stems and the apply graph now (they are otherwise opened on first use): a graph that
        cannot load fails here, where the caller can fall back, not in the middle of an image."""
        for key in self._embedded_data:
            if key != APPLY_ARENA_KEY:  # the same graph as APPLY_KEY, opened only if a budget lets it run
                self._opened(key)
        return self

    def release_memory(self) -> None:
        """Let the graph and its stems give back what they keep between calls (OpenVINO keeps every
        intermediate tensor; ONNX Runtime without its arena keeps nothing): between fast tiling's steps, whose
        graphs would otherwise hold their buffers side by side."""
        with self._embedded_lock:
            sessions = [self._session, *self._embedded.values()]
            self._last_baked = None
        for session in sessions:
            release = getattr(session, "release_memory", None)
            if release is not None:
                release()

    @property
    def stem_depth(self) -> int:
        """How many leading layers the graph's stems find exactly (0: a graph exported without stems)."""
        return sum(key.startswith(STEM_KEY.format(depth="")) for key in self._embedded_data)

    def run_stem(self, depth: int, window: np.ndarray, core: tuple[int, int, int, int], mean: np.ndarray,
                 var: np.ndarray, *, last: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Moments ``(count [1], mean, m2)`` of layer depth-1's input over ``core`` (top, left, bottom, right in
        ``window``'s pixels, multiples of 4) in ``window``, normalizing layers 0..depth-2 with ``mean``/``var``
        (whole-image statistics; the first entries of the concatenation). ``last``: the pass's last call (a
        stem on ONNX Runtime then gives its arena back when it returns)."""
        key = STEM_KEY.format(depth=depth)
        if key not in self._embedded_data:
            raise ModelFileError(f"{self.path}: this tiling graph carries no stem of depth {depth}. "
                                 "Fix: re-export it with nst-export.")
        h, w = window.shape[:2]
        top, left, bottom, right = (int(v) for v in core)
        if not (0 <= top < bottom <= h and 0 <= left < right <= w) or any(v % TILE_MULTIPLE for v in core):
            raise UsageError(f"stem core {tuple(core)} in a {w}x{h} window: expected top < bottom <= {h}, left < "
                             f"right <= {w}, all multiples of {TILE_MULTIPLE} (the strided layers' grid).")
        session = self._opened(key)
        feed = {"input": window[None]}
        if any(i.name == "mask" for i in session.get_inputs()):  # stems exported before the core box
            mask = np.zeros((1, *window.shape[:2]), np.float32)
            mask[:, top:bottom, left:right] = 1.0
            feed["mask"] = mask
        else:
            feed["core"] = np.array([top, left, bottom, right], np.int64)
        if depth > 1:
            given = self.offsets[depth - 1]
            feed |= {"norm_mean": np.ascontiguousarray(mean[:given], np.float32),
                     "norm_var": np.ascontiguousarray(var[:given], np.float32)}
        if last and key in self._arena_keys:
            count, m, m2 = session.run(None, feed, _shrink_arena())
        else:
            count, m, m2 = session.run(None, feed)
        return count[0], m[0], m2[0]

    @property
    def layers(self) -> int:
        return len(self.channels)

    def run(self, window: np.ndarray, mask: np.ndarray, mean: np.ndarray, var: np.ndarray, *, own: bool = False
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One window (uint8 HxWx3) with its core ``mask`` (HxW float32) and the statistics to use; ``own``:
        normalize with the window's own masked statistics instead (graphs with ``norm_own`` only)."""
        feed = {"input": window[None], "mask": mask[None], "norm_mean": mean, "norm_var": var}
        if self.has_own_stats:
            feed["norm_own"] = np.array([1.0 if own else 0.0], np.float32)
        elif own:
            raise ModelFileError(f"{self.path}: this tiling graph predates norm_own (own statistics). "
                                 "Fix: re-export it with nst-export.")
        out = self._session.run(list(TILING_OUTPUTS), feed)
        return out[0][0], out[1][0], out[2][0], out[3][0]


def open_tiling_graph(
    path: Path, *, providers: Sequence[Any], intra_op_threads: int | None = None, verify_hash: bool = True,
    backend: str = "onnxruntime",
) -> TilingGraph:
    """Check ``path``'s sidecar (``role="tiling"``) and open it with ONNX Runtime on ``providers``, or with
    ``backend="openvino"`` on OpenVINO's CPU plugin (what a model running on OpenVINO uses: faster than ONNX
    Runtime's CPU provider, fast tiling of a 2000x3000 photo 19.2 s against 29.9 s; docs/runtime.md)."""
    from .artifact import open_artifact
    from .onnxruntime_backend import SessionFromOnnx

    artifact = open_artifact(path, verify_hash=verify_hash, role="tiling")
    if backend == "openvino":
        from .openvino_backend import OpenVinoSession

        def open_embedded_ov(data: bytes, _key: str) -> Any:  # part of the file whose hash was checked
            return OpenVinoSession(data, threads=intra_op_threads, label=f"a graph inside {artifact.path.name}")

        graph = TilingGraph(OpenVinoSession(artifact.path, threads=intra_op_threads), artifact.path,
                            open_embedded=open_embedded_ov)
        logger.info("%s: tiling graph for whole-image statistics (OpenVINO CPU)", path.name)
        return graph
    if backend != "onnxruntime":
        raise UsageError(f"tiling graph backend {backend!r}: expected 'onnxruntime' or 'openvino'.")
    # TensorRT's provider would build an engine for every distinct window shape; CUDA/CPU run it directly
    chosen = [p for p in providers if (p[0] if isinstance(p, tuple) else p) != "TensorrtExecutionProvider"]
    session = SessionFromOnnx(artifact.path, providers=chosen, intra_op_threads=intra_op_threads)()
    logger.info("%s: tiling graph for whole-image statistics (providers %s)", path.name, session.get_providers())

    # The stems run with ONNX Runtime's CPU arena (without memory patterns), shrunk after each pass's last call
    # (TilingGraph.run_stem): without it every call takes its buffers from fresh pages (a 2000x3000 photo:
    # the stems' 12 calls 3.6 s, with it 2.7). Measured 0.28-0.66 KB per pixel at 1-9 MP windows (without
    # the arena 0.26), below the tiling cost the budget sizes the tiles by (TILING_CALL_COST, 930 B/px), and
    # the arena is empty again before the next pass. The apply graph gains the same way (six 1 MP tiles 16.0 s,
    # with the arena 13.4) but takes up to twice the memory (the arena rounds its growth up to powers of two:
    # APPLY_ARENA_CALL_COST), so fast tiling opens it with the arena only where that fits the budget (the tiles
    # are still sized by TILING_CALL_COST: the arena never makes them smaller)
    cpu_only = [p if isinstance(p, str) else p[0] for p in chosen] == ["CPUExecutionProvider"]
    arena_keys = frozenset([*(STEM_KEY.format(depth=d) for d in range(1, STEM_DEPTH + 1)), APPLY_ARENA_KEY]) \
        if cpu_only else frozenset()

    def open_embedded(data: bytes, key: str) -> Any:  # part of the file whose hash was just checked
        arena = key in arena_keys
        return SessionFromOnnx(artifact.path, providers=chosen, intra_op_threads=intra_op_threads, data=data,
                               memory_arena=arena, memory_patterns=not arena)()

    return TilingGraph(session, artifact.path, open_embedded=open_embedded, arena_keys=arena_keys)


def _shrink_arena() -> Any:
    """ONNX Runtime run options that give the CPU arena's free memory back when the run returns."""
    import onnxruntime as ort

    options = ort.RunOptions()
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options


def pad_to_multiple(rgb: np.ndarray, multiple: int = TILE_MULTIPLE) -> np.ndarray:
    """Reflection-pad bottom/right to a multiple of ``multiple``, as the deploy graph does (torch ``reflect``)."""
    h, w = rgb.shape[:2]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if not pad_h and not pad_w:
        return rgb
    return np.pad(rgb, ((0, pad_h), (0, pad_w), (0, 0)), mode="reflect")


def _core_box(t: CoreTile) -> tuple[int, int, int, int]:
    """``t``'s core as (top, left, bottom, right) in its window's pixels (the stems' ``core`` input)."""
    top, left = t.core.y - t.window.y, t.core.x - t.window.x
    return top, left, top + t.core.h, left + t.core.w


def _core_mask(t: CoreTile) -> np.ndarray:
    m = np.zeros((t.window.h, t.window.w), np.float32)
    m[t.core.y - t.window.y:t.core.y - t.window.y + t.core.h,
      t.core.x - t.window.x:t.core.x - t.window.x + t.core.w] = 1.0
    return m


def _window_of(padded: np.ndarray, t: CoreTile) -> np.ndarray:
    return np.ascontiguousarray(padded[t.window.y:t.window.y + t.window.h, t.window.x:t.window.x + t.window.w])


def _plan_for(padded: np.ndarray, tile_h: int, tile_w: int, halo: int) -> tuple[list[CoreTile], int]:
    ph, pw = padded.shape[:2]
    th, tw = tile_h - tile_h % TILE_MULTIPLE, tile_w - tile_w % TILE_MULTIPLE
    usable = feasible_halo(ph, pw, tile_h=th, tile_w=tw, halo=halo)
    if usable < halo - halo % TILE_MULTIPLE:
        logger.warning("tiles of at most %dx%d leave room for a halo of %d px, not %d: tiles near their edges "
                       "may differ slightly from the untiled output. Fix: a larger --tile.", tw, th, usable, halo)
    return plan_core_tiles(ph, pw, tile_h=th, tile_w=tw, halo=usable), usable


def _keep_core(out: np.ndarray, t: CoreTile, styled: np.ndarray) -> None:
    cy, cx = t.core.y - t.window.y, t.core.x - t.window.x
    out[t.core.y:t.core.y + t.core.h, t.core.x:t.core.x + t.core.w] = styled[cy:cy + t.core.h, cx:cx + t.core.w]


def stylize_exact(
    rgb: np.ndarray, graph: TilingGraph, *, tile_h: int, tile_w: int, halo: int = DEFAULT_TILE_HALO,
    on_tile: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Stylize ``rgb`` (HxWx3 uint8, >= 8x8) in tiles with whole-image instance-norm statistics.

    ``tile_h`` x ``tile_w`` bounds each window; ``halo`` (rounded down to a multiple of 4, and lowered with
    a warning where the tile size leaves no room for it) is the context around each core. Runs
    ``graph.layers + 1`` passes over the tiles; ``on_tile(done, total)`` is called after each network call.
    """
    h, w = rgb.shape[:2]
    padded = pad_to_multiple(rgb)
    ph, pw = padded.shape[:2]
    plan, usable = _plan_for(padded, tile_h, tile_w, halo)
    total = graph.offsets[-1]
    mean, var = np.zeros(total, np.float32), np.ones(total, np.float32)
    calls, done = len(plan) * (graph.layers + 1), 0
    logger.info("exact tiling: %dx%d image, %d tiles, halo %d px, %d passes", pw, ph, len(plan), usable,
                graph.layers + 1)
    for k in range(graph.layers):
        # layer k's input depends only on the statistics of layers < k, which are final by now
        lo, hi = graph.offsets[k], graph.offsets[k + 1]
        moments = []
        with _arenas_dropped_on_failure(graph) if k < graph.stem_depth else contextlib.nullcontext():
            for i, t in enumerate(plan):  # windows are cut per call: holding all of them would copy the image again
                if k < graph.stem_depth:  # the same moments from the first k+1 layers only
                    count, m, m2 = graph.run_stem(k + 1, _window_of(padded, t), _core_box(t), mean, var,
                                                  last=i == len(plan) - 1)
                    moments.append((count[0], m, m2))
                else:
                    _, count, m, m2 = graph.run(_window_of(padded, t), _core_mask(t), mean, var)
                    moments.append((count[k], m[lo:hi], m2[lo:hi]))
                done += 1
                if on_tile is not None:
                    on_tile(done, calls)
        mean_k, var_k = combine_moments(np.array([c for c, _, _ in moments]), np.stack([m for _, m, _ in moments]),
                                        np.stack([m2 for _, _, m2 in moments]))
        mean[lo:hi], var[lo:hi] = mean_k, var_k
    out = np.empty_like(padded)
    for t in plan:
        _keep_core(out, t, graph.run(_window_of(padded, t), _core_mask(t), mean, var)[0])
        done += 1
        if on_tile is not None:
            on_tile(done, calls)
    return out[:h, :w]


# ------------------------------------------------------------------------------------------------- fast mode
#: fast tiling: the statistics pass runs on at most this share of the image's pixels (its cost)
FAST_STATS_SHARE = 0.25
#: how fast tiling estimates the whole image's statistics (docs/runtime.md has the PSNR of each on 8 photos):
#: ``"downscale"``: a copy downscaled with a Lanczos filter (the best minimum: a star field 30.3 dB), ``"box"``:
#: the same with a box filter (blurs fine detail more: the star field 26.8 dB; elsewhere up to 2.6 dB above
#: Lanczos), ``"mosaic"``: full-resolution blocks sampled on a grid across the image (keeps fine detail, the
#: star field 34.3 dB, but a few blocks miss a varied photo's content: 23-32 dB on 5 of 8 photos)
FAST_STATS_METHODS = ("downscale", "box", "mosaic")
DEFAULT_FAST_STATS = "downscale"
#: the mosaic's blocks: the statistics come from a ``MOSAIC_CORE`` px square, run inside ``MOSAIC_HALO`` px of
#: its own surroundings (so the block's edges see real image, not the neighbouring block)
MOSAIC_CORE, MOSAIC_HALO = 64, 16
#: fast tiling's default context around each core. The statistics are given, so the halo only trims what
#: the receptive field (~54 px) sees near a core's edge; next to the error of the estimated statistics that
#: is little (tools/tiling_quality.py). The plan uses the fewest tiles any halo from
#: :data:`FAST_MIN_HALO` up to this one allows, and the largest halo those tiles hold
DEFAULT_FAST_HALO = 32
FAST_MIN_HALO = 16
#: fast tiling takes the first layers' statistics exactly from the graph's stems (:func:`stem_statistics`):
#: about a sixth of a network call more, and the star field's 30.3 dB become 36.1 (docs/runtime.md)
FAST_STEMS = True


def plan_fast_tiles(height: int, width: int, *, tile_h: int, tile_w: int, halo: int = DEFAULT_FAST_HALO,
                    min_halo: int = FAST_MIN_HALO) -> tuple[list[CoreTile], int]:
    """Fast-mode plan: the fewest tiles (balanced, within ``tile_h`` x ``tile_w``) for a halo between
    ``min_halo`` and ``halo``, with the largest halo that number of tiles holds. Returns ``(plan, halo)``.

    A 2000x3000 image in tiles of 1024: a halo of 32 needs 3x4 tiles (13% of the pixels run twice), a halo
    of 16 fits 2x3 (4%). ``height``/``width`` multiples of 4; ``tile_*`` rounded down to multiples of 4."""
    tile_h, tile_w = tile_h - tile_h % TILE_MULTIPLE, tile_w - tile_w % TILE_MULTIPLE
    top = feasible_halo(height, width, tile_h=tile_h, tile_w=tile_w, halo=halo)
    low = min(top, max(0, min_halo - min_halo % TILE_MULTIPLE))
    best: tuple[list[CoreTile], int] | None = None
    for h in range(low, top + 1, TILE_MULTIPLE):
        if not (_economic(height, tile_h, h) and _economic(width, tile_w, h)):
            continue
        plan = plan_core_tiles(height, width, tile_h=tile_h, tile_w=tile_w, halo=h)
        if best is None or len(plan) <= len(best[0]):
            best = (plan, h)
    if best is None:
        best = (plan_core_tiles(height, width, tile_h=tile_h, tile_w=tile_w, halo=top), top)
    return one_window_shape(best[0], height, width), best[1]


def fast_window_pixels(height: int, width: int, *, tile_h: int, tile_w: int, halo: int = DEFAULT_FAST_HALO) -> int:
    """Pixels of each network call of :func:`stylize_fast` on an image of ``height`` x ``width`` (any size: it is
    padded to multiples of 4 as stylize_fast pads it; every window of a fast plan has one shape)."""
    plan, _ = plan_fast_tiles(height + (-height) % TILE_MULTIPLE, width + (-width) % TILE_MULTIPLE, tile_h=tile_h,
                              tile_w=tile_w, halo=halo)
    return plan[0].window.h * plan[0].window.w


def one_window_shape(plan: Sequence[CoreTile], height: int, width: int) -> list[CoreTile]:
    """``plan`` with every window grown (within the image) to the largest window's size: the same cores with
    a little more context, and one input shape for every call (OpenVINO prepares each new shape on its first
    call, and fast tiling's apply graph is compiled anew for every image: 2x3 tiles of a 2000x3000 photo had
    two shapes)."""
    wh, ww = max(t.window.h for t in plan), max(t.window.w for t in plan)

    def grow(lo: int, size: int, want: int, length: int) -> int:  # origins stay multiples of 4 (strided grid)
        shift = (want - size) // 2
        return min(max(0, lo - shift + shift % TILE_MULTIPLE), length - want)

    return [CoreTile(Tile(grow(t.window.y, t.window.h, wh, height), grow(t.window.x, t.window.w, ww, width), wh, ww),
                     t.core) for t in plan]


def pushed_pixels(plan: Sequence[CoreTile]) -> int:
    """Pixels a pass over ``plan`` runs through the network (cores plus halos)."""
    return sum(t.window.h * t.window.w for t in plan)


def downscale_for_statistics(padded: np.ndarray, max_pixels: int, *, box: bool = False) -> np.ndarray:
    """A Lanczos-filtered (``box``: box-filtered) copy of ``padded`` of at most ``max_pixels`` pixels, sides
    multiples of 4 and >= 8 (``padded`` itself when it is already small enough)."""
    from PIL import Image

    ph, pw = padded.shape[:2]
    if ph * pw <= max_pixels:
        return padded
    scale = (max_pixels / (ph * pw)) ** 0.5
    sh = max(8, int(ph * scale) // TILE_MULTIPLE * TILE_MULTIPLE)
    sw = max(8, int(pw * scale) // TILE_MULTIPLE * TILE_MULTIPLE)
    return np.asarray(Image.fromarray(padded).resize((sw, sh), Image.BOX if box else Image.LANCZOS))


def statistics_mosaic(padded: np.ndarray, max_pixels: int, *, core: int = MOSAIC_CORE, halo: int = MOSAIC_HALO
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Full-resolution samples of ``padded`` (HxWx3, sides multiples of 4) for the statistics pass, as one image
    of at most ``max_pixels`` pixels (at least one block) and its mask (1 on the samples, 0 on their context).

    The image is divided into a grid of equal cells (about as many as the budget pays for, in the image's aspect
    ratio); from the middle of each cell a ``core`` px square is taken with ``halo`` px of its own surroundings
    (shifted inwards at the image's edges), and the windows are laid side by side. ``padded`` itself with a mask
    of ones where it fits ``max_pixels``."""
    ph, pw = padded.shape[:2]
    if ph * pw <= max_pixels:
        return padded, np.ones((ph, pw), np.float32)
    core -= core % TILE_MULTIPLE
    halo -= halo % TILE_MULTIPLE
    ch, cw = min(core, ph), min(core, pw)
    wh, ww = min(ch + 2 * halo, ph), min(cw + 2 * halo, pw)
    blocks = max(1, max_pixels // (wh * ww))
    rows = int(min(max(1, round((blocks * ph / pw) ** 0.5)), ph // ch, blocks))
    cols = int(min(max(1, blocks // rows), pw // cw))
    mosaic = np.empty((rows * wh, cols * ww, 3), np.uint8)
    mask = np.zeros(mosaic.shape[:2], np.float32)

    def place(i: int, cells: int, length: int, c: int, win: int) -> tuple[int, int]:
        """Core and window origins in cell ``i`` of ``cells`` along a side of ``length``."""
        at = int((i + 0.5) * length / cells - c / 2)
        at = min(max(at - at % TILE_MULTIPLE, 0), length - c)
        return at, min(max(at - halo, 0), length - win)

    for i in range(rows):
        cy, wy = place(i, rows, ph, ch, wh)
        for j in range(cols):
            cx, wx = place(j, cols, pw, cw, ww)
            mosaic[i * wh:(i + 1) * wh, j * ww:(j + 1) * ww] = padded[wy:wy + wh, wx:wx + ww]
            mask[i * wh + cy - wy:i * wh + cy - wy + ch, j * ww + cx - wx:j * ww + cx - wx + cw] = 1.0
    return mosaic, mask


def whole_image_statistics(rgb: np.ndarray, graph: TilingGraph, mask: np.ndarray | None = None
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Every layer's instance-norm (mean, biased variance) over ``rgb`` (HxWx3 uint8, sides multiples of 4)
    run untiled, over the pixels of ``mask`` (default all): one pass of the statistics graph (no mask; graphs
    that carry one), or one pass where the tiling graph normalizes with its own statistics, or one pass per
    layer with a graph exported before ``norm_own``."""
    if mask is None and getattr(graph, "has_stats", False):
        return graph.run_stats(rgb)
    mask = np.ones(rgb.shape[:2], np.float32) if mask is None else mask
    total = graph.offsets[-1]
    mean, var = np.zeros(total, np.float32), np.ones(total, np.float32)
    per_channel = np.repeat(np.arange(graph.layers), graph.channels)
    if graph.has_own_stats:
        _, count, m, m2 = graph.run(rgb, mask, mean, var, own=True)
        return m.astype(np.float32), (m2 / np.maximum(count[per_channel], 1.0)).astype(np.float32)
    for k in range(graph.layers):
        lo, hi = graph.offsets[k], graph.offsets[k + 1]
        _, count, m, m2 = graph.run(rgb, mask, mean, var)
        mean[lo:hi], var[lo:hi] = m[lo:hi], m2[lo:hi] / max(float(count[k]), 1.0)
    return mean, var


def estimate_statistics(padded: np.ndarray, graph: TilingGraph, *, max_pixels: int,
                        method: str = DEFAULT_FAST_STATS) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Whole-image statistics of ``padded`` estimated by ``method`` (:data:`FAST_STATS_METHODS`) from one pass
    over at most ``max_pixels`` pixels; returns ``(mean, var, (h, w) of the image that pass ran on)``."""
    if method == "mosaic":
        sample, mask = statistics_mosaic(padded, max_pixels)
    elif method in ("downscale", "box"):
        sample, mask = downscale_for_statistics(padded, max_pixels, box=method == "box"), None
    else:
        raise UsageError(f"statistics method {method!r}: expected one of {', '.join(FAST_STATS_METHODS)}.")
    mean, var = whole_image_statistics(sample, graph, mask)
    return mean, var, sample.shape[:2]


def stem_statistics(padded: np.ndarray, graph: TilingGraph, plan: Sequence[CoreTile], mean: np.ndarray,
                    var: np.ndarray, *, on_call: Callable[[], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``mean``/``var`` with layers 0..``graph.stem_depth``-1 replaced by their exact whole-image statistics:
    for each such layer k one pass of the depth-(k+1) stem over ``plan``'s tiles (cores as boxes), layers < k
    normalized with the exact statistics found before it. The stems see a few pixels around each pixel
    (conv1's 9x9, conv2's 3x3), so any halo of 8 px or more keeps them exact."""
    mean, var = mean.copy(), var.copy()
    with _arenas_dropped_on_failure(graph):
        for k in range(graph.stem_depth):
            lo, hi = graph.offsets[k], graph.offsets[k + 1]
            counts, means, m2s = [], [], []
            for i, t in enumerate(plan):
                count, m, m2 = graph.run_stem(k + 1, _window_of(padded, t), _core_box(t), mean, var,
                                              last=i == len(plan) - 1)
                counts.append(count[0])
                means.append(m)
                m2s.append(m2)
                if on_call is not None:
                    on_call()
            mean[lo:hi], var[lo:hi] = combine_moments(np.array(counts), np.stack(means), np.stack(m2s))
    return mean, var


@contextlib.contextmanager
def _arenas_dropped_on_failure(graph: Any) -> Iterator[None]:
    """A stem pass or fast tiling's last pass shrinks ONNX Runtime's arena on its last call; one that stops
    before it (an error, a progress callback that cancels) closes the sessions holding an arena instead, so it
    is not kept."""
    try:
        yield
    except BaseException:
        drop = getattr(graph, "drop_arenas", None)
        if drop is not None:
            drop()
        raise


def fast_stats_pixels(height: int, width: int, *, share: float | None = None) -> int:
    """Pixels fast tiling's statistics pass gets: ``share`` (default :data:`FAST_STATS_SHARE`) of the image."""
    share = FAST_STATS_SHARE if share is None else share
    return min(height * width, int(height * width * share))


def stylize_fast(
    rgb: np.ndarray, graph: TilingGraph, *, tile_h: int, tile_w: int, halo: int = DEFAULT_FAST_HALO,
    min_halo: int = FAST_MIN_HALO, stats_pixels: int | None = None, stats: str | None = None,
    use_stems: bool | None = None, release_memory: bool = False, apply_arena: bool = False,
    on_tile: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Stylize ``rgb`` in tiles with whole-image statistics *estimated* in one pass over at most
    ``stats_pixels`` pixels (default :func:`fast_stats_pixels`) sampled by ``stats`` (default
    :data:`DEFAULT_FAST_STATS`), the first layers' replaced by their exact values from the graph's stems
    (:func:`stem_statistics`; default :data:`FAST_STEMS`; ``use_stems=False`` or a graph without stems:
    estimated too), then one pass over the tiles of :func:`plan_fast_tiles` with those statistics (halo from
    ``min_halo`` to ``halo``). About 1.3 untiled passes plus the stems' sixth of one, against 16 passes for
    :func:`stylize_exact`; ``on_tile(done, total)`` after each network call. ``release_memory``: let the
    graphs give back what they keep between calls after each step (OpenVINO keeps a call's intermediate
    tensors: the statistics pass's would otherwise sit beside the tiles'), for when the memory budget binds;
    it costs the next image about 2 s on a 2000x3000 photo (docs/runtime.md). ``apply_arena``: the last pass
    runs with ONNX Runtime's CPU arena where the graph can (:meth:`TilingGraph.applier`), for when its larger
    peak fits the budget; the last tile gives the arena back."""
    h, w = rgb.shape[:2]
    padded = pad_to_multiple(rgb)
    ph, pw = padded.shape[:2]
    plan, usable = plan_fast_tiles(ph, pw, tile_h=tile_h, tile_w=tile_w, halo=halo, min_halo=min_halo)
    if stats_pixels is None:
        stats_pixels = fast_stats_pixels(ph, pw)
    stem = graph.stem_depth if (FAST_STEMS if use_stems is None else use_stems) else 0
    if stem and usable < STEM_MIN_HALO:
        logger.warning("fast tiling: a halo of %d px (tiles of at most %dx%d) leaves the stems' first-layer "
                       "statistics slightly inexact near tile edges (they need %d px). Fix: a larger --tile or "
                       "--tile-halo.", usable, tile_w, tile_h, STEM_MIN_HALO)
    calls, done = 1 + (stem + 1) * len(plan), 0

    def called() -> None:
        nonlocal done
        done += 1
        if on_tile is not None:
            on_tile(done, calls)

    release = getattr(graph, "release_memory", lambda: None) if release_memory else lambda: None
    release()  # what the previous image left (OpenVINO: the kept apply graph, the stems' buffers)
    mean, var, sampled = estimate_statistics(padded, graph, max_pixels=max(64, min(stats_pixels, ph * pw)),
                                             method=stats or DEFAULT_FAST_STATS)
    via = "" if getattr(graph, "has_stats", False) or (stats or DEFAULT_FAST_STATS) == "mosaic" else \
        " through the tiling graph (no statistics graph in this file: re-export it)"
    logger.info("fast tiling: %dx%d image, statistics from %s (%dx%d)%s%s, then %d tiles (halo %d px; %.2f of the "
                "image's pixels through the network)", pw, ph, stats or DEFAULT_FAST_STATS, sampled[1], sampled[0], via,
                f" and layers 1-{stem} exactly from the stems" if stem else " (stems not used)" if graph.stem_depth
                else " (a tiling graph without stems: re-export it for exact first layers)", len(plan), usable,
                (pushed_pixels(plan) + sampled[0] * sampled[1]) / (ph * pw))
    called()
    release()
    if stem:
        mean, var = stem_statistics(padded, graph, plan, mean, var, on_call=called)
        release()
    out = np.empty_like(padded)
    apply = graph.applier(mean, var, arena=apply_arena) if hasattr(graph, "applier") else \
        _plain_applier(graph, mean, var)
    with _arenas_dropped_on_failure(graph):
        for i, t in enumerate(plan):
            _keep_core(out, t, apply(_window_of(padded, t), last=i == len(plan) - 1))
            called()
    del apply  # a baked OpenVINO model stays with the graph until the next image's (release() drops it)
    release()
    return out[:h, :w]


def _plain_applier(graph: Any, mean: np.ndarray, var: np.ndarray) -> Applier:
    """The tiling graph itself as the last pass (graph objects without :meth:`TilingGraph.applier`)."""
    ones: dict[tuple[int, int], np.ndarray] = {}
    return lambda w, last=False: graph.run(w, ones.setdefault(w.shape[:2], np.ones(w.shape[:2], np.float32)),
                                           mean, var)[0]


def find_tiling_graph(model: str | os.PathLike[str]) -> Path | None:
    """The tiling graph beside ``model`` when it exists with its sidecar, else None."""
    from .sidecar import sidecar_path

    cand = tiling_graph_path(Path(model))
    return cand if cand.is_file() and sidecar_path(cand).is_file() else None
