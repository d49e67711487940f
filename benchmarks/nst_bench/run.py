"""Run a benchmark: every requested backend x size x batch x view, plus the Gatys baseline.

:func:`run_benchmark` takes a :class:`BenchConfig` and returns the results document (the dict written to
``results.json``); it never prints. Backends the machine lacks end up in ``skipped`` with the reason.
"""

from __future__ import annotations

import datetime as _dt
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from nst_runtime.errors import UsageError

from . import gatys as gatys_mod
from .backends import FEED_FORWARD, Backend, ModelSource, Workload, make_backend
from .harness import RepetitionPolicy, time_fn
from .machine import loadavg, machine_info, measure_sgemm_peak

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
ALL_BACKENDS = (*FEED_FORWARD, "gatys")
DEFAULT_SIZES = ("256", "512", "1024", "1920x1080", "3840x2160")
GATYS_SIZES = ((256, 256), (512, 512), (1024, 1024))


def parse_size(text: str) -> tuple[int, int]:
    """``"256"`` -> (256, 256); ``"1920x1080"`` (width x height, as displays are named) -> (1080, 1920)."""
    t = text.strip().lower().replace("×", "x")
    try:
        if "x" in t:
            w, h = (int(v) for v in t.split("x", 1))
        else:
            w = h = int(t)
    except ValueError:
        raise UsageError(f"size {text!r}: expected N or WIDTHxHEIGHT, e.g. 512 or 1920x1080.") from None
    if h < 8 or w < 8:
        raise UsageError(f"size {text!r}: height and width must be at least 8 (the graph's minimum).")
    return h, w


@dataclass(frozen=True)
class BenchConfig:
    device: str = "cpu"
    backends: tuple[str, ...] = ("torch", "ort", "gatys")
    sizes: tuple[tuple[int, int], ...] = ((256, 256), (512, 512))  # (height, width)
    batches: tuple[int, ...] = (1,)
    views: tuple[str, ...] = ("compute", "e2e")
    policy: RepetitionPolicy = field(default_factory=RepetitionPolicy)
    #: largest batch x pixels timed (a batch of 4 at 3840x2160 needs ~20 GB of activations in FP32)
    max_batch_pixels: int = 4 * 1920 * 1080
    checkpoint: str | None = None
    seed: int = 0
    gatys_sizes: tuple[tuple[int, int], ...] = GATYS_SIZES
    gatys_iterations: int | None = None
    gatys_budget_s: float = 30.0
    progress: bool = True
    #: seconds spent measuring the CPU's SGEMM throughput at the start and the end of a CPU run (the roof of
    #: the "% of peak" column); 0 skips it and falls back to the nominal estimate
    sgemm_seconds: float = 1.0

    def __post_init__(self) -> None:
        if self.device not in ("cpu", "cuda"):
            raise UsageError(f"device {self.device!r}: expected cpu or cuda.")
        unknown = [b for b in self.backends if b not in ALL_BACKENDS]
        if unknown:
            raise UsageError(f"unknown backend(s) {', '.join(unknown)}; choose from {', '.join(ALL_BACKENDS)}.")
        if any(b < 1 for b in self.batches):
            raise UsageError(f"batch sizes must be >= 1, got {self.batches}.")
        bad_views = [v for v in self.views if v not in ("compute", "e2e")]
        if bad_views:
            raise UsageError(f"unknown view(s) {bad_views}; choose compute, e2e.")


def _flops(height: int, width: int) -> int:
    from nst_train.model import count_flops

    ph, pw = Workload(height, width).padded
    return count_flops(ph, pw)


def _peak_tflops(machine: dict[str, Any], device: str, precision: str) -> float | None:
    if device == "cuda":
        peaks = (machine.get("gpu") or {}).get("nominal_peak_tflops") or {}
        return peaks.get(precision)
    # CPU: the SGEMM throughput measured at the start of this run; INT8 rows are compared with it too (their
    # FLOP count is the FP32 network's, so above 100 % means the integer kernels beat FP32's roof)
    measured = (machine.get("cpu_sgemm") or {}).get("fp32_tflops")
    return measured or (machine.get("cpu_peak") or {}).get("fp32_tflops")


