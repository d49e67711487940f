"""Network families (nst_train.registry): slim presets, custom shapes, multi-style conditional instance norm,
distillation. Every loss network here is a RANDOM VGG-16 (no ImageNet weights can be downloaded): the tests check
mechanics and formulas, never how a stylization looks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from nst_runtime.errors import CheckpointError, UsageError


def _macs_per_pixel(channels: int, res_blocks: int) -> float:
    """Multiply-accumulates per input pixel of the TransformerNet layer list, written out here: 9x9 3->c/4 and
    c/4->3 at full resolution, 3x3 c/4->c/2 (stride 2, output at 1/4 of the pixels), c/2->c at 1/16, 2 x res
    blocks of c->c at 1/16, c->c/2 after the first upsampling (1/4), c/2->c/4 after the second (full)."""
    c1, c2, c3 = channels / 4, channels / 2, channels
    return (3 * c1 * 81 + c1 * 3 * 81 + c1 * c2 * 9 / 4 + c2 * c3 * 9 / 16 + res_blocks * 2 * c3 * c3 * 9 / 16
            + c3 * c2 * 9 / 4 + c2 * c1 * 9)


@pytest.mark.parametrize(("name", "channels", "res_blocks"), [("johnson2016", 128, 5), ("slim", 32, 5)])
def test_presets_and_their_cost(name, channels, res_blocks):
    from nst_train.model import NetShape, count_flops, gflop_per_megapixel
    from nst_train.registry import create_model, shape_for

    net = create_model(name)
    assert net.shape == NetShape(channels, res_blocks, 1, name)
    assert net.conv3.conv2d.out_channels == channels and hasattr(net, f"res{res_blocks}")
    assert not hasattr(net, f"res{res_blocks + 1}")
    assert count_flops(256, 256, shape_for(name)) == 2 * _macs_per_pixel(channels, res_blocks) * 256 * 256
    assert gflop_per_megapixel(shape_for(name)) == pytest.approx(2 * _macs_per_pixel(channels, res_blocks) / 1e3)


def test_johnson2016_is_pytorch_examples_network():
    """The default preset keeps pytorch/examples' parameter names and the architecture string older checkpoints
    carry, so they load unchanged."""
    from nst_train.model import ARCHITECTURE, TransformerNet
    from nst_train.registry import create_model

    net = create_model("johnson2016")
    assert net.architecture == ARCHITECTURE == "transformer_net/johnson2016-in-v1"
    assert list(net.state_dict()) == list(TransformerNet().state_dict())
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()}["res5.in2.weight"] == (128,)


def test_slim_is_cheaper_by_the_promised_factor():
    from nst_train.model import gflop_per_megapixel
    from nst_train.registry import shape_for

    ratio = gflop_per_megapixel(shape_for("johnson2016")) / gflop_per_megapixel(shape_for("slim"))
    assert ratio == pytest.approx(_macs_per_pixel(128, 5) / _macs_per_pixel(32, 5)) and ratio > 12


def test_custom_shapes_and_bad_ones():
    from nst_train.model import NetShape
    from nst_train.registry import create_model, describe

    net = create_model("slim", channels=48, res_blocks=2)
    assert net.architecture == "transformer_net/slim-c48-r2-v1"
    assert NetShape.from_architecture(net.architecture) == net.shape
    assert "trunk 48, 2 residual blocks" in describe(net.shape) and "GFLOP per megapixel" in describe(net.shape)
    with pytest.raises(UsageError, match="multiple of 4"):
        create_model("slim", channels=30)
    with pytest.raises(UsageError, match="unknown network family; expected one of adain, johnson2016, slim"):
        create_model("resnet")
    with pytest.raises(UsageError, match="takes channels, res_blocks, styles, not width"):
        create_model("slim", width=3)
    with pytest.raises(ValueError, match="not a TransformerNet"):
        NetShape.from_architecture("transformer_net/slim-c32-v1")


def test_conditional_instance_norm_matches_the_formula_in_float64():
    """Dumoulin et al. 2017, eq. 5: z = gamma_s (x - mu) / sigma + beta_s, with gamma, beta the weighted sums of
    the per-style rows (a one-hot vector picks one style), mu/sigma per image and channel (eps 1e-5)."""
    from nst_train.model import ConditionalInstanceNorm2d

    torch.manual_seed(0)
    norm = ConditionalInstanceNorm2d(5, styles=3).double()
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(2, 5, 7, 9, dtype=torch.float64) * 3 + 1
    w = torch.tensor([0.2, 0.0, 0.8], dtype=torch.float64)
    mu = x.mean(dim=(2, 3), keepdim=True)
    sigma = torch.sqrt(((x - mu) ** 2).mean(dim=(2, 3), keepdim=True) + 1e-5)
    gamma = (0.2 * norm.weight[0] + 0.8 * norm.weight[2]).view(1, -1, 1, 1)
    beta = (0.2 * norm.bias[0] + 0.8 * norm.bias[2]).view(1, -1, 1, 1)
    torch.testing.assert_close(norm(x, w), gamma * (x - mu) / sigma + beta, rtol=1e-10, atol=1e-10)
    with pytest.raises(UsageError, match="holds 3 styles"):
        norm(x)


def test_a_multi_style_network_with_one_hot_weights_is_that_styles_network():
    """Copying style k's rows into a one-style network gives exactly the multi-style network at style k."""
    from nst_train.model import TransformerNet

    torch.manual_seed(1)
    multi = TransformerNet(32, 2, styles=3).eval()
    with torch.no_grad():
        for name, p in multi.named_parameters():
            if name.endswith((".weight", ".bias")) and p.dim() == 2:
                p.normal_(1.0 if name.endswith("weight") else 0.0, 0.3)
    single = TransformerNet(32, 2).eval()
    state = {}
    for name, value in multi.state_dict().items():
        target = name.replace(".norm.", ".")
        state[target] = value[2] if value.dim() == 2 and ("in" in name.split(".")[-2]) else value
    single.load_state_dict({k: v for k, v in state.items() if k in single.state_dict()})
    x = torch.rand(1, 3, 24, 28) * 255
    torch.testing.assert_close(multi(x, torch.tensor([0.0, 0.0, 1.0])), single(x), rtol=1e-5, atol=1e-3)


