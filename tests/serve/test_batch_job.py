"""``nst-stylize --ray``'s job on a real local Ray (2 CPUs): the plain command's outputs pixel for pixel, a corrupt
file that does not stop the job, the manifest, and an interrupted job whose rerun writes every good output
exactly once."""

from __future__ import annotations

import hashlib
import json
import time

import numpy as np
import pytest
from nst_serve.batch_job import MANIFEST_NAME, read_manifest, stylize_folder_on_ray

pytest.importorskip("ray", reason="needs Ray (pip install 'nst[serve]')")
from PIL import Image


@pytest.fixture()
def photos(tmp_path, make_photo, png):
    """Six photos in four formats and modes, and one corrupt file."""
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(make_photo(60, 80, seed=1)).save(folder / "a.png")
    Image.fromarray(make_photo(72, 64, seed=2)).save(folder / "b.jpg", quality=90)
    rgba = np.dstack([make_photo(50, 50, seed=3), np.linspace(0, 255, 2500).reshape(50, 50).astype(np.uint8)])
    Image.fromarray(rgba).save(folder / "c.png")
    Image.fromarray(make_photo(40, 56, seed=4)[..., 0]).save(folder / "d.png")
    Image.fromarray(make_photo(64, 64, seed=5)).save(folder / "e.webp")
    Image.fromarray(make_photo(48, 48, seed=6)).save(folder / "f.name.with.dots.png")
    good = png(make_photo(64, 64, seed=7))
    (folder / "g_corrupt.png").write_bytes(good[: len(good) // 3])
    return folder


def _images(folder) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(Image.open(p)) for p in sorted(folder.iterdir()) if p.name != MANIFEST_NAME}


def test_nst_stylize_ray_writes_what_the_plain_command_writes(local_ray, onnx_fp32_path, photos, tmp_path, capfd):
    from nst_runtime.cli import main

    plain = tmp_path / "plain"
    assert main([str(onnx_fp32_path), str(photos), "-o", str(plain), "--device", "cpu", "--no-progress"]) == 8
    plain_err = capfd.readouterr().err
    start = time.monotonic()
    # the same command line with --ray (this process's Ray is used, as a cluster address would be)
    assert main([str(onnx_fp32_path), str(photos), "-o", str(tmp_path / "ray"), "--device", "cpu",
                 "--no-progress", "--ray"]) == 8
    assert time.monotonic() - start < 180  # the 2-CPU starvation hang would sit here forever
    ray_err = capfd.readouterr().err
    # the same failure list: one line naming the corrupt file, then the summary
    failed = f"{photos / 'g_corrupt.png'}: corrupt or truncated PNG data"
    for err in (plain_err, ray_err):
        assert "1 of 7 inputs failed" in err and failed in err, err
        assert "6 written to" in err
    expected, got = _images(plain), _images(tmp_path / "ray")
    assert sorted(got) == sorted(expected) == ["a.png", "b.jpg", "c.png", "d.png", "e.webp", "f.name.with.dots.png"]
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
        assert (tmp_path / "ray" / name).read_bytes() == (plain / name).read_bytes()
    entries = read_manifest(tmp_path / "ray" / MANIFEST_NAME)
    assert len(entries) == 7
    for src, entry in entries.items():
        if "error" in entry:
            assert src.endswith("g_corrupt.png") and entry["code"] == 4
            continue
        data = (tmp_path / "ray" / entry["output"]).read_bytes()
        assert entry["bytes"] == len(data) and entry["sha256"] == hashlib.sha256(data).hexdigest()


def test_an_interrupted_job_resumes_and_writes_each_good_output_once(local_ray, onnx_fp32_path, photos, tmp_path):
    out = tmp_path / "out"
    seen: list[str] = []

    def interrupt_after_three(src, dst, error):
        seen.append(src)
        if len(seen) == 3:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the job

    with pytest.raises(KeyboardInterrupt):
        stylize_folder_on_ray(onnx_fp32_path, photos, out, device="cpu", progress=False,
                              on_result=interrupt_after_three)
    first = read_manifest(out / MANIFEST_NAME)
    assert len(first) == 3
    done_first = {e["output"]: (out / e["output"]).stat() for e in first.values() if "output" in e}
    report = stylize_folder_on_ray(onnx_fp32_path, photos, out, device="cpu", progress=False)
    good_first = len(done_first)
    assert report.skipped == good_first and report.written == 6 - good_first and len(report.failures) == 1
    # outputs of the first run were verified, not written again
    for name, stat in done_first.items():
        now = (out / name).stat()
        assert (now.st_ino, now.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns), name
    # every good input has exactly one output line in the whole manifest; the corrupt one only errors
    lines = [json.loads(line) for line in (out / MANIFEST_NAME).read_text().splitlines()]
    ok = [e["input"] for e in lines if "output" in e]
    assert sorted(ok) == sorted(str(p) for p in photos.iterdir() if p.name != "g_corrupt.png")
    assert all("error" in e for e in lines if e["input"].endswith("g_corrupt.png"))
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [MANIFEST_NAME, "a.png", "b.jpg", "c.png", "d.png", "e.webp", "f.name.with.dots.png"])  # no temp files
    # a third run has nothing left but the corrupt file
    again = stylize_folder_on_ray(onnx_fp32_path, photos, out, device="cpu", progress=False)
    assert (again.skipped, again.written, len(again.failures)) == (6, 0, 1)


