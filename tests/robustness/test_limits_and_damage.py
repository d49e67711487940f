"""Issue 12, items 6-10 and 15: limits that mean what they say, files that are not regular, sidecar numbers in
range, lost video frames counted in every container, SIGTERM handled like Ctrl-C, graphs that break the I/O
contract refused in one line, and outputs that keep what the input had (TIFF pages, odd video sizes) or say
what they drop (alpha into JPEG)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from nst_runtime import ModelFileError, Stylizer
from nst_runtime.errors import MediaError
from nst_runtime.images import read_image, save_image
from nst_runtime.sidecar import Sidecar, read_sidecar, sidecar_path
from PIL import Image


def _error_lines(err: str) -> list[str]:
    assert "Traceback" not in err, err
    return [ln for ln in err.splitlines() if ": error: " in ln]


def _stylize(args: list[str], capsys) -> tuple[int, str]:
    from nst_runtime.cli import main

    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- item 6
def test_no_pixel_limit_means_none_and_pillows_limit_is_restored(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    path = tmp_path / "big.png"
    Image.new("RGB", (30, 20), "red").save(path)  # 600 pixels: Pillow alone refuses over 2 x 100
    assert read_image(path, max_pixels=None).frames[0].size == (30, 20)
    assert Image.MAX_IMAGE_PIXELS == 100
    assert read_image(path, max_pixels=10_000).frames[0].size == (30, 20)
    assert Image.MAX_IMAGE_PIXELS == 100  # raised for the read only, never left changed
    with pytest.raises(Exception, match="more than the limit of 500"):
        read_image(path, max_pixels=500)
    assert Image.MAX_IMAGE_PIXELS == 100


def test_cli_max_pixels_zero_is_no_limit(vivid_onnx, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    Image.new("RGB", (30, 20), "red").save(tmp_path / "big.png")
    code, err = _stylize([vivid_onnx, tmp_path / "big.png", "-o", tmp_path / "out.png", "--max-pixels", "0",
                          "--device", "cpu", "-q"], capsys)
    assert code == 0, err
    assert Image.MAX_IMAGE_PIXELS == 100
    assert read_image(tmp_path / "out.png", max_pixels=None).frames[0].size == (30, 20)


# ----------------------------------------------------------------------------------------------- item 7
def _copy_model(vivid_onnx: Path, folder: Path) -> Path:
    dst = folder / "m.onnx"
    shutil.copy(vivid_onnx, dst)
    shutil.copy(sidecar_path(vivid_onnx), sidecar_path(dst))
    return dst


OPEN_CHILD = """
import sys
from nst_runtime import Stylizer, ModelFileError
try:
    Stylizer.open(sys.argv[1], device="cpu")
except ModelFileError as exc:
    print("REFUSED", exc)