def test_checkpoints_record_the_shape_and_load_it(tmp_path):
    from nst_train.checkpoint import CheckpointMetadata, load_checkpoint, save_checkpoint
    from nst_train.model import TransformerNet

    torch.manual_seed(2)
    net = TransformerNet(32, 3, styles=2, family="slim").eval()
    path = save_checkpoint(tmp_path / "m.pth", net, CheckpointMetadata(style_names=["a", "b"]))
    ckpt = load_checkpoint(path)
    assert ckpt.metadata.architecture == "transformer_net/slim-c32-r3-cin2-v1"
    assert ckpt.metadata.style_names == ["a", "b"]
    x, w = torch.rand(1, 3, 16, 16) * 255, torch.tensor([0.5, 0.5])
    torch.testing.assert_close(ckpt.model()(x, w), net(x, w))
    # a plain state dict (no metadata) of another shape: its tensors tell the shape
    torch.save(TransformerNet(64, 2).state_dict(), tmp_path / "plain.pth")
    assert load_checkpoint(tmp_path / "plain.pth").shape.architecture == "transformer_net/custom-c64-r2-v1"
    # a recorded architecture that the tensors contradict is refused, naming a tensor
    payload = torch.load(path, weights_only=True)
    payload["architecture"] = "transformer_net/slim-c32-r2-cin2-v1"
    torch.save(payload, tmp_path / "wrong.pth")
    with pytest.raises(CheckpointError, match=r"unexpected .*res3"):
        load_checkpoint(tmp_path / "wrong.pth")


def test_multi_style_training_uses_one_style_per_batch(tiny_config, tmp_path, samples):
    """Step k trains style k mod N: after one step only style 0's norm rows have moved (Adam gives a
    parameter with zero gradient a zero update); after two steps style 1's have too. Names: the files' stems."""
    import shutil

    from nst_train.checkpoint import load_checkpoint
    from nst_train.train import train

    second = tmp_path / "second.png"
    shutil.copy(samples / "style.png", second)
    styles = (samples / "style.png", second)
    one = train(tiny_config(tmp_path / "one.pth", style=styles[0], styles=styles, arch="slim", steps=1))
    rows = load_checkpoint(one.checkpoint).state_dict["in1.weight"]  # [styles, channels], init all ones
    assert rows.shape == (2, 8)
    assert not torch.equal(rows[0], torch.ones(8)) and torch.equal(rows[1], torch.ones(8))
    two = train(tiny_config(tmp_path / "two.pth", style=styles[0], styles=styles, arch="slim", steps=2))
    ckpt = load_checkpoint(two.checkpoint)
    assert not torch.equal(ckpt.state_dict["in1.weight"][1], torch.ones(8))
    assert ckpt.metadata.style_names == ["style", "second"]
    assert ckpt.metadata.architecture == "transformer_net/slim-c32-r5-cin2-v1"


def test_multi_style_names_must_be_distinct(tiny_config, tmp_path, samples):
    from nst_train.train import train

    styles = (samples / "style.png", samples / "style.png")
    with pytest.raises(UsageError, match="repeat"):
        train(tiny_config(tmp_path / "x.pth", styles=styles))
    with pytest.raises(UsageError, match="2 names for 1 style"):
        train(tiny_config(tmp_path / "x.pth", style_names=("a", "b")))


