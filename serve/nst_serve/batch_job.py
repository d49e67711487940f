"""``nst-stylize MODEL INPUT_DIR -o OUT_DIR --ray``: the folder job as a Ray Data pipeline.

Ray Data reads the files (any filesystem it reads: local paths, ``s3://``, ``gs://``, ``abfs://`` through
pyarrow), a pool of actors each holding one ``Stylizer`` decodes, stylizes and encodes exactly as the plain
command does (``read_image`` → ``Stylizer.stylize`` per frame → the writer's encoder), and this process
writes every output atomically under the plain command's name and appends one line to
``OUT_DIR/manifest.jsonl``::

    {"input": "photos/a.jpg", "output": "a.jpg", "bytes": 48213, "sha256": "…"}
    {"input": "photos/b.png", "error": "photos/b.png: corrupt or truncated PNG data (…)", "code": 4}

A rerun skips every input whose output the manifest verifies (the file is there, with that size and hash)
and redoes the rest, so an interrupted job resumes where it stopped. A bad image is a manifest line and a
failure at the end, never the end of the job.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nst_runtime.artifact import file_sha256
from nst_runtime.atomic import atomic_write
from nst_runtime.errors import NstError, UsageError
from nst_runtime.images import DEFAULT_MAX_PIXELS, SUFFIX_BY_FORMAT

from .resources import ActorPoolPlan, plan_actor_pool

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.jsonl"
#: image suffixes listed under an object-store prefix (local folders use nst-stylize's own listing)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm")


@dataclass(frozen=True)
class RayItem:
    """One input: where Ray Data reads it, what messages call it, and its output path without suffix."""

    source: str
    display: str
    dst_stem: Path


@dataclass(frozen=True)
class BatchJobReport:
    total: int
    written: int
    #: inputs whose output an earlier run wrote and the manifest verified
    skipped: int
    #: (input, one-line error, exit code) per failed input
    failures: tuple[tuple[str, str, int], ...]
    manifest: Path
    seconds: float
    plan: ActorPoolPlan | None = None
    outputs: tuple[Path, ...] = field(default=(), repr=False)

    @property
    def images_per_s(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0


# --------------------------------------------------------------------------------------------- listing
def is_uri(text: str | os.PathLike[str]) -> bool:
    return "://" in str(text)


def list_uri(uri: str, output: Path, *, recursive: bool) -> list[RayItem]:
    """Images under an object-store prefix (pyarrow filesystems), named like a local folder's."""
    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(uri)
    scheme = uri.split("://", 1)[0]
    infos = fs.get_file_info(pafs.FileSelector(root.rstrip("/"), recursive=recursive))
    items = []
    for info in sorted(infos, key=lambda i: i.path):
        name = info.path.rsplit("/", 1)[-1]
        if info.type != pafs.FileType.File or name.startswith(".") or Path(name).suffix.lower() not in IMAGE_SUFFIXES:
            continue
        rel = Path(info.path[len(root.rstrip("/")):].lstrip("/"))
        items.append(RayItem(f"{scheme}://{info.path}", f"{scheme}://{info.path}", output / rel.with_suffix("")))
    return items


# --------------------------------------------------------------------------------------------- manifest
def read_manifest(path: Path) -> dict[str, dict[str, Any]]:
    """The last line per input (a rerun appends; later lines win). Damaged lines (a kill mid-write) are
    skipped: their inputs are simply done again."""
    entries: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return entries
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(entry, dict) and isinstance(entry.get("input"), str):
                entries[entry["input"]] = entry
    return entries


def verified(entry: dict[str, Any] | None, output: Path) -> bool:
    """Whether ``entry`` records an output that is still there, unchanged."""
    if not entry or "output" not in entry or "sha256" not in entry:
        return False
    path = output / entry["output"]
    try:
        if not path.is_file() or path.stat().st_size != entry.get("bytes"):
            return False
        return file_sha256(path) == entry["sha256"]
    except OSError:
        return False


