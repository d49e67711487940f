"""``nst-export``: checkpoint -> ONNX (FP32, FP16) -> parity gate -> TensorRT engine -> Triton repository.

Only click and ``nst_runtime`` are imported here at module level, so ``nst-export --help`` works on a
runtime-only install; torch, onnx and TensorRT are imported when the export runs.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from nst_runtime.devices import Device
from nst_runtime.errors import BackendUnavailableError, CheckpointError, NstError, UsageError, write_error
from nst_runtime.options import (
    device_option,
    nst_command,
    output_option,
    run_command,
    setup_logging,
    use_only_gpu,
    verbosity_options,
)
from nst_runtime.outputs import refuse_replacing_inputs
from nst_runtime.sidecar import ShapeProfile, read_sidecar, sidecar_path

log = logging.getLogger("nst_export.cli")

# The library's defaults, repeated here so that --help needs no torch (tests/export/test_cli.py pins them to
# the library's values).
DEFAULT_OPSET, MIN_OPSET, MAX_OPSET = 18, 18, 24
DEFAULT_SHAPES = {"min": (1, 8, 8), "opt": (1, 1080, 1920), "max": (1, 2160, 3840)}
DEFAULT_OPTIMIZATION_LEVEL = 3
DEFAULT_FP32_TOL, DEFAULT_FP16_MIN_PSNR = 1, 40.0
DEFAULT_INT8_MIN_PSNR, DEFAULT_CALIBRATION_METHOD = 35.0, "percentile"

EPILOG = """\
examples:
  nst-export mosaic.pth --onnx-only
      FP32 ONNX only: out/mosaic.onnx (+ .json sidecar), parity-checked against PyTorch.
  nst-export mosaic.pth --fp16 --onnx-only -o models
      adds models/mosaic.fp16.onnx (convolutions FP16, InstanceNorm FP32), for ONNX Runtime CUDA / TensorRT 11.
  nst-export mosaic.pth --fp16
      on a GPU machine with TensorRT: also builds out/mosaic.fp16.engine (+ .json) for this GPU.
  nst-export mosaic.pth --fp16 --device cuda:1
      the same, built on (and for) the second GPU.
  nst-export mosaic.pth --fp16 --max-shape 8x1080x1920 --timing-cache trt.cache --triton-repo repo
      batches up to 8 at 1080p, tactic timings reused between builds, and a Triton model repository
      repo/mosaic/{config.pbtxt,1/model.plan}.
  nst-export saved_models/udnie.pth --name udnie --fp16 --version-compatible
      a pytorch/examples fast_neural_style checkpoint; an engine that embeds TensorRT's lean runtime and so
      runs on later TensorRT releases of the same major version (load it with --allow-engine-host-code).
  nst export mosaic.pth --onnx-only
      the same command through the nst group.
  nst-export mosaic.pth --onnx-only --int8 --calibration-dir photos/
      adds out/mosaic.int8.onnx: convolutions in INT8 (QDQ), calibrated on the photos in photos/ (32 at
      most, every 5th held out), written only if the held-out photos keep --int8-min-psnr against PyTorch
      FP32 on ONNX Runtime (and on OpenVINO where it is installed). Fastest on CPUs with OpenVINO:
      nst-stylize out/mosaic.int8.onnx ...
  nst-export mosaic-9.onnx --fp16 --onnx-only
      import an ONNX style network from elsewhere (the ONNX Model Zoo's: opset 8/9, fixed 1x3x224x224, float
      0..255): the uint8 NHWC contract by graph composition, sizes made dynamic where the graph allows, FP16,
      parity against the original file. A graph with sizes baked in is refused with the reason; --fixed-size
      makes an artifact that resizes to the network's size and back instead.
  nst-export multistyle.onnx --input-range 0,1 --output-range 0,1 --style-input style_weights
          --style-names candy,mosaic,udnie --fp16 --onnx-only
      a multi-style network (PyTorch export taking 0..1, ending in a Sigmoid, second input style_weights[3]):
      one artifact with every style; parity-gated for the first, the last and a blend. Then
      nst-stylize out/multistyle.onnx photo.jpg -o x.jpg --style mosaic   (or --style "0:0.5,2:0.5")
  nst-export multistyle.onnx --input-range 0,1 --output-range 0,1 --bind style_weights=0,1,0 --name mosaic
      the same network with one style fixed: a plain one-style artifact

