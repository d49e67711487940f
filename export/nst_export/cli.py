"""``nst-export``: checkpoint -> ONNX (FP32, FP16) -> parity gate -> TensorRT engine -> Triton repository."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from nst_runtime.errors import BackendUnavailableError, NstError, UsageError, write_error
from nst_runtime.sidecar import ShapeProfile, read_sidecar

log = logging.getLogger("nst_export.cli")

EPILOG = """\
examples:
  nst-export mosaic.pth --onnx-only
      FP32 ONNX only: out/mosaic.onnx (+ .json sidecar), parity-checked against PyTorch.
  nst-export mosaic.pth --fp16 --onnx-only --out-dir models
      adds models/mosaic.fp16.onnx (convolutions FP16, InstanceNorm FP32), for ONNX Runtime CUDA / TensorRT 11.
  nst-export mosaic.pth --fp16
      on a GPU machine with TensorRT: also builds out/mosaic.fp16.engine (+ .json) for this GPU.
  nst-export mosaic.pth --fp16 --max-shape 8x1080x1920 --timing-cache trt.cache --triton-repo repo
      batches up to 8 at 1080p, tactic timings reused between builds, and a Triton model repository
      repo/mosaic/{config.pbtxt,1/model.plan}.
  nst-export saved_models/udnie.pth --name udnie --fp16 --version-compatible
      a pytorch/examples fast_neural_style checkpoint; a version-compatible engine for tensorrt_lean.

exit codes:
  0 success      2 bad options      3 unreadable/foreign checkpoint or model file
  5 parity gate failed (the failing file is not written)
  6 TensorRT or a GPU is missing: the ONNX files were written and checked, the engine was not
    (pass --onnx-only to make stopping after the ONNX files a success)
  1 any other nst error
