"""Measure the memory model of nst_runtime.memory: peak bytes per pixel of one call per backend, and the peak
resident memory of whole stylizations under the default budget. Every measurement runs in a fresh process
(``ru_maxrss``), never in this one.

    python tools/memory_per_pixel.py per-pixel --model out/m.onnx --sizes 512,1024,1080x1920,2048
    python tools/memory_per_pixel.py budget --model out/m.onnx --sizes 1080x1920,2160x3840,9000x9000

``per-pixel``: for each backend (``onnxruntime``, ``openvino``, and ``tiling`` / ``tiling-openvino``: the tiling
graph beside the model on ONNX Runtime / OpenVINO, its statistics pass; ``tiling-apply`` / ``tiling-openvino-apply``:
two tiles of fast tiling's last pass, ``tiling-apply-arena`` with ONNX Runtime's arena) and size, a process opens the model with no budget, runs one warm-up call on a small image, then one
call of that size; bytes/pixel = (peak during the call - resident before it) / pixels, the peak being Linux's
``VmHWM`` reset just before the call (``/proc/self/clear_refs``), so a higher peak while loading the model does
not hide the call's. ``budget``: a process opens the model
with the default budget (or ``--memory-limit``) and stylizes one image of each size; it reports the process's
peak resident memory, the budget and the seconds taken (timing only means something on a quiet machine: the
load average is recorded). ``--json`` writes the records.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

CHILD_PER_PIXEL = r"""
import json, resource, sys, time
import numpy as np
def _status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
def reset_peak():
    # the peak of what follows only: Linux resets VmHWM to the current RSS (clear_refs 5)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status("VmRSS:")
def peak():
    return _status("VmHWM:")
model, backend, h, w = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
from nst_runtime import Stylizer
rng = np.random.default_rng(0)
x = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
if backend.startswith("tiling"):
    # the statistics pass (whole_image_statistics: the statistics graph where the file carries one), or with
    # "-apply" two tiles of fast tiling's last pass (the apply graph)
    from pathlib import Path
    from nst_runtime.tiling import open_tiling_graph, tiling_graph_path, whole_image_statistics
    g = open_tiling_graph(tiling_graph_path(Path(model)), providers=["CPUExecutionProvider"],
                          backend="openvino" if "openvino" in backend else "onnxruntime")
    stats = whole_image_statistics(np.zeros((32, 32, 3), np.uint8), g)
    x = np.ascontiguousarray(x[: h - h % 4, : w - w % 4])
    arena = backend.endswith("-arena")
    if "-apply" in backend:
        g.applier(*stats, arena=arena)(np.zeros((32, 32, 3), np.uint8), last=True)
    before = reset_peak()
    t = time.perf_counter()
    if "-apply" in backend:
        apply = g.applier(*stats, arena=arena)
        apply(x)
        apply(x)
    else:
        whole_image_statistics(x, g)
elif backend == "adain-style":
    # an AdaIN model's style graph (NAME.style.onnx): one style image of this size -> its statistics
    s = Stylizer.open(model, device="cpu", backend="onnxruntime", memory_limit="none", max_pixels=None)
    stats = s._style_statistics()
    stats.stats(np.zeros((32, 32, 3), np.uint8))
    before = reset_peak()
    t = time.perf_counter()
    stats.stats(x)
else:
    s = Stylizer.open(model, device="cpu", backend=backend, memory_limit="none")
    # an AdaIN model takes a style: a small one, its statistics cached by the warm-up call
    kw = {"style": rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)} if s.sidecar.adain is not None else {}
    s.stylize(np.zeros((32, 32, 3), np.uint8), **kw)
    before = reset_peak()
    t = time.perf_counter()
    s.stylize(x, **kw)
seconds = time.perf_counter() - t
after = peak()
print(json.dumps({"backend": backend, "h": h, "w": w, "pixels": h * w, "peak_before": before, "peak_after": after,
                  "bytes_per_pixel": round((after - before) / (h * w)), "seconds": round(seconds, 2)}))
