"""Load: many threads share one Stylizer for a few seconds; every result equals the serial result and the
process's memory does not grow."""

from __future__ import annotations

import threading
import time

import numpy as np


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_sixteen_threads_share_one_stylizer(stylizer, make_image):
    images = [make_image(8 + 3 * i, 9 + 2 * i, seed=i) for i in range(8)] + [
        np.dstack([make_image(10, 10, seed=9), np.full((10, 10), 128, np.uint8)])]  # one RGBA
    expected = [stylizer.stylize(im) for im in images]
    mismatches, errors, calls = [], [], [0]
    lock = threading.Lock()
    stop = time.monotonic() + 3.0
    rss = {}

    def worker(k: int) -> None:
        i = k
        try:
            while time.monotonic() < stop:
                idx = i % len(images)
                out = stylizer.stylize(images[idx]) if i % 3 else stylizer.stylize_batch([images[idx]])[0]
                if not np.array_equal(out, expected[idx]):
                    mismatches.append(idx)
                with lock:
                    calls[0] += 1
                    if calls[0] == 100:
                        rss["warm"] = _rss_kb()
                i += 7
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    rss["end"] = _rss_kb()
    assert not errors, errors[:3]
    assert not mismatches, f"{len(mismatches)} results differ from the serial run"
    assert calls[0] > 200, f"only {calls[0]} calls in 3 s"
    assert "warm" in rss
    assert rss["end"] - rss["warm"] < 64 * 1024, f"RSS grew by {(rss['end'] - rss['warm']) // 1024} MB"