Exit 6 (TensorRT or a GPU missing) comes after the ONNX files were written and checked; pass --onnx-only
to make stopping after them a success. A file that fails the parity gate (exit 5) is not written.
"""

EXIT_CODES = (3, 5, 9)


class RangeType(click.ParamType):
    """``LOW,HIGH`` → ``(LOW, HIGH)`` floats with HIGH > LOW."""

    name = "range"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[float, float]:
        if isinstance(value, tuple):
            return value
        try:
            low, high = (float(v) for v in str(value).split(","))
        except ValueError:
            self.fail(f"{value!r}: expected LOW,HIGH, e.g. 0,255 or 0,1", param, ctx)
        if not high > low:
            self.fail(f"{value!r}: HIGH must be greater than LOW", param, ctx)
        return (low, high)


class BindType(click.ParamType):
    """``NAME=v1,v2,...`` → ``(NAME, (v1, v2, ...))``: a foreign graph's extra input fixed to constants."""

    name = "bind"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> tuple[str, tuple[float, ...]]:
        if isinstance(value, tuple):
            return value
        name, sep, values = str(value).partition("=")
        try:
            numbers = tuple(float(v) for v in values.split(",")) if sep and values.strip() else ()
        except ValueError:
            numbers = ()
        if not name.strip() or not numbers:
            self.fail(f"{value!r}: expected NAME=v1,v2,... (an input of the graph and its values), e.g. "
                      "style_weights=0,0,1,0", param, ctx)
        return name.strip(), numbers


class ShapeType(click.ParamType):
    """``NxHxW`` → ``(N, H, W)``, parsed by the exporter's own :func:`parse_shape`."""

    name = "shape"

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "NxHxW"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[int, int, int]:
        if isinstance(value, tuple):
            return value
        from .tensorrt_engine import parse_shape

        try:
            return parse_shape(str(value), option=param.name.replace("_", "-") if param and param.name else "shape")
        except UsageError as exc:
            self.fail(str(exc), param, ctx)


def _shape_option(label: str) -> Any:
    default = DEFAULT_SHAPES[label]
    return click.option(f"--{label}-shape", type=ShapeType(), default=default,
                        help=f"{label} input shape of the TensorRT optimization profile (default: "
                             f"{'x'.join(map(str, default))})")


@nst_command(
    "nst-export", exit_codes=EXIT_CODES, extra="export", epilog=EPILOG,
    short_help="Checkpoint -> ONNX (FP32, FP16) -> TensorRT engine, each parity-checked.",
    help="Export a TransformerNet checkpoint for deployment: ONNX with a uint8 NHWC RGB contract (dynamic "
         "batch/height/width), an optional FP16 ONNX, a parity gate against PyTorch FP32 on every file, a "
         "TensorRT engine where TensorRT and a GPU exist, JSON sidecars, and a Triton model repository.\n\n"
         "CHECKPOINT: an nst checkpoint (.pth/.safetensors), a pytorch/examples fast_neural_style state dict, "
         "or an ONNX style network from elsewhere (.onnx), which is imported (docs/export.md).")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@output_option("output folder", default="out", old_names=("--out-dir",))
@click.option("--fp16", is_flag=True, help="also write NAME.fp16.onnx and build the engine from it "
              "(convolutions FP16, InstanceNorm and I/O FP32)")
