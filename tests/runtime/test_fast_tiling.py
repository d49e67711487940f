"""Fast tiling (issue 12, item 5): whole-image statistics estimated in one pass over a downscaled copy (the tiling
graph normalizing with its own statistics), then one pass over the tiles; the exact mode stays; progress per
tile. The quality target (>= 35 dB against untiled on a trained-like network and natural photos) is measured by
tools/tiling_quality.py (docs/runtime.md), not here: the test network is random, not trained-like."""

from __future__ import annotations

import numpy as np
import pytest
from nst_runtime import Stylizer
from nst_runtime.tiling import (
    FAST_STATS_SHARE,
    TilingGraph,
    downscale_for_statistics,
    feasible_halo,
    plan_core_tiles,
    stylize_exact,
    stylize_fast,
    whole_image_statistics,
)


@pytest.fixture(scope="module")
def graph(vivid_exact_onnx):
    from nst_runtime.tiling import open_tiling_graph, tiling_graph_path

    return open_tiling_graph(tiling_graph_path(vivid_exact_onnx), providers=["CPUExecutionProvider"])


class _OldGraph:
    """The same graph seen as one exported before ``norm_own`` (layer-by-layer statistics only)."""

    def __init__(self, graph: TilingGraph) -> None:
        self._graph = graph
        self.has_own_stats = False
        self.offsets, self.channels, self.layers = graph.offsets, graph.channels, graph.layers
        self.calls = 0

    def run(self, window, mask, mean, var, *, own=False):
        assert not own
        self.calls += 1
        return self._graph.run(window, mask, mean, var)


def test_one_pass_with_own_statistics_equals_the_layer_by_layer_statistics(graph, make_image):
    x = make_image(64, 96, seed=2)
    assert graph.has_own_stats
    fast_mean, fast_var = whole_image_statistics(x, graph)
    old = _OldGraph(graph)
    slow_mean, slow_var = whole_image_statistics(x, old)
    assert old.calls == graph.layers
    np.testing.assert_allclose(fast_mean, slow_mean, rtol=1e-3, atol=1e-3 * np.sqrt(slow_var).max())
    np.testing.assert_allclose(fast_var, slow_var, rtol=2e-3, atol=1e-5)


def test_fast_with_full_resolution_statistics_is_as_good_as_exact(graph, make_image, stylizer, measure_psnr):
    """With statistics from the image itself (no downscaling), the one tiled pass is as close to the untiled
    output as the exact mode's 16 passes: the only approximation of fast mode is the downscaled copy."""
    x = make_image(128, 160, seed=5)
    whole = stylizer.stylize(x)
    exact = stylize_exact(x, graph, tile_h=96, tile_w=96, halo=32)
    calls: list[tuple[int, int]] = []
    fast = stylize_fast(x, graph, tile_h=96, tile_w=96, halo=32, stats_pixels=128 * 160,
                        on_tile=lambda d, t: calls.append((d, t)))
    exact_db, fast_db = measure_psnr(whole, exact), measure_psnr(whole, fast)
    print(f"against untiled: exact {exact_db:.1f} dB, fast with full-resolution statistics {fast_db:.1f} dB")
    assert exact_db >= 45 and fast_db >= exact_db - 3
    assert [d for d, _ in calls] == list(range(1, len(calls) + 1)) and calls[-1][1] == len(calls) == 7  # 1 + 6


def test_fast_mode_runs_two_passes_not_sixteen(graph, make_image, stylizer, measure_psnr):
    x = make_image(160, 224, seed=6)
    counted = _Counting(graph)
    out = stylize_fast(x, counted, tile_h=128, tile_w=128, halo=32)
    assert out.shape == x.shape
    own, given = counted.own, counted.given
    assert own == [(80, 112)]  # one statistics pass over a copy of a quarter of the pixels
    halo = feasible_halo(160, 224, tile_h=128, tile_w=128, halo=32)
    assert len(given) == len(plan_core_tiles(160, 224, tile_h=128, tile_w=128, halo=halo)) > 1  # one call per tile
    assert all(h <= 128 and w <= 128 for h, w in given)
    assert FAST_STATS_SHARE == 0.25
    # a random network is very sensitive to its statistics; still far better than per-tile statistics
    whole = stylizer.stylize(x)
    print(f"fast tiling on the random test network: {measure_psnr(whole, out):.1f} dB")
    assert measure_psnr(whole, out) > 18


class _Counting:
    def __init__(self, graph: TilingGraph) -> None:
        self._graph = graph
        self.has_own_stats = graph.has_own_stats
        self.offsets, self.channels, self.layers = graph.offsets, graph.channels, graph.layers
        self.own: list[tuple[int, int]] = []
        self.given: list[tuple[int, int]] = []

    def run(self, window, mask, mean, var, *, own=False):
        (self.own if own else self.given).append(window.shape[:2])
        return self._graph.run(window, mask, mean, var, own=own)


def test_downscaled_copy_keeps_the_grid():
    x = np.zeros((1000, 1504, 3), np.uint8)
    small = downscale_for_statistics(x, 1000 * 1504 // 4)
    assert small.shape[0] % 4 == 0 and small.shape[1] % 4 == 0
    assert small.shape[0] * small.shape[1] <= 1000 * 1504 // 4
    assert downscale_for_statistics(x[:40, :48], 10_000) is not None


def test_stylizer_modes_and_progress(vivid_exact_onnx, make_image):
    x = make_image(128, 160, seed=7)
    results = {}
    for mode in ("fast", "exact"):
        with Stylizer.open(vivid_exact_onnx, device="cpu", tile=96, tile_mode=mode) as s:
            assert s.tiling_mode == mode
            calls: list[tuple[int, int]] = []
            with s.tile_progress(lambda d, t, into=calls: into.append((d, t))):
                results[mode] = s.stylize(x)
            results[mode + "_calls"] = calls
    assert results["fast"].shape == results["exact"].shape == x.shape
    assert results["fast_calls"][-1][1] < results["exact_calls"][-1][1] / 8  # 1 + tiles against 16 x tiles


def test_graphs_without_own_statistics_still_work(graph, make_image):
    x = make_image(96, 128, seed=8)
    old = _OldGraph(graph)
    a = stylize_fast(x, old, tile_h=64, tile_w=64, halo=16)
    b = stylize_fast(x, graph, tile_h=64, tile_w=64, halo=16)
    assert np.abs(a.astype(int) - b).max() <= 1