class _Manifest:
    """Append-only, one line per finished input, flushed and fsynced so a kill loses at most the last one."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._f = open(path, "a", encoding="utf-8")

    def add(self, entry: dict[str, Any]) -> None:
        self._f.write(json.dumps(entry, sort_keys=True) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()


# --------------------------------------------------------------------------------------------- the actors
class StylizeActor:
    """A Ray Data actor: one Stylizer, rows of encoded bytes in, rows of encoded outputs (or errors) out."""

    def __init__(self, model: str, *, device: str | int, threads: int, open_options: dict[str, Any],
                 stylize_options: dict[str, Any], format: str | None, quality: int,
                 max_pixels: int | None) -> None:
        from nst_runtime import Stylizer

        # style images (AdaIN) get the pixel limit of the inputs
        self.stylizer = Stylizer.open(model, device=device, intra_op_threads=threads,
                                      **{"max_pixels": max_pixels, **open_options})
        self.stylize_options = stylize_options
        self.format, self.quality, self.max_pixels = format, quality, max_pixels

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {"path": [], "data": [], "format": [], "error": [], "code": []}
        for data, path in zip(batch["bytes"], batch["path"], strict=True):
            encoded, fmt, error, code = self._one(bytes(data), str(path))
            for key, value in (("path", str(path)), ("data", encoded), ("format", fmt), ("error", error),
                               ("code", code)):
                out[key].append(value)
        return out

    def _one(self, data: bytes, path: str) -> tuple[bytes, str, str, int]:
        from nst_runtime.images import encode_image, output_format_for, read_image

        try:
            decoded = read_image(data, max_pixels=self.max_pixels, all_frames=True, name=path)
            frames = [self.stylizer.stylize(frame, **self.stylize_options) for frame in decoded.frames]
            fmt = output_format_for(decoded.format, self.format, animated=decoded.is_animated)
            return (encode_image(frames, format=fmt, quality=self.quality, durations=decoded.durations,
                                 loop=decoded.loop), fmt, "", 0)
        except NstError as exc:
            return b"", "", str(exc), exc.exit_code
        except Exception as exc:  # one image's failure is its own line; the actor and the job go on
            return b"", "", f"{path}: {type(exc).__name__}: {exc}", 1


# --------------------------------------------------------------------------------------------- the job
def stylize_on_ray(
    model: str | os.PathLike[str],
    items: Sequence[RayItem | tuple[str, str, Path]],
    output: str | os.PathLike[str],
    *,
    format: str | None = None,
    quality: int = 95,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    device: str = "auto",
    actors: int | None = None,
    threads: int | None = None,
    open_options: dict[str, Any] | None = None,
    stylize_options: dict[str, Any] | None = None,
    address: str | None = None,
    progress: bool = True,
    on_result: Callable[[str, Path | None, str], None] | None = None,
) -> BatchJobReport:
    """Stylize ``items`` with a Ray Data job; write outputs and ``manifest.jsonl`` under ``output``.

    Uses the Ray this process is connected to, else joins ``address``, else starts a local Ray (and stops
    it afterwards). ``on_result(input, written_path_or_None, error)`` is called for every finished input
    (for progress; raising from it stops the job, like Ctrl-C, and a rerun resumes).
    """
    import ray
    from nst_runtime.artifact import open_artifact

    start = time.perf_counter()
    output = Path(output)
    # (source, display, dst_stem) tuples too: nst-stylize --ray calls this through its registration
    items = [it if isinstance(it, RayItem) else RayItem(str(it[0]), str(it[1]), Path(it[2])) for it in items]
    manifest_path = output / MANIFEST_NAME
    open_artifact(model, verify_hash=bool((open_options or {}).get("verify_hash", True)))  # fail fast, exit 3
    check_outputs(model, items, output, format=format, style=(open_options or {}).get("style"))
    done = read_manifest(manifest_path)
    todo = [it for it in items if not verified(done.get(it.display), output)]
    skipped = len(items) - len(todo)
    if skipped:
        logger.info("%d of %d inputs already done (verified by %s); %d to do", skipped, len(items),
                    manifest_path, len(todo))
    if not todo:
        return BatchJobReport(len(items), 0, skipped, (), manifest_path, time.perf_counter() - start)

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False, include_dashboard=False)
    try:
        plan = _plan(device, actors, threads)
        written, failures, outputs = _run(model, todo, output, plan, manifest_path, format=format, quality=quality,
                                          max_pixels=max_pixels, open_options=open_options or {},
                                          stylize_options=stylize_options or {}, progress=progress,
                                          on_result=on_result, device=device)
    finally:
        if started_here:
            ray.shutdown()
    return BatchJobReport(len(items), written, skipped, tuple(failures), manifest_path,
                         time.perf_counter() - start, plan, tuple(outputs))


def check_outputs(model: str | os.PathLike[str], items: Sequence[RayItem], output: Path, *, format: str | None,
                  style: Any = None) -> None:
    """Before any work, as the plain command does: no output (nor the manifest) may replace an input, the
    model, its sidecar or a style image, and ``output`` must be a folder that can be written."""
    from nst_runtime.adain import style_image_files
    from nst_runtime.images import output_format_for
    from nst_runtime.outputs import ensure_writable_folder, refuse_replacing_inputs
    from nst_runtime.sidecar import sidecar_path

    suffixes = sorted({SUFFIX_BY_FORMAT[output_format_for(None, format)]} if format else
                      set(SUFFIX_BY_FORMAT.values()))
    refuse_replacing_inputs(
        [model, sidecar_path(model), *style_image_files(model, style),
         *(it.source for it in items if not is_uri(it.source))],
        [output / MANIFEST_NAME, *(it.dst_stem.with_name(it.dst_stem.name + s) for it in items for s in suffixes)],
        fix="choose another -o (a folder that holds no inputs, e.g. -o styled/)")
    ensure_writable_folder(output)


def _plan(device: str, actors: int | None, threads: int | None) -> ActorPoolPlan:
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    gpus = ray.cluster_resources().get("GPU", 0.0)
    if device.lower().startswith("cuda") and gpus < 1:
        raise UsageError(f"--device {device}: the Ray cluster has no GPU. Fix: --device cpu or auto.")
    return plan_actor_pool(node_cpus=[n["Resources"].get("CPU", 0.0) for n in nodes],
                           cluster_gpus=ray.cluster_resources().get("GPU", 0.0), threads=threads, actors=actors,
                           use_gpus=device.lower() != "cpu")


def _ray_key(path: str) -> str:
    """Ray Data's ``path`` column for an input: object stores drop the scheme, local paths are absolute."""
    if "://" in path:
        scheme, rest = path.split("://", 1)
        return rest if scheme != "local" else os.path.abspath(rest)
    return os.path.abspath(path)