@click.option("--name", help="base name of the files (default: the checkpoint's file name stem)")
@click.option("--opset", type=int, default=DEFAULT_OPSET, show_default=True,
              help=f"ONNX opset, {MIN_OPSET}..{MAX_OPSET} (see docs/export.md)")
@click.option("--no-tiling-graph", "no_tiling_graph", is_flag=True,
              help="skip NAME.tiling.onnx, the graph the runtime uses to stylize images larger than the engine's "
                   "profile in tiles with whole-image InstanceNorm statistics (without it, such images fall back "
                   "to blended tiles with visible tone shifts)")
@click.option("--onnx-only", is_flag=True, help="stop after the ONNX files (success without TensorRT)")
@device_option("the GPU to build the TensorRT engine on (and for): auto or cuda (GPU 0), cuda:N; cpu only with "
               "--onnx-only")
@_shape_option("min")
@_shape_option("opt")
@_shape_option("max")
@click.option("--timing-cache", type=click.Path(path_type=Path), metavar="PATH",
              help="load tactic timings from PATH if it exists, save them there after the build")
@click.option("--version-compatible", is_flag=True,
              help="embed TensorRT's lean runtime in the engine: it runs on this TensorRT release and every later "
                   "one of the same major version, so it survives an upgrade. Loading it runs that embedded code "
                   "(nst-stylize --allow-engine-host-code; Triton: --backend-config=tensorrt,version-compatible=true)")
@click.option("--exclude-lean-runtime", is_flag=True,
              help="with --version-compatible: leave the lean runtime out of the plan (smaller file); the engine "
                   "then runs only with the lean runtime of this very TensorRT version, not after an upgrade")
@click.option("--builder-opt-level", type=click.IntRange(0, 5), default=DEFAULT_OPTIMIZATION_LEVEL,
              show_default=True, metavar="N", help="TensorRT builder optimization level 0..5")
@click.option("--workspace-gib", type=click.FloatRange(min=0, min_open=True), metavar="GIB",
              help="limit the builder's workspace memory pool")
@click.option("--fp32-tol", type=int, default=DEFAULT_FP32_TOL, show_default=True, metavar="L",
              help="parity gate: max |difference| in uint8 levels for the FP32 ONNX")
@click.option("--fp16-min-psnr", type=float, default=DEFAULT_FP16_MIN_PSNR, show_default=True, metavar="DB",
              help="parity gate: minimum PSNR in dB for the FP16 ONNX")
@click.option("--int8", is_flag=True,
              help="also write NAME.int8.onnx: convolutions INT8 (QDQ, per-channel weights), InstanceNorm and I/O "
                   "float, calibrated on --calibration-dir; for CPUs (OpenVINO, ONNX Runtime)")
@click.option("--calibration-dir", type=click.Path(path_type=Path), metavar="DIR",
              help="--int8: photos like the ones you will stylize (at least 3; up to 32 calibrate, every 5th is "
                   "held out for the quality gate)")
@click.option("--calibration-method", type=click.Choice(("percentile", "entropy", "minmax")),
              default=DEFAULT_CALIBRATION_METHOD, show_default=True, help="--int8: how activation ranges are set")
@click.option("--int8-min-psnr", type=click.FloatRange(min=0, min_open=True), default=DEFAULT_INT8_MIN_PSNR,
              show_default=True, metavar="DB",
              help="--int8 quality gate: minimum PSNR in dB of every held-out photo against PyTorch FP32")
@click.option("--triton-repo", type=click.Path(path_type=Path), metavar="DIR",
              help="also write DIR/NAME/config.pbtxt with 1/model.plan (or 1/model.onnx with --onnx-only)")
@click.option("--fixed-size", is_flag=True,
              help="foreign ONNX whose size is baked in: resize every image to the network's size and back")
@click.option("--input-range", type=RangeType(), default="0,255", show_default=True, metavar="LOW,HIGH",
              help="foreign ONNX: the float values the network expects for black,white")
@click.option("--output-range", type=RangeType(), default="0,255", show_default=True, metavar="LOW,HIGH",
              help="foreign ONNX: the float values the network returns for black,white")
