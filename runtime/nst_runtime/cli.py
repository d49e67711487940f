"""``nst-stylize``: stylize images, folders and videos with an exported model (ONNX file or engine)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import BatchError, NstError, UsageError
from .images import (
    DEFAULT_MAX_PIXELS,
    FORMAT_BY_SUFFIX,
    SUFFIX_BY_FORMAT,
    DecodedImage,
    output_format_for,
    read_image,
    save_image,
)
from .pipeline import Stage, run_pipeline
from .video import VIDEO_SUFFIXES, is_video, stylize_video

logger = logging.getLogger("nst_runtime.cli")

EXAMPLES = """\
examples:
  nst-stylize candy.onnx photo.jpg -o photo.candy.jpg         one image (output format from the suffix)
  nst-stylize candy.onnx shots/ -o styled/ -r                 a folder tree; failures listed at the end
  nst-stylize candy.fp16.engine clip.mp4 -o styled/           a video (audio stream copied)
  nst-stylize candy.onnx huge.tif -o out/ --tile 1024         run a large image in overlapping tiles
  nst-stylize candy.onnx a.png b.png -o out/ --format webp    choose the output format
  nst-stylize candy.onnx x.jpg -o out/ --device cpu           ONNX Runtime on CPU even if a GPU exists

exit codes: 0 all done, 2 usage, 3 model file, 4 image/video (a single input that cannot be read),
            6 backend unavailable, 8 some inputs of a batch failed (the others were written), 9 output not writable
            (disk full: the previous file is kept), 1 other file system errors
