"""Harness statistics on a fake timed function: no real timing, nothing asserted about speed."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from nst_bench.harness import RepetitionPolicy, percentile, summarize, time_fn
from nst_runtime.errors import UsageError


def test_summarize_matches_numpy():
    xs = [5.0, 1.0, 4.0, 2.0, 3.0, 10.0, 7.0]
    s = summarize(xs, warmup=2)
    assert s.reps == 7 and s.warmup == 2
    assert s.median_ms == 4.0
    assert s.min_ms == 1.0 and s.max_ms == 10.0
    assert s.p90_ms == pytest.approx(np.percentile(xs, 90))
    assert s.p99_ms == pytest.approx(np.percentile(xs, 99))
    assert s.mean_ms == pytest.approx(np.mean(xs))
    assert s.stdev_ms == pytest.approx(np.std(xs, ddof=1))
    assert s.images_per_s(4) == pytest.approx(4 * 1000.0 / 4.0)
    assert set(s.as_dict()) >= {"median_ms", "p90_ms", "p99_ms", "reps"}


@pytest.mark.parametrize("q", [0, 10, 50, 90, 99, 100])
def test_percentile_interpolates_like_numpy(q):
    xs = [3.0, 1.0, 9.0, 4.0]
    assert percentile(xs, q) == pytest.approx(np.percentile(xs, q))


def test_single_sample_and_errors():
    s = summarize([2.5])
    assert s.median_ms == s.p99_ms == 2.5 and s.stdev_ms == 0.0
    with pytest.raises(ValueError):
        summarize([])
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def _fake_clock(step_ms):
    """A clock that advances by the next value of ``step_ms`` (ms) on every call after the first of a pair."""
    t = [0.0]
    steps = iter(step_ms)
    calls = itertools.count()

    def clock():
        if next(calls) % 2 == 1:  # the reading after fn(): advance by this call's duration
            t[0] += next(steps) / 1000.0
        return t[0]

    return clock


def test_time_fn_warms_up_syncs_and_summarizes():
    calls, syncs = [], []
    durations = [100.0, 10.0, 11.0, 12.0, 13.0, 14.0]  # first one is the (slow) warm-up
    policy = RepetitionPolicy(warmup=1, reps=5, min_reps=1, budget_s=100.0)
    stats = time_fn(lambda: calls.append(1), policy=policy, sync=lambda: syncs.append(1),
                    clock=_fake_clock(durations))
    assert len(calls) == 6 and len(syncs) == 6  # synchronized after every call, warm-up included
    assert stats.reps == 5 and stats.warmup == 1
    assert stats.median_ms == pytest.approx(12.0)
    assert stats.max_ms == pytest.approx(14.0)  # the warm-up is not a sample


def test_budget_limits_repetitions_but_not_below_min_reps():
    policy = RepetitionPolicy(warmup=1, reps=50, min_reps=3, budget_s=1.0)
    assert policy.reps_for(10.0) == 50  # 100 fit, capped by reps
    assert policy.reps_for(100.0) == 10
    assert policy.reps_for(60_000.0) == 3  # a 60 s call still gets min_reps
    stats = time_fn(lambda: None, policy=policy, clock=_fake_clock([400.0] * 10))
    assert stats.reps == 3


def test_device_timer_replaces_the_clock():
    seen = []

    def timer(fn):
        fn()
        seen.append(1)
        return 7.0

    stats = time_fn(lambda: None, policy=RepetitionPolicy(warmup=2, reps=4, min_reps=1), device_timer=timer)
    assert len(seen) == 6 and stats.median_ms == 7.0


@pytest.mark.parametrize("kw", [{"reps": 0}, {"warmup": -1}, {"min_reps": 0}, {"budget_s": 0}])
def test_bad_policy_is_a_usage_error(kw):
    with pytest.raises(UsageError):
        RepetitionPolicy(**kw)
