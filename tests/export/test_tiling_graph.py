"""The tiling graph: statistics in, masked per-tile moments out; one tile with the true statistics reproduces
the deploy model; the file, its sidecar (role "tiling") and its metadata follow the documented contract."""

from __future__ import annotations

import numpy as np
import pytest

LEVEL_TOLERANCE = 1


@pytest.fixture(scope="module")
def vivid(tiny_net):
    """The shared ``tiny_net``, whose output spans 0..255: a degenerate network whose output clamps to 0
    would hide a wrong normalization."""
    return tiny_net.eval()


@pytest.fixture(scope="module")
def tiling_onnx(tiling_onnx_path):
    """The tiling graph of ``vivid`` (the shared network), exported once per session (tests/conftest.py)."""
    return tiling_onnx_path


@pytest.fixture(scope="module")
def graph(tiling_onnx):
    from nst_runtime.tiling import open_tiling_graph

    return open_tiling_graph(tiling_onnx, providers=["CPUExecutionProvider"])


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3)).repeat(8, 0).repeat(8, 1)[:h, :w]
    return np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


def test_one_tile_with_the_true_statistics_reproduces_the_deploy_model(graph, vivid):
    """A stats pass (the runtime's sequential algorithm, one tile = the whole image) finds PyTorch's
    statistics, and the final pass with them matches the deploy model within 1 level."""
    import torch
    from nst_export.tiling_graph import torch_norm_moments
    from nst_export.wrapper import DeployWrapper
    from nst_runtime.tiling import stylize_exact

    x = _image(64, 96)
    want_mean, want_var = torch_norm_moments(vivid, x[None])
    total = graph.offsets[-1]
    mean, var = np.zeros(total, np.float32), np.ones(total, np.float32)
    ones = np.ones(x.shape[:2], np.float32)
    for k in range(graph.layers):
        lo, hi = graph.offsets[k], graph.offsets[k + 1]
        _, count, m, m2 = graph.run(x, ones, mean, var)
        assert count[k] == x.shape[0] * x.shape[1] // (1, 2, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 2, 1)[k] ** 2
        mean[lo:hi], var[lo:hi] = m[lo:hi], m2[lo:hi] / count[k]
    np.testing.assert_allclose(mean, want_mean[0], rtol=1e-4, atol=1e-3 * np.sqrt(want_var[0]).max())
    np.testing.assert_allclose(var, want_var[0], rtol=1e-3, atol=1e-6)
    out = graph.run(x, ones, mean, var)[0]
    with torch.no_grad():
        ref = DeployWrapper(vivid).eval()(torch.from_numpy(x[None])).numpy()[0]
    assert np.abs(out.astype(int) - ref).max() <= LEVEL_TOLERANCE
    assert ref.std() > 20  # the comparison is not between two near-constant images
    # the runtime's exact tiling with one tile is the same computation
    assert np.abs(stylize_exact(x, graph, tile_h=1024, tile_w=1024).astype(int) - ref).max() <= LEVEL_TOLERANCE


