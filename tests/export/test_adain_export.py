"""AdaIN artifacts: the stylize graph (content + style statistics + alpha) and the style graph, each at its own
full resolution; the runtime's style images, cache and blends; ``nst-stylize --style-image``.

The network is random (no VGG-19 ImageNet weights can be downloaded): He-initialised so its activations have the
scale a trained VGG's have (PyTorch's default init shrinks them layer by layer, and a random decoder then outputs
a flat colour, which the parity gate rightly refuses), with the last layer set so the output spans 0..255. These
tests check mechanics and numbers, never how a stylization looks.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch


def _he_adain(seed: int = 0):
    from nst_train.samples import vivid_random_adain

    return vivid_random_adain(seed)


@pytest.fixture(scope="module")
def adain_ckpt(tmp_path_factory):
    from nst_train.adain import save_adain_checkpoint

    return save_adain_checkpoint(tmp_path_factory.mktemp("adain") / "adain.pth", _he_adain(), {"steps": 0})


@pytest.fixture(scope="module")
def exported(tmp_path_factory, adain_ckpt):
    from nst_export.cli import main

    out = tmp_path_factory.mktemp("adain_out")
    assert main([str(adain_ckpt), "-o", str(out), "--fp16", "--onnx-only", "-q"]) == 0
    return out


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Natural photos from scikit-image at odd sizes: a content photo and two styles of other sizes."""
    from PIL import Image
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    content = np.asarray(Image.fromarray(data.astronaut()).resize((75, 62), Image.BICUBIC))
    a = np.asarray(Image.fromarray(data.coffee()).resize((90, 50), Image.BICUBIC))
    b = np.asarray(Image.fromarray(data.chelsea()).resize((40, 70), Image.BICUBIC))
    for name, img in (("content.png", content), ("a.png", a), ("b.png", b)):
        Image.fromarray(img).save(folder / name)
    return folder


def _torch_stylize(net, content: np.ndarray, mean: torch.Tensor, std: torch.Tensor, alpha: float) -> np.ndarray:
    import torch.nn.functional as F

    x = torch.from_numpy(content).permute(2, 0, 1)[None].float()
    h, w = x.shape[-2:]
    x = F.pad(x, (0, (-w) % 8, 0, (-h) % 8), mode="reflect")
    with torch.inference_mode():
        y = net(x, mean, std, alpha)[..., :h, :w]
    return torch.round(y.clamp(0, 255))[0].permute(1, 2, 0).numpy().astype(np.uint8)


def _stats(net, path) -> tuple[torch.Tensor, torch.Tensor]:
    from PIL import Image

    s = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)[None].float()
    with torch.inference_mode():
        return net.style_stats(s)


def test_two_graphs_with_their_sidecars(exported):
    import onnx
    from nst_runtime.sidecar import read_sidecar

    meta = read_sidecar(exported / "adain.onnx")
    assert meta.adain is not None and meta.adain.style_graph == "adain.style.onnx" and meta.adain.channels == 512
    assert meta.input_names == ["input", "style_mean", "style_std", "alpha"]
    assert meta.architecture == "adain/vgg19-relu4_1-v1" and meta.gflop_per_mpx > 100
    assert "alpha 1, alpha 0.5" in meta.parity["reference"] and meta.parity["max_abs_levels"] <= 1
    fp16 = read_sidecar(exported / "adain.fp16.onnx")
    assert fp16.precision == "fp16" and fp16.parity["min_psnr_db"] >= 40
    style = read_sidecar(exported / "adain.style.onnx")
    assert style.role == "adain-style" and style.parity["max_rel_err"] < 1e-3
    ops = {n.op_type for n in onnx.load(str(exported / "adain.onnx")).graph.node}
    assert "InstanceNormalization" in ops  # AdaIN's normalization: the native op, FP32 in the FP16 file
    graph = onnx.load(str(exported / "adain.style.onnx")).graph
    assert [i.name for i in graph.input] == ["input"] and [o.name for o in graph.output] == ["style_mean",
                                                                                            "style_std"]
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "height", "width", 3]  # any style size, no padding


@pytest.mark.parametrize("alpha", [1.0, 0.4])
def test_runtime_equals_pytorch_content_and_style_at_their_own_sizes(exported, adain_ckpt, photos, alpha):
    from nst_runtime import Stylizer
    from nst_train.adain import load_adain_checkpoint
    from PIL import Image

    net = load_adain_checkpoint(adain_ckpt).net
    content = np.asarray(Image.open(photos / "content.png"))
    with Stylizer.open(exported / "adain.onnx", device="cpu", backend="onnxruntime") as s:
        out = s.stylize(content, style=str(photos / "a.png"), strength=alpha)
    ref = _torch_stylize(net, content, *_stats(net, photos / "a.png"), alpha)
    assert out.shape == content.shape
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1


def test_strength_is_alpha_on_features_not_a_pixel_blend(exported, adain_ckpt, photos):
    from nst_runtime import Stylizer
    from PIL import Image

    content = np.asarray(Image.open(photos / "content.png"))
    with Stylizer.open(exported / "adain.onnx", device="cpu", backend="onnxruntime") as s:
        full = s.stylize(content, style=str(photos / "a.png")).astype(float)
        half = s.stylize(content, style=str(photos / "a.png"), strength=0.5).astype(float)
    pixel_blend = 0.5 * full + 0.5 * content
    assert np.abs(half - pixel_blend).mean() > 5  # decoded from blended features: not a mix of two images