def _measure(backend: Backend, label: str, view: str, workload: Workload, cfg: BenchConfig,
             machine: dict[str, Any]) -> dict[str, Any]:
    backend.reset_peak_memory()
    stats = time_fn(backend.step(view), policy=cfg.policy, sync=backend.sync,
                    device_timer=backend.device_timer(view))
    mem, mem_kind = backend.peak_memory()
    flops = _flops(workload.height, workload.width)
    achieved = flops * workload.batch / (stats.median_ms / 1000.0) / 1e12
    precision = backend.precision
    peak = _peak_tflops(machine, cfg.device, precision)
    return {
        "backend": label,
        "device": cfg.device,
        "precision": precision,
        "view": view,
        "size": workload.size,
        "height": workload.height,
        "width": workload.width,
        "batch": workload.batch,
        **stats.as_dict(),
        "images_per_s": stats.images_per_s(workload.batch),
        "flops_per_image": flops,
        "achieved_tflops": achieved,
        "fraction_of_peak": achieved / peak if peak else None,
        "peak_memory_mb": mem,
        "peak_memory_kind": mem_kind,
        # 1-minute load average when the measurement ended: above the core count, other work competed for
        # the CPU and the numbers are pessimistic
        "loadavg_1m": (loadavg() or [None])[0],
    }


