"""The overlapped pipeline: order kept, per-item errors, bounded, stages really overlap."""

from __future__ import annotations

import random
import threading
import time

import pytest
from nst_runtime.pipeline import Stage, run_pipeline


def test_order_kept_and_errors_per_item():
    def slow(x: int) -> int:
        time.sleep(random.random() * 0.01)
        if x == 5:
            raise ValueError("five")
        return x * 2

    outs = list(run_pipeline(range(12), [Stage("a", slow, 4), Stage("b", lambda v: v + 1, 3)], depth=5))
    assert [o.item for o in outs] == list(range(12))
    assert [o.value for o in outs if o.ok] == [2 * x + 1 for x in range(12) if x != 5]
    (bad,) = [o for o in outs if not o.ok]
    assert bad.item == 5 and bad.stage == "a" and str(bad.error) == "five"


def test_stages_overlap_and_in_flight_is_bounded():
    active = {"decode": 0, "compute": 0}
    both_busy = threading.Event()
    pulled = []
    lock = threading.Lock()

    def step(name):
        def fn(x):
            with lock:
                active[name] += 1
                if all(active.values()):
                    both_busy.set()
            time.sleep(0.01)
            with lock:
                active[name] -= 1
            return x
        return fn

    def source():
        for i in range(30):
            pulled.append(i)
            yield i

    gen = run_pipeline(source(), [Stage("decode", step("decode")), Stage("compute", step("compute"))], depth=3)
    first = next(gen)
    time.sleep(0.1)
    assert first.item == 0 and len(pulled) <= 1 + 3 + 1  # the consumer holds back the source
    rest = list(gen)
    assert len(rest) == 29 and both_busy.is_set()


def test_source_error_is_raised():
    def source():
        yield 1
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        list(run_pipeline(source(), [Stage("s", lambda x: x)]))


def test_closing_waits_for_the_source_to_leave_its_current_item():
    """The caller closes what the items come from (a video container) as soon as the pipeline is closed; a
    source still running in a feeder thread then would read freed memory. Closing waits for it, however long
    the item takes (it waited at most 5 s before)."""
    inside = threading.Event()
    left = threading.Event()

    def slow_source():
        yield 0
        inside.set()
        time.sleep(5.5)  # one slow item (a decoder on a loaded machine)
        left.set()
        yield 1

    out = run_pipeline(slow_source(), [Stage("id", lambda x: x)], depth=1)
    assert next(out).value == 0
    assert inside.wait(10)
    out.close()
    assert left.is_set(), "run_pipeline returned while its source was still inside an item"