def test_blends_and_the_style_cache(exported, adain_ckpt, photos, tmp_path):
    import shutil

    from nst_runtime import Stylizer
    from nst_train.adain import load_adain_checkpoint
    from PIL import Image

    net = load_adain_checkpoint(adain_ckpt).net
    content = np.asarray(Image.open(photos / "content.png"))
    (ma, sa), (mb, sb) = _stats(net, photos / "a.png"), _stats(net, photos / "b.png")
    spec = f"{photos / 'a.png'}:0.7,{photos / 'b.png'}:0.3"
    with Stylizer.open(exported / "adain.onnx", device="cpu", backend="onnxruntime") as s:
        out = s.stylize(content, style=spec)
        blend_ref = _torch_stylize(net, content, 0.7 * ma + 0.3 * mb, 0.7 * sa + 0.3 * sb, 1.0)
        assert np.abs(out.astype(int) - blend_ref.astype(int)).max() <= 1
        encoded = s._style_statistics().encoded
        assert encoded == 2
        copy = tmp_path / "same-painting.png"
        shutil.copy(photos / "a.png", copy)
        s.stylize(content, style=str(photos / "a.png"))
        s.stylize(content, style=str(copy))  # the same bytes under another name: not encoded again
        assert s._style_statistics().encoded == 2
        frames = list(s.stylize_frames([content, content], style=str(photos / "b.png")))
        assert np.array_equal(frames[1], s.stylize(content, style=str(photos / "b.png")))


def test_missing_or_wrong_style_images(exported, photos, tmp_path):
    from nst_runtime import Stylizer
    from nst_runtime.errors import UsageError

    with Stylizer.open(exported / "adain.onnx", device="cpu", backend="onnxruntime") as s:
        content = np.zeros((40, 40, 3), np.uint8)
        with pytest.raises(UsageError, match="give the style image with --style-image"):
            s.stylize(content)
        with pytest.raises(UsageError, match="no such file"):
            s.stylize(content, style=str(tmp_path / "nope.jpg"))
        with pytest.raises(UsageError, match="weights must be finite"):
            s.stylize(content, style=f"{photos / 'a.png'}:-1")
        with pytest.raises(UsageError, match=r"expected 0\.\.1"):
            s.stylize(content, style=str(photos / "a.png"), strength=1.5)
    lone = tmp_path / "lone"
    lone.mkdir()
    for name in ("adain.onnx", "adain.onnx.json"):
        (lone / name).write_bytes((exported / name).read_bytes())
    from nst_runtime.errors import ModelFileError

    with Stylizer.open(lone / "adain.onnx", device="cpu", backend="onnxruntime") as s, \
            pytest.raises(ModelFileError, match=r"style graph adain\.style\.onnx is not beside it"):
        s.stylize(np.zeros((40, 40, 3), np.uint8), style=str(photos / "a.png"))


def test_nst_stylize_style_image(exported, photos, tmp_path, capsys, onnx_fp32_path):
    from nst_runtime.cli import main
    from PIL import Image

    out = tmp_path / "x.png"
    assert main([str(exported / "adain.onnx"), str(photos / "content.png"), "-o", str(out), "--style-image",
                 f"{photos / 'a.png'}:0.5,{photos / 'b.png'}:0.5", "--strength", "0.8", "--device", "cpu",
                 "-q"]) == 0, capsys.readouterr().err
    assert np.asarray(Image.open(out)).shape == (62, 75, 3)
    capsys.readouterr()
    assert main([str(exported / "adain.onnx"), str(photos / "content.png"), "-o", str(tmp_path / "y.png"),
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--style-image painting.jpg" in err[0]
    assert main([str(onnx_fp32_path), str(photos / "content.png"), "-o", str(tmp_path / "z.png"),
                 "--style-image", str(photos / "a.png"), "--device", "cpu"]) == 2
    assert "not an arbitrary-style (AdaIN) model" in capsys.readouterr().err


def test_engine_profile_carries_the_statistics_inputs(exported, tmp_path, fake_trt):
    import types

    from nst_export.tensorrt_engine import engine_from_onnx
    from nst_runtime.sidecar import read_sidecar

    shapes: dict[str, tuple] = {}

    class Network:
        num_inputs = 4

        def get_input(self, i):
            return types.SimpleNamespace(name=["input", "style_mean", "style_std", "alpha"][i])

    base = fake_trt.Builder

    class Builder(base):
        def create_network(self, flags):
            return Network()

        def create_optimization_profile(self):
            return types.SimpleNamespace(set_shape=lambda name, *s: shapes.__setitem__(name, s))

    fake_trt.Builder = Builder
    engine = engine_from_onnx(exported / "adain.fp16.onnx", tmp_path / "adain.fp16.engine")
    assert shapes["style_mean"] == shapes["style_std"] == ((512,),) * 3 and shapes["alpha"] == ((1,),) * 3
    assert read_sidecar(engine).adain == read_sidecar(exported / "adain.fp16.onnx").adain

