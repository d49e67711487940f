"""The model cache: catalogue networks pulled and imported once, then opened by name.

Layout (``$NST_HOME``, default the user's cache folder, e.g. ``~/.cache/nst``)::

    $NST_HOME/models/mosaic/mosaic.onnx (+ .json)          the gated nst artifact (FP32)
    $NST_HOME/models/mosaic/mosaic.fp16.onnx (+ .json)     its FP16 graph (the runtime prefers it on GPUs)
    $NST_HOME/models/mosaic/entry.json                     where it came from: URL or package, licence, sha256

Everything pulled is imported through the export stage's foreign-ONNX path
(:func:`nst_export.foreign.onnx_from_foreign`: FP32 and FP16, parity gate against the original file, TensorRT
lint, a sidecar naming the source, licence and sha256). The work happens in a hidden staging folder beside the
final one, which is renamed into place only when every file is written and checked: an interrupted download or
import leaves nothing behind (a staging folder of a process that was killed outright is swept by the next pull).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BackendUnavailableError, ModelFileError, UsageError
from .catalog import NAME_RE, CatalogEntry, CatalogFile, load_catalog, package_file, package_version
from .download import DEFAULT_TIMEOUT_S, download_pinned

log = logging.getLogger(__name__)

ENTRY_FILE = "entry.json"
_STAGING, _TRASH = ".staging-", ".trash-"
#: suffixes of the files that make up one model in the cache
_MODEL_FILES = (".onnx", ".fp16.onnx", ".tiling.onnx")


def nst_home() -> Path:
    """``$NST_HOME``, else the user's cache folder: ``$XDG_CACHE_HOME/nst`` or ``~/.cache/nst`` (Linux),
    ``~/Library/Caches/nst`` (macOS), ``%LOCALAPPDATA%\\nst\\Cache`` (Windows)."""
    explicit = os.environ.get("NST_HOME")
    if explicit:
        return Path(explicit).expanduser()
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA")
        return (Path(base) if base else Path.home() / "AppData" / "Local") / "nst" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "nst"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "nst"


def models_root(home: str | os.PathLike[str] | None = None) -> Path:
    return (Path(home) if home is not None else nst_home()) / "models"


@dataclass(frozen=True)
class CachedModel:
    """A model in the cache: its artifact (what ``Stylizer.open`` takes) and where it came from."""

    name: str
    folder: Path
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def artifact(self) -> Path:
        return self.folder / f"{self.name}.onnx"

    @property
    def fp16(self) -> Path | None:
        path = self.folder / f"{self.name}.fp16.onnx"
        return path if path.is_file() else None

    @property
    def styles(self) -> tuple[str, ...]:
        return tuple(self.record.get("styles") or (self.name,))


@dataclass(frozen=True)
class ModelStatus:
    """One row of ``nst-models list``."""

    name: str
    title: str
    source: str
    license: str
    bytes: int | None
    styles: int
    #: "cached", "not cached", "package not installed", "package version ... is not the pinned one"
    status: str
    path: Path | None = None
    hint: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["path"] = str(self.path) if self.path else None
        return d


# ------------------------------------------------------------------------------------------------ reading
def _read_record(folder: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((folder / ENTRY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def cached_model(name: str, *, home: str | os.PathLike[str] | None = None) -> CachedModel | None:
    """The cached model ``name`` (a catalogue name is found case-insensitively), or None."""
    root = models_root(home)
    entry = load_catalog().get(name)
    for candidate in dict.fromkeys([name, *([entry.name] if entry else [])]):
        if not NAME_RE.match(candidate):
            continue
        folder = root / candidate
        record = _read_record(folder)
        model = CachedModel(candidate, folder, record or {})
        if record is not None and model.artifact.is_file():
            return model
    return None


def cached_models(*, home: str | os.PathLike[str] | None = None) -> list[CachedModel]:
    root = models_root(home)
    if not root.is_dir():
        return []
    found = [cached_model(p.name, home=home) for p in sorted(root.iterdir())
             if p.is_dir() and not p.name.startswith(".")]
    return [m for m in found if m is not None]


def _human(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.1f} MB"


def list_models(*, home: str | os.PathLike[str] | None = None) -> list[ModelStatus]:
    """Every catalogue entry with its state here, then the models added by hand (``nst-models add``)."""
    rows: list[ModelStatus] = []
    catalog = load_catalog()
    for entry in catalog:
        cached = cached_model(entry.name, home=home)
        hint = ""
        if cached is not None:
            status = "cached"
        elif entry.package is not None and package_file(entry) is None:
            status = "package not installed"
            hint = _install_hint(entry)
        elif entry.package is not None and package_version(entry) not in {f.version for f in entry.files}:
            status = f"package version {package_version(entry)} is not the pinned one"
            hint = _install_hint(entry)
        else:
            status = "not cached"
            hint = f"nst-models pull {entry.name}"
        rows.append(ModelStatus(entry.name, entry.title, _source_text(entry), entry.license, entry.files[0].bytes,
                                max(1, len(entry.styles)), status, cached.artifact if cached else None, hint))
    for model in cached_models(home=home):
        if catalog.get(model.name) is None:
            rec = model.record
            rows.append(ModelStatus(model.name, str(rec.get("title", model.name)), str(rec.get("source", "added")),
                                    str(rec.get("license", "unknown")), rec.get("bytes"), len(model.styles),
                                    "cached", model.artifact))
    return rows


def _source_text(entry: CatalogEntry) -> str:
    if entry.package is not None:
        version = package_version(entry)
        return f"package {entry.package.distribution}" + (f" {version}" if version else "")
    opsets = "/".join(str(f.opset) for f in entry.files if f.opset is not None)
    return entry.source_title() + (f" (opset {opsets})" if opsets else "")


def _install_hint(entry: CatalogEntry) -> str:
    assert entry.package is not None
    pinned = entry.files[0].version
    spec = f"{entry.package.distribution}=={pinned}" if pinned else entry.package.distribution
    extra = f" (or pip install 'nst[{entry.package.extra}]')" if entry.package.extra else ""
    return f"pip install {spec}{extra}"


# ------------------------------------------------------------------------------------------------ resolving
def resolve_model(spec: str | os.PathLike[str], *, pull: bool = False,
                  home: str | os.PathLike[str] | None = None) -> Path:
    """A model argument -> the file to open: an existing path as it is; else a name of the cache or of nst's
    catalogue -> its cached artifact (pulled first only when ``pull``). Anything else is returned unchanged, so
    that opening it gives the usual "no such file" error."""
    path = Path(spec)
    text = os.fspath(spec)
    if path.exists() or not NAME_RE.match(text) or path.suffix.lower() in (".onnx", ".engine", ".plan"):
        return path
    cached = cached_model(text, home=home)
    if cached is not None:
        return cached.artifact
    catalog = load_catalog()
    entry = catalog.get(text)
    if entry is None:
        known = ", ".join(catalog.names())
        raise ModelFileError(f"{text}: no such file, and no model of that name in nst's catalogue or cache. Fix: "
                             f"give an .onnx file or engine, or a name from nst-models list ({known}).")
    if pull:
        return pull_model(entry.name, home=home).artifact
    how = ("imported from the installed package, offline" if entry.package is not None
           else "downloaded and imported once")
    raise ModelFileError(f"{text}: a catalogue model that is not in the cache yet ({models_root(home)}). Fix: "
                         f"nst-models pull {entry.name} ({how}; nst-stylize and nst-serve also take --pull).")


def model_argument(spec: str, *, pull: bool = False, home: str | os.PathLike[str] | None = None) -> str:
    """``nst-serve``'s ``MODEL`` / ``NAME=PATH`` argument with a catalogue name turned into ``NAME=PATH``."""
    if Path(spec).exists() or "=" in spec:
        return spec
    resolved = resolve_model(spec, pull=pull, home=home)
    return f"{spec}={resolved}" if resolved != Path(spec) else spec