def _run(model: str | os.PathLike[str], todo: Sequence[RayItem], output: Path, plan: ActorPoolPlan,
         manifest_path: Path, *, format: str | None, quality: int, max_pixels: int | None,
         open_options: dict[str, Any], stylize_options: dict[str, Any], progress: bool,
         on_result: Callable[[str, Path | None, str], None] | None, device: str,
         ) -> tuple[int, list[tuple[str, str, int]], list[Path]]:
    import ray.data
    from tqdm import tqdm

    by_key = {_ray_key(it.source): it for it in todo}
    ctx = ray.data.DataContext.get_current()
    saved = (ctx.enable_progress_bars, ctx.max_errored_blocks)
    ctx.enable_progress_bars = False  # ours counts inputs, as the plain command's does
    if logging.getLogger().getEffectiveLevel() > logging.INFO:  # Ray Data's own chatter only with -v
        logging.getLogger("ray.data").setLevel(logging.ERROR)
    ctx.max_errored_blocks = -1  # an unreadable file loses its block, not the job; reported as missing below
    written, failures, outputs, seen = 0, [], [], set()
    manifest = _Manifest(manifest_path)
    try:
        ds = ray.data.read_binary_files(
            [it.source for it in todo], include_paths=True, num_cpus=plan.read_cpus,
            override_num_blocks=min(len(todo), 8 * max(1, plan.actors)))
        ds = ds.map_batches(
            StylizeActor, batch_size=1, compute=ray.data.ActorPoolStrategy(size=plan.actors),
            num_cpus=plan.cpus_per_actor,
            num_gpus=plan.gpus_per_actor or None,
            fn_constructor_kwargs=dict(
                # an actor sees only its own GPU, as device 0
                model=str(Path(model).resolve()), device=0 if plan.gpus_per_actor else "cpu",
                threads=plan.threads, open_options=open_options, stylize_options=stylize_options,
                format=format, quality=quality, max_pixels=max_pixels))
        with tqdm(total=len(todo), unit="img", desc="images", disable=not progress or None) as bar:
            for row in ds.iter_rows():
                item = by_key.get(_ray_key(str(row["path"])))
                if item is None or item.display in seen:
                    continue
                seen.add(item.display)
                dst, error = _finish(item, row, output, manifest)
                if dst is not None:
                    written += 1
                    outputs.append(dst)
                else:
                    failures.append((item.display, error, int(row["code"]) or 1))
                bar.update(1)
                if on_result is not None:
                    on_result(item.display, dst, error)
        for item in todo:
            if item.display not in seen:
                error = f"{item.display}: could not be read (Ray Data dropped it; see the Ray logs)."
                manifest.add({"input": item.display, "error": error, "code": 1})
                failures.append((item.display, error, 1))
    finally:
        manifest.close()
        ctx.enable_progress_bars, ctx.max_errored_blocks = saved
    return written, failures, outputs


