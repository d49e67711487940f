"""``nst-bench``: time every backend this machine has, and the Gatys baseline, on the same inputs."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from nst_runtime.errors import NstError, UsageError

from .harness import RepetitionPolicy
from .run import ALL_BACKENDS, DEFAULT_SIZES, GATYS_SIZES, BenchConfig, parse_size, run_benchmark

log = logging.getLogger("nst_bench")

EPILOG = """\
examples:
  # everything this machine has, default sizes (256² … 3840×2160), batch 1 and 4
  nst-bench --out bench-out

  # a one-minute look: 256² and 512², batch 1, few repetitions, Gatys at 256² only
  nst-bench --quick --out bench-quick

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

outputs: OUT/results.json, OUT/results.md, OUT/results.png. See docs/bench.md.
"""


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nst-bench",
        description="Latency and throughput of the style network on every backend this machine has "
                    "(PyTorch, ONNX Runtime, TensorRT), side by side with the Gatys optimization baseline.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="where to run (default: cuda when a GPU is visible, else cpu)")
    p.add_argument("--backends", default=",".join(ALL_BACKENDS),
                   help=f"comma-separated subset of {','.join(ALL_BACKENDS)} (default: all)")
    p.add_argument("--sizes", default=None, help=f"comma-separated sizes (default: {','.join(DEFAULT_SIZES)})")
    p.add_argument("--batch", default=None, help="comma-separated batch sizes (default: 1,4)")
    p.add_argument("--views", default="compute,e2e", help="compute, e2e or both (default: both)")
    p.add_argument("--quick", action="store_true",
                   help="256² and 512², batch 1, few repetitions, Gatys at 256² only")
    p.add_argument("--reps", type=int, default=None, help="most timed repetitions per measurement (default 50)")
    p.add_argument("--min-reps", type=int, default=None, help="fewest timed repetitions (default 3)")
    p.add_argument("--warmup", type=int, default=None, help="untimed warm-up calls (default 2)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="seconds to spend timing one measurement (default 10)")
    p.add_argument("--max-batch-pixels", type=int, default=4 * 1920 * 1080,
                   help="skip batch>1 workloads above this many pixels per call (default: 4 × 1920×1080)")
    p.add_argument("--gatys-sizes", default=None, help="sizes for the Gatys baseline (default: 256,512,1024)")
    p.add_argument("--gatys-iterations", type=int, default=None,
                   help="Gatys iterations to time (default: 500 where they fit --gatys-budget-s, else fewer)")
    p.add_argument("--gatys-budget-s", type=float, default=30.0, help="seconds per Gatys size (default 30)")
    p.add_argument("--checkpoint", default=None, help="time this checkpoint instead of a random network")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="bench-out", help="output folder (default: bench-out)")
    p.add_argument("--append", action="store_true",
                   help="merge into OUT/results.json: records of the backends run now replace theirs, "
                        "the others are kept (e.g. add gatys or a GPU backend to an earlier run)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    device = args.device
    if device is None:
        try:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        except ImportError:
            device = "cpu"
    quick = args.quick
    sizes = args.sizes or ("256,512" if quick else ",".join(DEFAULT_SIZES))
    batches = args.batch or ("1" if quick else "1,4")
    gatys_sizes = args.gatys_sizes or ("256" if quick else ",".join(f"{h}" for h, _ in GATYS_SIZES))
    try:
        batch_list = tuple(int(b) for b in _csv(batches))
    except ValueError:
        raise UsageError(f"--batch {batches!r}: expected comma-separated integers, e.g. 1,4.") from None
    policy = RepetitionPolicy(
        warmup=args.warmup if args.warmup is not None else (1 if quick else 2),
        reps=args.reps if args.reps is not None else (10 if quick else 50),
        min_reps=args.min_reps if args.min_reps is not None else (2 if quick else 3),
        budget_s=args.budget_s if args.budget_s is not None else (2.0 if quick else 10.0),
    )
    return BenchConfig(
        device=device,
        backends=tuple(_csv(args.backends)),
        sizes=tuple(parse_size(s) for s in _csv(sizes)),
        batches=batch_list,
        views=tuple(_csv(args.views)),
        policy=policy,
        max_batch_pixels=args.max_batch_pixels,
        checkpoint=args.checkpoint,
        seed=args.seed,
        gatys_sizes=tuple(parse_size(s) for s in _csv(gatys_sizes)),
        gatys_iterations=args.gatys_iterations if args.gatys_iterations is not None else (5 if quick else None),
        gatys_budget_s=args.gatys_budget_s,
        progress=not args.no_progress,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = config_from_args(args)
        doc = run_benchmark(cfg)
        from .report import merge_into, write_reports

        if args.append:
            doc = merge_into(Path(args.out) / "results.json", doc)

        paths = write_reports(doc, args.out)
    except NstError as exc:
        print(f"nst-bench: error: {exc}", file=sys.stderr)
        return exc.exit_code
    n = len(doc["results"])
    print(f"nst-bench: {n} measurements, {len(doc['skipped'])} skipped; wrote {paths['json']}, "
          f"{paths['md']}, {paths['png']}")
    for s in doc["skipped"]:
        print(f"  skipped {s['backend']}: {s['reason']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