"""


@dataclass(frozen=True)
class Job:
    src: Path
    #: output path without suffix for images (the suffix follows the format), full path for videos
    dst_stem: Path
    #: the exact output file (one input file with -o naming a file); its suffix chooses the format
    exact: Path | None = None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nst-stylize",
        description="Stylize images, folders and videos with a model exported by nst-export "
        "(an .onnx file, or a TensorRT .engine with its sidecar .json beside it).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", type=Path, help="model.onnx, model.fp16.onnx or model.fp16.engine (sidecar beside it)")
    p.add_argument("inputs", type=Path, nargs="+", metavar="INPUT", help="image files, folders, or videos")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="output folder; or an output file name when there is exactly one input file")
    p.add_argument("-r", "--recursive", action="store_true", help="descend into subfolders of INPUT folders")
    g = p.add_argument_group("backend")
    g.add_argument("--backend", choices=("auto", "onnxruntime", "tensorrt"), default="auto",
                   help="auto: TensorRT for engines, ONNX Runtime for ONNX files (default)")
    g.add_argument("--device", default="0", help="GPU index, or 'cpu' (ONNX Runtime only); default 0, which "
                   "falls back to CPU when ONNX Runtime has no GPU provider")
    g.add_argument("--providers", help="ONNX Runtime providers, comma-separated, e.g. CUDAExecutionProvider")
    g.add_argument("--contexts", type=int, default=2, help="TensorRT execution contexts (default 2)")
    g.add_argument("--cuda-graphs", action="store_true", help="TensorRT: capture and replay CUDA graphs")
    g.add_argument("--no-verify", action="store_true", help="skip the SHA-256 check of the model file")
    g = p.add_argument_group("images")
    g.add_argument("--tile", type=int, help="largest height/width per network call; larger images are tiled")
    g.add_argument("--tile-overlap", type=int, default=64, help="pixels shared by neighbouring tiles (default 64)")
    g.add_argument("--batch-size", type=int, default=1, help="video frames per network call (default 1)")
    g.add_argument("--format", choices=("png", "jpeg", "jpg", "webp", "bmp", "tiff", "gif"),
                   help="output image format (default: the input's where sensible, else png)")
    g.add_argument("--quality", type=int, default=95, help="JPEG/WebP quality (default 95)")
    g.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help=f"refuse larger images (decompression-bomb guard; default {DEFAULT_MAX_PIXELS}, 0: none)")
    g.add_argument("--jobs", type=int, default=2, help="decode/encode threads (default 2)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, errors only")
    return p


def _walk(folder: Path, recursive: bool) -> list[Path]:
    wanted = set(FORMAT_BY_SUFFIX) | {".ppm"} | set(VIDEO_SUFFIXES)
    files = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(f for f in files if f.is_file() and f.suffix.lower() in wanted and not f.name.startswith("."))


def collect_jobs(inputs: Sequence[Path], output: Path, *, recursive: bool) -> list[Job]:
    """Expand folders; map every input to its output path. Refuses missing inputs and name collisions."""
    single_file = len(inputs) == 1 and inputs[0].is_file() and output.suffix.lower() in (
        set(FORMAT_BY_SUFFIX) | set(VIDEO_SUFFIXES))
    if single_file:
        return [Job(inputs[0], output, exact=output)]
    jobs: list[Job] = []
    for inp in inputs:
        if inp.is_dir():
            jobs += [Job(f, output / f.relative_to(inp).with_suffix(f.suffix if is_video(f) else ""))
                     for f in _walk(inp, recursive)]
        elif inp.is_file():
            jobs.append(Job(inp, output / (inp.name if is_video(inp) else inp.stem)))
        else:
            raise UsageError(f"{inp}: no such file or folder.")
    seen: dict[Path, Path] = {}
    for job in jobs:
        if job.dst_stem in seen:
            raise UsageError(f"{job.src} and {seen[job.dst_stem]} would both write {job.dst_stem}.*. "
                             "Fix: rename one, or run them with different -o folders.")
        seen[job.dst_stem] = job.src
    return jobs


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2) if not args.quiet else logging.ERROR
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return _run(args)
    except NstError as exc:
        print(f"nst-stylize: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # a file system error nst did not wrap: still one line, no traceback
        print(f"nst-stylize: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("nst-stylize: interrupted", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .stylizer import Stylizer

    if args.batch_size < 1 or args.jobs < 1 or args.contexts < 1:
        raise UsageError("--batch-size, --jobs and --contexts must be >= 1.")
    device: int | str = "cpu" if args.device.lower() == "cpu" else _int_arg(args.device, "--device")
    max_pixels = args.max_pixels or None
    jobs = collect_jobs(args.inputs, args.output, recursive=args.recursive)
    if not jobs:
        raise UsageError(f"no images or videos found in {', '.join(map(str, args.inputs))} "
                         f"(looked for {', '.join(sorted(FORMAT_BY_SUFFIX))}, {', '.join(VIDEO_SUFFIXES)}; "
                         "add -r for subfolders).")
    providers = [p.strip() for p in args.providers.split(",")] if args.providers else None
    failures: list[tuple[Path, str]] = []
    only_error: NstError | None = None  # one input that failed with an NstError: exit with its own code
    done = 0
    with Stylizer.open(args.model, device=device, backend=args.backend, providers=providers, tile=args.tile,
                       tile_overlap=args.tile_overlap, batch_size=args.batch_size, verify_hash=not args.no_verify,
                       contexts=args.contexts, cuda_graphs=args.cuda_graphs) as stylizer:
        logger.info("model %s on %s", stylizer.path, stylizer.backend)
        image_jobs = [j for j in jobs if not is_video(j.src)]
        video_jobs = [j for j in jobs if is_video(j.src)]

        def decode(job: Job) -> tuple[Job, DecodedImage]:
            return job, read_image(job.src, max_pixels=max_pixels, all_frames=True)

        def compute(item: tuple[Job, DecodedImage]) -> tuple[Job, DecodedImage]:
            job, dec = item
            return job, DecodedImage(tuple(stylizer.stylize(f) for f in dec.frames), dec.format, dec.durations,
                                     dec.loop)

        def encode(item: tuple[Job, DecodedImage]) -> Path:
            job, dec = item
            if job.exact is not None:
                dst = job.exact
                fmt = output_format_for(None, args.format or FORMAT_BY_SUFFIX[dst.suffix.lower()])
            else:
                fmt = output_format_for(dec.format, args.format, animated=dec.is_animated)
                dst = job.dst_stem.with_name(job.dst_stem.name + SUFFIX_BY_FORMAT[fmt])
            return save_image(list(dec.frames), dst, format=fmt, quality=args.quality, durations=dec.durations, loop=dec.loop)

        stages = [Stage("decode", decode, args.jobs), Stage("stylize", compute, stylizer.parallel_calls),
                  Stage("encode", encode, args.jobs)]
        if image_jobs:
            with tqdm(total=len(image_jobs), unit="img", disable=args.quiet or None, desc="images") as bar:
                for outcome in run_pipeline(image_jobs, stages, depth=2 * args.jobs + 2):
                    if outcome.ok:
                        done += 1
                        logger.info("%s -> %s", outcome.item.src, outcome.value)
                    else:
                        failures.append((outcome.item.src, _describe(outcome.error)))
                        if isinstance(outcome.error, NstError):
                            only_error = outcome.error
                    bar.update(1)
        for job in video_jobs:
            with tqdm(unit="frame", disable=args.quiet or None, desc=job.src.name) as bar:
                try:
                    report = stylize_video(stylizer, job.src, job.dst_stem, batch_size=args.batch_size,
                                           on_frame=lambda _n: bar.update(1))
                    done += 1
                    logger.info("%s -> %s: %d frames, audio %s", job.src, report.path, report.frames, report.audio)
                    if report.skipped_packets:
                        failures.append((job.src, f"{report.skipped_packets} undecodable video packets skipped "
                                                  f"(a damaged stretch or tail); {report.frames} frames written "
                                                  f"to {report.path}"))
                except Exception as exc:  # per-file: report at the end, keep going
                    failures.append((job.src, _describe(exc)))
                    if isinstance(exc, NstError):
                        only_error = exc
    if len(jobs) == 1 and len(failures) == 1 and only_error is not None and done == 0:
        raise only_error  # a single input: its own one-line error and exit code (4 for a bad image)
    if failures:
        print(f"nst-stylize: {len(failures)} of {len(jobs)} inputs failed:", file=sys.stderr)
        for src, why in failures:
            print(f"  {why}" if why.startswith(str(src)) else f"  {src}: {why}", file=sys.stderr)
        raise BatchError(f"{len(failures)} of {len(jobs)} inputs failed or were incomplete (listed above); {done} written to "
                         f"{args.output}.")
    if not args.quiet:
        print(f"nst-stylize: {done} written to {args.output}", file=sys.stderr)
    return 0


def _int_arg(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"{name} {text!r}: expected an integer GPU index or 'cpu'.") from None


def _describe(exc: BaseException | None) -> str:
    if isinstance(exc, NstError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


if __name__ == "__main__":
    sys.exit(main())
