"""AdaIN (Huang & Belongie 2017): the layer, the paper's losses and the decoder training, against formulas written
out here in float64. The VGG-19 encoder is RANDOM (no ImageNet weights can be downloaded): mechanics only."""

from __future__ import annotations

import warnings

import pytest
import torch
from nst_runtime.errors import UsageError


@pytest.fixture(scope="module")
def encoder64():
    from nst_train.vgg import load_vgg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_vgg("vgg19", "random", last_layer="relu4_1").double()


def _stats(f: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """mu and sigma of the paper's eqs. 5-6: over H x W per image and channel, biased variance, eps inside."""
    n, c = f.shape[:2]
    flat = f.reshape(n, c, -1)
    mu = flat.sum(dim=2) / flat.shape[2]
    sigma = torch.sqrt(((flat - mu[:, :, None]) ** 2).sum(dim=2) / flat.shape[2] + eps)
    return mu, sigma


def test_adain_is_the_papers_equation_8():
    from nst_train.adain import adain, mean_std

    torch.manual_seed(0)
    x = torch.randn(2, 6, 5, 7, dtype=torch.float64) * 4 + 2
    y = torch.randn(2, 6, 9, 3, dtype=torch.float64) * 0.5 - 1
    mx, sx = _stats(x)
    my, sy = _stats(y)
    got_m, got_s = mean_std(y)
    torch.testing.assert_close(got_m, my)
    torch.testing.assert_close(got_s, sy)
    expected = sy[:, :, None, None] * (x - mx[:, :, None, None]) / sx[:, :, None, None] + my[:, :, None, None]
    torch.testing.assert_close(adain(x, my, sy), expected, rtol=1e-9, atol=1e-9)


def test_interpolating_styles_is_weighting_their_statistics():
    """Section 7.3: t = sum_k w_k AdaIN(f(c), f(s_k)) with sum w = 1 equals AdaIN with the weighted mu and sigma
    (AdaIN is affine in them), which is what the runtime feeds for "a.jpg:0.7,b.jpg:0.3"."""
    from nst_train.adain import adain

    torch.manual_seed(1)
    fc = torch.randn(1, 4, 6, 6, dtype=torch.float64)
    stats = [(torch.randn(1, 4, dtype=torch.float64), torch.rand(1, 4, dtype=torch.float64) + 0.5) for _ in range(3)]
    w = [0.5, 0.3, 0.2]
    summed = sum(wk * adain(fc, m, s) for wk, (m, s) in zip(w, stats, strict=True))
    mixed = adain(fc, sum(wk * m for wk, (m, _) in zip(w, stats, strict=True)),
                  sum(wk * s for wk, (_, s) in zip(w, stats, strict=True)))
    torch.testing.assert_close(summed, mixed, rtol=1e-10, atol=1e-10)


def test_alpha_trades_content_for_style_on_features(encoder64):
    """Eq. 14: T(c, s, alpha) = g(alpha t + (1 - alpha) f(c)): alpha 0 decodes the content's own features."""
    from nst_train.adain import AdaINDecoder, AdaINNet, adain

    net = AdaINNet(encoder64, AdaINDecoder().double()).eval()
    torch.manual_seed(2)
    c = torch.rand(1, 3, 32, 40, dtype=torch.float64) * 255
    s = torch.rand(1, 3, 48, 24, dtype=torch.float64) * 255
    with torch.no_grad():
        m, sd = net.style_stats(s)
        fc = net.encode(c)
        t = adain(fc, m, sd)
        torch.testing.assert_close(net(c, m, sd, 0.0), net.decoder(fc))
        torch.testing.assert_close(net(c, m, sd, 1.0), net.decoder(t))
        torch.testing.assert_close(net(c, m, sd, 0.25), net.decoder(0.25 * t + 0.75 * fc))


def test_losses_are_the_papers_in_float64(encoder64):
    """Content: MSE(f(g(t)), t) against the AdaIN target t, not f(c). Style: for relu1_1, relu2_1, relu3_1, relu4_1
    the MSE of the means plus the MSE of the standard deviations; total content + lambda * style."""
    from nst_train.adain import STYLE_LAYERS, adain_losses

    torch.manual_seed(3)
    out = torch.rand(2, 3, 32, 32, dtype=torch.float64) * 255
    style = torch.rand(2, 3, 40, 24, dtype=torch.float64) * 255
    target = torch.randn(2, 512, 4, 4, dtype=torch.float64)
    terms = adain_losses(encoder64, out, target, style, style_weight=10.0)
    fo, fs = encoder64(out, STYLE_LAYERS), encoder64(style, STYLE_LAYERS)
    content = ((fo["relu4_1"] - target) ** 2).mean()
    style_sum = 0.0
    for name in ("relu1_1", "relu2_1", "relu3_1", "relu4_1"):
        (mo, so), (ms, ss) = _stats(fo[name]), _stats(fs[name])
        style_sum = style_sum + ((mo - ms) ** 2).mean() + ((so - ss) ** 2).mean()
    torch.testing.assert_close(terms.content, content)
    torch.testing.assert_close(terms.style, 10.0 * style_sum)
    torch.testing.assert_close(terms.total, content + 10.0 * style_sum)


def test_decoder_mirrors_the_encoder():
    from nst_train.adain import AdaINDecoder

    dec = AdaINDecoder()
    y = dec(torch.zeros(1, 512, 5, 7))
    assert y.shape == (1, 3, 40, 56)
    convs = [m for m in dec.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.in_channels for c in convs] == [512, 256, 256, 256, 256, 128, 128, 64, 64]
    assert not any(isinstance(m, (torch.nn.InstanceNorm2d, torch.nn.BatchNorm2d)) for m in dec.modules())


def test_training_updates_the_decoder_only_and_writes_a_checkpoint(samples, tmp_path):
    import shutil

    from nst_train.adain import AdaINConfig, load_adain_checkpoint, train_adain

    styles = tmp_path / "styles"
    styles.mkdir()
    shutil.copy(samples / "style.png", styles / "a.png")
    recorded = []
    result = train_adain(AdaINConfig(content_dir=samples / "content", style_paths=(styles / "a.png",),
                                     out=tmp_path / "adain.pth", steps=2, batch_size=2, image_size=32, load_size=40,
                                     device="cpu", vgg_weights="random", progress=False, log_every=1),
                         callback=lambda step, terms: recorded.append(float(terms.total.detach())))
    assert len(recorded) == 2 and all(torch.isfinite(torch.tensor(recorded)))
    ckpt = load_adain_checkpoint(result.checkpoint)
    assert ckpt.metadata["architecture"] == "adain/vgg19-relu4_1-v1" and ckpt.metadata["encoder_weights"] == "random"
    # the run's initial networks, drawn the way train_adain draws them (seed, decoder, then the random encoder)
    from nst_train.adain import AdaINDecoder
    from nst_train.vgg import load_vgg

    torch.manual_seed(0)
    untrained = AdaINDecoder().state_dict()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        initial_encoder = load_vgg("vgg19", "random", last_layer="relu4_1").state_dict()
    for k, v in ckpt.net.encoder.state_dict().items():
        torch.testing.assert_close(v, initial_encoder[k], rtol=0, atol=0)  # frozen: not one weight moved
    assert all(not p.requires_grad for p in ckpt.net.encoder.parameters())
    moved = [k for k, v in ckpt.net.decoder.state_dict().items() if not torch.equal(v, untrained[k])]
    assert len(moved) == len(untrained)  # every decoder tensor was trained
    with pytest.raises(UsageError, match="needs style images"):
        train_adain(AdaINConfig(content_dir=samples / "content", style_paths=(), out=tmp_path / "x.pth"))


def test_nst_train_arch_adain_takes_a_folder_of_styles(samples, tmp_path, capsys):
    import shutil

    from nst_runtime.errors import CheckpointError
    from nst_train.adain import load_adain_checkpoint
    from nst_train.checkpoint import load_checkpoint
    from nst_train.cli import train_main

    styles = tmp_path / "paintings"
    styles.mkdir()
    for name in ("a.png", "b.png"):
        shutil.copy(samples / "style.png", styles / name)
    code = train_main(["--arch", "adain", "--style", str(styles), "--content-dir", str(samples / "content"),
                       "-o", str(tmp_path / "adain.pth"), "--steps", "1", "--batch-size", "1", "--image-size", "32",
                       "--vgg-weights", "random", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert load_adain_checkpoint(tmp_path / "adain.pth").metadata["style_count"] == 2
    with pytest.raises(CheckpointError, match="an AdaIN decoder checkpoint"):
        load_checkpoint(tmp_path / "adain.pth")
    assert train_main(["--arch", "adain", "--style", str(styles), "--content-dir", str(samples / "content"),
                       "-o", str(tmp_path / "b.pth"), "--epochs", "1"]) == 2
    assert "--epochs not supported by AdaIN training" in capsys.readouterr().err


def test_nst_train_arch_adain_refuses_every_option_it_does_not_honour(samples, tmp_path, capsys):
    """AdaIN training has its own loop: options of the TransformerNet loop are refused in one line, none ignored."""
    from nst_train.cli import train_main

    code = train_main(["--arch", "adain", "--style", str(samples / "style.png"), "--content-dir",
                       str(samples / "content"), "-o", str(tmp_path / "a.pth"), "--steps", "1",
                       "--checkpoint-every", "5", "--recipe", "johnson2016", "--amp", "--content-weight", "2",
                       "--tv-weight", "1", "--num-workers", "0"])
    err = capsys.readouterr().err
    assert code == 2 and not (tmp_path / "a.pth").exists()
    line = next(ln for ln in err.splitlines() if "--arch adain" in ln)
    for flag in ("--checkpoint-every", "--recipe", "--amp", "--content-weight", "--tv-weight", "--num-workers"):
        assert flag in line.split("not supported")[0], (flag, line)


@pytest.mark.parametrize(("steps", "what"), [(1, "weight tensor"), (2, "the loss is")])
def test_a_diverged_adain_run_writes_nothing_and_says_so(samples, tmp_path, steps, what):
    """An infinite learning rate: one step leaves non-finite weights (caught before the checkpoint is written,
    not by a loss check, which the last update escapes); two steps make the loss non-finite."""
    from nst_train.adain import AdaINConfig, train_adain
    from nst_train.train import TrainingDivergedError

    out = tmp_path / "adain.pth"
    with pytest.raises(TrainingDivergedError, match=what) as info:
        train_adain(AdaINConfig(content_dir=samples / "content", style_paths=(samples / "style.png",), out=out,
                                steps=steps, batch_size=1, image_size=32, load_size=32, device="cpu",
                                vgg_weights="random", progress=False, lr=float("inf")))
    assert info.value.exit_code == 3 and info.value.step == steps and not out.exists()


def test_an_adain_checkpoint_with_non_finite_weights_is_never_written(encoder64, tmp_path):
    import copy

    from nst_runtime.errors import CheckpointError
    from nst_train.adain import AdaINDecoder, AdaINNet, save_adain_checkpoint

    decoder = AdaINDecoder()
    with torch.no_grad():
        next(decoder.parameters())[0].fill_(float("nan"))
    with pytest.raises(CheckpointError, match="NaN or Inf"):
        save_adain_checkpoint(tmp_path / "x.pth", AdaINNet(copy.deepcopy(encoder64).float(), decoder), {"steps": 1})
    assert not (tmp_path / "x.pth").exists()
