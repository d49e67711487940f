"""Downloads against a loopback HTTP server: a good file, a wrong hash, a truncated transfer, a stall, a 404, a
larger file than pinned. Each failure is one line naming the URL and how to add the file by hand, and leaves
no file behind."""

from __future__ import annotations

import hashlib
import time

import pytest
from nst_runtime.errors import DownloadError, ModelFileError
from nst_runtime.models.download import download_pinned

DATA = bytes(range(256)) * 1000  # 256 kB: several reads
FIX = "Fix: nst-models add file.onnx --name x"


def _pinned(data: bytes = DATA) -> dict:
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def test_a_good_file_arrives_whole_with_progress(publisher, tmp_path):
    publisher.files["f.onnx"] = DATA
    seen: list[tuple[int, int]] = []
    out = download_pinned(publisher.url("f.onnx"), tmp_path / "f.onnx", **_pinned(), fix=FIX,
                          on_bytes=lambda done, total: seen.append((done, total)))
    assert out.read_bytes() == DATA
    assert [p.name for p in tmp_path.iterdir()] == ["f.onnx"]  # no temp file left
    assert seen[-1] == (len(DATA), len(DATA)) and len(seen) > 1


@pytest.mark.parametrize("mode, data, error, words", [
    ("ok", DATA[::-1], ModelFileError, "is not the"),           # complete, but another sha256: changed upstream
    ("truncated", DATA, DownloadError, "truncated"),             # the connection closes half way
    ("oversize", DATA, DownloadError, "more than the"),          # more bytes than the catalogue pins
    ("missing", DATA, DownloadError, "HTTP 404"),                # no such file on the server
])
def test_each_failure_is_one_line_and_leaves_nothing(publisher, tmp_path, mode, data, error, words):
    publisher.files["f.onnx"] = data
    url = publisher.url("f.onnx" if mode != "missing" else "other.onnx", mode if mode != "missing" else "ok")
    with pytest.raises(error) as info:
        download_pinned(url, tmp_path / "f.onnx", **_pinned(), fix=FIX, timeout=5)
    text = str(info.value)
    assert "\n" not in text and text.startswith(url) and words in text and text.endswith(FIX)
    assert list(tmp_path.iterdir()) == []


def test_a_stalled_server_times_out(publisher, tmp_path):
    publisher.files["f.onnx"] = DATA
    url = publisher.url("f.onnx", "stall")
    t0 = time.perf_counter()
    with pytest.raises(DownloadError) as info:
        download_pinned(url, tmp_path / "f.onnx", **_pinned(), fix=FIX, timeout=0.5)
    assert time.perf_counter() - t0 < 10
    text = str(info.value)
    assert "\n" not in text and url in text and "stalled" in text and "after 100 of" in text and FIX in text
    assert list(tmp_path.iterdir()) == []


def test_an_unreachable_host_is_one_line(tmp_path):
    url = "http://127.0.0.1:9/f.onnx"  # the discard port: nothing listens, the connection is refused
    with pytest.raises(DownloadError) as info:
        download_pinned(url, tmp_path / "f.onnx", **_pinned(), fix=FIX, timeout=2)
    assert "\n" not in str(info.value) and str(info.value).startswith(url) and FIX in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_during_the_transfer_leaves_nothing(publisher, tmp_path):
    publisher.files["f.onnx"] = DATA

    def interrupt(done: int, total: int) -> None:
        if done > 70_000:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        download_pinned(publisher.url("f.onnx"), tmp_path / "f.onnx", **_pinned(), on_bytes=interrupt)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_download_keeps_the_previous_file(publisher, tmp_path):
    (tmp_path / "f.onnx").write_bytes(b"previous")
    publisher.files["f.onnx"] = DATA
    with pytest.raises(DownloadError):
        download_pinned(publisher.url("f.onnx", "truncated"), tmp_path / "f.onnx", **_pinned())
    assert (tmp_path / "f.onnx").read_bytes() == b"previous" and len(list(tmp_path.iterdir())) == 1