"""


def _open_in_child(path: Path) -> str:
    """Stylizer.open in a subprocess (a hang would block the test process for ever); its one line."""
    res = subprocess.run([sys.executable, "-c", OPEN_CHILD, str(path)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.startswith("REFUSED"), res.stdout + res.stderr
    return res.stdout


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs (POSIX)")
def test_a_fifo_or_a_device_as_the_model_is_refused_not_read(vivid_onnx, tmp_path):
    model = _copy_model(vivid_onnx, tmp_path)
    model.unlink()
    os.mkfifo(model)  # reading a FIFO with no writer blocks for ever
    assert "FIFO" in _open_in_child(model)
    model.unlink()
    model.symlink_to("/dev/zero")  # never ends
    assert "a device" in _open_in_child(model)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs (POSIX)")
def test_a_fifo_or_huge_sidecar_is_refused(vivid_onnx, tmp_path):
    model = _copy_model(vivid_onnx, tmp_path)
    side = sidecar_path(model)
    text = side.read_text()
    side.unlink()
    os.mkfifo(side)
    assert "FIFO" in _open_in_child(model)
    side.unlink()
    meta = json.loads(text)
    meta["padding"] = "x" * (2 << 20)  # unknown keys are ignored, but not 2 MB of them
    side.write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="larger than 1024 KiB"):
        read_sidecar(model)


# ----------------------------------------------------------------------------------------------- item 4
@pytest.mark.parametrize(("field", "value", "needle"), [
    ("min_size", 60000, "min_size 60000, expected 1..1024"),
    ("min_size", 1e30, "min_size 1e+30, expected an integer"),
    ("min_size", 10**30, "expected 1..1024"),
    ("min_size", 0, "expected 1..1024"),
    ("profile", {"min": [1, 8, 8], "opt": [1, 64, 64], "max": [1, 10**6, 64]}, "H, W in 1..65536"),
    ("profile", {"min": [1, 8, 8], "opt": [1, 512, 512], "max": [1, 64, 64]}, "min <= opt <= max"),
    ("profile", {"min": [1, 8, 8], "opt": [1, 64, 64], "max": [4096, 65536, 65536]}, "at most 2147483648"),
])
def test_sidecar_numbers_are_range_checked(vivid_onnx, tmp_path, capsys, field, value, needle):
    model = _copy_model(vivid_onnx, tmp_path)
    meta = json.loads(sidecar_path(model).read_text())
    meta[field] = value
    sidecar_path(model).write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="malformed sidecar") as info:
        read_sidecar(model)
    assert needle in str(info.value)
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    code, err = _stylize([model, tmp_path / "x.png", "-o", tmp_path / "out", "--device", "cpu"], capsys)
    assert code == 3 and len(_error_lines(err)) == 1 and needle in _error_lines(err)[0]


# ----------------------------------------------------------------------------------------------- item 10
def _graph_file(folder: Path, kind: str) -> Path:
    """A small ONNX graph that breaks the uint8 NHWC contract, with a sidecar that claims it keeps it."""
    import onnx
    from nst_runtime.artifact import file_sha256
    from onnx import TensorProto, helper

    u8, f32 = TensorProto.UINT8, TensorProto.FLOAT
    if kind == "nchw":  # uint8 NCHW: a 1x1 convolution over 3 channels in dimension 1
        inp = helper.make_tensor_value_info("input", u8, ["N", 3, "H", "W"])
        out = helper.make_tensor_value_info("output", u8, ["N", 3, "H", "W"])
        weight = helper.make_tensor("w", f32, [3, 3, 1, 1], np.eye(3, dtype=np.float32).ravel().tolist())
        nodes = [helper.make_node("Cast", ["input"], ["x"], to=f32), helper.make_node("Conv", ["x", "w"], ["y"]),
                 helper.make_node("Cast", ["y"], ["output"], to=u8)]
        inits = [weight]
    elif kind == "float":  # returns float32
        inp = helper.make_tensor_value_info("input", u8, ["N", "H", "W", 3])
        out = helper.make_tensor_value_info("output", f32, ["N", "H", "W", 3])
        nodes, inits = [helper.make_node("Cast", ["input"], ["output"], to=f32)], []
    else:  # "crop": returns two rows fewer
        inp = helper.make_tensor_value_info("input", u8, ["N", "H", "W", 3])
        out = helper.make_tensor_value_info("output", u8, ["N", "H2", "W", 3])
        consts = [helper.make_tensor(n, TensorProto.INT64, [1], [v]) for n, v in
                  (("starts", 0), ("ends", -2), ("axes", 1))]
        nodes, inits = [helper.make_node("Slice", ["input", "starts", "ends", "axes"], ["output"])], consts
    model = helper.make_model(helper.make_graph(nodes, kind, [inp], [out], inits),
                              opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    path = folder / f"{kind}.onnx"
    onnx.save(model, path)
    sidecar_path(path).write_text(Sidecar(kind="onnx", precision="fp32", artifact_sha256=file_sha256(path)).to_json())
    return path


@pytest.mark.parametrize("kind", ["nchw", "float", "crop"])
@pytest.mark.parametrize("backend", ["auto", "onnxruntime"])
def test_graphs_that_break_the_io_contract_are_refused_at_open(tmp_path, kind, backend):
    path = _graph_file(tmp_path, kind)
    with pytest.raises(ModelFileError) as info:
        Stylizer.open(path, device="cpu", backend=backend)
    msg = str(info.value)
    assert str(path) in msg and "\n" not in msg and "uint8 NHWC" in msg and "nst-export" in msg


def test_cli_uint8_nchw_graph_is_one_line_exit_3(tmp_path, capsys):
    path = _graph_file(tmp_path, "nchw")
    Image.new("RGB", (16, 12)).save(tmp_path / "x.png")
    code, err = _stylize([path, tmp_path / "x.png", "-o", tmp_path / "out", "--device", "cpu"], capsys)
    lines = _error_lines(err)
    assert code == 3 and len(lines) == 1 and "nchw.onnx" in lines[0]
    assert len([ln for ln in err.splitlines() if ln.strip()]) == 1, err


# ----------------------------------------------------------------------------------------------- item 15
def test_multi_page_tiff_keeps_every_page(vivid_onnx, tmp_path, capsys):
    pages = [Image.fromarray(np.full((24, 32, 3), 60 * i, np.uint8)) for i in range(3)]
    pages[0].save(tmp_path / "doc.tif", save_all=True, append_images=pages[1:])
    code, err = _stylize([vivid_onnx, tmp_path / "doc.tif", "-o", tmp_path / "out", "--device", "cpu", "-q"], capsys)
    assert code == 0, err
    with Image.open(tmp_path / "out" / "doc.tif") as out:
        assert out.n_frames == 3
        sizes = []
        for i in range(3):
            out.seek(i)
            sizes.append(out.size)
    assert sizes == [(32, 24)] * 3


def test_alpha_into_jpeg_warns_and_opaque_alpha_does_not(tmp_path, caplog):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 3] = 255
    with caplog.at_level(logging.WARNING, logger="nst_runtime.images"):
        save_image(Image.fromarray(rgba, "RGBA"), tmp_path / "opaque.jpg")
        assert not caplog.records
        rgba[2:5, 2:5, 3] = 0
        save_image(Image.fromarray(rgba, "RGBA"), tmp_path / "holes.jpg")
    assert len(caplog.records) == 1 and "transparency is dropped" in caplog.records[0].message
    assert Image.open(tmp_path / "holes.jpg").mode == "RGB"


def _video(path: Path, *, frames: int, size: tuple[int, int], fmt: str = "matroska", codec: str = "libx264",
           pix_fmt: str = "yuv420p", rate: int = 10) -> Path:
    import av

    with av.open(str(path), "w", format=fmt) as c:
        s = c.add_stream(codec, rate=rate)
        s.height, s.width = size
        s.pix_fmt = pix_fmt
        for i in range(frames):
            img = np.random.default_rng(i).integers(0, 255, (*size, 3), dtype=np.uint8)
            c.mux(s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        c.mux(s.encode(None))
    return path


@pytest.mark.parametrize(("suffix", "fmt", "codec", "pix_fmt"), [
    (".mp4", "mp4", "libx264", "yuv444p"), (".webm", "webm", "libvpx-vp9", "yuv420p"),
    (".avi", "avi", "mpeg4", "yuv420p"),
])
def test_odd_size_video_keeps_its_size(stylizer, tmp_path, suffix, fmt, codec, pix_fmt):
    import av
    from nst_runtime.video import stylize_video

    src = _video(tmp_path / f"odd{suffix}", frames=3, size=(41, 33), fmt=fmt, codec=codec, pix_fmt=pix_fmt)
    report = stylize_video(stylizer, src, tmp_path / f"out{suffix}")
    with av.open(str(report.path)) as c:
        frame = next(c.decode(video=0))
        assert (frame.width, frame.height) == (33, 41)
    assert (report.width, report.height) == (33, 41) and report.complete


# ----------------------------------------------------------------------------------------------- items 4, 8
def _damage(path: Path, start: float, end: float) -> Path:
    data = bytearray(path.read_bytes())
    a, b = int(len(data) * start), int(len(data) * end)
    data[a:b] = np.random.default_rng(1).integers(0, 256, b - a, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(("suffix", "fmt", "codec"), [
    (".mkv", "matroska", "libx264"), (".webm", "webm", "libvpx-vp9"), (".mp4", "mp4", "libx264"),
    (".avi", "avi", "mpeg4"),
])
def test_lost_frames_are_counted_in_every_container(stylizer, tmp_path, suffix, fmt, codec):
    from nst_runtime.video import count_frames, stylize_video

    src = _damage(_video(tmp_path / f"clip{suffix}", frames=60, size=(48, 64), fmt=fmt, codec=codec), 0.3, 0.6)
    report = stylize_video(stylizer, src, tmp_path / f"out{suffix}")
    written = count_frames(report.path)
    assert written == report.frames < 60
    assert not report.complete and report.lost_frames >= 60 - written - 2, report
    assert "frames lost" in report.damage()


def test_cli_damaged_mkv_exits_8_naming_it(vivid_onnx, tmp_path, capsys):
    src = _damage(_video(tmp_path / "clip.mkv", frames=60, size=(48, 64)), 0.3, 0.6)
    code, err = _stylize([vivid_onnx, src, "-o", tmp_path / "out", "--device", "cpu", "-q"], capsys)
    assert code == 8, err
    assert sum("clip.mkv" in ln and "frames lost" in ln for ln in err.splitlines()) == 1, err


def test_intact_video_reports_nothing_lost(stylizer, tmp_path):
    from nst_runtime.video import stylize_video

    for suffix, fmt in ((".mkv", "matroska"), (".mp4", "mp4")):
        report = stylize_video(stylizer, _video(tmp_path / f"ok{suffix}", frames=12, size=(32, 48), fmt=fmt),
                               tmp_path / f"out{suffix}")
        assert report.complete and report.frames == report.expected_frames == 12


def test_video_frames_obey_the_pixel_limit(stylizer, vivid_onnx, tmp_path, capsys):
    from nst_runtime.video import stylize_video

    src = _video(tmp_path / "clip.mkv", frames=3, size=(48, 64))
    with pytest.raises(MediaError, match="more than the limit of 1000"):
        stylize_video(stylizer, src, tmp_path / "out.mkv", max_pixels=1000)
    assert not (tmp_path / "out.mkv").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    code, err = _stylize([vivid_onnx, src, "-o", tmp_path / "out", "--device", "cpu", "--max-pixels", "1000"],
                         capsys)
    assert code == 4 and len(_error_lines(err)) == 1 and "limit of 1000" in err


# ----------------------------------------------------------------------------------------------- item 9
def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            pytest.fail(f"the command ended (exit {proc.returncode}) before the signal: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the command never got under way")
        time.sleep(0.05)


def _terminate_midway(vivid_onnx: Path, src: Path, out: Path, started) -> tuple[int, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "nst_runtime.cli", str(vivid_onnx), str(src), "-o", str(out),
                             "--device", "cpu", "--jobs", "1"], stderr=subprocess.PIPE, text=True, env=env)
    _wait_for(lambda: out.exists() and started(out), proc)
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("SIGTERM did not stop the command")
    return proc.returncode, err


def test_sigterm_mid_folder_leaves_no_temp_file(vivid_onnx, tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    for i in range(40):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (160, 192, 3), dtype=np.uint8)).save(
            src / f"p{i:02d}.png")
    out = tmp_path / "out"
    code, err = _terminate_midway(vivid_onnx, src, out, lambda o: any(o.iterdir()))
    assert code == 143, err
    assert "terminated" in err and "Traceback" not in err
    left = sorted(p.name for p in out.iterdir())
    assert left and not [n for n in left if n.startswith(".")], left
    assert len(left) < 40
    for name in left:  # what was written is complete
        assert Image.open(out / name).size == (192, 160)


def test_sigterm_mid_video_leaves_no_temp_file(vivid_onnx, tmp_path):
    src = _video(tmp_path / "clip.mkv", frames=200, size=(96, 128))
    out = tmp_path / "out"
    code, err = _terminate_midway(vivid_onnx, src, out,
                                  lambda o: any(p.name.startswith(".clip.mkv") for p in o.iterdir()))
    assert code == 143, err
    assert not list(out.iterdir()), list(out.iterdir())


def test_sigterm_handler_is_restored(monkeypatch):
    from nst_runtime.interrupt import Terminated, sigterm_as_interrupt

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated), sigterm_as_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises in this thread at once
    assert signal.getsignal(signal.SIGTERM) == before