# ------------------------------------------------------------------------------------------------ pulling
#: what the export stage's foreign import loads (torch-free since nst_export.artifacts; a subprocess test checks)
_EXPORT_MODULES = ("onnx", "onnxruntime")


def _export_stage(what: str) -> Any:
    """The export stage's foreign-ONNX import (registered as ``nst.importers:onnx``), or one line before any
    work: pulling imports with the export stage."""
    import importlib.util

    def missing(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is None
        except (ImportError, ValueError):
            return True

    absent = [m for m in _EXPORT_MODULES if missing(m)]
    try:
        if absent:
            raise ModuleNotFoundError(absent[0], name=absent[0])
    except ModuleNotFoundError as exc:
        raise BackendUnavailableError(
            f"{what} imports the network with nst's export stage (parity gate, FP16), which is not installed "
            f"here (missing {exc.name!r}). Fix: pip install 'nst[export]'.") from None
    from ..plugins import IMPORTERS, load_plugin

    # the export stage registers its foreign-ONNX import (pyproject's nst.importers): the runtime names no module
    return load_plugin(IMPORTERS, "onnx", what=f"{what} (importing the network: parity gate, FP16)", extra="export")


def _fix_by_hand(entry: CatalogEntry, file: CatalogFile) -> str:
    return (f"Fix: check the connection and retry, or fetch that URL by other means and run: nst-models add "
            f"{file.file_name} --name {entry.name}")


def _fix_changed(entry: CatalogEntry, file: CatalogFile) -> str:
    return (f"Fix: fetch the pinned file by other means (a mirror, an older copy) and run: nst-models add "
            f"{file.file_name} --name {entry.name}; or add a file you trust under a name of your own")


def pull_model(name: str, *, opset: int | None = None, force: bool = False,
               timeout: float = DEFAULT_TIMEOUT_S, home: str | os.PathLike[str] | None = None,
               on_bytes: Callable[[int, int], None] | None = None) -> CachedModel:
    """Fetch catalogue model ``name`` (download, or the installed package's file), check its pinned size and
    sha256, import it into a gated artifact and publish it in the cache atomically. A cached model is returned
    as it is unless ``force``."""
    catalog = load_catalog()
    entry = catalog.get(name)
    if entry is None:
        raise UsageError(f"{name}: not in nst's catalogue ({', '.join(catalog.names())}); a file of your own is "
                         f"added with nst-models add FILE --name {name}.")
    existing = cached_model(entry.name, home=home)
    if existing is not None and not force:
        log.info("%s is cached: %s", entry.name, existing.artifact)
        return existing
    foreign = _export_stage(f"nst-models pull {entry.name}")
    root = models_root(home)
    with _staging(root, entry.name) as staging:
        if entry.package is not None:
            source, file = _package_source(entry)
            origin: dict[str, Any] = {"package": f"{entry.package.distribution} {file.version or ''}".strip(),
                                      "package_file": str(source)}
        else:
            file = entry.file_for(opset)
            assert file.url is not None
            downloads = staging / "download"
            downloads.mkdir()
            source = download_pinned(file.url, downloads / file.file_name, sha256=file.sha256, size=file.bytes,
                                     timeout=timeout, fix=_fix_by_hand(entry, file),
                                     mismatch_fix=_fix_changed(entry, file), on_bytes=on_bytes)
            origin = {"url": file.url}
        model = _import(foreign, entry, file, source, staging, origin=origin)
        shutil.rmtree(staging / "download", ignore_errors=True)
        return _publish(staging, root, model, force=True)


def _package_source(entry: CatalogEntry) -> tuple[Path, CatalogFile]:
    """The installed file of a package entry, refused unless its size and sha256 are pinned in the catalogue."""
    from ..artifact import file_sha256

    assert entry.package is not None
    path = package_file(entry)
    if path is None:
        raise BackendUnavailableError(f"{entry.name}: the package {entry.package.distribution} is not installed. "
                                      f"Fix: {_install_hint(entry)}.")
    sha = file_sha256(path)
    file = entry.file_with_sha256(sha)
    if file is None or path.stat().st_size != file.bytes:
        pinned = ", ".join(f"{f.version}: {f.sha256[:16]}…" for f in entry.files)
        raise ModelFileError(
            f"{path}: sha256 {sha[:16]}… (version {package_version(entry) or '?'} installed) is not a file nst's "
            f"catalogue pins ({pinned}); refused. Fix: {_install_hint(entry)}, or import it as your own with "
            f"nst-models add {path} --name NAME.")
    return path, file


def _import(foreign: Any, entry: CatalogEntry, file: CatalogFile, source: Path, staging: Path, *,
            origin: Mapping[str, Any]) -> CachedModel:
    opts = entry.import_options
    styles = entry.styles if opts.get("style_input") else ()
    options = foreign.ForeignImport(
        input_range=tuple(float(v) for v in opts.get("input_range", (0, 255))),
        output_range=tuple(float(v) for v in opts.get("output_range", (0, 255))),
        fixed_size=bool(opts.get("fixed_size", False)), style_input=opts.get("style_input"),
        style_names=tuple(styles))
    extra = {"catalog": entry.name, "title": entry.title, "publisher": entry.source_title(),
             "license": entry.license, **({"license_url": entry.license_url} if entry.license_url else {}),
             **dict(origin), "pinned_sha256": file.sha256, "pinned_bytes": file.bytes,
             **({"pinned_from": entry.source_info["pinned_from"]} if "pinned_from" in entry.source_info else {})}
    return _run_import(foreign, source, staging, entry.name, options, extra, record={
        "name": entry.name, "title": entry.title, "kind": "catalogue", "source": _source_text(entry),
        "license": entry.license, "license_note": entry.license_note, "styles": list(entry.styles or (entry.name,)),
        "sha256": file.sha256, "bytes": file.bytes, "opset": file.opset, **dict(origin)})


def _run_import(foreign: Any, source: Path, staging: Path, name: str, options: Any, extra: Mapping[str, Any], *,
                record: dict[str, Any]) -> CachedModel:
    log.info("importing %s (parity gate, FP16): this takes a few seconds", source.name)
    result = foreign.onnx_from_foreign(source, staging / f"{name}.onnx", fp16_out=staging / f"{name}.fp16.onnx",
                                       options=options, source_extra=extra)
    fp16 = result.fp16_parity
    record = {**record, "added_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "parity_fp16_min_psnr_db": getattr(fp16, "min_psnr_db", None) if fp16 is not None else None}
    _write_json(staging / ENTRY_FILE, record)
    return CachedModel(name, staging, record)


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


# ------------------------------------------------------------------------------------------------ adding
def add_model(file: str | os.PathLike[str], name: str, *, force: bool = False, license: str | None = None,
              input_range: tuple[float, float] | None = None, output_range: tuple[float, float] | None = None,
              style_input: str | None = None, style_names: Sequence[str] = (),
              home: str | os.PathLike[str] | None = None) -> CachedModel:
    """Register ``file`` in the cache as ``name``.

    * ``name`` is a catalogue name: ``file`` must be one of the entry's pinned files (what ``nst-models pull``
      would download, fetched by other means); it is imported exactly as a pull would.
    * ``file`` is an nst artifact (an ``.onnx`` file with its sidecar, e.g. from ``nst-export``): it is copied,
      with its FP16 and tiling graphs where they lie beside it, after its hash is verified.
    * otherwise ``file`` is a foreign ONNX style network, imported with the given value ranges and style input.
    """
    from ..artifact import file_sha256, open_artifact
    from ..sidecar import sidecar_path

    source = Path(file)
    if not NAME_RE.match(name):
        raise UsageError(f"--name {name!r}: expected letters, digits, '.', '_' or '-' (at most 64, starting with a "
                         "letter or digit), e.g. --name my-style.")
    if not source.is_file():
        raise UsageError(f"{source}: no such file.")
    if source.suffix.lower() != ".onnx":
        raise UsageError(f"{source}: expected an .onnx file (engines are built per GPU: nst-export builds them from "
                         "the ONNX file).")
    root = models_root(home)
    catalog = load_catalog()
    entry = catalog.get(name)
    existing = cached_model(name, home=home)
    if existing is not None and not force:
        raise UsageError(f"{name} is in the cache already ({existing.folder}). Fix: --force replaces it, or "
                         f"nst-models remove {name}.")
    custom = any(v is not None for v in (license, input_range, output_range, style_input)) or bool(style_names)
    if entry is not None:
        sha = file_sha256(source)
        pinned = entry.file_with_sha256(sha)
        if pinned is None:
            expected = ", ".join(f.sha256 for f in entry.files)
            raise ModelFileError(f"{source}: sha256 {sha} is none of the files nst's catalogue pins for {entry.name} "
                                 f"({expected}); refused. Fix: fetch {entry.files[0].url or 'the pinned file'}, or "
                                 "add your own network under another --name.")
        if custom:
            raise UsageError(f"{entry.name} is a catalogue model: its licence, value ranges and styles come from the "
                             "catalogue; drop --license/--input-range/--output-range/--style-input/--style-names.")
        foreign = _export_stage(f"nst-models add {source.name}")
        with _staging(root, entry.name) as staging:
            origin = {"url": pinned.url} if pinned.url else {"package_file": str(source.resolve())}
            model = _import(foreign, entry, pinned, source, staging, origin={**origin, "added_from": str(source)})
            return _publish(staging, root, model, force=force)
    if sidecar_path(source).is_file():
        artifact = open_artifact(source, verify_hash=True)
        meta = artifact.sidecar
        styles = list(meta.style.names) if meta.style is not None else [name]
        with _staging(root, name) as staging:
            stem = source.name[: -len(".onnx")]
            for suffix in _MODEL_FILES:
                src = source.with_name(stem + suffix)
                if src.is_file() and sidecar_path(src).is_file():
                    shutil.copyfile(src, staging / f"{name}{suffix}")
                    shutil.copyfile(sidecar_path(src), sidecar_path(staging / f"{name}{suffix}"))
            if meta.adain is not None:  # its sidecar names the style graph: copied under that exact name
                graph = _style_graph_of(source, meta.adain.style_graph, taken={p.name for p in staging.iterdir()})
                shutil.copyfile(graph, staging / graph.name)
                shutil.copyfile(sidecar_path(graph), sidecar_path(staging / graph.name))
            sha = meta.source.get("sha256") if meta.source else None
            record = {"name": name, "title": name, "kind": "added", "source": f"nst artifact {source.name}",
                      "license": license or meta.source.get("license", "unknown"), "styles": styles,
                      "sha256": sha or meta.artifact_sha256, "bytes": source.stat().st_size,
                      "file": str(source.resolve()),
                      "added_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
            _write_json(staging / ENTRY_FILE, record)
            return _publish(staging, root, CachedModel(name, staging, record), force=force)
    foreign = _export_stage(f"nst-models add {source.name}")
    options = foreign.ForeignImport(input_range=input_range or (0.0, 255.0), output_range=output_range or (0.0, 255.0),
                                    style_input=style_input, style_names=tuple(style_names))
    sha = file_sha256(source)
    extra = {"catalog": name, "publisher": "added by hand", "license": license or "unknown",
             "added_from": str(source.resolve())}
    with _staging(root, name) as staging:
        model = _run_import(foreign, source, staging, name, options, extra, record={
            "name": name, "title": name, "kind": "added", "source": f"added by hand ({source.name})",
            "license": license or "unknown", "styles": list(style_names) or [name], "sha256": sha,
            "bytes": source.stat().st_size, "file": str(source.resolve())})
        if style_input and not style_names:  # the import numbered the styles: the record lists those names
            from ..sidecar import read_sidecar

            meta = read_sidecar(model.artifact)
            model.record["styles"] = list(meta.style.names) if meta.style else [name]
            _write_json(staging / ENTRY_FILE, model.record)
        return _publish(staging, root, model, force=force)


def _style_graph_of(model: Path, style_graph: str, *, taken: set[str]) -> Path:
    """An AdaIN model's style graph beside ``model``, checked like the model (sidecar, role, hash); its name
    must be a bare file name that no other file of the model takes."""
    from ..artifact import open_artifact

    if (not style_graph or style_graph in (".", "..") or Path(style_graph).name != style_graph
            or "\\" in style_graph or style_graph in taken or not style_graph.lower().endswith(".onnx")):
        raise ModelFileError(f"{model}: its sidecar names the style graph {style_graph!r}; expected a bare .onnx "
                             "file name beside the model. Fix: re-export the AdaIN checkpoint with nst-export.")
    graph = model.with_name(style_graph)
    if not graph.is_file():
        raise ModelFileError(f"{model}: its style graph {style_graph} is not beside it; an AdaIN model is two files "
                             "(NAME.onnx and NAME.style.onnx, with sidecars). Fix: add from the folder that holds "
                             "both.")
    return open_artifact(graph, verify_hash=True, role="adain-style").path


def remove_model(name: str, *, home: str | os.PathLike[str] | None = None) -> Path:
    """Delete cached model ``name``; returns its folder. The folder is first renamed out of the way, so a
    reader never sees half of it."""
    model = cached_model(name, home=home)
    if model is None:
        raise UsageError(f"{name}: not in the cache ({models_root(home)}); nst-models list shows what is.")
    trash = Path(tempfile.mkdtemp(prefix=f"{_TRASH}{model.name}-", dir=model.folder.parent))
    os.replace(model.folder, trash / model.name)
    shutil.rmtree(trash, ignore_errors=True)
    return model.folder


# ------------------------------------------------------------------------------------------------ staging
@contextlib.contextmanager
def _staging(root: Path, name: str):  # type: ignore[no-untyped-def]
    """A hidden folder beside the final one for one pull or add; removed on any exit unless published."""
    root.mkdir(parents=True, exist_ok=True)
    _sweep(root)
    staging = Path(tempfile.mkdtemp(prefix=f"{_STAGING}{name}-{os.getpid()}-", dir=root))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _publish(staging: Path, root: Path, model: CachedModel, *, force: bool) -> CachedModel:
    """Rename the staging folder to ``root/NAME``; an existing folder is moved aside first (``force``)."""
    final = root / model.name
    trash: Path | None = None
    if final.exists():
        if not force:
            raise UsageError(f"{model.name} is in the cache already ({final}); --force replaces it.")
        trash = Path(tempfile.mkdtemp(prefix=f"{_TRASH}{model.name}-", dir=root))
        os.replace(final, trash / model.name)
    try:
        os.replace(staging, final)
    except OSError:
        if trash is not None:  # put the previous one back
            os.replace(trash / model.name, final)
        raise
    finally:
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
    log.info("%s: %s", model.name, final)
    return CachedModel(model.name, final, model.record)


def _sweep(root: Path) -> None:
    """Remove staging folders of processes that no longer run (killed outright), and leftover trash."""
    for p in root.iterdir():
        if p.name.startswith(_TRASH):
            shutil.rmtree(p, ignore_errors=True)
        elif p.name.startswith(_STAGING):
            pid = p.name[len(_STAGING):].rsplit("-", 2)[-2] if p.name.count("-") >= 3 else ""
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(p, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True
