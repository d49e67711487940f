"""run_benchmark's bookkeeping with a fake backend: out-of-memory workloads are listed, not dropped."""

from __future__ import annotations

import pytest
from nst_bench import run as run_mod
from nst_bench.backends import Backend
from nst_bench.harness import RepetitionPolicy


class _Fake(Backend):
    def __init__(self, *, device, source):
        super().__init__(device=device, source=source)

    def _setup(self, workload):
        self._big = workload.height > 16

    def step(self, view):
        def fn():
            if self._big:
                raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")

        return fn


def test_out_of_memory_is_skipped_with_reason(monkeypatch):
    monkeypatch.setattr(run_mod, "make_backend", lambda name, device, source: _Fake(device=device, source=source))
    cfg = run_mod.BenchConfig(backends=("torch",), sizes=((8, 8), (32, 32)), batches=(1, 4),
                              policy=RepetitionPolicy(warmup=0, reps=2, min_reps=1), max_batch_pixels=4 * 8 * 8,
                              progress=False, sgemm_seconds=0)
    doc = run_mod.run_benchmark(cfg)
    sizes = {(r["size"], r["batch"], r["view"]) for r in doc["results"]}
    assert sizes == {("8x8", 1, "compute"), ("8x8", 1, "e2e"), ("8x8", 4, "compute"), ("8x8", 4, "e2e")}
    oom = [s for s in doc["skipped"] if s.get("size") == "32x32"]
    assert len(oom) == 2 and all("out of memory" in s["reason"] for s in oom)
    assert any("batch 4 at 32x32 not timed" in n for n in doc["notes"])  # over --max-batch-pixels
    assert any("randomly initialised TransformerNet" in n for n in doc["notes"])


def test_other_errors_propagate(monkeypatch):
    class _Broken(_Fake):
        def step(self, view):
            def fn():
                raise ValueError("a real bug")

            return fn

    monkeypatch.setattr(run_mod, "make_backend", lambda name, device, source: _Broken(device=device, source=source))
    cfg = run_mod.BenchConfig(backends=("torch",), sizes=((8, 8),), policy=RepetitionPolicy(warmup=0, reps=1),
                              progress=False, sgemm_seconds=0)
    with pytest.raises(ValueError, match="a real bug"):
        run_mod.run_benchmark(cfg)


@pytest.mark.parametrize("msg,oom", [("CUDA out of memory", True),
                                     ("[enforce fail at alloc_cpu.cpp] DefaultCPUAllocator: can't allocate memory", True),
                                     ("Failed to allocate memory for requested buffer", True),
                                     ("shape mismatch", False)])
def test_is_out_of_memory(msg, oom):
    assert run_mod._is_out_of_memory(RuntimeError(msg)) is oom