"""

CHILD_BUDGET = r"""
import json, logging, resource, sys, time
import numpy as np
logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
model, h, w, limit, mode, backend = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
from nst_runtime import Stylizer
from nst_runtime.memory import available_memory
from nst_runtime.tiling import APPLY_ARENA_KEY
available = available_memory()
s = Stylizer.open(model, device="cpu", backend=backend, memory_limit=None if limit == "default" else limit,
                  tile_mode=mode)
x = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
opened = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
t = time.perf_counter()
out = s.stylize(x)
seconds = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"h": h, "w": w, "backend": s.backend, "tiled": s._needs_tiles(h, w), "mode": s.tiling_mode,
                  "memory_limit": s.memory_limit, "available_at_open": available, "peak_after_open": opened,
                  "peak_rss": peak, "estimate_untiled": s.estimate_call_bytes(1, h, w),
                  "apply_arena": APPLY_ARENA_KEY in getattr(s._tiling, "_embedded", {}),
                  "seconds": round(seconds, 1), "out_shape": list(out.shape)}))
"""


def _size(text: str) -> tuple[int, int]:
    h, _, w = text.lower().partition("x")
    return int(h), int(w or h)


def _run(code: str, args: list[str], timeout: float) -> dict:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    res = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                         env=env)
    if res.returncode != 0:
        return {"error": res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"exit {res.returncode}",
                "args": args}
    record = json.loads(res.stdout.strip().splitlines()[-1])
    record["log"] = [ln for ln in res.stderr.splitlines() if "nst_runtime.stylizer" in ln or "tiling:" in ln]
    return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=("per-pixel", "budget"))
    p.add_argument("--model", type=Path, required=True, help="NAME.onnx (NAME.tiling.onnx beside it for 'tiling')")
    p.add_argument("--sizes", default="512,1024,1080x1920,2048", help="HxW or N (square), comma-separated")
    p.add_argument("--backends", default="onnxruntime,openvino,tiling",
                   help="also adain-style: an AdaIN model's style graph (AdaIN models get a 64x64 style image)")
    p.add_argument("--memory-limit", default="default", help="budget mode: 'default' or a size such as 4G")
    p.add_argument("--tile-mode", default="fast", choices=("fast", "exact"))
    p.add_argument("--backend", default="auto", help="budget mode: the Stylizer's backend (auto, onnxruntime, openvino)")
    p.add_argument("--timeout", type=float, default=7200)
    p.add_argument("--json", type=Path, help="write the records here")
    args = p.parse_args(argv)
    sizes = [_size(s) for s in args.sizes.split(",")]
    records = []
    for h, w in sizes:
        if args.what == "per-pixel":
            for backend in args.backends.split(","):
                r = _run(CHILD_PER_PIXEL, [str(args.model), backend, str(h), str(w)], args.timeout)
                records.append(r)
                print(f"{backend:12s} {h}x{w}: " + (r["error"] if "error" in r else
                      f"{r['bytes_per_pixel']} B/px ({(r['peak_after'] - r['peak_before']) / 2**20:.0f} MiB), "
                      f"{r['seconds']} s"), flush=True)
        else:
            r = _run(CHILD_BUDGET, [str(args.model), str(h), str(w), args.memory_limit, args.tile_mode, args.backend],
                     args.timeout)
            records.append(r)
            print(f"{h}x{w}: " + (r["error"] if "error" in r else
                  f"peak RSS {r['peak_rss'] / 2**30:.2f} GiB, budget {(r['memory_limit'] or 0) / 2**30:.2f} GiB "
                  f"(untiled estimate {r['estimate_untiled'] / 2**30:.2f} GiB), tiled={r['tiled']} "
                  f"({r['mode']}), {r['seconds']} s, backend {r['backend']}"), flush=True)
    if args.json:
        machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                   "load_average": os.getloadavg(), "python": platform.python_version()}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"what": args.what, "machine": machine, "records": records}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