"""


def _shape(option: str):
    def parse(text: str) -> tuple[int, int, int]:
        from .tensorrt_engine import parse_shape

        try:
            return parse_shape(text, option=option)
        except UsageError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    return parse


def build_parser() -> argparse.ArgumentParser:
    from .onnx_export import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET
    from .parity import ParityTolerance
    from .tensorrt_engine import DEFAULT_OPTIMIZATION_LEVEL, DEFAULT_PROFILE

    tol = ParityTolerance()
    fmt = "x".join
    p = argparse.ArgumentParser(
        prog="nst-export",
        description="Export a TransformerNet checkpoint for deployment: ONNX with a uint8 NHWC RGB contract "
                    "(dynamic batch/height/width), an optional FP16 ONNX, a parity gate against PyTorch FP32 on "
                    "every file, a TensorRT engine where TensorRT and a GPU exist, JSON sidecars, and a "
                    "Triton model repository.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", type=Path, help="nst checkpoint (.pth/.safetensors) or a pytorch/examples "
                                                 "fast_neural_style state dict")
    p.add_argument("--fp16", action="store_true",
                   help="also write NAME.fp16.onnx and build the engine from it (convolutions FP16, "
                        "InstanceNorm and I/O FP32)")
    p.add_argument("--out-dir", type=Path, default=Path("out"), help="output folder (default: %(default)s)")
    p.add_argument("--name", help="base name of the files (default: the checkpoint's file name stem)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                   help=f"ONNX opset, {MIN_OPSET}..{MAX_OPSET} (default: %(default)s; see docs/export.md)")
    p.add_argument("--no-tiling-graph", dest="tiling_graph", action="store_false",
                   help="skip NAME.tiling.onnx, the graph the runtime uses to stylize images larger than the "
                        "engine's profile in tiles with whole-image InstanceNorm statistics (without it, such "
                        "images fall back to blended tiles with visible tone shifts)")
    group = p.add_argument_group("TensorRT engine")
    group.add_argument("--onnx-only", action="store_true",
                       help="stop after the ONNX files (success without TensorRT)")
    for label, default in (("min", DEFAULT_PROFILE.min), ("opt", DEFAULT_PROFILE.opt), ("max", DEFAULT_PROFILE.max)):
        group.add_argument(f"--{label}-shape", type=_shape(f"{label}-shape"), default=default, metavar="NxHxW",
                           help=f"{label} input shape of the optimization profile (default: "
                                f"{fmt(map(str, default))})")
    group.add_argument("--timing-cache", type=Path, metavar="PATH",
                       help="load tactic timings from PATH if it exists, save them there after the build")
    group.add_argument("--version-compatible", action="store_true",
                       help="engine runs on later TensorRT of the same major version and on tensorrt_lean "
                            "(the lean runtime is excluded from the plan)")
    group.add_argument("--builder-opt-level", type=int, default=DEFAULT_OPTIMIZATION_LEVEL, metavar="N",
                       help="TensorRT builder optimization level 0..5 (default: %(default)s)")
    group.add_argument("--workspace-gib", type=float, metavar="GIB",
                       help="limit the builder's workspace memory pool")
    gate = p.add_argument_group("parity gate (ONNX Runtime CPU vs PyTorch FP32)")
    gate.add_argument("--fp32-tol", type=int, default=tol.fp32_max_abs_levels, metavar="L",
                      help="max |difference| in uint8 levels for the FP32 ONNX (default: %(default)s)")
    gate.add_argument("--fp16-min-psnr", type=float, default=tol.fp16_min_psnr_db, metavar="DB",
                      help="minimum PSNR in dB for the FP16 ONNX (default: %(default)s)")
    p.add_argument("--triton-repo", type=Path, metavar="DIR",
                   help="also write DIR/NAME/config.pbtxt with 1/model.plan (or 1/model.onnx with --onnx-only)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging (per-image parity numbers)")
    p.add_argument("-q", "--quiet", action="store_true", help="only errors and the summary")
    return p


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


def _configure_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("nst-export: %(message)s"))
    root = logging.getLogger("nst_export")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def run(args: argparse.Namespace) -> list[Path]:
    """The export itself, step by step; returns the artifacts written. Raises NstError subclasses."""
    from .fp16 import fp16_onnx_from_onnx
    from .onnx_export import onnx_from_checkpoint
    from .parity import ParityTolerance
    from .tensorrt_engine import engine_from_onnx, validate_profile
    from .triton import triton_repo_from_artifact

    try:
        tolerance = ParityTolerance(fp32_max_abs_levels=args.fp32_tol, fp16_min_psnr_db=args.fp16_min_psnr)
    except ValueError as exc:
        raise UsageError(f"parity tolerance: {exc}.") from exc
    profile = ShapeProfile(min=args.min_shape, opt=args.opt_shape, max=args.max_shape)
    if not args.onnx_only:
        validate_profile(profile)  # fail on bad shapes before minutes of export, not after
    name = args.name or args.checkpoint.stem
    out_dir: Path = args.out_dir
    steps = ["FP32 ONNX + parity"] + (["FP16 ONNX + parity"] if args.fp16 else [])
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
    onnx32 = onnx_from_checkpoint(args.checkpoint, out_dir / f"{name}.onnx", opset=args.opset, tolerance=tolerance)
    written.append(onnx32)
    done(t0, onnx32)
    deploy_onnx = onnx32
    if args.fp16:
        t0 = begin("FP16 ONNX (InstanceNorm and I/O FP32)")
        deploy_onnx = fp16_onnx_from_onnx(onnx32, out_dir / f"{name}.fp16.onnx", checkpoint=args.checkpoint,
                                          tolerance=tolerance)
        written.append(deploy_onnx)
        done(t0, deploy_onnx)
    if args.tiling_graph:
        from .tiling_graph import tiling_onnx_from_checkpoint

        t0 = begin("tiling ONNX (whole-image statistics for large images)")
        tiling = tiling_onnx_from_checkpoint(args.checkpoint, out_dir / f"{name}.tiling.onnx", opset=args.opset)
        written.append(tiling)
        done(t0, tiling)
    artifact = deploy_onnx
    if not args.onnx_only:
        t0 = begin("TensorRT engine")
        precision = "fp16" if args.fp16 else "fp32"
        try:
            artifact = engine_from_onnx(
                deploy_onnx, out_dir / f"{name}.{precision}.engine", profile=profile,
                timing_cache=args.timing_cache, optimization_level=args.builder_opt_level,
                version_compatible=args.version_compatible,
                workspace_bytes=int(args.workspace_gib * (1 << 30)) if args.workspace_gib else None,
            )
        except BackendUnavailableError as exc:
            files = ", ".join(str(p) for p in written)
            raise BackendUnavailableError(
                f"stopped at the engine step: {exc} The ONNX files were written and passed the parity gate: "
                f"{files}."
            ) from exc
        written.append(artifact)
        done(t0, artifact)
    if args.triton_repo:
        t0 = begin(f"Triton repository {args.triton_repo}")
        config = triton_repo_from_artifact(artifact, args.triton_repo, name=name)
        done(t0, config)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args)
    try:
        written = run(args)
    except NstError as exc:
        print(f"nst-export: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # a write outside the guarded ONNX saves (sidecar, Triton repo, engine)
        err = write_error(exc.filename or args.out_dir, exc)
        print(f"nst-export: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("nst-export: interrupted; no partial files were left behind.", file=sys.stderr)
        return 130
    print(summary_table(written))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
