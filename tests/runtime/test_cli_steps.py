"""nst-stylize's step and video options (--scale, --max-size, --preserve-color, --strength, --steady, --crf,
--codec, --tile-halo) and nst-info, driven through the commands themselves."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image


@pytest.fixture()
def photo(tmp_path, make_image):
    path = tmp_path / "photo.png"
    Image.fromarray(make_image(60, 84, seed=11)).save(path)
    return path


def _run(argv):
    from nst_runtime.cli import main

    return main([str(a) for a in argv])


def test_scale_and_processed_size(vivid_onnx, photo, tmp_path):
    out = tmp_path / "small.png"
    assert _run([vivid_onnx, photo, "-o", out, "--device", "cpu", "--scale", "0.5", "--output-size", "processed",
                 "-q"]) == 0
    assert Image.open(out).size == (42, 30)
    assert _run([vivid_onnx, photo, "-o", tmp_path / "full.png", "--device", "cpu", "--max-size", "40", "-q"]) == 0
    assert Image.open(tmp_path / "full.png").size == (84, 60)


def test_colour_and_strength_match_the_library(vivid_onnx, photo, tmp_path):
    out = tmp_path / "c.png"
    assert _run([vivid_onnx, photo, "-o", out, "--device", "cpu", "--preserve-color", "--strength", "0.5",
                 "--backend", "onnxruntime", "-q"]) == 0
    from nst_runtime import Stylizer

    img = np.asarray(Image.open(photo).convert("RGB"))
    with Stylizer.open(vivid_onnx, device="cpu", backend="onnxruntime") as s:
        want = s.stylize(img, preserve_color=True, strength=0.5)
    assert np.array_equal(np.asarray(Image.open(out)), want)
    assert _run([vivid_onnx, photo, "-o", tmp_path / "z.png", "--device", "cpu", "--strength", "0", "-q"]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "z.png")), img)


@pytest.mark.parametrize("bad", [["--scale", "0"], ["--strength", "2"], ["--max-size", "0"],
                                 ["--output-size", "big"], ["--crf", "99"]])
def test_bad_step_options_exit_2(vivid_onnx, photo, tmp_path, bad):
    assert _run([vivid_onnx, photo, "-o", tmp_path / "x.png", *bad]) == 2


def test_tile_halo_reaches_the_tiler(vivid_exact_onnx, tmp_path, make_image):
    from nst_runtime import Stylizer

    img = make_image(80, 100, seed=12)
    Image.fromarray(img).save(tmp_path / "p.png")
    args = ["--device", "cpu", "--backend", "onnxruntime", "--tile", "48", "-q"]
    assert _run([vivid_exact_onnx, tmp_path / "p.png", "-o", tmp_path / "h0.png", *args, "--tile-halo", "0"]) == 0
    assert _run([vivid_exact_onnx, tmp_path / "p.png", "-o", tmp_path / "h16.png", *args, "--tile-halo", "16"]) == 0
    with Stylizer.open(vivid_exact_onnx, device="cpu", backend="onnxruntime", tile=48, tile_halo=16) as s:
        assert np.array_equal(np.asarray(Image.open(tmp_path / "h16.png")), s.stylize(img))
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "h0.png")), np.asarray(Image.open(tmp_path / "h16.png")))


def test_steady_video_with_codec_and_crf(vivid_onnx, tmp_path):
    av = pytest.importorskip("av")
    pytest.importorskip("cv2")
    src = tmp_path / "in.mp4"
    with av.open(str(src), "w") as c:
        vs = c.add_stream("libx264", rate=10)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        for i in range(4):
            frame = np.roll(np.tile(np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None], (48, 1, 3)), i, axis=1)
            c.mux(vs.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        c.mux(vs.encode(None))
    out = tmp_path / "out.mkv"
    assert _run([vivid_onnx, src, "-o", out, "--device", "cpu", "--steady", "--codec", "libx264", "--crf", "30",
                 "-q"]) == 0
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        assert sum(1 for _ in c.decode(video=0)) == 4
    assert _run([vivid_onnx, src, "-o", tmp_path / "bad.mp4", "--device", "cpu", "--codec", "nope", "-q"]) == 2


def test_nst_info_command(vivid_onnx, tmp_path, capsys):
    from nst_runtime.cli import info
    from nst_runtime.options import run_command
    from nst_runtime.sidecar import sidecar_path

    capsys.readouterr()
    assert run_command(info, [str(vivid_onnx)], prog="nst-info") == 0
    text = capsys.readouterr().out
    assert "verified" in text and "onnxruntime on cpu: can run it" in text
    assert run_command(info, [str(vivid_onnx), "--json"], prog="nst-info") == 0
    assert json.loads(capsys.readouterr().out)["sidecar"]["precision"] == "fp32"
    copy = tmp_path / vivid_onnx.name
    shutil.copy(vivid_onnx, copy)
    shutil.copy(sidecar_path(vivid_onnx), sidecar_path(copy))
    with open(copy, "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert run_command(info, [str(copy)], prog="nst-info") == 3
    assert "MISMATCH" in capsys.readouterr().out
    assert run_command(info, [str(tmp_path / "none.onnx")], prog="nst-info") == 3


def test_nst_info_script_is_installed():
    import subprocess
    import sys
    from pathlib import Path

    script = Path(sys.executable).with_name("nst-info")
    if not script.exists():
        pytest.skip("the nst-info script is not installed in this environment (pip install -e .)")
    res = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "exit codes" in res.stdout


def test_scale_is_checked_against_the_pixel_limit_and_budget_before_the_network(vivid_onnx, photo, tmp_path):
    """--scale up to 4 makes 16x the pixels: the processed size gets --max-pixels and the memory budget, for
    images, bytes and video, before anything is enlarged."""
    from nst_runtime import Stylizer
    from nst_runtime.errors import ImageTooLargeError
    from nst_runtime.steps import StepPlan

    with pytest.raises(ImageTooLargeError, match="would see 40x40"):
        StepPlan.of(scale=4, max_pixels=1599).before(np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(ImageTooLargeError, match="memory budget"):
        StepPlan.of(scale=4, memory_limit=1000).before(np.zeros((10, 10, 3), np.uint8))
    assert StepPlan.of(scale=4, max_pixels=1600).before(np.zeros((10, 10, 3), np.uint8)).shape == (40, 40, 3)
    # 60x84 = 5040 pixels pass a limit of 6000; at scale 4 they would be 80640
    assert _run([vivid_onnx, photo, "-o", tmp_path / "x4.png", "--device", "cpu", "--scale", "4",
                 "--max-pixels", "6000", "-q"]) == 4
    assert not (tmp_path / "x4.png").exists()
    with Stylizer.open(vivid_onnx, device="cpu", backend="onnxruntime", max_pixels=6000) as s:
        rgb = np.asarray(Image.open(photo))
        with pytest.raises(ImageTooLargeError):
            s.stylize(rgb, scale=4)
        with pytest.raises(ImageTooLargeError):
            s.stylize_bytes(photo.read_bytes(), max_pixels=6000, scale=4)
        with pytest.raises(ImageTooLargeError):
            list(s.stylize_frames([rgb], scale=4))
        assert s.stylize(rgb, scale=1.05).shape == rgb.shape  # 88x63 = 5544 pixels


def test_a_scaled_video_over_the_pixel_limit_stops_before_any_frame(vivid_onnx, tmp_path):
    av = pytest.importorskip("av")
    from nst_runtime import Stylizer
    from nst_runtime.errors import ImageTooLargeError
    from nst_runtime.video import stylize_video

    src = tmp_path / "in.mp4"
    with av.open(str(src), "w") as c:
        vs = c.add_stream("libx264", rate=10)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        for _ in range(2):
            c.mux(vs.encode(av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")))
        c.mux(vs.encode(None))
    with Stylizer.open(vivid_onnx, device="cpu", backend="onnxruntime", max_pixels=None) as s:
        with pytest.raises(ImageTooLargeError, match="scale 4"):
            stylize_video(s, src, tmp_path / "out.mp4", max_pixels=64 * 48 * 2, scale=4)
    assert not (tmp_path / "out.mp4").exists()
