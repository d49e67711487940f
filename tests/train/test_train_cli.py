"""nst-train and nst-gatys command lines (random VGG-16: smoke runs only, no quality judged)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from nst_train.checkpoint import load_checkpoint
from nst_train.cli import gatys_main, train_main
from PIL import Image


@pytest.mark.parametrize("main,options", [
    (train_main, ["--style", "--content-dir", "-o, --output", "--resume", "--image-size", "--batch-size", "--lr",
                  "--epochs", "--steps", "--seed", "--device", "--vgg-weights", "--content-weight",
                  "--style-weight", "--tv-weight", "--log-every", "--checkpoint-every", "--preview-every",
                  "--amp", "--no-amp", "--channels-last", "--compile", "--num-workers", "torchrun", "--recipe",
                  "pytorch-examples", "johnson2016", "--init", "caffe", "run.json"]),
    (gatys_main, ["--iterations", "--optimizer", "--init", "--image-size", "--vgg-weights", "--device",
                  "--history", "lbfgs", "adam", "--recipe", "johnson2016-baseline", "gatys2016"]),
])
def test_help_teaches(capsys, main, options):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "examples:" in text
    missing = [o for o in options if o not in text]
    assert not missing


def _train_args(samples, out, *extra):
    return ["--style", str(samples / "style.png"), "--content-dir", str(samples / "content"), "-o", str(out),
            "--image-size", "32", "--batch-size", "2", "--vgg-weights", "random", "--num-workers", "0",
            "--device", "cpu", "--no-progress", "--log-every", "1", *extra]


def test_train_cli_smoke(tmp_path, samples):
    out = tmp_path / "model.pth"
    assert train_main(_train_args(samples, out, "--steps", "2", "--tv-weight", "1e-3", "--seed", "5")) == 0
    ckpt = load_checkpoint(out)
    assert ckpt.metadata.steps == 2 and ckpt.metadata.loss_weights["tv"] == 1e-3
    assert (tmp_path / "model.run" / "state.pth").is_file()
    assert len((tmp_path / "model.run" / "loss.jsonl").read_text().splitlines()) == 2
    # --resume with more steps continues the same run
    assert train_main(_train_args(samples, out, "--steps", "3", "--tv-weight", "1e-3", "--seed", "5",
                                  "--resume")) == 0
    assert load_checkpoint(out).metadata.steps == 3


def test_train_cli_errors_are_one_line_with_exit_code(tmp_path, samples, capsys):
    rc = train_main(["--style", str(samples / "style.png"), "--content-dir", str(tmp_path / "none"),
                     "--out", str(tmp_path / "m.pth"), "--vgg-weights", "random", "--steps", "1"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "nst-train: error:" in err and "content directory not found" in err and "Traceback" not in err
    rc = train_main(["--style", str(samples / "style.png"), "--content-dir", str(samples / "content"),
                     "--out", str(tmp_path / "m.pth"), "--vgg-weights", str(tmp_path / "vgg.pth"), "--steps", "1",
                     "--image-size", "32", "--device", "cpu", "--num-workers", "0"])
    assert rc == 7
    assert "no such VGG-16 weights file" in capsys.readouterr().err
    # --epochs and --steps are exclusive: one line, exit 2
    assert train_main(_train_args(samples, tmp_path / "m.pth", "--steps", "1", "--epochs", "1")) == 2
    assert "--epochs and --steps" in capsys.readouterr().err


def test_train_cli_ctrl_c_exits_130_with_resume_hint(tmp_path, samples, capsys, monkeypatch):
    import nst_train.train as train_module

    state = tmp_path / "m.run" / "state.pth"

    def interrupted(config, **kwargs):
        raise train_module.TrainingInterrupted(7, state)

    monkeypatch.setattr(train_module, "train", interrupted)
    rc = train_main(_train_args(samples, tmp_path / "m.pth", "--steps", "9"))
    err = capsys.readouterr().err
    assert rc == 130
    assert f"state at step 7 saved to {state}" in err and "--resume" in err.splitlines()[-1]


def test_gatys_cli_smoke(tmp_path, samples):
    out, hist = tmp_path / "out.png", tmp_path / "h.json"
    rc = gatys_main([str(samples / "content" / "sample_001.jpg"), str(samples / "style.png"), "-o", str(out),
                     "--iterations", "3", "--image-size", "24", "--vgg-weights", "random", "--device", "cpu",
                     "--history", str(hist), "--optimizer", "adam", "--no-progress"])
    assert rc == 0
    assert Image.open(out).size == (24, 24)
    doc = json.loads(hist.read_text())
    assert [r["iteration"] for r in doc["history"]] == [1, 2, 3] and doc["optimizer"] == "adam"
    assert doc["seconds"] >= doc["history"][-1]["elapsed_s"] > 0


def test_gatys_cli_bad_image_is_an_image_error(tmp_path, samples, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    rc = gatys_main([str(bad), str(samples / "style.png"), "-o", str(tmp_path / "o.png"), "--vgg-weights",
                     "random", "--device", "cpu"])
    assert rc == 4
    assert "bad.jpg: cannot decode as an image" in capsys.readouterr().err


def test_module_is_runnable_for_torchrun():
    # torchrun -m nst_train.cli ... needs the module to run as a script
    proc = subprocess.run([sys.executable, "-m", "nst_train.cli", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and "nst-train" in proc.stdout


def test_pytorch_examples_recipe_reads_an_imagefolder(tmp_path, samples, capsys):
    # the samples' content folder has no subfolders: as torchvision's ImageFolder, nothing to read
    rc = train_main(_train_args(samples, tmp_path / "m.pth", "--recipe", "pytorch-examples", "--steps", "1"))
    err = capsys.readouterr().err
    assert rc == 2 and "ImageFolder" in err and "Pass the parent folder" in err
    # its parent holds content/ as the one class folder
    rc = train_main(["--recipe", "pytorch-examples", "--style", str(samples / "style.png"), "--content-dir",
                     str(samples), "-o", str(tmp_path / "m.pth"), "--image-size", "32", "--batch-size", "4",
                     "--vgg-weights", "random", "--num-workers", "0", "--device", "cpu", "--no-progress",
                     "--steps", "2"])
    assert rc == 0
    meta = load_checkpoint(tmp_path / "m.pth").metadata
    assert meta.recipe == "pytorch-examples"
    t = meta.training
    # the recipe's values, except what the command line overrode
    assert (t["listing"], t["shuffle"], t["drop_last"], t["content_resize"], t["style_size"], t["amp"]) == \
        ("imagefolder", False, False, "center-crop", "original", False)
    assert (t["image_size"], t["batch_size"], t["steps"], t["epochs"]) == (32, 4, 2, None)
    run = json.loads((tmp_path / "m.run" / "run.json").read_text())
    assert run["overrides"] == {"image_size": 32, "batch_size": 4, "steps": 2, "vgg_weights": "random"}


def test_train_init_and_style_size_original(tmp_path, samples, tiny_net):
    from nst_train.checkpoint import CheckpointMetadata, save_checkpoint

    init = save_checkpoint(tmp_path / "start.pth", tiny_net, CheckpointMetadata(steps=7))
    out = tmp_path / "m.pth"
    assert train_main(_train_args(samples, out, "--steps", "1", "--init", str(init), "--style-size", "original",
                                  "--lr", "1e-12")) == 0
    meta = load_checkpoint(out).metadata
    assert meta.init["path"] == str(init) and meta.training["style_size"] == "original"
    assert train_main(_train_args(samples, out, "--steps", "1", "--init", str(tmp_path / "nope.pth"))) == 2


def test_gatys2016_recipe_runs(tmp_path, samples):
    content = sorted((samples / "content").iterdir())[0]
    out, hist = tmp_path / "g.png", tmp_path / "h.json"
    assert gatys_main([str(content), str(samples / "style.png"), "-o", str(out), "--recipe", "gatys2016",
                       "--vgg-weights", "random", "--image-size", "40", "--iterations", "3", "--device", "cpu",
                       "--history", str(hist), "--no-progress"]) == 0
    doc = json.loads(hist.read_text())
    assert doc["recipe"] == "gatys2016" and doc["vgg_preprocessing"] == "caffe"
    assert doc["settings"]["vgg_arch"] == "vgg19" and doc["settings"]["content_layer"] == "relu4_2"
    assert max(doc["height"], doc["width"]) == 40  # neural-style's image_size: the longer side
    assert len(doc["history"]) == 3 and doc["history"][-1]["loss"] < doc["history"][0]["loss"]
    assert Image.open(out).size == (doc["width"], doc["height"])
