"""The command lines never replace an input, check their outputs before working, and fail in one line.

Issue 12, items 1, 10, 11, 13 and 14: each case here wrote over the user's files, ran to the end before
failing, or printed raw exception text with the old command lines.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def _one_error_line(err: str, code_seen: int, code: int, *needles: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code_seen == code, f"exit {code_seen}, expected {code}:\n{err}"
    assert "Traceback" not in err, err
    errors = [ln for ln in lines if ": error: " in ln]
    assert len(errors) == 1, err
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


@pytest.fixture
def photos(tmp_path, make_image):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, name in enumerate(("a.jpg", "b.png")):
        Image.fromarray(make_image(16, 20, seed=i)).save(folder / name)
    return folder


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------ nst-stylize
@pytest.mark.parametrize("target", ["same folder", "same folder via symlink", "the file itself", "a hard link"])
def test_stylize_never_replaces_an_input(vivid_onnx, photos, tmp_path, capsys, target):
    from nst_runtime.cli import main

    if target == "same folder":
        argv = [photos, "-o", photos]
    elif target == "same folder via symlink":
        (tmp_path / "alias").symlink_to(photos, target_is_directory=True)
        argv = [photos, "-o", tmp_path / "alias"]
    elif target == "the file itself":
        argv = [photos / "a.jpg", "-o", photos / "a.jpg"]
    else:
        os.link(photos / "b.png", tmp_path / "link.png")
        argv = [photos / "b.png", "-o", tmp_path / "link.png"]
    before = _snapshot(photos)
    code = main([str(vivid_onnx), *map(str, argv), "--device", "cpu", "-q"])
    _one_error_line(capsys.readouterr().err, code, 2, "would replace that input", "Fix: choose another -o")
    assert _snapshot(photos) == before


def test_stylize_video_folder_onto_itself_is_refused_before_decoding(vivid_onnx, tmp_path, capsys):
    from nst_runtime.cli import main

    clips = tmp_path / "clips"
    clips.mkdir()
    (clips / "clip.mp4").write_bytes(b"not decoded: the check comes first")
    code = main([str(vivid_onnx), str(clips), "-o", str(clips), "--device", "cpu", "-q"])
    _one_error_line(capsys.readouterr().err, code, 2, "clip.mp4")
    assert (clips / "clip.mp4").read_bytes() == b"not decoded: the check comes first"


def test_stylize_other_format_into_the_same_folder_is_allowed(vivid_onnx, photos, capsys):
    """--format png into the folder the .jpg comes from replaces nothing: a.png is new (b.png is an input)."""
    from nst_runtime.cli import main

    code = main([str(vivid_onnx), str(photos / "a.jpg"), "-o", str(photos), "--format", "png", "--device", "cpu",
                 "-q"])
    assert code == 0, capsys.readouterr().err
    assert (photos / "a.png").is_file()


@pytest.mark.parametrize("case", ["two inputs", "a folder"])
def test_stylize_one_output_file_for_several_inputs_is_an_error(vivid_onnx, photos, tmp_path, capsys, case):
    from nst_runtime.cli import main

    inputs = [photos / "a.jpg", photos / "b.png"] if case == "two inputs" else [photos]
    code = main([str(vivid_onnx), *map(str, inputs), "-o", str(tmp_path / "x.jpg"), "--device", "cpu", "-q"])
    _one_error_line(capsys.readouterr().err, code, 2, "names one file", "give a folder")
    assert not (tmp_path / "x.jpg").exists()


def test_stylize_image_to_a_video_name_is_one_line(vivid_onnx, photos, tmp_path, capsys):
    from nst_runtime.cli import main

    code = main([str(vivid_onnx), str(photos / "a.jpg"), "-o", str(tmp_path / "out.mp4"), "--device", "cpu"])
    _one_error_line(capsys.readouterr().err, code, 2, "out.mp4", "image suffix")
    assert not (tmp_path / "out.mp4").exists()


@pytest.mark.parametrize("option, value", [("--quality", "500"), ("--quality", "0"), ("--jobs", "0"),
                                           ("--batch-size", "0"), ("--contexts", "0"), ("--tile", "0"),
                                           ("--device", "gpu0")])
def test_stylize_bad_numbers_are_refused_at_parse_time(vivid_onnx, photos, tmp_path, capsys, option, value):
    from nst_runtime.cli import main

    code = main([str(vivid_onnx), str(photos), "-o", str(tmp_path / "out"), option, value])
    _one_error_line(capsys.readouterr().err, code, 2, option)
    assert not (tmp_path / "out").exists()


def test_stylize_quiet_keeps_pillow_and_onnxruntime_off_stderr(vivid_onnx, tmp_path, make_image):
    """Odd images (corrupt EXIF makes Pillow warn, a broken PNG) through nst-stylize: with -q stderr holds only
    nst's own lines; without it, Pillow's warnings come as nst log lines, not raw warnings."""
    src = tmp_path / "odd"
    src.mkdir()
    rng = np.random.default_rng(0)
    img = Image.fromarray(make_image(24, 30, seed=3))
    exif = Image.Exif()
    exif[0x0112], exif[0x010F] = 6, "x" * 40
    img.save(src / "badexif.jpg", exif=exif.tobytes()[:-30])  # truncated EXIF: Pillow warns while reading it
    img.convert("P", palette=Image.ADAPTIVE, colors=16).save(src / "palette.png", transparency=bytes(range(16)))
    Image.fromarray(rng.integers(0, 65535, (20, 20)).astype(np.uint16)).save(src / "gray16.png")
    img.convert("CMYK").save(src / "cmyk.jpg")
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 30)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONWARNINGS", None)
    for quiet in (True, False):
        out = tmp_path / f"out{quiet}"
        res = subprocess.run([sys.executable, "-m", "nst_runtime.cli", str(vivid_onnx), str(src), "-o", str(out),
                              "--no-progress", *(["-q"] if quiet else [])], capture_output=True, text=True, env=env,
                             timeout=300)
        assert res.returncode == 8, res.stderr
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        foreign = [ln for ln in lines if not (ln.startswith("nst-stylize: ") or ln.startswith("  "))]
        assert not foreign, res.stderr
        assert ("UserWarning" in res.stderr) is (not quiet)  # the warning came, as a log line, only without -q
        assert all("Truncated File Read" not in ln or ln.startswith("nst-stylize: WARNING: ") for ln in lines)
        assert len(list(out.iterdir())) == 4


# ------------------------------------------------------------------------------------------ nst-gatys
@pytest.mark.parametrize("which", ["content", "style"])
def test_gatys_never_writes_over_its_inputs(tmp_path, make_image, capsys, which):
    from nst_train.cli import gatys_main

    content, style = tmp_path / "photo.jpg", tmp_path / "style.jpg"
    Image.fromarray(make_image(16, 16, seed=1)).save(content)
    Image.fromarray(make_image(16, 16, seed=2)).save(style)
    before = {p: p.read_bytes() for p in (content, style)}
    out = content if which == "content" else style
    code = gatys_main([str(content), str(style), "-o", str(out), "--vgg-weights", "random", "--device", "cpu",
                       "--iterations", "1"])
    _one_error_line(capsys.readouterr().err, code, 2, "would replace that input")
    assert {p: p.read_bytes() for p in (content, style)} == before


# ------------------------------------------------------------------------------------------ nst-train
def _train_argv(samples, out, *extra):
    return ["--style", str(samples / "style.png"), "--content-dir", str(samples / "content"), "-o", str(out),
            "--image-size", "32", "--batch-size", "2", "--vgg-weights", "random", "--num-workers", "0",
            "--device", "cpu", "--no-progress", "--steps", "1", *extra]


@pytest.mark.parametrize("existing", ["checkpoint", "run folder"])
def test_train_refuses_to_replace_an_earlier_run_without_overwrite(tmp_path, samples, capsys, monkeypatch,
                                                                   existing):
    import nst_train.train as train_module
    from nst_train.cli import train_main

    out = tmp_path / "x.pth"
    if existing == "checkpoint":
        out.write_bytes(b"a trained model")
    else:
        (tmp_path / "x.run").mkdir()
    calls = []

    def must_not_run(config, **_):
        raise AssertionError("trained although an earlier run would be replaced")

    monkeypatch.setattr(train_module, "train", must_not_run)
    code = train_main(_train_argv(samples, out))
    _one_error_line(capsys.readouterr().err, code, 2, "--resume", "--overwrite")
    assert existing != "checkpoint" or out.read_bytes() == b"a trained model"
    # --overwrite: starts afresh (the library is called with resume off)

    class Done:
        checkpoint, steps, final_losses = out, 1, {}

    monkeypatch.setattr(train_module, "train", lambda config, **_: calls.append(config) or Done())
    assert train_main(_train_argv(samples, out, "--overwrite")) == 0
    assert len(calls) == 1 and not calls[0].resume
    assert train_main(_train_argv(samples, out, "--overwrite", "--resume")) == 2


def test_train_checkpoint_onto_the_style_image_is_refused(tmp_path, samples, capsys):
    from nst_train.cli import train_main

    style = tmp_path / "style.png"
    style.write_bytes((samples / "style.png").read_bytes())
    argv = _train_argv(samples, style)
    argv[1] = str(style)
    code = train_main([*argv, "--overwrite"])
    _one_error_line(capsys.readouterr().err, code, 2, "would replace that input")
    assert style.read_bytes() == (samples / "style.png").read_bytes()


# ------------------------------------------------------------------------------------------ nst-export
def test_export_a_folder_says_so(tmp_path, capsys):
    from nst_export.cli import main

    code = main([str(tmp_path), "--onnx-only", "-o", str(tmp_path / "out")])
    _one_error_line(capsys.readouterr().err, code, 3, "is a folder; expected a checkpoint file")


def test_export_an_onnx_file_without_the_importer_says_it_is_not_a_checkpoint(tmp_path, capsys, monkeypatch):
    import nst_export.cli as cli

    monkeypatch.setattr(cli, "_foreign_importer", lambda: None)
    (tmp_path / "model.onnx").write_bytes(b"\x08\x07")
    code = cli.main([str(tmp_path / "model.onnx"), "--onnx-only", "-o", str(tmp_path / "out")])
    line = _one_error_line(capsys.readouterr().err, code, 3, "is an ONNX file, not a checkpoint")
    assert "pickle" not in line and "nst-stylize" in line


def test_export_an_onnx_file_goes_to_the_foreign_importer_when_there_is_one(tmp_path, capsys, monkeypatch):
    import nst_export.cli as cli

    seen = []
    monkeypatch.setattr(cli, "_foreign_importer", lambda: lambda options: seen.append(options) or [])
    (tmp_path / "model.onnx").write_bytes(b"\x08\x07")
    assert cli.main([str(tmp_path / "model.onnx"), "--onnx-only", "-o", str(tmp_path / "out")]) == 0
    assert seen[0].checkpoint == tmp_path / "model.onnx" and seen[0].out_dir == tmp_path / "out"
    # importing a file onto itself is refused before the importer runs
    seen.clear()
    code = cli.main([str(tmp_path / "model.onnx"), "--onnx-only", "-o", str(tmp_path)])
    _one_error_line(capsys.readouterr().err, code, 2, "would replace that input")
    assert seen == []


def test_export_errors_never_name_the_hidden_temp_file(tmp_path, capsys, monkeypatch, checkpoint_path):
    import shutil

    import nst_export.onnx_export as onnx_export
    from nst_export.cli import main
    from nst_runtime.errors import ParityError

    def failing(checkpoint, out, **_):
        raise ParityError(f"{out.with_name(f'.{out.name}.{os.getpid()}.tmp')}: the graph does not reproduce the "
                          "model")

    monkeypatch.setattr(onnx_export, "onnx_from_checkpoint", failing)
    shutil.copy(checkpoint_path, tmp_path / "m.pth")  # nst-export reads the checkpoint before the export step
    code = main([str(tmp_path / "m.pth"), "--onnx-only", "-o", str(tmp_path / "out"), "-q"])
    line = _one_error_line(capsys.readouterr().err, code, 5, str(tmp_path / "out" / "m.onnx"))
    assert ".tmp" not in line


# ------------------------------------------------------------------------------------------ nst-bench
def test_bench_checks_its_output_folder_before_running(tmp_path, capsys, monkeypatch):
    import nst_bench.run as run_module
    from nst_bench.cli import main

    monkeypatch.setattr(run_module, "run_benchmark", lambda cfg: pytest.fail("ran before checking the output"))
    (tmp_path / "file").write_text("x")
    code = main(["--quick", "--device", "cpu", "-o", str(tmp_path / "file" / "sub")])
    _one_error_line(capsys.readouterr().err, code, 2, "is a file")
    if Path("/sys").is_dir():  # sysfs refuses new folders, for root too
        code = main(["--quick", "--device", "cpu", "-o", "/sys/nst-bench-unwritable"])
        _one_error_line(capsys.readouterr().err, code, 9, "/sys/nst-bench-unwritable", "cannot write")


# ------------------------------------------------------------------------------------------ messages
@pytest.mark.parametrize("number, fix", [
    (errno.EACCES, "permissions"), (errno.EPERM, "permissions"), (errno.EROFS, "read-only"),
    (errno.ENOSPC, "free disk space"), (errno.EDQUOT, "free disk space"),
])
def test_write_errors_choose_their_fix_by_errno(number, fix):
    from nst_runtime.errors import write_error

    text = str(write_error("out/x.png", OSError(number, os.strerror(number))))
    assert fix in text and text.startswith(f"out/x.png: cannot write ({os.strerror(number)})")
    if number in (errno.EACCES, errno.EPERM, errno.EROFS):
        assert "disk space" not in text


def test_docs_exit_code_table_matches_the_commands():
    """docs/robustness.md shows EXIT_CODES and, per command, the codes its --help lists."""
    from nst_runtime.commands import COMMANDS, load_command
    from nst_runtime.errors import EXIT_CODES

    text = (Path(__file__).resolve().parents[2] / "docs" / "robustness.md").read_text()
    header = next(ln for ln in text.splitlines() if ln.startswith("| code | meaning |"))
    names = [cell.strip().strip("`").removeprefix("nst-") for cell in header.strip("|").split("|")[2:]]
    assert sorted(names) == sorted(COMMANDS), "regenerate the table: python tools/exit_code_table.py"
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 + len(names) and cells[0].isdigit():
            rows[int(cells[0])] = cells
    assert sorted(rows) == sorted(EXIT_CODES), "regenerate the table: python tools/exit_code_table.py"
    for code, cells in rows.items():
        assert cells[1] == EXIT_CODES[code], "regenerate the table: python tools/exit_code_table.py"
        documented = {name for name, mark in zip(names, cells[2:], strict=True) if mark}
        actual = {name for name in names if code in load_command(name).exit_codes}
        assert documented == actual, f"exit {code}: regenerate the table: python tools/exit_code_table.py"
