"""docs/models.md lists every catalogue entry with its source, licence and FP16 PSNR, and every pinned sha256;
the README's contact sheet is there and small."""

from __future__ import annotations

from pathlib import Path

from nst_runtime.models.catalog import load_catalog

ROOT = Path(__file__).resolve().parents[2]


def _rows(text: str, header: str) -> dict[str, list[str]]:
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(header))
    rows = {}
    for ln in lines[start + 2:]:
        if not ln.startswith("|"):
            break
        cells = [c.strip() for c in ln.strip().strip("|").split("|")]
        rows[cells[0].strip("`")] = cells
    return rows


def test_every_entry_is_documented_with_source_licence_and_fp16_psnr():
    text = (ROOT / "docs" / "models.md").read_text()
    rows = _rows(text, "| name | source | licence |")
    catalog = load_catalog()
    assert sorted(rows) == sorted(catalog.names())
    for entry in catalog:
        _name, source, licence, _size, _styles, psnr = rows[entry.name]
        assert entry.license in licence, entry.name
        assert ("package" in source) == (entry.package is not None) and source
        assert "dB" in psnr or psnr == "not reachable here", entry.name
    pinned = _rows(text, "| file | bytes | sha256 |")
    documented = {cells[2].strip("`"): int(cells[1]) for cells in pinned.values()}
    for entry in catalog:
        for f in entry.files:
            assert documented.get(f.sha256) == f.bytes, (entry.name, f.sha256)


def test_the_readme_shows_a_small_sheet():
    sheet = ROOT / "docs" / "images" / "styles-sheet-chelsea.jpg"
    assert sheet.is_file() and sheet.stat().st_size < 300_000
    assert sheet.read_bytes()[:3] == b"\xff\xd8\xff"  # a JPEG
    assert "docs/images/styles-sheet-chelsea.jpg" in (ROOT / "README.md").read_text()