def run_benchmark(cfg: BenchConfig) -> dict[str, Any]:
    """Time everything ``cfg`` asks for; returns the results document (see docs/bench.md for the schema)."""
    from tqdm.auto import tqdm

    started = time.time()
    machine = machine_info()
    if cfg.device == "cpu" and cfg.sgemm_seconds > 0:
        machine["cpu_sgemm"] = measure_sgemm_peak(seconds=cfg.sgemm_seconds)
    # ONNX files and engines go to a temporary folder, not next to the committed results.
    source = ModelSource(checkpoint=cfg.checkpoint, seed=cfg.seed)
    records: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    notes: list[str] = []

    ff: list[tuple[str, Backend]] = []
    for name in cfg.backends:
        if name == "gatys":
            continue
        backend = make_backend(name, device=cfg.device, source=source)
        ok, why = backend.available()
        missing = source.missing_precision(backend.precision) if ok else None
        if missing:  # --checkpoint NAME.fp16.onnx: no FP32 rows from it (and no FP16 rows from an INT8 file)
            ok, why = False, missing
        if ok:
            ff.append((name, backend))
        else:
            log.warning("skipping %s: %s", name, why)
            skipped.append({"backend": name, "reason": why})
    run_gatys = "gatys" in cfg.backends
    if run_gatys:
        ok, why = gatys_mod.available()
        if not ok:
            skipped.append({"backend": "gatys", "reason": why})
            run_gatys = False

    workloads: list[Workload] = []
    for (h, w) in cfg.sizes if ff else ():
        for b in cfg.batches:
            if b * h * w > cfg.max_batch_pixels and b > 1:
                notes.append(f"batch {b} at {h}x{w} not timed: over --max-batch-pixels {cfg.max_batch_pixels}")
                continue
            workloads.append(Workload(h, w, b))
    # Workload-major order: every backend is measured at one size before the next size, so that a change in
    # the machine's load (a shared machine) hits the backends being compared at about the same time.
    jobs = [(name, be, wl, view) for wl in workloads for name, be in ff for view in be.views if view in cfg.views]
    gatys_jobs = list(cfg.gatys_sizes) if run_gatys else []

    with tqdm(total=len(jobs) + len(gatys_jobs), desc="nst-bench", unit="run", disable=not cfg.progress) as bar:
        # Gatys first, in a fresh process: timed after the multi-GB feed-forward workloads it once ran ~4x
        # slower per iteration at 256² than on its own (allocator state, on a 2-core CPU).
        for h, w in gatys_jobs:
            bar.set_postfix_str(f"gatys {h}x{w}")
            timing = gatys_mod.time_gatys(height=h, width=w, device=cfg.device, iterations=cfg.gatys_iterations,
                                          budget_s=cfg.gatys_budget_s, seed=cfg.seed)
            records.append(timing.record())
            bar.update(1)
        current: tuple[str, Workload] | None = None
        for name, backend, wl, view in jobs:
            bar.set_postfix_str(f"{name} {wl.size} b{wl.batch} {view}")
            try:
                if current != (name, wl):
                    backend.close()
                    backend.setup(wl)
                    current = (name, wl)
                records.append(_measure(backend, name, view, wl, cfg, machine))
            except MemoryError as exc:
                skipped.append({"backend": name, "size": wl.size, "batch": str(wl.batch), "view": view,
                                "reason": f"out of memory: {exc}"})
                backend.close()
                current = None
            except Exception as exc:
                if not _is_out_of_memory(exc):
                    raise
                skipped.append({"backend": name, "size": wl.size, "batch": str(wl.batch), "view": view,
                                "reason": f"out of memory: {str(exc).splitlines()[0]}"})
                backend.close()
                current = None
            bar.update(1)
        for _name, backend in ff:
            backend.close()

    attach_speedups(records)
    if any(r["backend"] == "gatys" and r.get("extrapolated") for r in records):
        notes.append("Gatys seconds for 100/300/500 iterations are seconds-per-iteration (median after one "
                     "warm-up iteration) x N: a full run was too long for this device's time budget.")
    if run_gatys:
        notes.append("Gatys uses a randomly initialised VGG-16: timing only (a forward/backward pass costs the "
                     "same whatever the weights); its images are never shown as results.")
    notes.append(f"Timed network: {source.description}.")
    int8_parity = getattr(source, "int8_parity", None)
    if int8_parity:
        notes.append("INT8 rows time NAME.int8.onnx made by nst_export.int8 (QDQ, calibrated on scikit-image's "
                     "sample photos); on this timed network its gate measured min PSNR "
                     f"{int8_parity.get('min_psnr_db') or float('inf'):.1f} dB against PyTorch FP32 (timing only: "
                     "quality is measured on trained networks by tools/int8_quality.py).")
    source.close()
    if cfg.device == "cpu" and cfg.sgemm_seconds > 0:
        machine["cpu_sgemm_end"] = measure_sgemm_peak(seconds=cfg.sgemm_seconds)
    machine["loadavg_end"] = loadavg()
    return {
        "schema_version": SCHEMA_VERSION,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "wall_s": round(time.time() - started, 1),
        "machine": machine,
        "config": _config_dict(cfg),
        "results": records,
        "skipped": skipped,
        "notes": notes,
    }


_OOM_MARKERS = ("out of memory", "can't allocate memory", "failed to allocate memory", "bad_alloc")


def _is_out_of_memory(exc: BaseException) -> bool:
    """CUDA, PyTorch CPU and ONNX Runtime word running out of memory differently."""
    text = f"{type(exc).__name__}: {exc}".lower()
    return any(marker in text for marker in _OOM_MARKERS)


def attach_speedups(records: Sequence[dict[str, Any]]) -> None:
    """Add ``speedup_vs_gatys`` to batch-1 feed-forward records whose size and device have a Gatys record."""
    gatys = {(r["device"], r["size"]): r for r in records if r["backend"] == "gatys"}
    for r in records:
        if r["backend"] == "gatys" or r["batch"] != 1:
            continue
        g = gatys.get((r["device"], r["size"]))
        if g is not None:
            r["speedup_vs_gatys"] = gatys_mod.speedups(g, r["median_ms"])


def _config_dict(cfg: BenchConfig) -> dict[str, Any]:
    d = asdict(cfg)
    d["sizes"] = [f"{h}x{w}" for h, w in cfg.sizes]
    d["gatys_sizes"] = [f"{h}x{w}" for h, w in cfg.gatys_sizes]
    return d