def _finish(item: RayItem, row: dict[str, Any], output: Path, manifest: _Manifest) -> tuple[Path | None, str]:
    """Write one output (atomically) and then its manifest line."""
    error = str(row["error"] or "")
    if error:
        # the actor named Ray's path for the file; name it as the user did, like the plain command
        error = error.replace(str(row["path"]), item.display, 1)
        manifest.add({"input": item.display, "error": error, "code": int(row["code"]) or 1})
        return None, error
    data = bytes(row["data"])
    dst = item.dst_stem.with_name(item.dst_stem.name + SUFFIX_BY_FORMAT[str(row["format"])])
    try:
        with atomic_write(dst) as f:
            f.write(data)
    except NstError as exc:
        manifest.add({"input": item.display, "error": str(exc), "code": exc.exit_code})
        return None, str(exc)
    manifest.add({"input": item.display, "output": str(dst.relative_to(output)), "bytes": len(data),
                  "sha256": hashlib.sha256(data).hexdigest()})
    return dst, ""


def stylize_folder_on_ray(
    model: str | os.PathLike[str], inputs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    output: str | os.PathLike[str], *, recursive: bool = False, **options: Any,
) -> BatchJobReport:
    """Folders (local, or object-store URIs) → :func:`stylize_on_ray` with nst-stylize's output names."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    output = Path(output)
    items: list[RayItem] = []
    local = []
    for inp in inputs:
        if is_uri(inp):
            items += list_uri(str(inp), output, recursive=recursive)
        else:
            local.append(Path(inp))
    if local:
        from nst_runtime.cli import collect_jobs
        from nst_runtime.video import is_video

        for job in collect_jobs(local, output, recursive=recursive):
            if job.exact is not None or is_video(job.src):
                raise UsageError(f"{job.src}: --ray stylizes folders of images into an output folder; run "
                                 "single files and videos without --ray.")
            items.append(RayItem(str(job.src), str(job.src), job.dst_stem))
    if not items:
        raise UsageError(f"no images found in {', '.join(map(str, inputs))}.")
    return stylize_on_ray(model, items, output, **options)
