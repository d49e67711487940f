"""The memory budget: what one network call needs, what the machine has, and how large a call may be.

A call's peak memory is a fixed part plus a part that grows linearly with its pixels (N x H x W): the network's
activations dominate (32 to 128 float32 channels per pixel at full, half and quarter resolution, plus
convolution work buffers). The numbers below were measured, not derived: the growth of the peak resident
memory (``ru_maxrss``) of a fresh process over one call of the size shown, after a warm-up call on a small
image, through nst_runtime's own loaders and session options (ONNX Runtime's CPU arena off, memory patterns on:
the options every session gets; re-measured with them on 30 Nov 2026: deploy graph 926 B/px at 512², 526 B/px
at 1024²; tiling graph 976 and 925 B/px, each within its model below), TransformerNet (Johnson et al.),
FP32, 2 CPU cores; ``tools/memory_per_pixel.py per-pixel`` reproduces them:

* deploy graph, ONNX Runtime CPU: 229 MiB (916 B/px) at 512², 514 MiB (514 B/px) at 1024², 1016 MiB
  (514 B/px) at 1080x1920; model: 160 MiB + 520 B/px (+ 64 MiB for malloc's variance: ORT_FIXED);
* deploy graph, OpenVINO CPU: 143 MiB (570 B/px) at 512², 567 MiB (567 B/px) at 1024², 1120 MiB (566 B/px) at
  1080x1920; model: 32 MiB + 600 B/px;
* tiling graph, ONNX Runtime CPU: 333 MiB (1332 B/px) at 512², 925 MiB (925 B/px) at 1024², 1833 MiB
  (927 B/px) at 1080x1920; model: 160 MiB + 930 B/px (+ 64 MiB, as above);
* tiling graph, OpenVINO CPU (a model that runs on OpenVINO runs its tiling graph there: faster, and
  OpenVINO keeps more of the graph's intermediate tensors): 590 MiB (2359 B/px) at 512², 2359 MiB (2359 B/px)
  at 1024², 5306 MiB (2358 B/px) at 1536²; model: 32 MiB + 2400 B/px. OpenVINO keeps those buffers after the
  call until the graph runs another shape or gives them back (``release_memory``), so fast tiling gives them
  back after its statistics pass where that pass and a tile could not both fit the budget. What fast tiling
  runs besides, measured at 1024² the same way: the stems 389 / 394 B/px on OpenVINO (kept after the call
  too), 261 B/px on ONNX Runtime; the apply graph 665 B/px on OpenVINO (statistics baked in; freed with the
  per-image model), 794 B/px on ONNX Runtime: all under the tiling graph's model, which sizes the tiles. On
  ONNX Runtime the apply graph runs with the memory arena where its larger cost fits the budget
  (:data:`APPLY_ARENA_CALL_COST`, up to 1851 B/px measured).

Every model is an upper bound of the measurements it was fitted to. GPU backends keep activations in device
memory: on the host a call costs the uint8 input and output and a few copies of the image
(:data:`HOST_BYTES_PER_PIXEL`); TensorRT's device memory is bounded by the engine's optimization profile, and
ONNX Runtime's CUDA provider's device memory is not modelled (no GPU was available to measure it). The tiling
graph runs on OpenVINO with a model that runs there, else on ONNX Runtime.

The default budget is :data:`DEFAULT_MEMORY_SHARE` of the memory available when the model is opened
(``MemAvailable``, or the cgroup's limit minus its usage when that is smaller). A call whose estimate exceeds the
budget runs in tiles sized to fit it (see :mod:`nst_runtime.tiling`).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError


@dataclass(frozen=True)
class CallCost:
    """Peak memory of one call: ``fixed`` bytes plus ``per_pixel`` bytes for every input pixel (N x H x W)."""

    fixed: int
    per_pixel: int

    def bytes_for(self, pixels: int) -> int:
        return self.fixed + self.per_pixel * pixels

    def pixels_within(self, budget: int) -> int:
        """The most pixels one call may have within ``budget`` bytes (0 when the fixed part alone exceeds it)."""
        return max(0, budget - self.fixed) // max(1, self.per_pixel)


#: the fixed part of every ONNX Runtime CPU call: what the measurements above need (160 MiB), plus one glibc
#: malloc heap (64 MiB). The threads that run a call allocate from per-thread malloc arenas, and which arena
#: keeps freed memory varies from run to run: the same 512² call of the deploy graph grew the peak by 204-298
#: MiB over repeated fresh processes (1, 2, 4 or 8 threads alike), always 236 with MALLOC_ARENA_MAX=1
#: (measured 1 Dec 2026; nst does not change the process's malloc settings, it is a library)
ORT_FIXED = (160 + 64) << 20
#: CPU backends, the deploy graph (measured, see the table above)
CPU_CALL_COST: dict[str, CallCost] = {"onnxruntime": CallCost(ORT_FIXED, 520), "openvino": CallCost(32 << 20, 600)}
#: the tiling graph on each CPU backend (it also computes every layer's moments)
TILING_CALL_COST: dict[str, CallCost] = {"onnxruntime": CallCost(ORT_FIXED, 930), "openvino": CallCost(32 << 20, 2400)}
#: the statistics graph carried in the tiling graph (fast tiling's pass over a downscaled copy), measured with
#: ``tools/memory_per_pixel.py per-pixel --backends tiling,tiling-openvino --sizes 1016x1024,2048``: ONNX Runtime
#: 866 / 769 B/px, OpenVINO 1388 / 1382 B/px
STATS_CALL_COST: dict[str, CallCost] = {"onnxruntime": CallCost(ORT_FIXED, 870), "openvino": CallCost(32 << 20, 1400)}
#: fast tiling's last pass on ONNX Runtime's CPU with its memory arena (nst_runtime.tiling.open_tiling_graph):
#: the arena rounds its growth up to powers of two, so the peak per pixel swings with the window's size. Measured
#: with ``tools/memory_per_pixel.py per-pixel --backends tiling-apply-arena`` (two calls of one window): 1134 /
#: 1029 / 858 / 900 / 1388 / 1235 / 989 / 1851 / 1627 / 1258 / 1766 B/px at 512² / 768² / 1016x1024 / 1300² /
#: 1448² / 1536² / 1800² / 2048² / 2300² / 2600² / 2900², 858 at 1080x1920, 1386 at 1024x2048, 920 at 1400x2600
#: (without the arena 790-940, 1214 at 512²; the arena at most about twice that).
#: Fast tiling runs the last pass in the arena only where this cost fits the budget; the tiles are still sized
#: by TILING_CALL_COST, so the arena never makes them smaller
APPLY_ARENA_CALL_COST = CallCost(ORT_FIXED, 2000)
#: network families whose cost differs from TransformerNet's, by (family, backend). AdaIN (Huang & Belongie:
#: VGG-19 encoder to relu4_1, 64 float32 channels at full resolution, and a decoder back up), measured like the
#: table above (``tools/memory_per_pixel.py per-pixel --model adain.onnx --backends onnxruntime,adain-style,
#: openvino --sizes 256,512,768``): the stylize graph on ONNX Runtime CPU 1032 / 1092 / 1171 B/px at 256² / 512²
#: / 768² (model: 200 MiB + 1200 B/px, over twice TransformerNet's; with ORT_FIXED's malloc heap 264 MiB); on OpenVINO 526 / 517 / 550 B/px (within
#: TransformerNet's 600); the style graph ("adain-style", ONNX Runtime CPU) 512 B/px at every size.
FAMILY_CALL_COST: dict[tuple[str, str], CallCost] = {("adain", "onnxruntime"): CallCost(ORT_FIXED + (40 << 20), 1200),
                                                     ("adain-style", "onnxruntime"): CallCost(ORT_FIXED, 520)}
#: host memory per pixel of a GPU call: uint8 input and output, the padded and cropped copies
HOST_BYTES_PER_PIXEL = 24
#: the default budget: this share of the memory available when the model is opened
DEFAULT_MEMORY_SHARE = 0.5
#: the budget when the available memory cannot be read (not Linux, no sysconf)
FALLBACK_MEMORY_LIMIT = 4 << 30
#: tiles are never made smaller than this (a smaller budget tiles at this size rather than refuse)
MIN_TILE_SIDE = 128

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1000, "kib": 1 << 10, "m": 1 << 20, "mb": 1000**2, "mib": 1 << 20,
          "g": 1 << 30, "gb": 1000**3, "gib": 1 << 30, "t": 1 << 40, "tb": 1000**4, "tib": 1 << 40}


def parse_memory_size(value: int | str) -> int:
    """``8G``, ``512MiB``, ``1.5GB``, ``60%`` (of :func:`available_memory`), ``1073741824`` -> bytes.

    K/M/G/T and KiB/MiB/GiB/TiB are powers of 1024, KB/MB/GB/TB of 1000 (as ``--memory-limit``)."""
    if isinstance(value, bool):
        raise UsageError(f"memory limit {value!r}: expected a size such as 8G or 512M.")
    if isinstance(value, int):
        number, unit = float(value), ""
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*|%)\s*", str(value))
        if not match or (match.group(2).lower() not in _UNITS and match.group(2) != "%"):
            raise UsageError(f"memory limit {value!r}: expected a size such as 8G, 512M or 1.5GB, a share of the "
                             "available memory such as 60%, or 'none'.")
        number, unit = float(match.group(1)), match.group(2).lower()
    if unit == "%":
        available = available_memory()
        if not 0 < number <= 100 or available is None:
            raise UsageError(f"memory limit {value!r}: expected a share above 0% and at most 100% of the memory "
                             "available (which this system must report), or a size such as 8G.")
        size = available * number / 100
    else:
        size = number * _UNITS[unit]
    if not math.isfinite(size) or size < 1 or size >= 1 << 62:
        raise UsageError(f"memory limit {value!r}: expected a positive size below 4 EiB.")
    return int(size)


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # cgroup v2 writes "max" for no limit


def available_memory() -> int | None:
    """Bytes this process may still use: ``MemAvailable`` from /proc/meminfo, lowered to the cgroup's limit
    minus its usage (containers); None where neither can be read."""
    found: list[int] = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
                break
    except (OSError, ValueError, IndexError):
        pass
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit, usage = _read_int(Path(limit_file)), _read_int(Path(usage_file))
        if limit is not None and usage is not None and limit < 1 << 60:
            found.append(max(0, limit - usage))
            break
    if not found:
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            return None
    return min(found)


def default_memory_limit() -> int:
    """:data:`DEFAULT_MEMORY_SHARE` of :func:`available_memory` (:data:`FALLBACK_MEMORY_LIMIT` if unknown)."""
    available = available_memory()
    return FALLBACK_MEMORY_LIMIT if available is None else int(available * DEFAULT_MEMORY_SHARE)


def resolve_memory_limit(memory_limit: int | str | None) -> int | None:
    """None or ``"auto"`` -> the default budget; ``"none"`` -> no budget; a size or share -> bytes."""
    if memory_limit is None or (isinstance(memory_limit, str) and memory_limit.strip().lower() == "auto"):
        return default_memory_limit()
    if isinstance(memory_limit, str) and memory_limit.strip().lower() in ("none", "unlimited"):
        return None
    return parse_memory_size(memory_limit)


def call_cost(backend: str, *, on_gpu: bool, tiling_graph: bool = False, stats_graph: bool = False,
              family: str | None = None) -> CallCost:
    """What one call costs in host memory on ``backend`` (``"onnxruntime"``, ``"openvino"``, ``"tensorrt"``);
    ``tiling_graph``: a call of the tiling graph on ``backend`` (``"openvino"`` or ONNX Runtime) instead, and with
    ``stats_graph`` of the statistics graph it carries; ``family``: a network family whose cost differs from
    TransformerNet's on that backend (:data:`FAMILY_CALL_COST`: ``"adain"``, ``"adain-style"``)."""
    if on_gpu or (backend == "tensorrt" and not tiling_graph):
        return CallCost(0, HOST_BYTES_PER_PIXEL)
    if tiling_graph and stats_graph:
        return STATS_CALL_COST.get(backend, STATS_CALL_COST["onnxruntime"])
    if tiling_graph:
        return TILING_CALL_COST.get(backend, TILING_CALL_COST["onnxruntime"])
    if family is not None and (family, backend) in FAMILY_CALL_COST:
        return FAMILY_CALL_COST[(family, backend)]
    return CPU_CALL_COST.get(backend, max(CPU_CALL_COST.values(), key=lambda c: c.per_pixel))


def largest_tile_side(budget: int, cost: CallCost, *, multiple: int = 4) -> int:
    """The largest square tile side (a multiple of ``multiple``, at least :data:`MIN_TILE_SIDE`) whose call
    fits ``budget`` bytes."""
    side = math.isqrt(cost.pixels_within(budget))
    return max(MIN_TILE_SIDE, side - side % multiple)


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
