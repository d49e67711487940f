"""What the numbers were measured on: CPU, GPU, driver, library versions, load.

Everything here is best effort: a field that cannot be read is ``None``, never a guess. The nominal peak
FLOP/s is an estimate and says how it was computed next to the number; the CPU's "% of peak" column uses the
SGEMM throughput measured in the same run instead (:func:`measure_sgemm_peak`).
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from .harness import cpu_count

log = logging.getLogger(__name__)

_LIBRARIES = ("nst", "torch", "onnx", "onnxruntime", "onnxruntime-gpu", "tensorrt", "tensorrt-lean",
              "cuda-python", "numpy", "pillow", "matplotlib")

# Nominal dense peaks in TFLOP/s from the vendors' data sheets (SXM parts), used only to show how far a
# backend is from the roof. FP16 is tensor-core dense (no sparsity).
_GPU_PEAKS: dict[str, dict[str, float]] = {
    "H200": {"fp32": 67.0, "fp16": 989.0},
    "H100": {"fp32": 67.0, "fp16": 989.0},
    "A100": {"fp32": 19.5, "fp16": 312.0},
}


def cpu_model() -> str:
    """``lscpu``'s model name (falls back to /proc/cpuinfo, then platform)."""
    if shutil.which("lscpu"):
        try:
            out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10,
                                 env={**os.environ, "LC_ALL": "C"}).stdout
            for line in out.splitlines():
                if line.startswith("Model name:"):
                    return line.split(":", 1)[1].strip()
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _cpu_mhz() -> tuple[float | None, str]:
    """Nominal clock: lscpu's max MHz where reported, else BogoMIPS / 2 (x86 reports twice the clock)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None, "unknown"
    m = re.search(r"^bogomips\s*:\s*([\d.]+)", text, re.MULTILINE)
    if shutil.which("lscpu"):
        try:
            out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10,
                                 env={**os.environ, "LC_ALL": "C"}).stdout
            mm = re.search(r"^CPU max MHz:\s*([\d.]+)", out, re.MULTILINE)
            if mm:
                return float(mm.group(1)), "lscpu max MHz"
        except (OSError, subprocess.SubprocessError):
            pass
    if m:
        return float(m.group(1)) / 2.0, "BogoMIPS/2"
    return None, "unknown"


def cpu_peak_estimate() -> dict[str, Any]:
    """Nominal FP32 peak of the cores this process may use: cores x clock x FLOP per cycle per core.

    FLOP per cycle: 32 for two 256-bit FMA pipes (AVX2+FMA, and AMD Zen 4, which runs AVX-512 on 256-bit
    pipes), 64 for Intel cores with two 512-bit FMA units. An estimate, labelled as one.
    """
    flags = _cpu_flags()
    mhz, clock_source = _cpu_mhz()
    vendor_amd = "AMD" in cpu_model().upper()
    if "avx512f" in flags and not vendor_amd:
        per_cycle = 64
    elif "fma" in flags:
        per_cycle = 32
    elif "avx" in flags:
        per_cycle = 16
    else:
        per_cycle = 8
    cores = cpu_count()
    tflops = cores * (mhz or 0.0) * 1e6 * per_cycle / 1e12 if mhz else None
    return {
        "fp32_tflops": tflops,
        "formula": f"{cores} cores x {mhz} MHz ({clock_source}) x {per_cycle} FP32 FLOP/cycle"
                   + ("; BogoMIPS gives the base clock, boost runs higher, so % of peak can exceed 100"
                      if clock_source == "BogoMIPS/2" else ""),
        "estimate": True,
    }


def measure_sgemm_peak(*, n: int = 2048, seconds: float = 3.0) -> dict[str, Any]:
    """The machine's FP32 matrix-multiply throughput, measured now: the roof the "% of peak" column uses on CPUs.

    ``n`` x ``n`` float32 matrices multiplied by numpy's BLAS (and by torch's, when importable; the faster one
    counts) for about ``seconds`` each, after one untimed call; the best call counts (the machine's capability,
    not its average load). Measured in the same run as the timings, so it sees the same machine, clocks and
    load; a nominal clock x FLOP/cycle figure says nothing about either.
    """
    import time

    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    flop = 2.0 * n**3

    def best_of(fn: Any) -> tuple[float, int]:
        fn()
        best, count, end = float("inf"), 0, time.perf_counter() + seconds
        while count < 3 or time.perf_counter() < end:
            t = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t)
            count += 1
        return flop / best / 1e12, count

    results: dict[str, Any] = {}
    tflops, calls = best_of(lambda: a @ b)
    results["numpy"] = {"tflops": tflops, "calls": calls}
    try:
        import torch

        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        with torch.inference_mode():
            tflops, calls = best_of(lambda: torch.mm(ta, tb))
        results["torch"] = {"tflops": tflops, "calls": calls, "threads": torch.get_num_threads()}
    except ImportError:
        pass
    best = max(results, key=lambda k: results[k]["tflops"])
    each = ", ".join(f"{k} {v['tflops'] * 1000:.1f} GFLOP/s" for k, v in results.items())
    return {
        "fp32_tflops": results[best]["tflops"],
        "method": f"float32 {n}x{n}x{n} matrix multiply, best call of about {seconds:g} s, by {best} ({each})",
        "libraries": results,
        "loadavg_1m": (loadavg() or [None])[0],
        "estimate": False,
    }


def gpu_info() -> dict[str, Any] | None:
    """Name, compute capability, memory and driver of CUDA device 0, or None without one."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    info: dict[str, Any] = {
        "name": props.name,
        "compute_capability": f"{props.major}.{props.minor}",
        "memory_gib": round(props.total_memory / 2**30, 1),
        "cuda_runtime": torch.version.cuda,
        "driver": None,
        "count": torch.cuda.device_count(),
    }
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20).stdout.strip()
            info["driver"] = out.splitlines()[0] if out else None
        except (OSError, subprocess.SubprocessError):
            pass
    for key, peaks in _GPU_PEAKS.items():
        if key in props.name:
            info["nominal_peak_tflops"] = {**peaks, "source": "vendor data sheet, dense, SXM"}
    return info


def library_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in _LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def machine_info() -> dict[str, Any]:
    """The ``machine`` block of results.json."""
    threads: dict[str, Any] = {}
    try:
        import torch

        threads["torch_intra_op"] = torch.get_num_threads()
    except ImportError:
        pass
    try:
        mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        mem_gib = None
    return {
        "cpu_model": cpu_model(),
        "cpu_cores": cpu_count(),
        "memory_gib": mem_gib,
        "platform": platform.platform(),
        "cpu_peak": cpu_peak_estimate(),
        "gpu": gpu_info(),
        "libraries": library_versions(),
        "threads": threads,
        "loadavg_start": loadavg(),
    }


def machine_slug(info: dict[str, Any]) -> str:
    """A folder name for the results: ``cpu-amd-epyc-2core`` or ``gpu-nvidia-h100-80gb-hbm3``."""
    gpu = info.get("gpu")
    if gpu:
        base = f"gpu-{gpu['name']}"
    else:
        base = f"cpu-{info['cpu_model']}-{info['cpu_cores']}core"
    return re.sub(r"[^a-z0-9]+", "-", base.lower()).strip("-")
