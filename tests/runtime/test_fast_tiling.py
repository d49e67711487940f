"""Fast tiling (issue 12, item 5): whole-image statistics estimated in one pass over a downscaled copy (the tiling
graph normalizing with its own statistics), the first two layers' found exactly by the graph's stems, then one
pass over the tiles; the exact mode stays; progress per network call. The quality target (>= 35 dB against untiled on a trained-like network and natural photos) is measured by
tools/tiling_quality.py (docs/runtime.md), not here: the test network is random, not trained-like."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nst_runtime import Stylizer
from nst_runtime.tiling import (
    TilingGraph,
    downscale_for_statistics,
    feasible_halo,
    plan_core_tiles,
    plan_fast_tiles,
    pushed_pixels,
    statistics_mosaic,
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
        self.stem_depth = 0
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


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_the_statistics_pass_runs_the_statistics_graph_and_matches_the_tiling_graph(vivid_exact_onnx, make_image,
                                                                                    backend):
    """The pass over the downscaled copy runs the statistics graph (no mask, no output image), which reports
    what the tiling graph reports normalizing with its own statistics; a masked pass (the mosaic) still needs
    the tiling graph."""
    if backend == "openvino":
        pytest.importorskip("openvino")
    from nst_runtime.tiling import open_tiling_graph, tiling_graph_path

    g = open_tiling_graph(tiling_graph_path(vivid_exact_onnx), providers=["CPUExecutionProvider"], backend=backend)
    assert g.has_stats
    x = make_image(64, 96, seed=3)
    runs = []
    g.run_stats = lambda image, _run=g.run_stats: runs.append(image.shape) or _run(image)
    mean, var = whole_image_statistics(x, g)
    assert runs == [x.shape]
    own_mean, own_var = whole_image_statistics(x, TilingGraph(g._session, g.path))  # the same file, stats unseen
    np.testing.assert_allclose(mean, own_mean, rtol=1e-3, atol=1e-3 * np.sqrt(own_var).max())
    np.testing.assert_allclose(var, own_var, rtol=2e-3, atol=1e-5)
    whole_image_statistics(x, g, np.ones(x.shape[:2], np.float32))
    assert len(runs) == 1


def test_fast_with_full_resolution_statistics_is_as_good_as_exact(graph, make_image, stylizer, measure_psnr):
    """With statistics from the image itself (no downscaling), the one tiled pass is as close to the untiled
    output as the exact mode's 16 passes: the only approximation of fast mode is the downscaled copy."""
    x = make_image(128, 160, seed=5)
    whole = stylizer.stylize(x)
    exact = stylize_exact(x, graph, tile_h=96, tile_w=96, halo=32)
    calls: list[tuple[int, int]] = []
    fast = stylize_fast(x, graph, tile_h=96, tile_w=96, halo=32, min_halo=32, stats_pixels=128 * 160,
                        on_tile=lambda d, t: calls.append((d, t)))
    exact_db, fast_db = measure_psnr(whole, exact), measure_psnr(whole, fast)
    print(f"against untiled: exact {exact_db:.1f} dB, fast with full-resolution statistics {fast_db:.1f} dB")
    assert exact_db >= 45 and fast_db >= exact_db - 3
    # progress per network call: the statistics pass, two stem passes over the 6 tiles, the 6 tiles
    assert [d for d, _ in calls] == list(range(1, len(calls) + 1)) and calls[-1][1] == len(calls) == 1 + 2 * 6 + 6


def test_fast_mode_runs_two_passes_not_sixteen(graph, make_image, stylizer, measure_psnr):
    x = make_image(160, 224, seed=6)
    counted = _Counting(graph)
    out = stylize_fast(x, counted, tile_h=128, tile_w=128, halo=32)
    assert out.shape == x.shape
    own, given = counted.own, counted.given
    assert own == [(80, 112)]  # one statistics pass over a copy of a quarter of the pixels
    plan, _ = plan_fast_tiles(160, 224, tile_h=128, tile_w=128, halo=32)
    assert len(given) == len(plan) > 1  # one call per tile
    # and the stems (the first one and the first two layers only) once per tile each
    assert counted.stems == [1] * len(plan) + [2] * len(plan)
    assert all(h <= 128 and w <= 128 for h, w in given)
    # a random network is very sensitive to its statistics; still far better than per-tile statistics
    whole = stylizer.stylize(x)
    print(f"fast tiling on the random test network: {measure_psnr(whole, out):.1f} dB")
    assert measure_psnr(whole, out) > 18


class _Counting:
    def __init__(self, graph: TilingGraph) -> None:
        self._graph = graph
        self.has_own_stats = graph.has_own_stats
        self.offsets, self.channels, self.layers = graph.offsets, graph.channels, graph.layers
        self.stem_depth = graph.stem_depth
        self.own: list[tuple[int, int]] = []
        self.given: list[tuple[int, int]] = []
        self.stems: list[int] = []

    def run(self, window, mask, mean, var, *, own=False):
        (self.own if own else self.given).append(window.shape[:2])
        return self._graph.run(window, mask, mean, var, own=own)

    def run_stem(self, depth, window, core, mean, var, *, last=False):
        self.stems.append(depth)
        return self._graph.run_stem(depth, window, core, mean, var, last=last)


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
    # 1 + 3 x tiles (two stem passes and the tiles) against 16 x tiles
    assert results["fast_calls"][-1][1] < results["exact_calls"][-1][1] / 4