def test_a_rerun_with_ray_skips_what_the_manifest_verifies(local_ray, onnx_fp32_path, photos, tmp_path, capfd):
    from nst_runtime.cli import main

    out = tmp_path / "out"
    args = [str(onnx_fp32_path), str(photos), "-o", str(out), "--device", "cpu", "--no-progress", "--ray"]
    assert main(args) == 8
    stat = (out / "a.png").stat()
    capfd.readouterr()
    assert main(args) == 8  # the corrupt file still fails: the same exit code as the first run
    err = capfd.readouterr().err
    assert "6 of 7 inputs already done (verified by" in err and "1 of 7 inputs failed" in err
    assert (out / "a.png").stat().st_mtime_ns == stat.st_mtime_ns
    (photos / "g_corrupt.png").unlink()
    assert main(args) == 0


def test_ray_refuses_videos_and_single_files_before_any_work(onnx_fp32_path, photos, tmp_path, capfd):
    from nst_runtime.cli import main

    assert main([str(onnx_fp32_path), str(photos / "a.png"), "-o", str(tmp_path / "x.png"), "--ray"]) == 2
    assert "--ray stylizes folders of images" in capfd.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_uri_inputs_are_read_by_ray_data(local_ray, onnx_fp32_path, photos, tmp_path):
    """Object stores go through pyarrow's filesystems; file:// is the one this offline machine has."""
    (photos / "g_corrupt.png").unlink()
    sub = photos / "sub"
    sub.mkdir()
    (photos / "a.png").rename(sub / "a.png")
    report = stylize_folder_on_ray(onnx_fp32_path, f"file://{photos}", tmp_path / "out", recursive=True,
                                   device="cpu", progress=False)
    assert (report.written, report.failures) == (6, ())
    names = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert names == ["b.jpg", "c.png", "d.png", "e.webp", "f.name.with.dots.png", MANIFEST_NAME, "sub/a.png"]
    entries = read_manifest(tmp_path / "out" / MANIFEST_NAME)
    assert f"file://{sub / 'a.png'}" in entries


def test_the_library_job_refuses_to_replace_inputs_or_write_a_file_before_ray_starts(onnx_fp32_path, photos,
                                                                                        tmp_path, monkeypatch):
    """stylize_folder_on_ray (not only the command) refuses an output folder that holds its inputs, and an
    output that is a file, before any work: Ray is never started."""
    import ray
    from nst_runtime.errors import UsageError

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray started before the output checks"))
    before = {p.name: p.read_bytes() for p in photos.iterdir()}
    with pytest.raises(UsageError, match="would replace that input"):
        stylize_folder_on_ray(onnx_fp32_path, photos, photos, format="png")
    assert {p.name: p.read_bytes() for p in photos.iterdir()} == before
    a_file = tmp_path / "out.txt"
    a_file.write_text("x")
    with pytest.raises(UsageError, match="is a file"):
        stylize_folder_on_ray(onnx_fp32_path, photos, a_file)
