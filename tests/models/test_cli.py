"""``nst-models`` and names as models on the command line: list, pull, add, remove, path; ``nst-stylize NAME``
(``--pull``), ``nst-stylize MODEL... PHOTO --sheet``, ``nst-serve NAME``. Errors are one line with the exit
code of the table; the downloads come from a loopback server."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("onnxruntime")


def _models(argv):
    from nst_runtime.models.cli import main

    return main(argv)


def _stylize(argv):
    from nst_runtime.cli import main

    return main(argv)


def _err_lines(capsys):
    return [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]


@pytest.fixture
def zoo(publisher, tiny_onnx, use_catalog, make_url_entry):
    data = tiny_onnx.read_bytes()
    publisher.files["tiny-9.onnx"] = data
    publisher.files["other-9.onnx"] = data[::-1]
    return use_catalog([
        make_url_entry("tiny", publisher.url("tiny-9.onnx"), data),
        make_url_entry("gone", publisher.url("missing-9.onnx"), data),
        make_url_entry("changed", publisher.url("other-9.onnx"), data),
    ])


@pytest.fixture
def photo(tmp_path):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:60, 0:90]
    img = np.stack([xx * 2.8, yy * 4, 128 + 60 * np.sin(xx / 7.0)], -1) + rng.normal(0, 8, (60, 90, 3))
    path = tmp_path / "photo.png"
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path)
    return path


def test_list_pull_path_remove(zoo, capsys):
    assert _models(["list"]) == 0
    out = capsys.readouterr().out
    assert "tiny" in out and "not cached: nst-models pull tiny" in out and "BSD-3-Clause" in out
    assert _models(["pull", "tiny", "-q"]) == 0
    path = capsys.readouterr().out.strip().split(": ", 1)[1]
    assert path.endswith("tiny.onnx")
    assert _models(["list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["models"]}
    assert rows["tiny"]["status"] == "cached" and rows["tiny"]["path"] == path
    assert _models(["path", "tiny"]) == 0 and capsys.readouterr().out.strip() == path
    assert _models(["remove", "tiny"]) == 0
    assert _models(["path", "tiny"]) == 3
    (line,) = _err_lines(capsys)
    assert line.startswith("nst-models path: error: tiny:") and "nst-models pull tiny" in line


@pytest.mark.parametrize("name, code, words", [("gone", 6, "HTTP 404"), ("changed", 3, "is not the")])
def test_pull_errors_are_one_line_with_the_url_and_the_manual_fix(zoo, capsys, snapshot, use_catalog, name, code,
                                                                  words):
    before = snapshot(use_catalog.home)
    assert _models(["pull", name]) == code
    (line,) = _err_lines(capsys)
    url = zoo.get(name).files[0].url
    assert line.startswith(f"nst-models pull: error: {url}:") and words in line
    assert f"nst-models add {zoo.get(name).files[0].file_name} --name {name}" in line
    assert snapshot(use_catalog.home) == before


def test_pull_all_goes_on_after_a_failure(zoo, capsys):
    assert _models(["pull", "--all", "-q"]) == 8  # some failed, the others were written
    err = _err_lines(capsys)
    assert len([ln for ln in err if ln.startswith("nst-models pull: error: http")]) == 2
    assert "the other 1 are in the cache" in err[-1]
    assert _models(["path", "tiny"]) == 0


def test_add_refuses_a_file_that_is_not_the_pinned_one(zoo, tmp_path, capsys):
    bad = tmp_path / "tiny-9.onnx"
    bad.write_bytes(b"not the network")
    assert _models(["add", str(bad), "--name", "tiny"]) == 3
    (line,) = _err_lines(capsys)
    assert "none of the files nst's catalogue pins for tiny" in line
    assert _models(["add", str(bad), "--name", "../x"]) == 2


def test_stylize_by_name_pulls_only_when_asked(zoo, photo, tmp_path, capsys):
    out = tmp_path / "out.png"
    assert _stylize(["tiny", str(photo), "-o", str(out), "--device", "cpu"]) == 3
    (line,) = _err_lines(capsys)
    assert "nst-models pull tiny" in line and "--pull" in line and not out.exists()
    assert _stylize(["tiny", str(photo), "-o", str(out), "--device", "cpu", "--pull", "-q"]) == 0
    assert Image.open(out).size == (90, 60)
    assert _stylize(["no-such-style", str(photo), "-o", str(out), "--device", "cpu"]) == 3
    assert "no model of that name" in _err_lines(capsys)[-1]


def test_contact_sheet_has_the_original_first_then_every_style(zoo, photo, tmp_path, capsys):
    from nst_runtime.models import pull_model
    from nst_runtime.sheet import fit_photo

    artifact = pull_model("tiny").artifact
    sheet = tmp_path / "sheet.png"
    # two models: a name and a path; cells of 48 px (the photo is 90x60 -> 48x32)
    assert _stylize(["tiny", str(artifact), str(photo), "--sheet", "-o", str(sheet), "--cell-size", "48",
                     "--columns", "3", "--device", "cpu", "-q"]) == 0
    img = np.asarray(Image.open(sheet).convert("RGB"))
    pad, label_h = 6, 15 + 8
    assert img.shape == (pad + 32 + label_h + pad, 3 * (48 + pad) + pad, 3)  # 3 cells in one row
    original = fit_photo(np.asarray(Image.open(photo).convert("RGB")), 48)
    cell = lambda i: img[pad + label_h: pad + label_h + 32, pad + i * (48 + pad): pad + i * (48 + pad) + 48]  # noqa: E731
    assert np.array_equal(cell(0), original)  # the original first, unchanged
    assert np.abs(cell(1).astype(int) - original.astype(int)).mean() > 10  # then the stylized ones
    assert np.array_equal(cell(1), cell(2))  # the same network by name and by path
    assert img[pad: pad + label_h, pad: pad + 48].min() < 100  # a label (dark text) above each cell


@pytest.mark.parametrize("extra, words", [
    (["-o", "sheets/"], "name the file"),
    (["-o", "s.png", "--style", "1"], "drop --style"),
])
def test_sheet_usage_errors(zoo, photo, tmp_path, capsys, monkeypatch, extra, words):
    monkeypatch.chdir(tmp_path)
    assert _stylize(["tiny", str(photo), "--sheet", "--pull", *extra]) == 2
    assert words in _err_lines(capsys)[-1]


def test_serve_takes_names(zoo, monkeypatch, capsys):
    pytest.importorskip("ray")
    import nst_serve.server
    from nst_runtime.models import pull_model
    from nst_runtime.options import run_command
    from nst_serve.cli import serve

    seen = {}
    monkeypatch.setattr(nst_serve.server, "run_server", lambda config, on_ready: seen.setdefault("config", config)
                        and 0)
    assert run_command(serve, ["tiny"], prog="nst-serve") == 3  # not cached: one line, before Ray starts
    assert "nst-models pull tiny" in _err_lines(capsys)[-1] and "config" not in seen
    artifact = pull_model("tiny").artifact
    assert run_command(serve, ["tiny"], prog="nst-serve") == 0
    (spec,) = seen["config"].models
    assert spec.name == "tiny" and spec.paths == (artifact,)
