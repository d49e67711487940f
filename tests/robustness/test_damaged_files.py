"""Damaged files through the CLIs: one line naming the file and the problem, a documented exit code, no
traceback. Checkpoints (nst-export, nst-train --resume), ONNX files (nst-stylize), images (nst-stylize,
nst-gatys), decompression bombs (refused from the header, with small peak memory)."""

from __future__ import annotations

import struct
import zlib

import pytest
from PIL import Image

GATYS = "import sys; from nst_train.cli import gatys_main; sys.exit(gatys_main())"


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (RGB, 8 bit) with a tiny IDAT: a decompression bomb
    shape that costs nothing to write."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


# ------------------------------------------------------------------------------------------ checkpoints
def _damaged_checkpoints(tmp_path, good):
    import torch

    data = good.read_bytes()
    wrong = tmp_path / "resnet.pth"
    torch.save({"fc.weight": torch.zeros(10, 4)}, wrong)
    cases = {"empty.pth": b"", "cut.pth": data[: len(data) // 2], "tail.pth": data[:-100],
             "text.pth": b"this is not a checkpoint\n", "resnet.pth": wrong.read_bytes()}
    for name, blob in cases.items():
        (tmp_path / name).write_bytes(blob)
    return {"empty.pth": "empty", "cut.pth": "corrupt or truncated", "tail.pth": "corrupt or truncated",
            "text.pth": "cannot load checkpoint", "resnet.pth": "not a TransformerNet"}


def test_export_cli_damaged_checkpoints_one_line(tmp_path, vivid_checkpoint, capsys):
    from nst_export.cli import main

    for name, problem in _damaged_checkpoints(tmp_path, vivid_checkpoint).items():
        code = main([str(tmp_path / name), "--onnx-only", "--out-dir", str(tmp_path / "out"), "-q"])
        err = capsys.readouterr().err
        assert code == 3, (name, err)
        assert err.strip().count("\n") == 0 and name in err and problem in err, err
        assert "Traceback" not in err
    assert not any((tmp_path / "out").glob("*.onnx"))


def test_export_cli_subprocess_has_no_traceback(tmp_path, cli):
    (tmp_path / "cut.pth").write_bytes(b"PK\x03\x04" + b"\0" * 40)
    res = cli("nst_export.cli", [tmp_path / "cut.pth", "--onnx-only", "--out-dir", tmp_path / "out"])
    res.assert_one_line_error(3, "cut.pth")


@pytest.mark.parametrize("damage", ["truncated", pytest.param("empty", marks=pytest.mark.slow),
                                    pytest.param("garbage", marks=pytest.mark.slow)])
def test_train_resume_damaged_state_one_line(tmp_path, train_args, cli, damage):
    """The state file of a run damaged in each way: nst-train --resume says so in one line (exit 3)."""
    import torch

    run = tmp_path / "m.run"
    run.mkdir()
    state = run / "state.pth"
    torch.save({"format": "nst-train-state", "version": 1, "model": {"w": torch.zeros(1000)}}, state)
    data = state.read_bytes()
    state.write_bytes({"empty": b"", "truncated": data[: len(data) // 2], "garbage": b"\x80\x02" * 99}[damage])
    res = cli("nst_train.cli", [*train_args(tmp_path / "m.pth", "--steps", "2"), "--resume"])
    res.assert_one_line_error(3, "state.pth")


@pytest.mark.parametrize("part", ["model", "optimizer", "rng"])
def test_train_resume_state_that_does_not_fit(tmp_path, train_args, capsys, one_torch_thread, part):
    """A well-formed state (right format, right options) whose contents do not fit TransformerNet/Adam/the RNGs:
    one CheckpointError line (exit 3), not a RuntimeError traceback from load_state_dict."""
    import torch
    from nst_train.cli import train_main

    args = train_args(tmp_path / "m.pth", "--steps", "1")
    assert train_main(args) == 0
    capsys.readouterr()
    state = tmp_path / "m.run" / "state.pth"
    obj = torch.load(state, weights_only=True)
    if part == "model":
        obj["model"] = {k: torch.zeros(1) for k in obj["model"]}
    elif part == "optimizer":
        obj["optimizer"] = {"state": {}, "param_groups": [{"params": [0]}]}
    else:
        obj["rng"] = {"torch": torch.zeros(3)}
    torch.save(obj, state)
    assert train_main([*args, "--resume"]) == 3
    err = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln]
    assert len(err) == 1 and "state.pth" in err[0] and "does not fit" in err[0], err


# ------------------------------------------------------------------------------------------ ONNX files
@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage"])
def test_stylize_cli_damaged_onnx(tmp_path, vivid_onnx, make_image, cli, damage):
    import shutil

    from nst_runtime.artifact import file_sha256
    from nst_runtime.sidecar import Sidecar, sidecar_path

    model = tmp_path / "m.onnx"
    data = vivid_onnx.read_bytes()
    model.write_bytes({"empty": b"", "truncated": data[: len(data) // 3], "garbage": b"\x0a\xff\xff\xff\x0f"}[damage])
    shutil.copy(sidecar_path(vivid_onnx), sidecar_path(model))
    Image.fromarray(make_image(8, 8)).save(tmp_path / "x.png")
    # with the intact sidecar the hash check refuses it ...
    res = cli("nst_runtime.cli", [model, tmp_path / "x.png", "-o", tmp_path / "out"])
    res.assert_one_line_error(3, "m.onnx", "does not match the sidecar")
    # ... and with the hash check off (or a sidecar re-made for the damaged file) the parser does
    meta = Sidecar.from_dict(__import__("json").loads(sidecar_path(model).read_text()))
    sidecar_path(model).write_text(Sidecar(**{**meta.__dict__, "artifact_sha256": file_sha256(model)}).to_json())
    res = cli("nst_runtime.cli", [model, tmp_path / "x.png", "-o", tmp_path / "out"])
    res.assert_one_line_error(3, "m.onnx")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# ------------------------------------------------------------------------------------------ images
def _bad_images(folder, make_image):
    import io

    png = io.BytesIO()
    Image.fromarray(make_image(40, 40)).save(png, "PNG")
    jpg = io.BytesIO()
    Image.fromarray(make_image(40, 40)).save(jpg, "JPEG")
    files = {"empty.png": b"", "text.png": b"hello, I am text\n" * 3, "cut.png": png.getvalue()[:300],
             "cut.jpg": jpg.getvalue()[:200], "bomb.png": png_header_only(100_000, 100_000)}
    for name, blob in files.items():
        (folder / name).write_bytes(blob)
    return {"empty.png": "empty", "text.png": "not an image", "cut.png": "truncated", "cut.jpg": "truncated",
            "bomb.png": "more than the limit"}


def test_stylize_cli_each_bad_image_alone(tmp_path, vivid_onnx, make_image, capsys):
    """One bad input: its own error in one line, exit 4 (image)."""
    from nst_runtime.cli import main

    for name, problem in _bad_images(tmp_path, make_image).items():
        code = main([str(vivid_onnx), str(tmp_path / name), "-o", str(tmp_path / "out"), "--device", "cpu", "-q"])
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert code == 4, (name, err)
        assert len(lines) == 1 and name in lines[0] and problem in lines[0].lower(), err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_stylize_cli_subprocess_bomb_one_line(tmp_path, vivid_onnx, cli):
    (tmp_path / "bomb.png").write_bytes(png_header_only(100_000, 100_000))
    res = cli("nst_runtime.cli", [vivid_onnx, tmp_path / "bomb.png", "-o", tmp_path / "out", "--device", "cpu"])
    res.assert_one_line_error(4, "bomb.png", "10000000000 pixels", "more than the limit", "--max-pixels")


def test_mislabeled_png_named_jpg_is_decoded_by_content(tmp_path, vivid_onnx, make_image, capsys):
    from nst_runtime.cli import main

    Image.fromarray(make_image(20, 30)).save(tmp_path / "photo.jpg", format="PNG")
    assert main([str(vivid_onnx), str(tmp_path / "photo.jpg"), "-o", str(tmp_path / "out"), "--device", "cpu",
                 "-q"]) == 0
    out = Image.open(tmp_path / "out" / "photo.png")  # the format the bytes hold, not the name's
    assert out.size == (30, 20)


@pytest.mark.parametrize("name", ["text.png", "bomb.png", pytest.param("empty.png", marks=pytest.mark.slow),
                                  pytest.param("cut.png", marks=pytest.mark.slow)])
def test_gatys_cli_bad_content_image(tmp_path, samples, make_image, cli, name):
    problem = _bad_images(tmp_path, make_image)[name]
    res = cli(GATYS, [tmp_path / name, samples / "style.png", "-o", tmp_path / "o.png", "--vgg-weights", "random",
                      "--image-size", "32", "--iterations", "1", "--no-progress", "--device", "cpu"], code=True)
    res.assert_one_line_error(4, name, problem)
    assert not (tmp_path / "o.png").exists()


def test_train_cli_bad_style_image(tmp_path, train_args, make_image, cli):
    _bad_images(tmp_path, make_image)
    args = train_args(tmp_path / "m.pth", "--steps", "1")
    args[args.index("--style") + 1] = str(tmp_path / "text.png")
    res = cli("nst_train.cli", args)
    res.assert_one_line_error(4, "text.png")


PEAK = """
import resource, sys
from nst_runtime.images import read_image
from nst_runtime.errors import ImageError
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    read_image(sys.argv[1], all_frames=True)
    print("DECODED")
except ImageError as exc:
    print("REFUSED", exc)
print("PEAK_GROWTH_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


@pytest.mark.parametrize("kind", ["png-header", "gif-frames"])
def test_decompression_bomb_refused_before_allocating(tmp_path, cli, kind):
    """100000x100000 claimed in a 100-byte header, and a small GIF of 400 frames of 1000x1000 (each frame
    fine, together 400 M pixels): refused with the peak memory growing by less than 64 MB."""
    path = tmp_path / ("bomb.png" if kind == "png-header" else "bomb.gif")
    if kind == "png-header":
        path.write_bytes(png_header_only(100_000, 100_000))
    else:
        frames = [Image.new("P", (1000, 1000), i % 2) for i in range(400)]
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=10)
        assert path.stat().st_size < 2_000_000
    res = cli(PEAK, [path], code=True)
    assert "REFUSED" in res.out and "more than the limit" in res.out, res.out + res.err
    growth_kb = int(res.out.split("PEAK_GROWTH_KB")[1])
    assert growth_kb < 64 * 1024, f"peak memory grew by {growth_kb} KB"
