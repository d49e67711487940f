"""Foreign multi-style networks: a style-weights input kept (``--style-input``) or bound (``--bind``), 0..1 ranges.

The graphs are made the way such networks reach users: a PyTorch module with conditional instance normalization
(Dumoulin et al. 2017: per-style scale and shift, chosen by a weight vector over the styles) written as
``mean``/``var``/``sqrt`` arithmetic, reflection padding with ``F.pad``, nearest ``F.interpolate`` upsampling, a
0..1 input and a Sigmoid at the end, exported by PyTorch's TorchScript exporter at opset 17 with dynamic H/W.
That exporter writes the norm as ReduceMean/Sub/Pow/Sqrt/Div, the pads as a Constant/ConstantOfShape/Concat/
Reshape/Slice/Transpose/Cast chain and the upsampling as Resize (checked below), like the multi-style network a
registry package ships. The weights are random: these tests check mechanics and numbers, not looks.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

STYLES = ("candy", "mosaic", "udnie", "wave")


def _cin_network(styles: int = len(STYLES), channels: int = 8, *, batch_weights: bool = False):
    """A small multi-style transformer: conv/CIN/ReLU down, a residual block, upsample, conv, Sigmoid."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class CIN(nn.Module):
        def __init__(self, c: int, seed: int) -> None:
            super().__init__()
            g = torch.Generator().manual_seed(seed)
            self.gamma = nn.Parameter(1 + 0.5 * torch.randn(styles, c, generator=g))
            self.beta = nn.Parameter(0.5 * torch.randn(styles, c, generator=g))

        def forward(self, x, w):
            if batch_weights:  # [N, S] -> per-image scale and shift
                gamma = (w @ self.gamma)[:, :, None, None]
                beta = (w @ self.beta)[:, :, None, None]
            else:  # [S]: one style for the batch
                gamma = (w.unsqueeze(1) * self.gamma).sum(0).reshape(1, -1, 1, 1)
                beta = (w.unsqueeze(1) * self.beta).sum(0).reshape(1, -1, 1, 1)
            mean = x.mean(dim=(2, 3), keepdim=True)
            var = ((x - mean) ** 2).mean(dim=(2, 3), keepdim=True)
            return (x - mean) / torch.sqrt(var + 1e-5) * gamma + beta

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, k: int, stride: int, seed: int, norm: bool = True) -> None:
            super().__init__()
            self.pad = k // 2
            self.conv = nn.Conv2d(cin, cout, k, stride)
            self.norm = CIN(cout, seed) if norm else None

        def forward(self, x, w):
            x = self.conv(F.pad(x, [self.pad] * 4, mode="reflect"))
            return torch.relu(self.norm(x, w)) if self.norm is not None else x

    class MultiStyle(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.down1 = Block(3, channels, 5, 1, 1)
            self.down2 = Block(channels, 2 * channels, 3, 2, 2)
            self.res = Block(2 * channels, 2 * channels, 3, 1, 3)
            self.up = Block(2 * channels, channels, 3, 1, 4)
            self.out = Block(channels, 3, 5, 1, 5, norm=False)

        def forward(self, image, style_weights):
            x = self.down2(self.down1(image, style_weights), style_weights)
            x = x + self.res(x, style_weights)
            x = self.up(F.interpolate(x, scale_factor=2.0, mode="nearest"), style_weights)
            return torch.sigmoid(self.out(x, style_weights))

    return MultiStyle().eval()


def _export(net, path, *, styles: int = len(STYLES), batch_weights: bool = False):
    import torch

    weights = torch.zeros(1, styles) if batch_weights else torch.zeros(styles)
    weights.view(-1)[0] = 1.0
    axes = {"image": {2: "h", 3: "w"}, "stylized": {2: "h", 3: "w"}}
    if batch_weights:
        axes = {"image": {0: "n", 2: "h", 3: "w"}, "style_weights": {0: "n"}, "stylized": {0: "n", 2: "h", 3: "w"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(net, (torch.rand(1, 3, 48, 48), weights), str(path), opset_version=17, dynamo=False,
                              input_names=["image", "style_weights"], output_names=["stylized"], dynamic_axes=axes)
        except TypeError as exc:  # a torch without the TorchScript exporter
            pytest.skip(f"torch.onnx.export(dynamo=False) is gone in this torch: {exc}")
    return path


def _original(path, x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The original file on ONNX Runtime, uint8 HxWx3 in and out, written out here in numpy: 0..1 in, reflection
    padding to even sizes (its one stride-2 layer), crop, 0..1 out."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    shape = session.get_inputs()[1].shape
    w = weights.astype(np.float32).reshape(1, -1) if len(shape) == 2 else weights.astype(np.float32)
    h, wd = x.shape[:2]
    padded = np.pad(x.astype(np.float32) / 255, ((0, h % 2), (0, wd % 2), (0, 0)), mode="reflect")
    y = session.run(None, {"image": padded.transpose(2, 0, 1)[None], "style_weights": w})[0]
    return np.rint(np.clip(y[0].transpose(1, 2, 0)[:h, :wd] * 255, 0, 255)).astype(np.uint8)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return _export(_cin_network(), tmp_path_factory.mktemp("ms") / "multistyle.onnx")


@pytest.fixture(scope="module")
def imported(tmp_path_factory, source):
    from nst_export.foreign import ForeignImport, onnx_from_foreign

    out = tmp_path_factory.mktemp("ms_out")
    return onnx_from_foreign(source, out / "ms.onnx", fp16_out=out / "ms.fp16.onnx", options=ForeignImport(
        input_range=(0.0, 1.0), output_range=(0.0, 1.0), style_input="style_weights", style_names=STYLES))


@pytest.fixture(scope="module")
def photo():
    """A natural photo (scikit-image's), at an odd size the network was never exported at."""
    from PIL import Image
    from skimage import data

    return np.asarray(Image.fromarray(data.astronaut()).resize((75, 62), Image.BICUBIC))


def test_the_exporter_writes_the_ops_such_networks_have(source):
    import onnx

    model = onnx.load(str(source))
    ops = {n.op_type for n in model.graph.node}
    assert {"ReduceMean", "Sub", "Pow", "Sqrt", "Div", "Resize", "Sigmoid", "ConstantOfShape"} <= ops
    assert "InstanceNormalization" not in ops
    pads = [n for n in model.graph.node if n.op_type == "Pad"]
    inits = {i.name for i in model.graph.initializer}
    assert pads and all(n.input[1] not in inits for n in pads)  # computed by a chain of nodes
    assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == 17
    assert [i.name for i in model.graph.input] == ["image", "style_weights"]


def test_style_input_is_kept_and_the_sidecar_names_the_styles(imported):
    import onnx
    from nst_runtime.sidecar import read_sidecar

    model = onnx.load(str(imported.fp32))
    assert [(i.name, [d.dim_value or d.dim_param for d in i.type.tensor_type.shape.dim]) for i in model.graph.input] \
        == [("input", ["batch", "height", "width", 3]), ("style", [len(STYLES)])]
    for path in (imported.fp32, imported.fp16):
        meta = read_sidecar(path)
        assert meta.style is not None and meta.style.names == STYLES and meta.style.size == 4
        assert meta.style.name == "style" and meta.input_names == ["input", "style"]
        assert meta.source["style_input"] == "style_weights" and meta.source["tensorrt_lint"] == []
        # the gate ran for the first style, the last and a blend: 3 x the usual batches, each against the original
        assert "styles candy, wave, 0.5 candy + 0.5 wave" in meta.parity["reference"]
        assert len(meta.parity["images"]) == 3 * 3 and meta.parity["passed"]
    assert imported.parity.max_abs_levels <= 1
    assert imported.fp16_parity.min_psnr_db is None or imported.fp16_parity.min_psnr_db >= 45


def test_fp16_keeps_the_written_out_norm_in_fp32(imported):
    import onnx
    from nst_export.foreign import decomposed_norm_nodes
    from nst_export.fp16 import tensor_dtypes

    model = onnx.load(str(imported.fp16))
    types = tensor_dtypes(model)
    norm = set(decomposed_norm_nodes(model))
    assert len(norm) >= 4 * 4  # ReduceMean x2, Pow, Sqrt, Div per norm; 4 norms
    for node in model.graph.node:
        if node.name in norm:
            assert types[node.input[0]] == onnx.TensorProto.FLOAT, node.name
    convs = {n.input[1] for n in model.graph.node if n.op_type == "Conv"}
    assert {i.data_type for i in model.graph.initializer if i.name in convs} == {onnx.TensorProto.FLOAT16}


@pytest.mark.parametrize("style", ["mosaic", 2, "1:0.25,3:0.75", {"candy": 1.0, "wave": 1.0}])
def test_stylizer_feeds_the_style_on_every_cpu_backend(imported, source, photo, runtime_backend_name, style):
    """Each way of naming a style gives what the original file gives for that weight vector (within a level)."""
    from nst_runtime import Stylizer
    from nst_runtime.styles import style_weights

    weights = style_weights(style, _style_meta())
    with Stylizer.open(imported.fp32, device="cpu", backend=runtime_backend_name) as s:
        out = s.stylize(photo, style=style)
    ref = _original(source, photo, weights)
    assert out.shape == photo.shape
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1


def test_styles_differ_and_a_blend_lies_between(imported, photo):
    from nst_runtime import Stylizer

    with Stylizer.open(imported.fp32, device="cpu", backend="onnxruntime") as s:
        a, b = s.stylize(photo, style="candy"), s.stylize(photo, style="wave")
        mid = s.stylize(photo, style="candy:0.5,wave:0.5")
        batch = s.stylize_batch([photo, photo[::-1].copy()], style="wave", batch_size=2)
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 5
    assert np.abs(mid.astype(int) - a.astype(int)).mean() > 1 and np.abs(mid.astype(int) - b.astype(int)).mean() > 1
    assert np.array_equal(batch[0], b)


def test_default_style_and_missing_style(imported, photo):
    from nst_runtime import Stylizer
    from nst_runtime.errors import UsageError

    with Stylizer.open(imported.fp32, device="cpu", backend="onnxruntime") as s:
        with pytest.raises(UsageError, match=r"holds 4 styles.*0 candy, 1 mosaic, 2 udnie, 3 wave"):
            s.stylize(photo)
        with pytest.raises(UsageError, match=r"no style of that name.*0 candy"):
            s.stylize(photo, style="starry")
    with Stylizer.open(imported.fp32, device="cpu", backend="onnxruntime", style="udnie") as s:
        frames = list(s.stylize_frames([photo, photo]))
        assert np.array_equal(frames[0], s.stylize(photo, style=2))
        assert s.stylize_bytes(_png(photo), format="png")[:4] == b"\x89PNG"
    with pytest.raises(UsageError, match="no style of that name"):
        Stylizer.open(imported.fp32, device="cpu", backend="onnxruntime", style="starry")


def test_large_images_tile_with_the_style(imported, photo):
    """A tiled image (no tiling graph for a foreign network: feathered tiles) still gets the chosen style."""
    from nst_runtime import Stylizer

    big = np.concatenate([photo, photo[:, ::-1]], axis=1)
    with Stylizer.open(imported.fp32, device="cpu", backend="onnxruntime", tile=64, tile_overlap=16) as s:
        tiled = s.stylize(big, style="mosaic")
    with Stylizer.open(imported.fp32, device="cpu", backend="onnxruntime") as s:
        whole, other = s.stylize(big, style="mosaic"), s.stylize(big, style="wave")
    assert np.abs(tiled.astype(int) - whole.astype(int)).mean() < np.abs(tiled.astype(int) - other.astype(int)).mean()


def test_bind_makes_a_one_style_artifact_equal_to_that_style(tmp_path, source, imported, photo):
    import onnx
    from nst_export.foreign import ForeignImport, onnx_from_foreign
    from nst_runtime import Stylizer
    from nst_runtime.errors import UsageError
    from nst_runtime.sidecar import read_sidecar

    result = onnx_from_foreign(source, tmp_path / "udnie.onnx", options=ForeignImport(
        input_range=(0.0, 1.0), output_range=(0.0, 1.0), bind={"style_weights": (0.0, 0.0, 1.0, 0.0)}))
    model = onnx.load(str(result.fp32))
    assert [i.name for i in model.graph.input] == ["input"]
    assert "ReduceSum" not in {n.op_type for n in model.graph.node}  # the style arithmetic folded away
    meta = read_sidecar(result.fp32)
    assert meta.style is None and meta.source["bind"] == {"style_weights": [0.0, 0.0, 1.0, 0.0]}
    with Stylizer.open(result.fp32, device="cpu", backend="onnxruntime") as one, \
            Stylizer.open(imported.fp32, device="cpu", backend="onnxruntime") as many:
        assert np.abs(one.stylize(photo).astype(int) - many.stylize(photo, style="udnie").astype(int)).max() <= 1
        with pytest.raises(UsageError, match="holds one style"):
            one.stylize(photo, style="udnie")


def test_batch_shaped_style_input_is_expanded_over_the_batch(tmp_path, photo):
    """A network declaring style_weights [N, S] (one row per image): the artifact still takes one [S] vector and
    repeats it for every image of a call."""
    from nst_export.foreign import ForeignImport, onnx_from_foreign
    from nst_runtime import Stylizer
    from nst_runtime.styles import style_weights

    src = _export(_cin_network(batch_weights=True), tmp_path / "rows.onnx", batch_weights=True)
    result = onnx_from_foreign(src, tmp_path / "rows.nst.onnx", options=ForeignImport(
        input_range=(0.0, 1.0), output_range=(0.0, 1.0), style_input="style_weights"))
    assert result.graph.dynamic_batch
    with Stylizer.open(result.fp32, device="cpu", backend="onnxruntime") as s:
        assert s.sidecar.style.names == ("0", "1", "2", "3")
        outs = s.stylize_batch([photo, photo[::-1].copy()], style="0:0.3,3:0.7", batch_size=2)
    weights = style_weights({0: 0.3, 3: 0.7}, s.sidecar.style)
    for x, out in zip([photo, photo[::-1].copy()], outs, strict=True):
        assert np.abs(out.astype(int) - _original(src, x, weights).astype(int)).max() <= 1


def test_an_unbound_extra_input_is_one_line_naming_both_fixes(source, tmp_path):
    from nst_export.foreign import ForeignImport, onnx_from_foreign
    from nst_runtime.errors import ModelFileError, UsageError

    with pytest.raises(ModelFileError, match=r"inputs \['style_weights'\] besides the image 'image'.*"
                                             r"--bind style_weights=0,0,0\.\.\. .*--style-input style_weights"):
        onnx_from_foreign(source, tmp_path / "o.onnx")
    with pytest.raises(UsageError, match=r"3 value\(s\) for input 'style_weights', which takes 4"):
        onnx_from_foreign(source, tmp_path / "o.onnx", options=ForeignImport(style_input="style_weights",
                                                                              style_names=("a", "b", "c")))
    with pytest.raises(UsageError, match="'weights' is not an input"):
        onnx_from_foreign(source, tmp_path / "o.onnx", options=ForeignImport(bind={"weights": (1.0,)}))
    with pytest.raises(UsageError, match="both bound"):
        ForeignImport(style_input="w", bind={"w": (1.0,)})
    assert not list(tmp_path.iterdir())


def test_nst_export_stylize_and_info_on_the_command_line(source, tmp_path, photo, capsys):
    from nst_export.cli import main as export
    from nst_runtime.cli import info
    from nst_runtime.cli import main as stylize
    from nst_runtime.options import run_command
    from PIL import Image

    out = tmp_path / "out"
    assert export([str(source), "-o", str(out), "--onnx-only", "--no-tiling-graph", "--input-range", "0,1",
                   "--output-range", "0,1", "--style-input", "style_weights", "--style-names",
                   ",".join(STYLES)]) == 0, capsys.readouterr().err
    Image.fromarray(photo).save(tmp_path / "photo.png")
    assert stylize([str(out / "multistyle.onnx"), str(tmp_path / "photo.png"), "-o", str(tmp_path / "a.png"),
                    "--style", "udnie", "--device", "cpu", "-q"]) == 0, capsys.readouterr().err
    assert stylize([str(out / "multistyle.onnx"), str(tmp_path / "photo.png"), "-o", str(tmp_path / "b.png"),
                    "--style", "0:0.5,3:0.5", "--device", "cpu", "-q"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert stylize([str(out / "multistyle.onnx"), str(tmp_path / "photo.png"), "-o", str(tmp_path / "c.png"),
                    "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds 4 styles" in err[0] and "3 wave" in err[0]
    assert not (tmp_path / "c.png").exists()
    assert run_command(info, [str(out / "multistyle.onnx")], prog="nst-info") == 0
    assert "0 candy, 1 mosaic, 2 udnie, 3 wave" in capsys.readouterr().out
    a, b = np.asarray(Image.open(tmp_path / "a.png")), np.asarray(Image.open(tmp_path / "b.png"))
    assert a.shape == b.shape == photo.shape and not np.array_equal(a, b)
    # --bind on the command line, and the options refused for checkpoints
    assert export([str(source), "-o", str(out), "--name", "fixed", "--onnx-only", "--no-tiling-graph",
                   "--input-range", "0,1", "--output-range", "0,1", "--bind", "style_weights=0,1,0,0"]) == 0
    assert export([str(tmp_path / "x.pth"), "-o", str(out), "--style-input", "w", "--onnx-only"]) == 2


def test_engine_profile_and_sidecar_carry_the_style_input(imported, tmp_path, fake_trt):
    """TensorRT cannot run here: the builder is driven through a fake tensorrt module that parses nothing but
    records what the builder is told. Every input of the network gets its profile; the style's is fixed."""
    import types

    from nst_export.tensorrt_engine import engine_from_onnx
    from nst_runtime.sidecar import ShapeProfile, read_sidecar

    shapes: dict[str, tuple] = {}

    class Network:
        num_inputs = 2

        def get_input(self, i):
            return types.SimpleNamespace(name=["input", "style"][i])

    builder_cls = fake_trt.Builder

    class Builder(builder_cls):
        def create_network(self, flags):
            return Network()

        def create_optimization_profile(self):
            return types.SimpleNamespace(set_shape=lambda name, *s: shapes.__setitem__(name, s))

    fake_trt.Builder = Builder
    profile = ShapeProfile(min=(1, 8, 8), opt=(1, 256, 256), max=(2, 512, 512))
    engine = engine_from_onnx(imported.fp16, tmp_path / "ms.fp16.engine", profile=profile)
    assert shapes == {"input": ((1, 8, 8, 3), (1, 256, 256, 3), (2, 512, 512, 3)), "style": ((4,), (4,), (4,))}
    meta = read_sidecar(engine)
    assert meta.style == read_sidecar(imported.fp16).style and meta.input_names == ["input", "style"]


def test_triton_config_of_a_multi_style_model(imported, tmp_path):
    from nst_export.triton import triton_repo_from_artifact

    config = triton_repo_from_artifact(imported.fp32, tmp_path / "repo", name="ms").read_text()
    assert "max_batch_size: 0" in config and 'name: "style"' in config and "dims: [ 4 ]" in config
    assert "dims: [ -1, -1, -1, 3 ]" in config and "dynamic_batching" not in config


def _style_meta():
    from nst_runtime.sidecar import StyleInput

    return StyleInput(name="style", size=len(STYLES), names=STYLES)


def _png(x: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(x).save(buf, format="png")
    return buf.getvalue()


@pytest.fixture(params=["onnxruntime", "openvino"])
def runtime_backend_name(request):
    from nst_runtime.backends import backends_present

    if request.param not in backends_present("onnx", place="cpu"):
        pytest.skip(f"{request.param} is not installed here")
    return request.param