def test_graphs_without_own_statistics_still_work(graph, make_image):
    x = make_image(96, 128, seed=8)
    old = _OldGraph(graph)
    a = stylize_fast(x, old, tile_h=64, tile_w=64, halo=16)
    b = stylize_fast(x, graph, tile_h=64, tile_w=64, halo=16, use_stems=False)  # a graph that old has none
    assert np.abs(a.astype(int) - b).max() <= 1


# ------------------------------------------------------------------------------------------------- the plan
def _min_tiles(h, w, tile, low, high):
    """The fewest tiles any economic halo in [low, high] gives (brute force over the halos)."""
    counts = [len(plan_core_tiles(h, w, tile_h=tile, tile_w=tile, halo=halo))
              for halo in range(low, high + 1, 4)
              if feasible_halo(h, w, tile_h=tile, tile_w=tile, halo=halo) == halo]
    return min(counts)


def test_fast_plan_of_a_2000x3000_photo_in_1024_tiles_runs_few_pixels_twice():
    """Issue 12's speed case: a halo of 32 px would need 3x4 tiles (13% of the pixels run twice); 2x3 tiles
    with a 16 px halo just cover the image."""
    plan, halo = plan_fast_tiles(2000, 3000, tile_h=1024, tile_w=1024, halo=32)
    assert (len(plan), halo) == (6, 16)
    assert {(t.window.h, t.window.w) for t in plan} == {(1016, 1024)}  # one shape (a few pixels more context)
    assert pushed_pixels(plan) <= 1.041 * 2000 * 3000
    old = plan_core_tiles(2000, 3000, tile_h=1024, tile_w=1024, halo=32)
    assert len(old) == 12 and pushed_pixels(old) > 1.13 * 2000 * 3000


@settings(max_examples=150, deadline=None)
@given(h4=st.integers(2, 400), w4=st.integers(2, 400), tile=st.sampled_from([64, 96, 128, 256, 512]),
       halo4=st.integers(0, 12))
def test_fast_plan_uses_the_fewest_tiles_and_the_largest_halo_they_hold(h4, w4, tile, halo4):
    h, w, halo = 4 * h4, 4 * w4, 4 * halo4
    plan, used = plan_fast_tiles(h, w, tile_h=tile, tile_w=tile, halo=halo)
    top = feasible_halo(h, w, tile_h=tile, tile_w=tile, halo=halo)
    low = min(top, 16)
    assert low <= used <= top
    owned = np.zeros((h, w), int)
    for t in plan:
        assert t.window.h <= max(8, tile) and t.window.w <= max(8, tile)
        owned[t.core.y:t.core.y + t.core.h, t.core.x:t.core.x + t.core.w] += 1
    assert (owned == 1).all()
    assert len(plan) == _min_tiles(h, w, tile, low, top)
    if used < top:  # a larger halo would have needed more tiles
        assert len(plan_core_tiles(h, w, tile_h=tile, tile_w=tile, halo=used + 4)) > len(plan)


# ------------------------------------------------------------------------------------------------- statistics
def _photo(name: str, size: int = 256) -> np.ndarray:
    """A ``size`` px square from the middle of a scikit-image photo (natural content, not noise)."""
    import skimage.data

    img = getattr(skimage.data, name)()[..., :3]
    y, x = (img.shape[0] - size) // 2, (img.shape[1] - size) // 2
    return np.ascontiguousarray(img[y:y + size, x:x + size])


def _std_error(graph, est, exact):
    """Per layer, the median relative error of the estimated standard deviations."""
    (_, v), (_, v0) = est, exact
    rel = np.abs(np.sqrt(v) - np.sqrt(v0)) / np.sqrt(v0 + 1e-5)
    return np.array([np.median(rel[lo:hi]) for lo, hi in zip(graph.offsets[:-1], graph.offsets[1:], strict=True)])