@click.option("--bind", "bind", type=BindType(), multiple=True, metavar="NAME=v1,v2,...",
              help="foreign ONNX with inputs besides the image: fix input NAME to these values (one fixed style, "
                   "a fixed style embedding); repeat for several inputs")
@click.option("--style-input", metavar="NAME",
              help="foreign ONNX: keep input NAME (style weights) as the artifact's style input: one file holds "
                   "every style, nst-stylize --style NAME|INDEX|\"I:W,J:W\" chooses or blends them")
@click.option("--style-names", metavar="n1,n2,...",
              help="--style-input: the styles' names, in order (default: their indices)")
@verbosity_options
def export(checkpoint: Path, output: Path, fp16: bool, name: str | None, opset: int, no_tiling_graph: bool,
           onnx_only: bool, device: Device, min_shape: tuple[int, int, int], opt_shape: tuple[int, int, int],
           max_shape: tuple[int, int, int], timing_cache: Path | None, version_compatible: bool,
           exclude_lean_runtime: bool, builder_opt_level: int, workspace_gib: float | None, fp32_tol: int,
           fp16_min_psnr: float,
           triton_repo: Path | None, quiet: bool, verbose: int, fixed_size: bool = False,
           input_range: tuple[float, float] = (0.0, 255.0), output_range: tuple[float, float] = (0.0, 255.0),
           int8: bool = False, calibration_dir: Path | None = None,
           calibration_method: str = DEFAULT_CALIBRATION_METHOD,
           int8_min_psnr: float = DEFAULT_INT8_MIN_PSNR, bind: tuple[tuple[str, tuple[float, ...]], ...] = (),
           style_input: str | None = None, style_names: str | None = None) -> int:
    setup_logging("nst-export", verbose=verbose, quiet=quiet, default=logging.INFO)
    if (bind or style_input or style_names) and checkpoint.suffix.lower() != ".onnx":
        raise UsageError("--bind, --style-input and --style-names import a foreign ONNX file's extra inputs; "
                         f"{checkpoint} is a checkpoint (its styles come from training: nst-train --style a.jpg b.jpg).")
    if len({name for name, _ in bind}) != len(bind):
        raise UsageError("--bind names the same input twice; give each input once.")
    if int8 and calibration_dir is None:
        raise UsageError("--int8 needs --calibration-dir DIR: a folder of photos like the ones you will stylize "
                         "(at least 3). INT8 ranges are measured on them; nst never calibrates on generated "
                         "images.")
    if calibration_dir is not None and not int8:
        raise UsageError("--calibration-dir is for --int8; add --int8 (or drop --calibration-dir).")
    if exclude_lean_runtime and not version_compatible:
        raise UsageError("--exclude-lean-runtime only applies to version-compatible engines. Fix: add "
                         "--version-compatible, or drop --exclude-lean-runtime.")
    if device.kind == "cpu" and not onnx_only:
        raise UsageError("--device cpu: TensorRT builds engines on a GPU. Fix: add --onnx-only (the ONNX files "
                         "are built and checked on the CPU anyway), or choose --device cuda:N.")
    if device.kind == "cuda" and not onnx_only:
        use_only_gpu(device.gpu_index)
    options = ExportOptions(
        checkpoint=checkpoint, out_dir=output, fp16=fp16, name=name, opset=opset,
        tiling_graph=not no_tiling_graph, onnx_only=onnx_only,
        profile=ShapeProfile(min=min_shape, opt=opt_shape, max=max_shape), timing_cache=timing_cache,
        version_compatible=version_compatible, exclude_lean_runtime=exclude_lean_runtime,
        builder_opt_level=builder_opt_level, workspace_gib=workspace_gib, fp32_tol=fp32_tol, fp16_min_psnr=fp16_min_psnr, triton_repo=triton_repo,
        fixed_size=fixed_size, input_range=input_range, output_range=output_range,
        int8=int8, calibration_dir=calibration_dir, calibration_method=calibration_method,
        int8_min_psnr=int8_min_psnr, bind=dict(bind), style_input=style_input,
        style_names=tuple(n.strip() for n in style_names.split(",")) if style_names else (),
    )
    check_source(checkpoint)
    refuse_replacing_inputs([checkpoint], planned_outputs(options),
                            fix="choose another -o folder or another --name")
    try:
        written = run_foreign(options) if checkpoint.suffix.lower() == ".onnx" else run(options)
    except NstError as exc:
        exc.args = (public_message(str(exc)), *exc.args[1:])
        raise
    except OSError as exc:  # a write outside the guarded ONNX saves (sidecar, Triton repo, engine)
        raise write_error(public_message(str(exc.filename)) if exc.filename else output, exc) from exc
    except KeyboardInterrupt:
        print("nst-export: interrupted; no partial files were left behind.", file=sys.stderr)
        return 130
    click.echo(summary_table(written))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``nst-export``: returns the process exit code."""
    return run_command(export, argv, prog="nst-export")


def check_source(path: Path) -> None:
    """One line for a source that is not a checkpoint file at all (before torch is even asked)."""
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; expected a checkpoint file (.pth or .safetensors), e.g. "
                              f"nst-export {path / 'model.pth'}.")
    if path.suffix.lower() == ".onnx" and _foreign_importer() is None:
        raise CheckpointError(f"{path} is an ONNX file, not a checkpoint: nst-export starts from a trained "
                              "checkpoint (.pth or .safetensors). An ONNX file that nst-export wrote runs as it "
                              "is: nst-stylize MODEL.onnx INPUT -o OUTPUT.")


def _foreign_importer() -> Callable[[ExportOptions], list[Path]] | None:
    """:func:`import_foreign` where the importer (``nst_export.foreign``) is installed: it turns a foreign ONNX
    style network into nst artifacts under ``options.out_dir`` and returns what it wrote."""
    try:
        from . import foreign  # noqa: F401
    except ImportError:
        return None
    return import_foreign


def import_foreign(options: ExportOptions) -> list[Path]:
    """``nst-export FOREIGN.onnx``: the import (FP32, FP16), INT8 from the imported FP32 file (gated against it
    on ONNX Runtime: there is no PyTorch model), then the same engine and Triton steps as a checkpoint's export."""
    from .foreign import ForeignImport, onnx_from_foreign
    from .parity import ParityTolerance
    from .tensorrt_engine import validate_profile

    try:
        tolerance = ParityTolerance(fp32_max_abs_levels=options.fp32_tol, fp16_min_psnr_db=options.fp16_min_psnr)
    except ValueError as exc:
        raise UsageError(f"parity tolerance: {exc}.") from exc
    if not options.onnx_only:
        validate_profile(options.profile)  # fail on bad shapes before the import, not after
    if options.int8 and options.style_input:
        raise UsageError(f"--int8: {options.checkpoint} keeps a style input (--style-input {options.style_input}); "
                         "INT8 calibration of a multi-style network is not implemented. Fix: import it without "
                         "--int8 (FP32/FP16), or --bind its style input to one style.")
    name = options.name or options.checkpoint.stem
    out_dir = options.out_dir
    imported = onnx_from_foreign(
        options.checkpoint, out_dir / f"{name}.onnx",
        fp16_out=out_dir / f"{name}.fp16.onnx" if options.fp16 else None, tolerance=tolerance,
        options=ForeignImport(input_range=options.input_range, output_range=options.output_range,
                              fixed_size=options.fixed_size, opset=options.opset, bind=dict(options.bind),
                              style_input=options.style_input, style_names=options.style_names,
                              require_tensorrt=not options.onnx_only))
    written = [imported.fp32] + ([imported.fp16] if imported.fp16 is not None else [])
    if options.int8:
        from .int8 import Int8Options, int8_onnx_from_onnx

        log.info("INT8 ONNX (QDQ), calibrated on %s, gated against %s", options.calibration_dir, imported.fp32)
        written.append(int8_onnx_from_onnx(
            imported.fp32, out_dir / f"{name}.int8.onnx", calibration_dir=options.calibration_dir,
            options=Int8Options(method=options.calibration_method,  # type: ignore[arg-type]
                                min_psnr_db=options.int8_min_psnr)))
    deploy = imported.fp16 if imported.fp16 is not None else imported.fp32
    return after_onnx(options, written, deploy, name=name)