def test_nst_train_takes_several_styles_arch_and_shape(samples, tmp_path, capsys):
    import shutil

    from nst_train.checkpoint import load_checkpoint
    from nst_train.cli import train_main

    b = tmp_path / "b.png"
    shutil.copy(samples / "style.png", b)
    code = train_main(["--style", str(samples / "style.png"), str(b), "--style-names", "candy,wave",
                       "--content-dir", str(samples / "content"), "-o", str(tmp_path / "m.pth"), "--steps", "2",
                       "--image-size", "32", "--batch-size", "2", "--vgg-weights", "random", "--num-workers", "0",
                       "--arch", "slim", "--channels", "16", "--res-blocks", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "network slim (trunk 16, 1 residual blocks, 2 styles):" in err and "GFLOP per megapixel" in err
    ckpt = load_checkpoint(tmp_path / "m.pth")
    assert ckpt.metadata.style_names == ["candy", "wave"]
    assert ckpt.metadata.architecture == "transformer_net/slim-c16-r1-cin2-v1"
    assert train_main(["--content-dir", str(samples / "content"), "-o", str(tmp_path / "n.pth")]) == 2
    assert "--style IMAGE is required" in capsys.readouterr().err


def test_distillation_objective_matches_its_formula_in_float64(random_vgg):
    from nst_train.losses import DistillationObjective, LossWeights

    vgg = random_vgg.double()
    try:
        torch.manual_seed(3)
        y, t = torch.rand(2, 3, 32, 32, dtype=torch.float64) * 255, torch.rand(2, 3, 32, 32, dtype=torch.float64) * 255
        weights = LossWeights(content=2.0, style=3.0, tv=0.0)
        terms = DistillationObjective(vgg, weights, output_weight=0.5)(y, t)
        fy, ft = vgg(y, weights.layers), vgg(t, weights.layers)

        def gram(f):
            b, c, h, w = f.shape
            f = f.reshape(b, c, h * w)
            return f @ f.transpose(1, 2) / (c * h * w)

        content = 2.0 * ((fy["relu2_2"] - ft["relu2_2"]) ** 2).mean()
        style = 3.0 * sum(((gram(fy[k]) - gram(ft[k])) ** 2).mean() for k in weights.style_layers)
        torch.testing.assert_close(terms.content, content)
        torch.testing.assert_close(terms.style, style)
        torch.testing.assert_close(terms.output, 0.5 * ((y - t) ** 2).mean())
        torch.testing.assert_close(terms.total, content + style + 0.5 * ((y - t) ** 2).mean())
    finally:
        random_vgg.float()


def test_distillation_brings_the_student_closer_to_the_teacher(tiny_config, tmp_path, samples, checkpoint_path):
    """The student (slim) trained against the teacher (the shared seeded network) ends nearer its output than it
    started: PSNR against the teacher on the content crops rises."""
    from nst_train.checkpoint import load_checkpoint
    from nst_train.data import find_images
    from nst_train.imageio import load_image_tensor
    from nst_train.train import train

    def psnr_to_teacher(student) -> float:
        teacher = load_checkpoint(checkpoint_path).model()
        xs = torch.stack([load_image_tensor(p, size=32, fit="shorter-side")[0, :, :32, :32]
                          for p in find_images(samples / "content", "recursive")[:4]])
        with torch.no_grad():
            a, b = student.stylize(xs), teacher.stylize(xs)
        mse = float(((a - b) ** 2).mean())
        return 10 * np.log10(255**2 / mse)

    config = dict(style=None, teacher=checkpoint_path, arch="slim", res_blocks=1, steps=1, lr=1e-2,
                  content_weight=0.0, style_weight=0.0, teacher_weight=1.0)
    start = train(tiny_config(tmp_path / "s0.pth", **config))
    end = train(tiny_config(tmp_path / "s1.pth", **{**config, "steps": 12}))
    before, after = psnr_to_teacher(start.model.cpu()), psnr_to_teacher(end.model.cpu())
    print(f"student PSNR against the teacher: {before:.2f} dB -> {after:.2f} dB")
    assert after > before + 1.0, (before, after)
    meta = load_checkpoint(end.checkpoint).metadata
    assert meta.teacher["architecture"] == "transformer_net/johnson2016-in-v1"
    assert meta.architecture == "transformer_net/slim-c32-r1-v1"


def test_teacher_and_style_together_are_refused(tiny_config, tmp_path, checkpoint_path):
    from nst_train.train import train

    with pytest.raises(UsageError, match="--teacher distils the teacher's styles"):
        train(tiny_config(tmp_path / "x.pth", teacher=checkpoint_path))


def test_init_of_another_shape_is_refused(tiny_config, tmp_path, checkpoint_path):
    from nst_train.train import train

    with pytest.raises(CheckpointError, match="its network is transformer_net/johnson2016-in-v1, this run builds "
                                              "transformer_net/slim-c32-r5-v1"):
        train(tiny_config(tmp_path / "x.pth", init=checkpoint_path, arch="slim"))
