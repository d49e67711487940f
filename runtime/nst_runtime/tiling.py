"""Images larger than one call allows: overlapping tiles blended with feathered (linear-ramp) weights.

Each tile is a full network call, so its instance-norm statistics are the tile's, not the image's; tiles
are therefore made as large as the backend allows (fewer, larger tiles have statistics closer to the whole
image's) and overlap, and the overlaps are cross-faded so no hard seam remains. See docs/runtime.md for the
measured seam metric and its limits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .errors import UsageError


@dataclass(frozen=True)
class Tile:
    y: int
    x: int
    h: int
    w: int


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
) -> np.ndarray:
    """Stylize ``rgb`` (HxWx3 uint8) tile by tile with ``run`` (HxWx3 -> HxWx3) and cross-fade the overlaps."""
    h, w = rgb.shape[:2]
    tiles = plan_tiles(h, w, tile_h=tile_h, tile_w=tile_w, overlap=overlap)
    acc = np.zeros((h, w, 3), dtype=np.float32)
    weight = np.zeros((h, w, 1), dtype=np.float32)
    for t in tiles:
        out = run(np.ascontiguousarray(rgb[t.y:t.y + t.h, t.x:t.x + t.w])).astype(np.float32)
        wy = _ramp(t.h, t.y > 0, t.y + t.h < h, overlap)
        wx = _ramp(t.w, t.x > 0, t.x + t.w < w, overlap)
        wgt = (wy[:, None] * wx[None, :])[..., None]
        acc[t.y:t.y + t.h, t.x:t.x + t.w] += out * wgt
        weight[t.y:t.y + t.h, t.x:t.x + t.w] += wgt
    return np.clip(np.rint(acc / weight), 0, 255).astype(np.uint8)
