"""Gatys timing logic (Johnson et al. Table 1 shape) on a fake optimizer: no VGG is run here."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from nst_bench.gatys import speedups, time_gatys


@dataclass
class _Rec:
    iteration: int
    elapsed_s: float


@dataclass
class _Result:
    history: list
    seconds: float
    image: object = None


def _fake(first_s, per_s, calls):
    def stylize(content, style, *, vgg, iterations, **kw):
        calls.append((tuple(content.shape), iterations, kw.get("optimizer")))
        elapsed = [first_s + per_s * i for i in range(iterations)]
        return _Result([_Rec(i + 1, e) for i, e in enumerate(elapsed)], elapsed[-1])

    return stylize


def test_few_iterations_are_extrapolated_without_the_first():
    calls = []
    t = time_gatys(height=16, width=20, vgg=object(), iterations=4, stylize=_fake(5.0, 0.5, calls))
    assert calls[0][1] == 2 and calls[1] == ((1, 3, 16, 20), 4, "lbfgs")  # warm-up, then the timed run
    assert t.extrapolated and t.measured_iterations == 4
    assert t.seconds == {100: pytest.approx(50.0), 300: pytest.approx(150.0), 500: pytest.approx(250.0)}
    rec = t.record()
    assert rec["backend"] == "gatys" and rec["size"] == "16x20" and rec["batch"] == 1
    assert rec["seconds_300"] == pytest.approx(150.0) and rec["images_per_s"] == pytest.approx(1 / 150.0)
    assert {"median_ms", "p90_ms", "p99_ms"} <= set(rec)


def test_full_run_reads_the_history_at_100_300_500():
    calls = []
    t = time_gatys(height=8, width=8, vgg=object(), budget_s=1e9, stylize=_fake(1.0, 0.01, calls))
    assert calls[1][1] == 500 and not t.extrapolated
    assert t.seconds[100] == pytest.approx(1.0 + 0.01 * 99)
    assert t.seconds[500] == pytest.approx(1.0 + 0.01 * 499)


def test_budget_chooses_how_many_iterations():
    calls = []
    time_gatys(height=8, width=8, vgg=object(), budget_s=10.0, stylize=_fake(0.0, 2.0, calls))
    assert calls[1][1] == 5  # 2 s per iteration, 10 s budget
    calls.clear()
    time_gatys(height=8, width=8, vgg=object(), budget_s=1.0, stylize=_fake(0.0, 2.0, calls))
    assert calls[1][1] == 3  # never fewer than 3


def test_speedups():
    g = {"seconds_100": 10.0, "seconds_300": 30.0, "seconds_500": 50.0}
    assert speedups(g, 100.0) == {"100": 100.0, "300": 300.0, "500": 500.0}
