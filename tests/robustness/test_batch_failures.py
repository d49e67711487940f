"""Batches keep going: a folder with bad items (corrupt, empty, non-image, bomb) and a video with a damaged
tail: the rest is written, the summary lists each failure, the exit code (8) says some failed."""

from __future__ import annotations

import numpy as np
from PIL import Image
from test_damaged_files import png_header_only


def test_folder_with_bad_items_keeps_going(tmp_path, vivid_onnx, make_image, capsys):
    from nst_runtime.cli import main

    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i in range(3):
        Image.fromarray(make_image(12 + i, 20, seed=i)).save(src / f"good{i}.png")
    (src / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 50)
    (src / "empty.png").write_bytes(b"")
    (src / "notes.png").write_bytes(b"not an image at all\n")
    (src / "bomb.png").write_bytes(png_header_only(50_000, 50_000))
    code = main([str(vivid_onnx), str(src), "-o", str(out), "--device", "cpu", "-q"])
    err = capsys.readouterr().err
    assert code == 8
    assert "4 of 7 inputs failed" in err
    for name in ("corrupt.jpg", "empty.png", "notes.png", "bomb.png"):
        assert sum(name in ln for ln in err.splitlines()) == 1, err
    assert "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["good0.png", "good1.png", "good2.png"]  # nothing partial
    for i in range(3):
        assert Image.open(out / f"good{i}.png").size == (20, 12 + i)


def _video(path, frames=30, size=(48, 64)):
    import av

    with av.open(str(path), "w", format="matroska") as c:
        s = c.add_stream("libx264", rate=10)
        s.height, s.width = size
        s.pix_fmt = "yuv420p"
        for i in range(frames):
            img = np.random.default_rng(i).integers(0, 255, (*size, 3), dtype=np.uint8)
            c.mux(s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        c.mux(s.encode(None))


def test_video_with_damaged_tail_and_a_bad_sibling(tmp_path, vivid_onnx, capsys):
    """A video whose last third is garbage: the decodable frames are stylized and written; a broken video
    beside it is listed; the good image in the same run is written."""
    import os

    from nst_runtime.cli import main
    from nst_runtime.video import count_frames

    src = tmp_path / "in"
    src.mkdir()
    _video(src / "clip.mkv")
    data = (src / "clip.mkv").read_bytes()
    cut = int(len(data) * 0.65)
    (src / "clip.mkv").write_bytes(data[:cut] + os.urandom(len(data) - cut))
    (src / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 100)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(src / "ok.png")
    code = main([str(vivid_onnx), str(src), "-o", str(tmp_path / "out"), "--device", "cpu", "-q"])
    err = capsys.readouterr().err
    assert code == 8 and "Traceback" not in err
    assert "broken.mp4" in err
    assert (tmp_path / "out" / "ok.png").is_file()
    written = tmp_path / "out" / "clip.mkv"
    assert written.is_file() and 5 <= count_frames(written) < 30
    assert not (tmp_path / "out" / "broken.mp4").exists()