def test_moments_are_masked_at_every_layer_resolution(graph, vivid):
    """Counts follow the mask subsampled by each layer's stride; a mask of ones over the whole image
    reproduces the unmasked moments."""
    x = _image(48, 64, seed=1)
    total = graph.offsets[-1]
    mean, var = np.zeros(total, np.float32), np.ones(total, np.float32)
    mask = np.zeros(x.shape[:2], np.float32)
    mask[8:40, 16:48] = 1.0  # a core aligned to multiples of 4 (and 8)
    _, count, _, m2 = graph.run(x, mask, mean, var)
    strides = (1, 2, 4) + (4,) * 10 + (2, 1)
    assert count.tolist() == [float(mask[::s, ::s].sum()) for s in strides]
    assert (m2 >= 0).all()
    # two halves of the image (cores that partition it) combine to the whole image's moments
    from nst_runtime.tiling import combine_moments

    top, bottom = np.zeros_like(mask), np.zeros_like(mask)
    top[:24], bottom[24:] = 1.0, 1.0
    parts = [graph.run(x, m, mean, var) for m in (top, bottom)]
    _, c_all, m_all, m2_all = graph.run(x, np.ones_like(mask), mean, var)
    per_channel = np.repeat(np.arange(len(strides)), graph.channels)
    got_mean, got_var = combine_moments(np.stack([p[1][per_channel] for p in parts]),
                                        np.stack([p[2] for p in parts]), np.stack([p[3] for p in parts]))
    np.testing.assert_allclose(got_mean, m_all, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(got_var, m2_all / c_all[per_channel], rtol=1e-3, atol=1e-5)


def test_file_sidecar_and_metadata(tiling_onnx):
    import base64

    import onnx
    from nst_export.tiling_graph import INPUT_NAMES, OUTPUT_NAMES
    from nst_runtime.sidecar import read_sidecar

    meta = read_sidecar(tiling_onnx)
    assert meta.role == "tiling" and meta.kind == "onnx" and meta.precision == "fp32"
    assert meta.parity["max_abs_levels"] <= LEVEL_TOLERANCE
    model = onnx.load(str(tiling_onnx))
    assert [i.name for i in model.graph.input] == list(INPUT_NAMES)
    assert [o.name for o in model.graph.output] == list(OUTPUT_NAMES)
    dims = [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim[:3]]
    assert dims == ["batch", "height", "width"]
    props = {p.key: p.value for p in model.metadata_props}
    channels = [int(c) for c in props["nst.tiling.channels"].split(",")]
    assert len(channels) == 15 and sum(channels) == 1600
    # the stems and the apply graph ride in the metadata, were checked against PyTorch with the rest, and have
    # the documented I/O
    assert meta.parity["stem_depths"] == [1, 2] and meta.parity["max_moment_rel_err"] <= 1e-3
    assert meta.parity["apply"] is True
    apply = onnx.load_from_string(base64.b64decode(props["nst.tiling.apply"]))
    assert [i.name for i in apply.graph.input] == ["input", "norm_mean", "norm_var"]
    assert [o.name for o in apply.graph.output] == ["output"]
    assert not any(n.op_type in ("ReduceSum", "ReduceMean", "InstanceNormalization") for n in apply.graph.node)
    for depth, inputs in ((1, ["input", "core"]), (2, ["input", "core", "norm_mean", "norm_var"])):
        stem = onnx.load_from_string(base64.b64decode(props[f"nst.tiling.stem.{depth}"]))
        assert [i.name for i in stem.graph.input] == inputs
        assert [o.name for o in stem.graph.output] == ["tile_count", "tile_mean", "tile_m2"]
        assert not any(n.op_type == "ConvTranspose" for n in stem.graph.node)  # the stem only
        assert sum(n.op_type == "Conv" for n in stem.graph.node) == depth
    # the statistics graph: the image in, every layer's statistics out; no mask, no output image (its last
    # convolution, which no statistic depends on, is not in the graph)
    assert meta.parity["stats"] is True
    stats = onnx.load_from_string(base64.b64decode(props["nst.tiling.stats"]))
    assert [i.name for i in stats.graph.input] == ["input"]
    assert [o.name for o in stats.graph.output] == ["norm_mean", "norm_var"]
    assert [d.dim_param or d.dim_value for d in stats.graph.output[0].type.tensor_type.shape.dim] == ["batch", 1600]
    assert sum(n.op_type in ("Conv", "ConvTranspose") for n in stats.graph.node) == len(channels)


def test_stems_report_pytorchs_moments_of_the_first_layers(tiling_onnx, vivid):
    """The depth-2 stem, given layer 0's true statistics, reports layer 1's moments as PyTorch computes them."""
    import onnxruntime as ort
    from nst_export.tiling_graph import stem_sessions, torch_norm_moments

    stems = stem_sessions(ort.InferenceSession(str(tiling_onnx), providers=["CPUExecutionProvider"]))
    image = _image(64, 96, seed=4)[None]
    mean, var = torch_norm_moments(vivid, image)
    count, got_mean, got_m2 = stems[2].run(None, {"input": image, "core": np.array([0, 0, 64, 96], np.int64),
                                                 "norm_mean": mean[0, :32].astype(np.float32),
                                                 "norm_var": var[0, :32].astype(np.float32)})
    assert count[0].tolist() == [32 * 48]  # layer 1 is at half resolution
    np.testing.assert_allclose(got_mean[0], mean[0, 32:96], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(got_m2[0] / count[0, 0], var[0, 32:96], rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("depth", [1, 2])
def test_a_stems_core_box_gives_the_tiling_graphs_masked_moments(tiling_onnx, depth):
    """The stems slice the core out of each layer at its stride; the tiling graph multiplies by the mask
    subsampled at that stride. A core inside the window (as fast tiling's are) gives the same moments."""
    import onnxruntime as ort
    from nst_export.tiling_graph import stem_sessions

    session = ort.InferenceSession(str(tiling_onnx), providers=["CPUExecutionProvider"])
    stem = stem_sessions(session)[depth]
    image = _image(72, 104, seed=7)[None]
    top, left, bottom, right = 12, 8, 60, 92
    mask = np.zeros((1, 72, 104), np.float32)
    mask[:, top:bottom, left:right] = 1.0
    rng = np.random.default_rng(3)
    mean = rng.normal(0, 1, 1600).astype(np.float32)
    var = rng.uniform(0.5, 2.0, 1600).astype(np.float32)
    _, counts, tile_mean, tile_m2 = session.run(None, {"input": image, "mask": mask, "norm_mean": mean,
                                                      "norm_var": var, "norm_own": np.zeros(1, np.float32)})
    feed = {"input": image, "core": np.array([top, left, bottom, right], np.int64)}
    if depth > 1:
        feed |= {"norm_mean": mean[:32], "norm_var": var[:32]}
    count, got_mean, got_m2 = stem.run(None, feed)
    lo, hi = (0, 32) if depth == 1 else (32, 96)
    assert count[0, 0] == counts[0, depth - 1] == (bottom - top) * (right - left) / 4 ** (depth - 1)
    np.testing.assert_allclose(got_mean[0], tile_mean[0, lo:hi], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(got_m2[0], tile_m2[0, lo:hi], rtol=1e-3, atol=1e-2)


def test_the_statistics_graph_reports_pytorchs_statistics_of_every_layer(tiling_onnx, vivid):
    """The statistics graph, each layer normalizing with its own statistics, reports what PyTorch's deploy
    model normalizes with (a batch of two: per image)."""
    import onnxruntime as ort
    from nst_export.tiling_graph import stats_session, torch_norm_moments

    stats = stats_session(ort.InferenceSession(str(tiling_onnx), providers=["CPUExecutionProvider"]))
    image = np.stack([_image(64, 96, seed=5), _image(64, 96, seed=6)])
    mean, var = torch_norm_moments(vivid, image)
    got_mean, got_var = stats.run(None, {"input": image})
    assert got_mean.shape == got_var.shape == (2, 1600)
    np.testing.assert_allclose(got_mean, mean, rtol=1e-4, atol=1e-3 * np.sqrt(var).max())
    np.testing.assert_allclose(got_var, var, rtol=1e-3, atol=1e-5)


def test_tiling_path_convention(tmp_path):
    from nst_export.tiling_graph import tiling_path_for

    assert tiling_path_for(tmp_path / "candy.onnx") == tmp_path / "candy.tiling.onnx"
    assert tiling_path_for(tmp_path / "candy.fp16.engine") == tmp_path / "candy.tiling.onnx"