def run_foreign(options: ExportOptions) -> list[Path]:
    importer = _foreign_importer()
    if importer is None:  # check_source refused it already; kept for callers of run_foreign
        raise CheckpointError(f"{options.checkpoint} is an ONNX file, not a checkpoint.")
    return importer(options)


def planned_outputs(options: ExportOptions) -> list[Path]:
    """Every file this export may write (artifacts and their sidecars)."""
    name = options.name or options.checkpoint.stem
    names = [f"{name}.onnx"] + ([f"{name}.fp16.onnx"] if options.fp16 else [])
    names += [f"{name}.int8.onnx"] if options.int8 else []
    names += [f"{name}.tiling.onnx"] if options.tiling_graph else []
    names += [f"{name}.style.onnx"]  # an AdaIN checkpoint's style graph
    names += [] if options.onnx_only else [f"{name}.{'fp16' if options.fp16 else 'fp32'}.engine"]
    files = [options.out_dir / n for n in names]
    return [p for f in files for p in (f, sidecar_path(f))]


_TEMP_NAME = re.compile(r"(^|[\s/'\"(])\.([^/\s'\"]+?)\.\d+\.tmp\b")


def public_message(text: str) -> str:
    """``text`` with the exporter's hidden temp names (``.NAME.PID.tmp``) replaced by the file they become:
    the user never sees, and cannot find, the temp file."""
    return _TEMP_NAME.sub(r"\1\2", text)


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def summary_table(paths: Sequence[Path]) -> str:
    """One row per artifact: file, size, kind/precision, parity numbers, engine build time."""
    rows = [("file", "size", "kind", "max |diff|", "min PSNR", "build")]
    for path in paths:
        meta = read_sidecar(path)
        parity = meta.parity or {}
        psnr = parity.get("min_psnr_db")
        rows.append((
            str(path), _human(path.stat().st_size), f"{meta.kind} {meta.precision}",
            f"{parity['max_abs_levels']} lvl" if "max_abs_levels" in parity else "-",
            ("identical" if psnr is None else f"{psnr:.1f} dB") if parity else "-",
            f"{meta.build_time_s:.1f} s" if meta.build_time_s is not None else "-",
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


@dataclass(frozen=True)
class ExportOptions:
    """What one ``nst-export`` run does (the command line, typed)."""

    checkpoint: Path
    out_dir: Path = Path("out")
    fp16: bool = False
    name: str | None = None
    opset: int = DEFAULT_OPSET
    tiling_graph: bool = True
    onnx_only: bool = False
    profile: ShapeProfile = field(default_factory=lambda: ShapeProfile(**DEFAULT_SHAPES))
    timing_cache: Path | None = None
    version_compatible: bool = False
    #: with version_compatible: leave the lean runtime out (runs only with the building TensorRT version)
    exclude_lean_runtime: bool = False
    builder_opt_level: int = DEFAULT_OPTIMIZATION_LEVEL
    workspace_gib: float | None = None
    fp32_tol: int = DEFAULT_FP32_TOL
    fp16_min_psnr: float = DEFAULT_FP16_MIN_PSNR
    triton_repo: Path | None = None
    #: foreign ONNX import (nst_export.foreign): a resize-in/out artifact for fixed sizes, the value ranges
    fixed_size: bool = False
    input_range: tuple[float, float] = (0.0, 255.0)
    output_range: tuple[float, float] = (0.0, 255.0)
    #: NAME.int8.onnx (nst_export.int8), calibrated on the photos of calibration_dir
    int8: bool = False
    calibration_dir: Path | None = None
    calibration_method: str = DEFAULT_CALIBRATION_METHOD
    int8_min_psnr: float = DEFAULT_INT8_MIN_PSNR
    #: foreign ONNX with inputs besides the image: constants (name -> values), or the kept style input
    bind: dict[str, tuple[float, ...]] = field(default_factory=dict)
    style_input: str | None = None
    style_names: tuple[str, ...] = ()


def run(args: ExportOptions) -> list[Path]:
    """The export itself, step by step; returns the artifacts written. Raises NstError subclasses."""
    from .fp16 import fp16_onnx_from_onnx
    from .onnx_export import onnx_from_checkpoint
    from .parity import ParityTolerance
    from .tensorrt_engine import validate_profile

    try:
        tolerance = ParityTolerance(fp32_max_abs_levels=args.fp32_tol, fp16_min_psnr_db=args.fp16_min_psnr)
    except ValueError as exc:
        raise UsageError(f"parity tolerance: {exc}.") from exc
    profile = args.profile
    if not args.onnx_only:
        validate_profile(profile)  # fail on bad shapes before minutes of export, not after
    name = args.name or args.checkpoint.stem
    out_dir: Path = args.out_dir
    from nst_train.adain import is_adain_checkpoint
    from nst_train.checkpoint import load_checkpoint

    try:  # read once: every step below gets the loaded checkpoint
        ckpt = load_checkpoint(args.checkpoint)
    except CheckpointError:
        if is_adain_checkpoint(args.checkpoint):
            return run_adain(args, tolerance=tolerance)
        raise
    styles = ckpt.shape.styles
    if styles > 1 and args.int8:
        raise UsageError(f"--int8: {args.checkpoint} is a multi-style network ({styles} styles); its INT8 "
                         "calibration is not implemented. Fix: export it without --int8 (FP32/FP16).")
    if styles > 1 and args.tiling_graph:
        log.info("no tiling graph for a multi-style network: its large images run in feathered tiles")
        args = dataclasses.replace(args, tiling_graph=False)
    steps = ["FP32 ONNX + parity"] + (["FP16 ONNX + parity"] if args.fp16 else [])
    steps += ["INT8 ONNX + calibration + gate"] if args.int8 else []
    steps += ["tiling ONNX + check"] if args.tiling_graph else []
    steps += [] if args.onnx_only else ["TensorRT engine"]
    steps += ["Triton repository"] if args.triton_repo else []
    written: list[Path] = []
    step = 0

    def begin(what: str) -> float:
        nonlocal step
        step += 1
        log.info("[%d/%d] %s", step, len(steps), what)
        return time.perf_counter()

    def done(t0: float, path: Path) -> None:
        log.info("      -> %s (%.1f s)", path, time.perf_counter() - t0)

    t0 = begin(f"FP32 ONNX from {args.checkpoint}")
    onnx32 = onnx_from_checkpoint(ckpt, out_dir / f"{name}.onnx", opset=args.opset, tolerance=tolerance)
    written.append(onnx32)
    done(t0, onnx32)
    deploy_onnx = onnx32
    if args.fp16:
        t0 = begin("FP16 ONNX (InstanceNorm and I/O FP32)")
        deploy_onnx = fp16_onnx_from_onnx(onnx32, out_dir / f"{name}.fp16.onnx", checkpoint=ckpt,
                                          tolerance=tolerance)
        written.append(deploy_onnx)
        done(t0, deploy_onnx)
    if args.int8:
        from .int8 import Int8Options, int8_onnx_from_onnx

        t0 = begin(f"INT8 ONNX (QDQ), calibrated on {args.calibration_dir}")
        onnx8 = int8_onnx_from_onnx(
            onnx32, out_dir / f"{name}.int8.onnx", calibration_dir=args.calibration_dir, checkpoint=ckpt,
            options=Int8Options(method=args.calibration_method,  # type: ignore[arg-type]
                                min_psnr_db=args.int8_min_psnr))
        written.append(onnx8)
        done(t0, onnx8)
    if args.tiling_graph:
        from .tiling_graph import tiling_onnx_from_checkpoint

        t0 = begin("tiling ONNX (whole-image statistics for large images)")
        tiling = tiling_onnx_from_checkpoint(ckpt, out_dir / f"{name}.tiling.onnx", opset=args.opset)
        written.append(tiling)
        done(t0, tiling)
    return after_onnx(args, written, deploy_onnx, name=name, begin=begin, done=done)


def after_onnx(args: ExportOptions, written: Sequence[Path], deploy_onnx: Path, *, name: str,
               begin: Callable[[str], float] | None = None, done: Callable[[float, Path], None] | None = None,
               ) -> list[Path]:
    """The steps after the ONNX files, one code path for a checkpoint's export, an AdaIN checkpoint's and a
    foreign import: the TensorRT engine of ``deploy_onnx`` with every engine option (unless ``--onnx-only``),
    then the Triton repository. Returns ``written`` plus the engine."""
    from .tensorrt_engine import engine_from_onnx
    from .triton import triton_repo_from_artifact

    def _begin(what: str) -> float:
        log.info("%s", what)
        return time.perf_counter()

    def _done(t0: float, path: Path) -> None:
        log.info("      -> %s (%.1f s)", path, time.perf_counter() - t0)

    begin, done = begin or _begin, done or _done
    written = list(written)
    artifact = deploy_onnx
    if not args.onnx_only:
        t0 = begin("TensorRT engine")
        precision = "fp16" if args.fp16 else "fp32"
        try:
            artifact = engine_from_onnx(
                deploy_onnx, args.out_dir / f"{name}.{precision}.engine", profile=args.profile,
                timing_cache=args.timing_cache, optimization_level=args.builder_opt_level,
                version_compatible=args.version_compatible, exclude_lean_runtime=args.exclude_lean_runtime,
                workspace_bytes=int(args.workspace_gib * (1 << 30)) if args.workspace_gib else None,
            )
        except BackendUnavailableError as exc:
            files = ", ".join(str(p) for p in written)
            raise BackendUnavailableError(
                f"stopped at the engine step: {exc} The ONNX files were written and passed their checks: "
                f"{files}."
            ) from exc
        written.append(artifact)
        done(t0, artifact)
    if args.triton_repo:
        t0 = begin(f"Triton repository {args.triton_repo}")
        config = triton_repo_from_artifact(artifact, args.triton_repo, name=name)
        done(t0, config)
    return written


def run_adain(args: ExportOptions, *, tolerance: Any) -> list[Path]:
    """An AdaIN checkpoint: the stylize graph (FP32, FP16) and the style graph (nst_export.adain_export), then the
    engine of the stylize graph where TensorRT is here."""
    from .adain_export import adain_onnx_from_checkpoint

    refused = [flag for flag, on in (("--int8", args.int8), ("--triton-repo", args.triton_repo)) if on]
    if refused:
        raise UsageError(f"{', '.join(refused)}: not implemented for an AdaIN (arbitrary-style) checkpoint. Fix: "
                         "export it without them.")
    name = args.name or args.checkpoint.stem
    log.info("[1/%d] AdaIN: stylize graph + style graph from %s", 1 if args.onnx_only else 2, args.checkpoint)
    written = adain_onnx_from_checkpoint(args.checkpoint, args.out_dir / f"{name}.onnx", opset=args.opset,
                                         fp16_out=args.out_dir / f"{name}.fp16.onnx" if args.fp16 else None,
                                         tolerance=tolerance)
    return after_onnx(args, written, written[-1], name=name)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
