"""Exporting every TransformerNet family: slim and custom shapes (with their tiling graph), and multi-style
networks (a second graph input, the style weights; the parity gate at the first style, the last and a blend).
Random weights throughout (no trained networks can be downloaded here): mechanics and numbers, not looks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

STYLES = ["candy", "mosaic", "wave"]


@pytest.fixture(scope="module")
def slim_ckpt(tmp_path_factory):
    from nst_train.checkpoint import CheckpointMetadata, save_checkpoint
    from nst_train.samples import vivid_random_net

    net = vivid_random_net(5, arch="slim", res_blocks=1)
    return save_checkpoint(tmp_path_factory.mktemp("slim") / "slim.pth", net, CheckpointMetadata(steps=0))


@pytest.fixture(scope="module")
def multi_ckpt(tmp_path_factory):
    from nst_train.checkpoint import CheckpointMetadata, save_checkpoint
    from nst_train.samples import vivid_random_net

    net = vivid_random_net(6, arch="slim", res_blocks=1, styles=len(STYLES))
    with torch.no_grad():  # distinct styles: each row of every conditional norm its own
        for p in net.parameters():
            if p.dim() == 2:  # [styles, channels]: only the conditional norms' rows are 2-D
                p.add_(torch.randn_like(p) * 0.5)
    return save_checkpoint(tmp_path_factory.mktemp("multi") / "multi.pth", net,
                           CheckpointMetadata(steps=0, style_names=STYLES))


@pytest.fixture(scope="module")
def multi_export(tmp_path_factory, multi_ckpt):
    from nst_export.cli import main

    out = tmp_path_factory.mktemp("multi_out")
    assert main([str(multi_ckpt), "-o", str(out), "--fp16", "--onnx-only", "-q"]) == 0
    return out


def test_slim_exports_with_its_cost_and_a_working_tiling_graph(slim_ckpt, tmp_path):
    """The tiling graph's layer list comes from the network (1 residual block: 7 norm layers, not 15) and it
    passes its own numerical check against PyTorch."""
    from nst_export.onnx_export import onnx_from_checkpoint
    from nst_export.tiling_graph import norm_layers, tiling_onnx_from_checkpoint
    from nst_runtime import Stylizer
    from nst_runtime.sidecar import read_sidecar
    from nst_train.checkpoint import load_checkpoint
    from nst_train.model import gflop_per_megapixel

    onnx_path = onnx_from_checkpoint(slim_ckpt, tmp_path / "slim.onnx")
    meta = read_sidecar(onnx_path)
    net = load_checkpoint(slim_ckpt).model()
    assert meta.gflop_per_mpx == round(gflop_per_megapixel(net.shape), 1)
    assert meta.architecture == "transformer_net/slim-c32-r1-v1" and meta.style is None
    assert len(norm_layers(net)) == 3 + 2 * 1 + 2
    tiling = tiling_onnx_from_checkpoint(slim_ckpt, tmp_path / "slim.tiling.onnx")
    assert read_sidecar(tiling).parity["max_abs_levels"] <= 1
    x = np.random.default_rng(0).integers(0, 256, (96, 200, 3), np.uint8)
    with Stylizer.open(onnx_path, device="cpu", backend="onnxruntime") as whole, \
            Stylizer.open(onnx_path, device="cpu", backend="onnxruntime", tile=160, tile_mode="exact") as tiled:
        assert tiled.tiling_mode == "exact"
        diff = np.abs(whole.stylize(x).astype(int) - tiled.stylize(x).astype(int))
    print("exact tiling of the slim network: max", diff.max(), "mean", diff.mean())
    assert np.mean(diff <= 1) > 0.99  # whole-image statistics: the tiles reproduce the untiled image


def test_multi_style_export_keeps_the_style_input_and_names(multi_export):
    import onnx
    from nst_runtime.sidecar import read_sidecar

    model = onnx.load(str(multi_export / "multi.onnx"))
    assert [i.name for i in model.graph.input] == ["input", "style"]
    assert [d.dim_value for d in model.graph.input[1].type.tensor_type.shape.dim] == [3]
    assert "InstanceNormalization" in {n.op_type for n in model.graph.node}  # native, FP32 in the FP16 file
    for name in ("multi.onnx", "multi.fp16.onnx"):
        meta = read_sidecar(multi_export / name)
        assert meta.style.names == tuple(STYLES) and meta.style.name == "style"
        assert "styles candy, wave, 0.5 candy + 0.5 wave" in meta.parity["reference"]
        assert len(meta.parity["images"]) == 9 and meta.parity["passed"]
    assert read_sidecar(multi_export / "multi.fp16.onnx").parity["min_psnr_db"] >= 40
    assert not (multi_export / "multi.tiling.onnx").exists()  # no tiling graph: it has no style input


@pytest.mark.parametrize("style", [0, 2, "candy:0.5,wave:0.5"])
def test_runtime_equals_pytorch_for_each_style(multi_export, multi_ckpt, style):
    from nst_export.wrapper import DeployWrapper
    from nst_runtime import Stylizer
    from nst_runtime.styles import style_weights
    from nst_train.checkpoint import load_checkpoint

    x = np.random.default_rng(1).integers(0, 256, (37, 50, 3), np.uint8)
    with Stylizer.open(multi_export / "multi.onnx", device="cpu", backend="onnxruntime") as s:
        out = s.stylize(x, style=style)
        weights = style_weights(style, s.sidecar.style)
    with torch.inference_mode():
        ref = DeployWrapper(load_checkpoint(multi_ckpt).model())(torch.from_numpy(x[None]),
                                                                 torch.from_numpy(weights)).numpy()[0]
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1


def test_int8_of_a_multi_style_network_is_refused(multi_ckpt, tmp_path, capsys):
    from nst_export.cli import main

    photos = tmp_path / "photos"
    photos.mkdir()
    assert main([str(multi_ckpt), "-o", str(tmp_path / "o"), "--onnx-only", "--int8", "--calibration-dir",
                 str(photos)]) == 2
    assert "multi-style network (3 styles)" in capsys.readouterr().err
