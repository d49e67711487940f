"""The Gatys et al. optimization baseline, timed in the shape of Johnson et al. 2016, Table 1.

Johnson et al. report the seconds Gatys' method takes for 100, 300 and 500 L-BFGS iterations at 256², 512²
and 1024², and the speed-up of the feed-forward network over each. Here the optimization is
:func:`nst_train.gatys.gatys_stylize` (one iteration = one forward and backward pass through VGG-16), on
the same device as the feed-forward backends.

Where a full 500-iteration run fits the time budget (any GPU), the seconds are read off the per-iteration
wall-clock history at iterations 100, 300 and 500 (``extrapolated: false``). On a CPU a 1024² run would take
hours, so a few iterations are timed after a warm-up and ``seconds_N = seconds per iteration x N``
(``extrapolated: true``); the report says so beside the numbers.

The loss network is the *randomly initialised* VGG-16 unless ImageNet weights are passed: the time of a
forward/backward pass does not depend on the weights, the image it produces does, and no image from this
module is ever presented as a stylization result.
"""

from __future__ import annotations

import logging
import statistics
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .harness import percentile
from .machine import loadavg

log = logging.getLogger(__name__)

#: iteration counts of Johnson et al. 2016, Table 1
TABLE_ITERATIONS = (100, 300, 500)


def available() -> tuple[bool, str]:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False, "torch is not installed"
    try:
        from nst_train.gatys import gatys_stylize  # noqa: F401
    except ImportError as exc:
        return False, f"nst_train.gatys.gatys_stylize is not importable in this checkout ({exc})"
    return True, ""


@dataclass(frozen=True)
class GatysTiming:
    """Per-iteration times of one timed optimization and what they imply for 100/300/500 iterations."""

    height: int
    width: int
    device: str
    optimizer: str
    measured_iterations: int
    iteration_ms: tuple[float, ...]
    seconds: dict[int, float]
    extrapolated: bool

    def record(self) -> dict[str, Any]:
        xs = list(self.iteration_ms)
        med = statistics.median(xs)
        rec: dict[str, Any] = {
            "backend": "gatys",
            "device": self.device,
            "precision": "fp32",
            "view": "e2e",
            "size": f"{self.height}x{self.width}",
            "height": self.height,
            "width": self.width,
            "batch": 1,
            "optimizer": self.optimizer,
            "latency_unit": "per_iteration",
            "reps": len(xs),
            "median_ms": med,
            "p90_ms": percentile(xs, 90),
            "p99_ms": percentile(xs, 99),
            "mean_ms": statistics.fmean(xs),
            "measured_iterations": self.measured_iterations,
            "extrapolated": self.extrapolated,
            "images_per_s": 1.0 / self.seconds[300] if self.seconds.get(300) else None,
            "images_per_s_basis": "one image per 300 iterations",
            "loadavg_1m": (loadavg() or [None])[0],
        }
        for n, s in self.seconds.items():
            rec[f"seconds_{n}"] = s
        return rec


def time_gatys(
    *,
    height: int,
    width: int,
    device: str = "cpu",
    vgg: Any = None,
    iterations: int | None = None,
    budget_s: float = 30.0,
    optimizer: str = "lbfgs",
    seed: int = 0,
    stylize: Callable[..., Any] | None = None,
) -> GatysTiming:
    """Time the Gatys optimization at ``height`` x ``width``.

    ``iterations``: how many to run and time; ``None`` picks the full 500 when they fit ``budget_s``
    (estimated from a 2-iteration warm-up), else as many as fit (at least 3). ``stylize`` defaults to
    :func:`nst_train.gatys.gatys_stylize` (tests pass a fake).
    """
    import torch

    if stylize is None:
        from nst_train.gatys import gatys_stylize as stylize
    if vgg is None:
        from nst_train.vgg import load_vgg16

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the random-weights warning: timing only, said in the report
            vgg = load_vgg16("random", device=device)
    gen = torch.Generator().manual_seed(seed)
    content = (torch.rand((1, 3, height, width), generator=gen) * 255.0).to(device)
    style = (torch.rand((1, 3, height, width), generator=gen) * 255.0).to(device)

    def run(n: int) -> list[float]:
        result = stylize(content, style, vgg=vgg, iterations=n, optimizer=optimizer, seed=seed, progress=False)
        if device == "cuda":
            torch.cuda.synchronize()
        elapsed = [float(r.elapsed_s) for r in result.history]
        return elapsed

    warm = run(2)
    per_iter_s = (warm[-1] - warm[0]) if len(warm) >= 2 else (warm[-1] if warm else 0.0)
    full = max(TABLE_ITERATIONS)
    if iterations is None:
        fit = int(budget_s / per_iter_s) if per_iter_s > 0 else full
        iterations = full if fit >= full else max(3, fit)
    log.info("gatys %dx%d on %s: timing %d iterations", height, width, device, iterations)
    elapsed = run(iterations)
    if not elapsed:
        raise RuntimeError("gatys_stylize returned no iteration history; cannot time it")
    steps_ms = [1000.0 * (b - a) for a, b in zip([0.0, *elapsed[:-1]], elapsed, strict=True)]
    if len(elapsed) >= full:
        seconds = {n: elapsed[n - 1] for n in TABLE_ITERATIONS}
        extrapolated = False
    else:
        # The first iteration carries one-off work (style Gram targets, allocator growth): leave it out.
        steady = steps_ms[1:] if len(steps_ms) > 1 else steps_ms
        per = statistics.median(steady) / 1000.0
        seconds = {n: per * n for n in TABLE_ITERATIONS}
        extrapolated = True
    return GatysTiming(
        height=height, width=width, device=device, optimizer=optimizer, measured_iterations=len(elapsed),
        iteration_ms=tuple(steps_ms), seconds=seconds, extrapolated=extrapolated,
    )


def speedups(gatys_record: dict[str, Any], median_ms: float) -> dict[str, float]:
    """Johnson-style speed-up of a feed-forward pass over Gatys at 100/300/500 iterations."""
    return {str(n): gatys_record[f"seconds_{n}"] * 1000.0 / median_ms for n in TABLE_ITERATIONS
            if gatys_record.get(f"seconds_{n}") and median_ms > 0}