@pytest.mark.parametrize("name", ["astronaut", "hubble_deep_field"])
def test_statistics_estimated_from_a_quarter_of_a_photo_are_close(graph, name):
    """The default estimate (a Lanczos-filtered copy of a quarter of the pixels) keeps every layer's spread
    within 15% on a portrait and on a star field (the random test network; the box filter does as well here)."""
    from nst_runtime.tiling import estimate_statistics

    img = _photo(name)
    exact = whole_image_statistics(img, graph)
    est = estimate_statistics(img, graph, max_pixels=img.shape[0] * img.shape[1] // 4)
    box = estimate_statistics(img, graph, max_pixels=img.shape[0] * img.shape[1] // 4, method="box")
    assert est[2] == box[2] == (128, 128)
    err, err_box = _std_error(graph, est[:2], exact), _std_error(graph, box[:2], exact)
    print(f"{name}: median relative error of each layer's std: default {np.round(err, 3)}, box {np.round(err_box, 3)}")
    assert err.max() < 0.15 and err_box.max() < 0.15


def test_statistics_mosaic_holds_full_resolution_blocks_within_the_budget():
    img = _photo("coffee", 384)
    mosaic, mask = statistics_mosaic(img, 384 * 384 // 8, core=64, halo=16)
    assert mosaic.shape[0] * mosaic.shape[1] <= 384 * 384 // 8 and mosaic.shape[:2] == mask.shape
    assert mosaic.shape[0] % 4 == 0 and mosaic.shape[1] % 4 == 0
    # every masked block is a 64 px square of the image itself, at full resolution, from a different place
    found = set()
    for by in range(0, mosaic.shape[0], 96):
        for bx in range(0, mosaic.shape[1], 96):
            ys, xs = np.nonzero(mask[by:by + 96, bx:bx + 96])
            assert len(ys) == 64 * 64
            block = mosaic[by + ys.min():by + ys.max() + 1, bx + xs.min():bx + xs.max() + 1]
            hits = [(y, x) for y in range(0, 384 - 63, 4) for x in range(0, 384 - 63, 4)
                    if np.array_equal(img[y:y + 64, x:x + 64], block)]
            assert hits
            found.add(hits[0])
    assert len(found) == (mosaic.shape[0] // 96) * (mosaic.shape[1] // 96) >= 2
    whole, ones = statistics_mosaic(img, img.shape[0] * img.shape[1])
    assert whole is img and ones.all()


# ------------------------------------------------------------------------------------------------- the stems
def test_the_graph_carries_stems_for_the_first_two_layers(graph):
    assert graph.stem_depth == 2


def test_stems_give_the_first_layers_exact_whole_image_statistics(graph):
    """Layers 0 and 1 from the stems over tiles equal the whole image's own statistics (what the untiled call
    normalizes with); the estimate from a downscaled copy does not."""
    from nst_runtime.tiling import estimate_statistics, stem_statistics

    img = _photo("hubble_deep_field", 192)
    exact = whole_image_statistics(img, graph)
    est_mean, est_var, _ = estimate_statistics(img, graph, max_pixels=img.shape[0] * img.shape[1] // 4)
    plan, _ = plan_fast_tiles(192, 192, tile_h=96, tile_w=96, halo=16)
    assert len(plan) > 1
    mean, var = stem_statistics(img, graph, plan, est_mean, est_var)
    lo, hi = graph.offsets[0], graph.offsets[2]
    scale = np.sqrt(exact[1][lo:hi]).max()
    np.testing.assert_allclose(mean[lo:hi], exact[0][lo:hi], rtol=1e-4, atol=1e-4 * scale)
    np.testing.assert_allclose(var[lo:hi], exact[1][lo:hi], rtol=1e-3, atol=1e-6)
    assert np.abs(est_var[lo:hi] - exact[1][lo:hi]).max() > 100 * np.abs(var[lo:hi] - exact[1][lo:hi]).max()
    # the deeper layers keep the estimate
    np.testing.assert_array_equal(mean[hi:], est_mean[hi:])
    np.testing.assert_array_equal(var[hi:], est_var[hi:])


def test_stems_bring_fast_tiling_closer_to_the_untiled_output(graph, stylizer, measure_psnr):
    img = _photo("hubble_deep_field", 256)
    whole = stylizer.stylize(img)
    with_stems = stylize_fast(img, graph, tile_h=128, tile_w=128)
    without = stylize_fast(img, graph, tile_h=128, tile_w=128, use_stems=False)
    db, db0 = measure_psnr(whole, with_stems), measure_psnr(whole, without)
    print(f"star field, random test network: fast tiling {db0:.1f} dB without the stems, {db:.1f} dB with them")
    assert db > db0 + 1


def test_exact_mode_takes_the_first_layers_from_the_stems(graph, stylizer, measure_psnr):
    img = _photo("astronaut", 192)
    counted = _Counting(graph)
    out = stylize_exact(img, counted, tile_h=128, tile_w=128, halo=32)
    plan = plan_core_tiles(192, 192, tile_h=128, tile_w=128, halo=32)
    assert len(plan) == 4
    assert counted.stems == [1] * len(plan) + [2] * len(plan)
    assert len(counted.given) == (graph.layers - 2 + 1) * len(plan)
    assert measure_psnr(stylizer.stylize(img), out) >= 45


def test_a_tiling_graph_without_stems_still_tiles_fast(graph, make_image, caplog):
    """Tiling graphs exported before the stems: every statistic estimated, as before, and the log says so."""
    import logging

    x = make_image(96, 128, seed=9)
    old = _Counting(graph)
    old.stem_depth = 0
    with caplog.at_level(logging.INFO, logger="nst_runtime.tiling"):
        out = stylize_fast(x, old, tile_h=64, tile_w=64, halo=16)
    assert out.shape == x.shape and old.stems == []
    assert "without stems" in caplog.text


def test_a_model_on_openvino_runs_its_tiling_graph_there_too(vivid_exact_onnx, make_image):
    pytest.importorskip("openvino")
    from nst_runtime.memory import call_cost

    x = make_image(128, 160, seed=10)
    out = {}
    for backend in ("onnxruntime", "openvino"):
        with Stylizer.open(vivid_exact_onnx, device="cpu", backend=backend, tile=96) as s:
            out[backend] = s.stylize(x)
            graph = s._tiling_graph()
            assert graph.backend == backend and graph.stem_depth == 2
            assert s._call_cost(tiling_graph=True) == call_cost(backend, on_gpu=False, tiling_graph=True)
    assert np.abs(out["openvino"].astype(int) - out["onnxruntime"]).max() <= 2


def test_fast_tiling_lets_the_graphs_give_back_their_buffers_between_steps(graph, make_image):
    """OpenVINO keeps a graph's intermediate tensors after a call: without a release between the steps the
    stems' buffers sat beside the tiling graph's (a 9000x9000 image peaked 3 GiB over its budget)."""
    x = make_image(96, 128, seed=11)
    events: list[str] = []
    counted = _Counting(graph)
    counted.release_memory = lambda: events.append(f"release after {len(counted.own) + len(counted.given)}"
                                                   f"+{len(counted.stems)}")
    stylize_fast(x, counted, tile_h=64, tile_w=64, halo=16)
    assert events == []  # only when asked: giving back costs the next image the time to take it again
    stylize_fast(x, counted, tile_h=64, tile_w=64, halo=16, release_memory=True)
    plan, _ = plan_fast_tiles(96, 128, tile_h=64, tile_w=64, halo=16)
    n = len(plan)
    # counts carry on from the first call (1 + n calls of the graph, 2n of the stems); given back first what
    # an earlier image left (OpenVINO's kept apply graph), then after each step
    assert events == [f"release after {1 + n}+{2 * n}", f"release after {2 + n}+{2 * n}",
                      f"release after {2 + n}+{4 * n}", f"release after {2 + 2 * n}+{4 * n}"]


def test_an_openvino_graph_runs_the_same_after_releasing_its_memory(vivid_exact_onnx, make_image):
    pytest.importorskip("openvino")
    from nst_runtime.tiling import open_tiling_graph, tiling_graph_path

    ov_graph = open_tiling_graph(tiling_graph_path(vivid_exact_onnx), providers=["CPUExecutionProvider"],
                                 backend="openvino")
    x = make_image(64, 96, seed=12)
    first = stylize_fast(x, ov_graph, tile_h=64, tile_w=64, halo=16)
    ov_graph.release_memory()
    again = stylize_fast(x, ov_graph, tile_h=64, tile_w=64, halo=16)
    np.testing.assert_array_equal(first, again)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_the_last_pass_runs_the_apply_graph_and_matches_the_tiling_graph(vivid_exact_onnx, make_image, backend):
    """The apply graph (on OpenVINO with the statistics baked in as constants) gives the tiling graph's output
    for the same statistics, to a level of rounding."""
    if backend == "openvino":
        pytest.importorskip("openvino")
    from nst_runtime.tiling import _plain_applier, estimate_statistics, open_tiling_graph, tiling_graph_path

    g = open_tiling_graph(tiling_graph_path(vivid_exact_onnx), providers=["CPUExecutionProvider"], backend=backend)
    assert g.has_apply
    x = make_image(96, 128, seed=13)
    mean, var, _ = estimate_statistics(x, g, max_pixels=96 * 128 // 4)
    applied = g.applier(mean, var)(x)
    plain = _plain_applier(g, mean, var)(x)
    assert applied.shape == x.shape and applied.dtype == np.uint8
    assert np.abs(applied.astype(int) - plain).max() <= 1


def test_a_graph_without_apply_graph_runs_its_last_pass_through_the_tiling_graph(graph, make_image, caplog):
    """A tiling graph exported before the stems, the apply and the statistics graph (the same file without
    them, as the runtime sees it): no stems, the tiling graph over the copy (the log says so) and over the
    tiles, the same output as with the apply graph."""
    import logging

    bare = TilingGraph(graph._session, graph.path)
    assert not bare.has_apply and not bare.has_stats and bare.stem_depth == 0
    x = make_image(96, 128, seed=14)
    with caplog.at_level(logging.INFO, logger="nst_runtime.tiling"):
        a = stylize_fast(x, bare, tile_h=64, tile_w=64, halo=16)
    assert "no statistics graph in this file" in caplog.text
    b = stylize_fast(x, graph, tile_h=64, tile_w=64, halo=16, use_stems=False)
    assert np.abs(a.astype(int) - b).max() <= 1


def test_the_stylizer_gives_memory_back_between_steps_only_where_the_budget_needs_it(vivid_exact_onnx, make_image,
                                                                                      monkeypatch):
    import nst_runtime.stylizer as stylizer_module

    seen: list[bool] = []
    real = stylizer_module.stylize_fast

    def spy(*args, **kwargs):
        seen.append(kwargs["release_memory"])
        return real(*args, **kwargs)

    monkeypatch.setattr(stylizer_module, "stylize_fast", spy)
    released: list[int] = []
    real_release = TilingGraph.release_memory
    monkeypatch.setattr(TilingGraph, "release_memory", lambda self: (released.append(1), real_release(self)))
    x = make_image(512, 512, seed=15)
    with Stylizer.open(vivid_exact_onnx, device="cpu", tile=256, memory_limit="none") as s:
        s.stylize(x)  # tiled by --tile, no budget: nothing to give back
    assert released == []
    with Stylizer.open(vivid_exact_onnx, device="cpu", tile=256, memory_limit="8G") as s:
        s.stylize(x)  # a budget both steps fit: nothing given back while tiled images follow one another
        s.stylize(x)
        assert released == []
        s.stylize(x[:64, :64])  # an untiled call after them: given back first, so it has its whole budget
        assert len(released) == 1
        s.stylize(x[:64, :64])
    assert len(released) == 1
    with Stylizer.open(vivid_exact_onnx, device="cpu", memory_limit="100M") as s:
        s.stylize(x)  # tiled by the budget: the statistics pass and a tile would not fit it together
    # given back before the statistics pass (what an earlier image kept: OpenVINO's apply graph), after it,
    # after the stems and after the tiles
    assert seen == [False, False, False, True] and len(released) == 1 + 4


def test_under_a_budget_the_copy_is_sized_by_the_statistics_graphs_cost(vivid_exact_onnx, make_image, monkeypatch):
    """The pass over the copy runs the statistics graph, which needs less memory per pixel than the tiling
    graph: under a budget that bounds the copy, the copy gets the pixels the statistics graph's cost allows."""
    import nst_runtime.stylizer as stylizer_module
    from nst_runtime.memory import STATS_CALL_COST, TILING_CALL_COST

    seen: list[int] = []
    real = stylizer_module.stylize_fast
    monkeypatch.setattr(stylizer_module, "stylize_fast",
                        lambda *a, **k: (seen.append(k["stats_pixels"]), real(*a, **k))[1])
    x = make_image(1024, 1024, seed=18)
    with Stylizer.open(vivid_exact_onnx, device="cpu", backend="onnxruntime", memory_limit="300M") as s:
        s.stylize(x)
        budget = s._call_budget()
    want = STATS_CALL_COST["onnxruntime"].pixels_within(budget)
    assert want < 1024 * 1024 // 4  # the budget bounds the copy
    assert seen == [want] and want > TILING_CALL_COST["onnxruntime"].pixels_within(budget)


@settings(max_examples=60, deadline=None)
@given(h4=st.integers(2, 400), w4=st.integers(2, 400), tile=st.integers(16, 300), halo4=st.integers(4, 8))
def test_fast_plan_windows_all_have_one_shape_and_hold_their_cores(h4, w4, tile, halo4):
    h, w = 4 * h4, 4 * w4
    plan, _ = plan_fast_tiles(h, w, tile_h=tile, tile_w=tile, halo=4 * halo4)
    assert len({(t.window.h, t.window.w) for t in plan}) == 1
    covered = np.zeros((h, w), int)
    for t in plan:
        win, core = t.window, t.core
        assert win.y % 4 == 0 and win.x % 4 == 0 and win.y >= 0 and win.x >= 0
        assert win.y + win.h <= h and win.x + win.w <= w and max(win.h, win.w) <= max(tile - tile % 4, 8)
        assert win.y <= core.y and win.x <= core.x
        assert core.y + core.h <= win.y + win.h and core.x + core.w <= win.x + win.w
        covered[core.y:core.y + core.h, core.x:core.x + core.w] += 1
    assert (covered == 1).all()


def test_an_openvino_tiling_graph_that_cannot_load_falls_back_to_onnx_runtime(vivid_exact_onnx, make_image,
                                                                               monkeypatch, caplog):
    pytest.importorskip("openvino")
    import logging

    import nst_runtime.openvino_backend as ovb
    from nst_runtime.errors import ModelFileError

    def refuse(self, source, **kwargs):
        raise ModelFileError(f"{source}: OpenVINO cannot load it (test)")

    x = make_image(128, 160, seed=16)
    with Stylizer.open(vivid_exact_onnx, device="cpu", backend="openvino", tile=96) as s:
        monkeypatch.setattr(ovb.OpenVinoSession, "__init__", refuse)
        with caplog.at_level(logging.WARNING, logger="nst_runtime.stylizer"):
            out = s.stylize(x)
        assert s._tiling_graph().backend == "onnxruntime" and s.tiling_mode == "fast"
    assert out.shape == x.shape and "runs on ONNX Runtime instead" in caplog.text


def test_openvino_keeps_the_last_baked_apply_graph_until_the_next_image_or_a_release(vivid_exact_onnx, make_image):
    """The apply graph compiled with one image's statistics stays alive until the next image's is compiled (its
    first tile is then 0.9 s faster on a 2000x3000 photo, docs/runtime.md) and goes when the graph releases
    its memory (before an untiled call under a budget)."""
    pytest.importorskip("openvino")
    import gc
    import weakref

    from nst_runtime.tiling import estimate_statistics, open_tiling_graph, tiling_graph_path

    g = open_tiling_graph(tiling_graph_path(vivid_exact_onnx), providers=["CPUExecutionProvider"], backend="openvino")
    x = make_image(64, 96, seed=15)
    mean, var, _ = estimate_statistics(x, g, max_pixels=64 * 96 // 4)
    apply = g.applier(mean, var)
    apply(x)
    first = weakref.ref(g._last_baked)
    del apply
    gc.collect()
    assert first() is not None  # kept after the image's apply function is gone
    g.applier(mean * 0.5, var)(x)
    gc.collect()
    assert first() is None and g._last_baked is not None  # replaced by the next image's
    second = weakref.ref(g._last_baked)
    g.release_memory()
    gc.collect()
    assert second() is None


class _ShrinkRecording:
    """An ONNX Runtime session that records, per call, whether the run options asked to shrink the arena."""

    def __init__(self, session, calls):
        self.session, self.calls = session, calls

    def get_inputs(self):
        return self.session.get_inputs()

    def run(self, names, feed, options=None):
        self.calls.append(options is not None and
                          options.get_run_config_entry("memory.enable_memory_arena_shrinkage") == "cpu:0")
        return self.session.run(names, feed, options)


def test_onnx_runtime_stems_give_their_arena_back_after_each_pass(vivid_exact_onnx, make_image):
    """On ONNX Runtime's CPU the stems run with the memory arena (calls after the first reuse its pages), and
    the last call of each stem pass, in fast and in exact mode, asks for it to be shrunk, so that it never
    sits beside the next pass; the tiling graph runs without it, the apply graph only when asked (next test)."""
    from nst_runtime.tiling import APPLY_ARENA_KEY, STEM_KEY, open_tiling_graph, tiling_graph_path

    g = open_tiling_graph(tiling_graph_path(vivid_exact_onnx), providers=["CPUExecutionProvider"])
    assert g._arena_keys == {STEM_KEY.format(depth=1), STEM_KEY.format(depth=2), APPLY_ARENA_KEY}
    calls: dict[int, list[bool]] = {1: [], 2: []}
    for depth in (1, 2):
        g._embedded[STEM_KEY.format(depth=depth)] = _ShrinkRecording(g._opened(STEM_KEY.format(depth=depth)),
                                                                     calls[depth])
    x = make_image(96, 128, seed=16)
    for run in (lambda: stylize_fast(x, g, tile_h=64, tile_w=64, halo=16),
                lambda: stylize_exact(x, g, tile_h=64, tile_w=64, halo=16)):
        for shrinks in calls.values():
            shrinks.clear()
        run()
        for shrinks in calls.values():
            assert len(shrinks) > 1 and shrinks == [False] * (len(shrinks) - 1) + [True]


def test_the_last_pass_runs_with_onnx_runtimes_arena_when_asked_and_gives_it_back(vivid_exact_onnx, make_image):
    """``apply_arena``: fast tiling's last pass runs the apply graph in a session with ONNX Runtime's CPU arena
    (the tiles after the first reuse its pages: faster), the last tile asks for it to be shrunk, and the output
    is the same as without it; neither ``prepare`` nor a pass without ``apply_arena`` opens that session."""
    from nst_runtime.tiling import APPLY_ARENA_KEY, APPLY_KEY, open_tiling_graph, tiling_graph_path

    g = open_tiling_graph(tiling_graph_path(vivid_exact_onnx), providers=["CPUExecutionProvider"]).prepare()
    assert g.has_apply_arena and APPLY_KEY in g._embedded and APPLY_ARENA_KEY not in g._embedded
    x = make_image(96, 128, seed=21)
    plain = stylize_fast(x, g, tile_h=64, tile_w=64, halo=16)
    assert APPLY_KEY in g._embedded and APPLY_ARENA_KEY not in g._embedded
    arena_session = g._opened(APPLY_ARENA_KEY)
    assert arena_session.get_session_options().enable_cpu_mem_arena
    assert not g._opened(APPLY_KEY).get_session_options().enable_cpu_mem_arena
    calls: list[bool] = []
    g._embedded[APPLY_ARENA_KEY] = _ShrinkRecording(arena_session, calls)
    with_arena = stylize_fast(x, g, tile_h=64, tile_w=64, halo=16, apply_arena=True)
    np.testing.assert_array_equal(with_arena, plain)
    tiles = len(plan_fast_tiles(96, 128, tile_h=64, tile_w=64, halo=16)[0])
    assert tiles > 1 and calls == [False] * (tiles - 1) + [True]


def test_the_arena_is_for_onnx_runtimes_cpu_provider_alone(vivid_exact_onnx):
    """Only a CPU-only ONNX Runtime graph gets the arena session (``providers`` as names or as (name, options)):
    with a GPU provider first the graph's memory is the device's, and the arena is not offered."""
    from nst_runtime.tiling import open_tiling_graph, tiling_graph_path

    path = tiling_graph_path(vivid_exact_onnx)
    assert open_tiling_graph(path, providers=[("CPUExecutionProvider", {})]).has_apply_arena
    assert not open_tiling_graph(path, providers=["CUDAExecutionProvider", "CPUExecutionProvider"]).has_apply_arena


def test_openvino_ignores_the_request_for_an_arena(vivid_exact_onnx, make_image):
    """OpenVINO has no such arena: ``apply_arena`` changes nothing there (same output, no extra session)."""
    pytest.importorskip("openvino")
    from nst_runtime.tiling import APPLY_ARENA_KEY, open_tiling_graph, tiling_graph_path

    g = open_tiling_graph(tiling_graph_path(vivid_exact_onnx), providers=["CPUExecutionProvider"], backend="openvino")
    assert not g.has_apply_arena
    x = make_image(96, 128, seed=22)
    a = stylize_fast(x, g, tile_h=64, tile_w=64, halo=16)
    b = stylize_fast(x, g, tile_h=64, tile_w=64, halo=16, apply_arena=True)
    np.testing.assert_array_equal(a, b)
    assert APPLY_ARENA_KEY not in g._embedded


def test_a_last_pass_that_stops_early_closes_the_arena_session(vivid_exact_onnx, make_image):
    """A fast tiling cancelled during its last pass (before the tile that shrinks the arena) closes the apply
    graph's arena session; the next image reopens it and comes out the same as on a fresh graph."""
    from nst_runtime.tiling import APPLY_ARENA_KEY, open_tiling_graph, tiling_graph_path

    path = tiling_graph_path(vivid_exact_onnx)
    g = open_tiling_graph(path, providers=["CPUExecutionProvider"])
    x = make_image(96, 128, seed=23)

    open_when_cancelled: list[bool] = []

    def cancel_after_the_first_tile(done, total):
        if done == 2:  # the statistics pass, then one tile
            open_when_cancelled.append(APPLY_ARENA_KEY in g._embedded)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        stylize_fast(x, g, tile_h=64, tile_w=64, halo=16, use_stems=False, apply_arena=True,
                     on_tile=cancel_after_the_first_tile)
    assert open_when_cancelled == [True]  # the arena session ran the first tile ...
    assert APPLY_ARENA_KEY not in g._embedded  # ... and was closed by the cancel
    again = stylize_fast(x, g, tile_h=64, tile_w=64, halo=16, apply_arena=True)
    assert APPLY_ARENA_KEY in g._embedded
    fresh = stylize_fast(x, open_tiling_graph(path, providers=["CPUExecutionProvider"]), tile_h=64, tile_w=64,
                         halo=16)
    np.testing.assert_array_equal(again, fresh)


def test_the_stylizer_runs_the_last_pass_in_the_arena_only_where_its_cost_fits_the_budget(
        vivid_exact_onnx, make_image, monkeypatch):
    """The arena's peak is up to twice the apply graph's (APPLY_ARENA_CALL_COST): the stylizer asks for it where
    the plan's windows (216x216 here: balanced, smaller than the 256 px limit) at that cost fit the call budget
    (or there is no budget), and never shrinks the tiles for it."""
    import nst_runtime.stylizer as stylizer_module
    from nst_runtime.memory import APPLY_ARENA_CALL_COST, TILING_CALL_COST
    from nst_runtime.tiling import DEFAULT_FAST_HALO, fast_window_pixels

    seen: list[tuple[bool, int]] = []
    real = stylizer_module.stylize_fast
    monkeypatch.setattr(stylizer_module, "stylize_fast",
                        lambda *a, **k: (seen.append((k["apply_arena"], k["tile_h"])), real(*a, **k))[1])
    x = make_image(512, 512, seed=24)
    window = fast_window_pixels(512, 512, tile_h=256, tile_w=256, halo=DEFAULT_FAST_HALO)
    assert window == 216 * 216
    fits = APPLY_ARENA_CALL_COST.bytes_for(window)
    assert APPLY_ARENA_CALL_COST.bytes_for(256 * 256) > fits + (1 << 20)  # priced by the limit it would not fit
    tile_fits = TILING_CALL_COST["onnxruntime"].bytes_for(256 * 256)  # what keeps the tiles at 256
    assert tile_fits < fits
    tight = (tile_fits + fits) // 2  # the tile fits, the arena does not
    for limit, want in (("none", True), (fits + (1 << 20), True), (tight, False)):
        seen.clear()
        with Stylizer.open(vivid_exact_onnx, device="cpu", backend="onnxruntime", tile=256,
                           memory_limit=limit) as s:
            s.stylize(x)
        assert seen == [(want, 256)], limit


def test_a_stem_core_outside_its_window_or_off_the_grid_is_refused(graph, make_image):
    from nst_runtime.errors import UsageError

    window = make_image(24, 40, seed=19)
    mean, var = np.zeros(1600, np.float32), np.ones(1600, np.float32)
    assert graph.run_stem(1, window, (0, 0, 24, 40), mean, var)[0][0] == 24 * 40
    for box in ((4, 8, 28, 40), (0, 0, 24, 44), (8, 8, 8, 40), (2, 0, 22, 40), (0, 4, 24, 38), (-4, 0, 20, 40)):
        with pytest.raises(UsageError, match="stem core"):
            graph.run_stem(1, window, box, mean, var)


def test_a_stem_pass_that_stops_early_closes_the_sessions_holding_an_arena(vivid_exact_onnx, make_image):
    """The arena is shrunk by a pass's last call; a pass cancelled before it (here by the progress callback)
    closes the stem sessions instead, and the next image reopens them."""
    from nst_runtime.tiling import STEM_KEY, open_tiling_graph, stem_statistics, tiling_graph_path

    g = open_tiling_graph(tiling_graph_path(vivid_exact_onnx), providers=["CPUExecutionProvider"])
    x = make_image(96, 128, seed=20)
    plan, _ = plan_fast_tiles(96, 128, tile_h=64, tile_w=64, halo=16)
    mean, var = np.zeros(1600, np.float32), np.ones(1600, np.float32)

    def cancel():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        stem_statistics(x, g, plan, mean, var, on_call=cancel)
    assert not {STEM_KEY.format(depth=1), STEM_KEY.format(depth=2)} & set(g._embedded)
    again = stem_statistics(x, g, plan, mean, var)
    fresh = stem_statistics(x, open_tiling_graph(tiling_graph_path(vivid_exact_onnx),
                                                 providers=["CPUExecutionProvider"]), plan, mean, var)
    np.testing.assert_array_equal(again[0], fresh[0])


@pytest.mark.parametrize("graph_kind", ["stem", "apply"])
def test_the_last_call_gives_onnx_runtimes_arena_back(vivid_exact_onnx, graph_kind):
    """Measured in a fresh process: after a pass's last call (a stem's, or fast tiling's last pass with the
    arena) the arena is given back (resident memory falls back near where it was before the pass), after the
    others it is kept."""
    import json
    import subprocess
    import sys

    from nst_runtime.tiling import tiling_graph_path

    code = r"""
import json, sys
import numpy as np
from pathlib import Path
from nst_runtime.tiling import open_tiling_graph
def rss():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmRSS:"))
g = open_tiling_graph(Path(sys.argv[1]), providers=["CPUExecutionProvider"])
w = np.random.default_rng(0).integers(0, 256, (1024, 1024, 3), dtype=np.uint8)
m, v = np.zeros(1600, np.float32), np.ones(1600, np.float32)
if sys.argv[2] == "stem":
    call = lambda x, last=False: g.run_stem(2, x, (0, 0, *x.shape[:2]), m, v, last=last)
else:
    call = g.applier(m, v, arena=True)
call(w[:64, :64], last=True)
before = rss()
call(w)
call(w)
kept = rss()
call(w, last=True)
print(json.dumps({"before": before, "kept": kept, "after": rss()}))
"""
    out = subprocess.run([sys.executable, "-c", code, str(tiling_graph_path(vivid_exact_onnx)), graph_kind],
                         capture_output=True, text=True, timeout=120, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    grown = r["kept"] - r["before"]
    assert grown > 100 << 20  # the arena holds the calls' buffers between them
    assert r["after"] - r["before"] < grown / 4


def test_stems_exported_with_a_mask_input_get_the_core_as_a_mask(graph, make_image):
    """Stems exported before the core box took a mask (1 on the core): they get the same core that way."""
    from types import SimpleNamespace

    from nst_runtime.tiling import STEM_KEY, TilingGraph

    fed = []

    class MaskStem:
        def get_inputs(self):
            return [SimpleNamespace(name=n) for n in ("input", "mask")]

        def run(self, names, feed):
            fed.append(feed)
            return [np.ones((1, 1), np.float32), np.zeros((1, 32), np.float32), np.zeros((1, 32), np.float32)]

    g = TilingGraph(graph._session, graph.path, open_embedded=lambda data, key: MaskStem())
    g._embedded_data = {STEM_KEY.format(depth=1): ""}
    window = make_image(24, 40, seed=17)
    g.run_stem(1, window, (4, 8, 20, 32), np.zeros(1600, np.float32), np.ones(1600, np.float32))
    mask = fed[0]["mask"]
    assert "core" not in fed[0] and mask.shape == (1, 24, 40)
    assert mask.sum() == 16 * 24 and mask[0, 4:20, 8:32].min() == 1.0


def test_a_baked_copy_refuses_inputs_the_graph_does_not_have(vivid_exact_onnx):
    pytest.importorskip("openvino")
    from nst_runtime.errors import ModelFileError
    from nst_runtime.openvino_backend import OpenVinoSession
    from nst_runtime.tiling import tiling_graph_path

    session = OpenVinoSession(tiling_graph_path(vivid_exact_onnx))
    with pytest.raises(ModelFileError, match="no inputs"):
        session.bake({"nope": np.zeros(3, np.float32)})


def test_a_halo_too_small_for_the_stems_is_said(graph, make_image, caplog):
    import logging

    x = make_image(64, 64, seed=17)
    with caplog.at_level(logging.WARNING, logger="nst_runtime.tiling"):
        stylize_fast(x, graph, tile_h=24, tile_w=24, halo=4, min_halo=4)
    assert "stems' first-layer statistics slightly inexact" in caplog.text
