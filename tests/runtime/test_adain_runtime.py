"""The runtime side of AdaIN artifacts, on a small hand-built pair of graphs (no torch, no training): style images
read like content images (regular files, pixel limit, memory budget), the style graph opened like any model file
(hash check, threads, released on close), and the cache looked up before anything is decoded.

The graphs: ``m.onnx`` adds the mean of ``style_mean`` times ``alpha`` to every pixel; ``m.style.onnx`` returns
the per-channel mean and standard deviation of the style image. They check mechanics, not stylization.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
from nst_runtime.artifact import file_sha256
from nst_runtime.sidecar import AdaINInputs, Sidecar, TensorSpec, sidecar_path
from PIL import Image


def _graphs():
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.UINT8, ["N", "H", "W", 3])
    mean = helper.make_tensor_value_info("style_mean", TensorProto.FLOAT, [3])
    std = helper.make_tensor_value_info("style_std", TensorProto.FLOAT, [3])
    alpha = helper.make_tensor_value_info("alpha", TensorProto.FLOAT, [1])
    out = helper.make_tensor_value_info("output", TensorProto.UINT8, ["N", "H", "W", 3])
    lo, hi = (helper.make_tensor(n, TensorProto.FLOAT, [], [v]) for n, v in (("lo", 0.0), ("hi", 255.0)))
    nodes = [
        helper.make_node("Cast", ["input"], ["xf"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["style_mean"], ["m"], keepdims=1),
        helper.make_node("Mul", ["m", "alpha"], ["shift0"]),
        helper.make_node("Add", ["shift0", "style_std"], ["shift1"]),
        helper.make_node("Sub", ["shift1", "style_std"], ["shift"]),
        helper.make_node("Add", ["xf", "shift"], ["y"]),
        helper.make_node("Clip", ["y", "lo", "hi"], ["yc"]),
        helper.make_node("Cast", ["yc"], ["output"], to=TensorProto.UINT8),
    ]
    stylize = helper.make_model(helper.make_graph(nodes, "adain", [x, mean, std, alpha], [out], [lo, hi]),
                                opset_imports=[helper.make_opsetid("", 17)])
    sx = helper.make_tensor_value_info("input", TensorProto.UINT8, [1, "H", "W", 3])
    smean = helper.make_tensor_value_info("mean", TensorProto.FLOAT, [1, 3])
    sstd = helper.make_tensor_value_info("std", TensorProto.FLOAT, [1, 3])
    axes = helper.make_tensor("axes", TensorProto.INT64, [2], [1, 2])
    snodes = [
        helper.make_node("Cast", ["input"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["f", "axes"], ["mean"], keepdims=0),
        helper.make_node("ReduceMean", ["f", "axes"], ["mk"], keepdims=1),
        helper.make_node("Sub", ["f", "mk"], ["d"]),
        helper.make_node("Mul", ["d", "d"], ["d2"]),
        helper.make_node("ReduceMean", ["d2", "axes"], ["var"], keepdims=0),
        helper.make_node("Sqrt", ["var"], ["std"]),
    ]
    style = helper.make_model(helper.make_graph(snodes, "adain_style", [sx], [smean, sstd], [axes]),
                              opset_imports=[helper.make_opsetid("", 18)])
    for m in (stylize, style):
        m.ir_version = 8
        onnx.checker.check_model(m)
    return stylize, style


def write_adain_pair(folder: Path, name: str = "m") -> Path:
    """``folder/name.onnx`` and ``folder/name.style.onnx`` with their sidecars (hashes included)."""
    import onnx

    stylize, style = _graphs()
    folder.mkdir(parents=True, exist_ok=True)
    model, graph = folder / f"{name}.onnx", folder / f"{name}.style.onnx"
    onnx.save(stylize, model)
    onnx.save(style, graph)
    sidecar_path(graph).write_text(Sidecar(
        kind="onnx", precision="fp32", input=TensorSpec("input"), min_size=1, role="adain-style",
        output=TensorSpec("mean", dtype="float32", layout="NC", channels="features"),
        artifact_sha256=file_sha256(graph)).to_json())
    sidecar_path(model).write_text(Sidecar(
        kind="onnx", precision="fp32", min_size=1, artifact_sha256=file_sha256(model),
        adain=AdaINInputs(channels=3, style_graph=graph.name)).to_json())
    return model


@pytest.fixture()
def adain_model(tmp_path):
    return write_adain_pair(tmp_path / "model")


@pytest.fixture()
def style_png(tmp_path):
    from skimage import data

    path = tmp_path / "coffee.png"
    Image.fromarray(data.coffee()[::8, ::8]).save(path)
    return path


def _open(model, **kw):
    from nst_runtime import Stylizer

    return Stylizer.open(model, device="cpu", backend="onnxruntime", **kw)


def test_the_style_statistics_reach_the_stylize_graph(adain_model, style_png):
    content = np.full((20, 30, 3), 10, np.uint8)
    style = np.asarray(Image.open(style_png).convert("RGB")).astype(np.float64)
    with _open(adain_model) as s:
        out = s.stylize(content, style=str(style_png), strength=0.5)
    expected = np.clip(10 + 0.5 * style.reshape(-1, 3).mean(axis=0).mean(), 0, 255)
    assert abs(int(out[0, 0, 0]) - int(expected)) <= 1


def test_style_images_get_the_pixel_limit_of_content_images(adain_model, style_png):
    from nst_runtime.errors import ImageTooLargeError

    w, h = Image.open(style_png).size
    with _open(adain_model, max_pixels=w * h - 1) as s, pytest.raises(ImageTooLargeError):
        s.stylize(np.zeros((8, 8, 3), np.uint8), style=str(style_png))
    with _open(adain_model, max_pixels=w * h - 1) as s, pytest.raises(ImageTooLargeError):
        s.stylize(np.zeros((8, 8, 3), np.uint8), style=style_png.read_bytes())
    with _open(adain_model, max_pixels=w * h) as s:
        s.stylize(np.zeros((8, 8, 3), np.uint8), style=str(style_png))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_style_image_that_is_a_fifo_is_refused_without_blocking(adain_model, tmp_path):
    from nst_runtime.adain import StyleStatistics
    from nst_runtime.errors import ImageError

    fifo = tmp_path / "style.fifo"
    os.mkfifo(fifo)
    stats = StyleStatistics(adain_model.with_name("m.style.onnx"), min_size=1)
    with pytest.raises(ImageError, match="regular file"):
        stats.stats(fifo)


def test_a_style_image_over_the_memory_budget_is_encoded_smaller(adain_model, tmp_path, caplog):
    from nst_runtime.adain import StyleStatistics
    from nst_runtime.memory import CallCost

    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 300, 3), np.uint8)).save(big)
    seen: list[tuple[int, ...]] = []
    stats = StyleStatistics(adain_model.with_name("m.style.onnx"), min_size=1, memory_limit=1000 + 100 * 5000,
                            cost=CallCost(1000, 100))
    real = stats._session

    class Spy:
        def run(self, names, feeds):
            seen.append(feeds["input"].shape)
            return real.run(names, feeds)

    stats._session = Spy()
    with caplog.at_level("WARNING"):
        stats.stats(big)
    assert seen[0][1] * seen[0][2] <= 5000 and seen[0][2] > seen[0][1]  # the aspect kept
    assert "more than the memory budget" in caplog.text


def test_the_cache_is_looked_up_before_decoding_and_streams_resolve_once(adain_model, style_png, tmp_path):
    import shutil

    content = np.full((16, 16, 3), 40, np.uint8)
    with _open(adain_model) as s:
        s.stylize(content, style=str(style_png))
        stats = s._style_statistics()
        assert (stats.decoded, stats.encoded) == (1, 1)
        for _ in range(3):
            s.stylize(content, style=str(style_png))
        assert stats.decoded == 1  # found by path, size and mtime: not decoded again
        copy = tmp_path / "copy.png"
        shutil.copy(style_png, copy)
        s.stylize(content, style=str(copy))
        assert (stats.decoded, stats.encoded) == (1, 1)  # same bytes under another name: hashed, not decoded
        new = tmp_path / "other.png"
        Image.fromarray(np.full((10, 10, 3), 200, np.uint8)).save(new)
        calls = []
        real = stats.stats
        stats.stats = lambda src: calls.append(src) or real(src)
        frames = list(s.stylize_frames([content] * 6, style=str(new), batch_size=2))
        assert len(frames) == 6 and len(calls) == 1  # one style resolution per stream, not per chunk
        assert stats.decoded == 2


def test_a_changed_style_file_is_read_again(adain_model, tmp_path):
    path = tmp_path / "s.png"
    content = np.full((8, 8, 3), 0, np.uint8)
    with _open(adain_model) as s:
        Image.fromarray(np.full((10, 10, 3), 30, np.uint8)).save(path)
        first = s.stylize(content, style=str(path))
        Image.fromarray(np.full((12, 10, 3), 90, np.uint8)).save(path)
        os.utime(path, ns=(1, 1))
        second = s.stylize(content, style=str(path))
    assert int(second[0, 0, 0]) > int(first[0, 0, 0])


def test_the_style_graph_is_hash_checked_and_released_on_close(adain_model, style_png):
    from nst_runtime.errors import ModelFileError

    graph = adain_model.with_name("m.style.onnx")
    with _open(adain_model) as s:
        s.stylize(np.zeros((8, 8, 3), np.uint8), style=str(style_png))
        stats = s._style_statistics()
        assert stats._session is not None
    assert stats._session is None  # close() released the style graph's session
    data = bytearray(graph.read_bytes())
    data[-1] ^= 0xFF
    graph.write_bytes(bytes(data))
    with _open(adain_model) as s, pytest.raises(ModelFileError, match="does not match"):
        s.stylize(np.zeros((8, 8, 3), np.uint8), style=str(style_png))
    graph.write_bytes(bytes(data[:-1]) + bytes([data[-1] ^ 0xFF]))
    with _open(adain_model, verify_hash=False) as s:
        s.stylize(np.zeros((8, 8, 3), np.uint8), style=str(style_png))


def test_an_empty_style_graph_name_is_a_model_file_error(adain_model, style_png):
    from nst_runtime.errors import ModelFileError
    from nst_runtime.sidecar import read_sidecar

    meta = read_sidecar(adain_model)
    sidecar_path(adain_model).write_text(dataclasses.replace(
        meta, adain=dataclasses.replace(meta.adain, style_graph="")).to_json())
    with _open(adain_model) as s, pytest.raises(ModelFileError, match="names no AdaIN style graph"):
        s.stylize(np.zeros((8, 8, 3), np.uint8), style=str(style_png))


def test_the_style_graph_gets_the_stylizer_threads(adain_model, style_png, monkeypatch):
    from nst_runtime import onnxruntime_backend

    seen = []
    real = onnxruntime_backend.SessionFromOnnx.__call__

    def spy(self):
        seen.append((self.path.name, self.intra_op_threads))
        return real(self)

    monkeypatch.setattr(onnxruntime_backend.SessionFromOnnx, "__call__", spy)
    with _open(adain_model, intra_op_threads=1) as s:
        s.stylize(np.zeros((8, 8, 3), np.uint8), style=str(style_png))
    assert ("m.style.onnx", 1) in seen


def test_the_style_image_is_never_an_output(adain_model, style_png, tmp_path):
    from nst_runtime.cli import main

    photo = tmp_path / "photo.png"
    Image.fromarray(np.full((10, 12, 3), 50, np.uint8)).save(photo)
    before = style_png.read_bytes()
    assert main([str(adain_model), str(photo), "-o", str(style_png), "--style-image", str(style_png),
                 "--device", "cpu", "-q"]) == 2
    assert style_png.read_bytes() == before
    blend = f"{photo}:0.5,{style_png}:0.5"
    assert main([str(adain_model), str(photo), "-o", str(style_png), "--style-image", blend, "--device", "cpu",
                 "-q"]) == 2
    assert style_png.read_bytes() == before


def test_the_memory_budget_uses_adains_own_per_pixel_cost(adain_model, style_png, vivid_onnx):
    """AdaIN's VGG-19 encoder needs over twice TransformerNet's memory per pixel on ONNX Runtime (measured, see
    nst_runtime.memory): an image that fits the budget for TransformerNet is tiled for AdaIN."""
    from nst_runtime.memory import CPU_CALL_COST, FAMILY_CALL_COST

    adain_cost, plain_cost = FAMILY_CALL_COST[("adain", "onnxruntime")], CPU_CALL_COST["onnxruntime"]
    assert adain_cost.per_pixel > 2 * plain_cost.per_pixel
    budget = adain_cost.bytes_for(300 * 300) - 1  # 300x300 is just over it for AdaIN, far within for the other
    with _open(adain_model, memory_limit=budget) as s, _open(vivid_onnx, memory_limit=budget) as plain:
        assert s._needs_tiles(300, 300) and not plain._needs_tiles(300, 300)
        assert s._style_statistics().cost == FAMILY_CALL_COST[("adain-style", "onnxruntime")]
        out = s.stylize(np.zeros((300, 300, 3), np.uint8), style=str(style_png))  # runs in tiles
        assert out.shape == (300, 300, 3)
