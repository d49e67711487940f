"""The model cache: pull (download from a loopback server, pinned size and sha256, the foreign import with its
gates), add, remove, names as models; failures leave the cache as it was."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from nst_runtime.errors import BackendUnavailableError, DownloadError, ModelFileError, UsageError

pytest.importorskip("onnxruntime")


@pytest.fixture
def zoo(publisher, tiny_onnx, use_catalog, make_url_entry):
    """A test catalogue whose 'tiny' entry points at the loopback server, which serves the tiny network; entries
    'tiny-trunc' / 'tiny-stall' / 'tiny-changed' are the same file served truncated / stalled / changed."""
    data = tiny_onnx.read_bytes()
    publisher.files["tiny-9.onnx"] = data
    publisher.files["changed-9.onnx"] = data[:-1] + bytes([data[-1] ^ 1])
    catalog = use_catalog([
        make_url_entry("tiny", publisher.url("tiny-9.onnx"), data),
        make_url_entry("tiny-trunc", publisher.url("tiny-9.onnx", "truncated"), data),
        make_url_entry("tiny-stall", publisher.url("tiny-9.onnx", "stall"), data),
        make_url_entry("tiny-changed", publisher.url("changed-9.onnx"), data),
    ])
    return catalog


def test_pull_imports_a_gated_artifact_recording_source_licence_and_sha256(zoo, tiny_onnx, use_catalog):
    from nst_runtime import Stylizer
    from nst_runtime.artifact import file_sha256
    from nst_runtime.models import cached_model, pull_model, resolve_model
    from nst_runtime.sidecar import read_sidecar

    model = pull_model("tiny")
    assert model.folder == use_catalog.home / "models" / "tiny"
    assert sorted(p.name for p in model.folder.iterdir()) == [
        "entry.json", "tiny.fp16.onnx", "tiny.fp16.onnx.json", "tiny.onnx", "tiny.onnx.json"]
    meta = read_sidecar(model.artifact)
    pinned = zoo.get("tiny").files[0]
    assert meta.source["sha256"] == file_sha256(tiny_onnx) == pinned.sha256  # the original's hash
    assert meta.source["url"] == pinned.url and meta.source["license"] == "BSD-3-Clause"
    assert meta.source["catalog"] == "tiny" and meta.source["file"] == "tiny-9.onnx"
    assert meta.parity["passed"] and read_sidecar(model.fp16).precision == "fp16"
    assert json.loads((model.folder / "entry.json").read_text())["sha256"] == pinned.sha256
    # the name now works wherever a model file does
    assert resolve_model("tiny") == model.artifact == cached_model("TINY").artifact
    with Stylizer.open("tiny", device="cpu") as s:
        out = s.stylize(np.full((20, 28, 3), 90, np.uint8))
    assert out.shape == (20, 28, 3)
    # a second pull is the cache's: no new request
    assert pull_model("tiny").artifact == model.artifact


@pytest.mark.parametrize("name, error, words", [
    ("tiny-trunc", DownloadError, "truncated"),
    ("tiny-stall", DownloadError, "stalled"),
    ("tiny-changed", ModelFileError, "is not the"),
])
def test_a_failed_pull_is_one_line_and_leaves_the_cache_untouched(zoo, use_catalog, snapshot, name, error, words):
    from nst_runtime.models import list_models, pull_model

    pull_model("tiny")  # something in the cache already
    before = snapshot(use_catalog.home)
    with pytest.raises(error) as info:
        pull_model(name, timeout=0.5)
    text = str(info.value)
    assert "\n" not in text and words in text
    pinned = zoo.get(name).files[0]
    assert text.startswith(pinned.url) and f"nst-models add {pinned.file_name} --name {name}" in text
    assert snapshot(use_catalog.home) == before
    assert [p.name for p in (use_catalog.home / "models").iterdir()] == ["tiny"]  # no staging folder left
    assert {r.name: r.status for r in list_models()}[name] == "not cached"


def test_a_failed_forced_pull_keeps_the_cached_model(zoo, publisher, use_catalog, snapshot):
    from nst_runtime.models import pull_model

    pull_model("tiny")
    before = snapshot(use_catalog.home)
    publisher.files["tiny-9.onnx"] = b"x" * len(publisher.files["tiny-9.onnx"])  # upstream changed
    with pytest.raises(ModelFileError, match="is not the"):
        pull_model("tiny", force=True)
    assert snapshot(use_catalog.home) == before


def test_an_interrupted_import_leaves_nothing(zoo, use_catalog, snapshot, monkeypatch):
    import nst_export.foreign
    from nst_runtime.models import pull_model

    def interrupted(*args, **kwargs):
        out = args[1]
        out.write_bytes(b"half an import")  # files already in the staging folder when the interrupt comes
        raise KeyboardInterrupt

    monkeypatch.setattr(nst_export.foreign, "onnx_from_foreign", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pull_model("tiny")
    assert snapshot(use_catalog.home) == {}


def test_a_killed_pull_is_swept_by_the_next(zoo, use_catalog):
    from nst_runtime.models import pull_model

    root = use_catalog.home / "models"
    stale = root / ".staging-tiny-999999999-abc123"  # no such process
    (stale / "download").mkdir(parents=True)
    (stale / "download" / "tiny-9.onnx").write_bytes(b"partial")
    pull_model("tiny")
    assert sorted(p.name for p in root.iterdir()) == ["tiny"]


@pytest.mark.parametrize("how", ["not registered", "registered but not loadable"])
def test_without_the_export_stage_pulling_says_which_extra(zoo, monkeypatch, use_catalog, snapshot, how):
    """The runtime finds the export stage's import through its registration (entry point group nst.importers),
    never by module name: without it, one line naming nst[export]."""
    from importlib import metadata

    from nst_runtime.models import pull_model

    real = metadata.entry_points

    def entry_points(**kw):
        found = real(**kw)
        if kw.get("group") != "nst.importers":
            return found
        if how == "not registered":
            return []
        return [metadata.EntryPoint(ep.name, "nst_export_absent_here.foreign", ep.group) for ep in found]

    monkeypatch.setattr(metadata, "entry_points", entry_points)
    with pytest.raises(BackendUnavailableError) as info:
        pull_model("tiny")
    assert "pip install 'nst[export]'" in str(info.value) and "\n" not in str(info.value)
    assert snapshot(use_catalog.home) == {}


def test_the_runtime_names_no_module_of_the_stages_above_it():
    """Layering: nst_runtime reaches the export and serve stages only through their registrations
    (nst_runtime.plugins), except the nst umbrella command's table of subcommands."""
    import re
    from pathlib import Path

    import nst_runtime

    root = Path(nst_runtime.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        if path.name == "commands.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if re.search(r"(import\s+|from\s+)nst_(export|serve|train|bench)\b|[\"']nst_(export|serve|train|bench)[.:]",
                         code):
                offenders.append(f"{path.relative_to(root)}:{n}: {line.strip()}")
    assert offenders == []


def test_names_resolve_only_from_the_cache_unless_pull(zoo, tmp_path, monkeypatch):
    from nst_runtime.models import model_argument, resolve_model

    with pytest.raises(ModelFileError, match="nst-models pull tiny") as info:
        resolve_model("tiny")
    assert "\n" not in str(info.value)
    with pytest.raises(ModelFileError, match="no model of that name"):
        resolve_model("no-such-style")
    # paths stay paths (a file of that name wins; a missing path is left to the opener's own error)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny").write_bytes(b"a file named like a model")
    assert resolve_model("tiny") == tmp_path.joinpath("tiny").relative_to(tmp_path)
    assert str(resolve_model("missing/candy.onnx")) == "missing/candy.onnx"
    os.remove(tmp_path / "tiny")
    # nst-serve's argument form: NAME=PATH, pulled on request
    assert model_argument("tiny", pull=True).startswith("tiny=") and model_argument("tiny", pull=True).endswith(
        "tiny.onnx")
    assert model_argument("wave=x.onnx") == "wave=x.onnx"


def test_add_a_catalogue_file_fetched_by_hand(zoo, tiny_onnx, tmp_path):
    from nst_runtime.models import add_model
    from nst_runtime.sidecar import read_sidecar

    model = add_model(tiny_onnx, "tiny")
    assert read_sidecar(model.artifact).source["url"] == zoo.get("tiny").files[0].url
    with pytest.raises(UsageError, match="--force"):
        add_model(tiny_onnx, "tiny")
    other = tmp_path / "other.onnx"
    other.write_bytes(tiny_onnx.read_bytes() + b"\0")
    with pytest.raises(ModelFileError, match="none of the files nst's catalogue pins"):
        add_model(other, "tiny", force=True)
    assert read_sidecar(model.artifact).source["url"] == zoo.get("tiny").files[0].url  # kept


def test_add_an_nst_artifact_and_a_foreign_file_of_ones_own(zoo, tiny_onnx, tmp_path):
    import shutil

    from nst_runtime import Stylizer
    from nst_runtime.models import add_model, list_models, pull_model, remove_model
    from nst_runtime.sidecar import read_sidecar, sidecar_path

    exported = tmp_path / "export"  # an nst artifact with its sidecar and FP16 graph, as nst-export writes them
    exported.mkdir()
    for f in pull_model("tiny").folder.glob("tiny.*"):
        shutil.copy(f, exported / f.name.replace("tiny", "candy"))
    mine = add_model(exported / "candy.onnx", "my-style")
    assert mine.artifact.read_bytes() == (exported / "candy.onnx").read_bytes()
    assert mine.fp16 is not None and sidecar_path(mine.fp16).is_file()
    with Stylizer.open("my-style", device="cpu") as s:
        assert s.stylize(np.zeros((16, 16, 3), np.uint8)).shape == (16, 16, 3)
    own = add_model(tiny_onnx, "wave", license="CC-BY-4.0")
    assert read_sidecar(own.artifact).source["license"] == "CC-BY-4.0"
    rows = {r.name: r for r in list_models()}
    assert rows["my-style"].status == rows["wave"].status == "cached" and rows["wave"].license == "CC-BY-4.0"
    assert remove_model("wave") == own.folder and not own.folder.exists()
    with pytest.raises(UsageError, match="not in the cache"):
        remove_model("wave")


def _adain_pair_writer():
    """tests/runtime/test_adain_runtime.py's hand-built AdaIN pair (two small graphs with sidecars)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "runtime" / "test_adain_runtime.py"
    spec = importlib.util.spec_from_file_location("_adain_pair", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write_adain_pair


def test_add_an_adain_model_keeps_its_style_graph(use_catalog, tmp_path):
    from nst_runtime import Stylizer
    from nst_runtime.models import add_model
    from nst_runtime.sidecar import read_sidecar, sidecar_path
    from PIL import Image

    model = _adain_pair_writer()(tmp_path / "export", "painter")
    added = add_model(model, "any-style")
    graph = added.folder / read_sidecar(added.artifact).adain.style_graph
    assert graph.name == "painter.style.onnx" and sidecar_path(graph).is_file()
    assert graph.read_bytes() == model.with_name("painter.style.onnx").read_bytes()
    style = tmp_path / "style.png"
    Image.fromarray(np.full((12, 12, 3), 100, np.uint8)).save(style)
    with Stylizer.open("any-style", device="cpu", backend="onnxruntime") as s:
        assert s.stylize(np.zeros((8, 8, 3), np.uint8), style=str(style))[0, 0, 0] == 100
    model.with_name("painter.style.onnx").unlink()
    with pytest.raises(ModelFileError, match=r"style graph painter\.style\.onnx is not beside it"):
        add_model(model, "lone")
