"""Timing utilities: warm up, synchronize, repeat, summarize. No torch at import time.

The measurement loop is the same for every backend: ``warmup`` untimed calls, then repetitions of
``fn(); sync()`` timed with :func:`time.perf_counter`. Where a backend can time on the device itself
(CUDA events) it passes a ``device_timer`` instead, so the numbers exclude host-side launch jitter of the
timer itself. Repetitions adapt to a per-measurement time budget: a 4K image on two CPU cores takes tens of
seconds, so large sizes get few repetitions (never fewer than ``min_reps``) while small ones get many.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from nst_runtime.errors import UsageError

#: a device-side timer: runs the function once and returns the elapsed milliseconds (e.g. CUDA events)
DeviceTimer = Callable[[Callable[[], object]], float]


@dataclass(frozen=True)
class RepetitionPolicy:
    """How many times to run a measurement.

    ``reps`` is the most repetitions; ``budget_s`` caps the time spent timing one measurement (estimated
    from the warm-up); ``min_reps`` is the floor the budget cannot go below.
    """

    warmup: int = 2
    reps: int = 50
    min_reps: int = 3
    budget_s: float = 10.0

    def __post_init__(self) -> None:
        if self.warmup < 0 or self.reps < 1 or self.min_reps < 1:
            raise UsageError(
                f"repetitions: expected warmup >= 0, reps >= 1 and min_reps >= 1, got warmup={self.warmup}, "
                f"reps={self.reps}, min_reps={self.min_reps}."
            )
        if self.budget_s <= 0:
            raise UsageError(f"budget_s must be positive, got {self.budget_s}.")

    def reps_for(self, estimate_ms: float) -> int:
        """Repetitions that fit the budget given one call takes ``estimate_ms``."""
        if estimate_ms <= 0:
            return self.reps
        fit = int(self.budget_s * 1000.0 / estimate_ms)
        return max(min(self.reps, self.min_reps), min(self.reps, fit))


@dataclass(frozen=True)
class TimingStats:
    """Summary of one measurement; every time in milliseconds."""

    reps: int
    warmup: int
    median_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    p90_ms: float
    p99_ms: float
    stdev_ms: float

    def images_per_s(self, batch: int) -> float:
        return batch * 1000.0 / self.median_ms if self.median_ms > 0 else math.inf

    def as_dict(self) -> dict[str, float | int]:
        return {
            "reps": self.reps,
            "warmup": self.warmup,
            "median_ms": self.median_ms,
            "mean_ms": self.mean_ms,
            "min_ms": self.min_ms,
            "max_ms": self.max_ms,
            "p90_ms": self.p90_ms,
            "p99_ms": self.p99_ms,
            "stdev_ms": self.stdev_ms,
        }


def percentile(samples: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default method), ``q`` in [0, 100]."""
    if not samples:
        raise ValueError("percentile of no samples")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile q must be in [0, 100], got {q}")
    xs = sorted(samples)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(samples_ms: Sequence[float], *, warmup: int = 0) -> TimingStats:
    """Median, mean, extremes, p90, p99 and standard deviation of per-call times in milliseconds."""
    if not samples_ms:
        raise ValueError("summarize needs at least one sample")
    xs = [float(s) for s in samples_ms]
    return TimingStats(
        reps=len(xs),
        warmup=warmup,
        median_ms=statistics.median(xs),
        mean_ms=statistics.fmean(xs),
        min_ms=min(xs),
        max_ms=max(xs),
        p90_ms=percentile(xs, 90),
        p99_ms=percentile(xs, 99),
        stdev_ms=statistics.stdev(xs) if len(xs) > 1 else 0.0,
    )


def time_fn(
    fn: Callable[[], object],
    *,
    policy: RepetitionPolicy = RepetitionPolicy(),
    sync: Callable[[], None] | None = None,
    device_timer: DeviceTimer | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> TimingStats:
    """Time ``fn``: warm up, then repeat within the policy's budget, synchronizing after every call.

    ``sync`` waits for queued device work (``torch.cuda.synchronize``); without it the host clock would
    measure only the launch. ``device_timer`` replaces the host clock entirely (CUDA events).
    """

    def once() -> float:
        if device_timer is not None:
            return float(device_timer(fn))
        t0 = clock()
        fn()
        if sync is not None:
            sync()
        return (clock() - t0) * 1000.0

    warm_ms: list[float] = [once() for _ in range(policy.warmup)]
    if warm_ms:
        estimate = warm_ms[-1]
        samples: list[float] = []
    else:
        # No warm-up asked for: the first timed call is the estimate (and it counts).
        samples = [once()]
        estimate = samples[0]
    n = policy.reps_for(estimate)
    while len(samples) < n:
        samples.append(once())
    return summarize(samples, warmup=policy.warmup)


# --- peak memory --------------------------------------------------------------------------------------

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def reset_peak_host_memory() -> bool:
    """Reset the process's resident-set high-water mark (Linux ``clear_refs`` 5); False where unsupported."""
    try:
        with open(_CLEAR_REFS, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_host_memory_mb() -> float | None:
    """The process's peak resident set (VmHWM) in MiB since the last reset, or None off Linux."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        return None
    return None


def cpu_count() -> int:
    """Cores this process may run on (the affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1
