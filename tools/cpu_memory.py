"""Peak memory and time of one stylization per CPU engine setting, each in a fresh process (docs/runtime.md).

Every (setting, size) runs in its own subprocess: open the model, stylize one image of that size ``--calls``
times, report the process's peak resident set (``ru_maxrss``) and the median call time. Settings:

* ``ort-arena``: ONNX Runtime CPU with its default session options (memory arena and memory patterns on);
* ``ort-noarena``: arena off, patterns on;
* ``ort-lean``: arena off and memory patterns off;
* ``ort-default``: whatever ``nst_runtime``'s SessionFromOnnx sets today (the runtime's default);
* ``openvino``: nst_runtime's OpenVINO runner;
* ``ort-int8`` / ``openvino-int8``: the same on ``--int8`` (a ``NAME.int8.onnx``), when given.

    python tools/cpu_memory.py --model out/model.onnx --int8 out/model.int8.onnx \
        --sizes 1920x1080,3840x2160 --out benchmarks/results/cpu-memory.json
    python tools/cpu_memory.py --work /tmp/nst-mem --out memory.json    # makes nst-bench's network (FP32+INT8)

Timing here is only indicative (one process, few calls); take speed from nst-bench on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

SETTINGS = ("ort-arena", "ort-noarena", "ort-lean", "ort-default", "openvino", "ort-int8", "openvino-int8")

CHILD = r"""
import json, resource, statistics, sys, time
import numpy as np
setting, model, h, w, calls = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
x = np.random.default_rng(0).integers(0, 256, (1, h, w, 3), dtype=np.uint8)
base = setting.replace("-int8", "")
if base == "openvino":
    from nst_runtime.openvino_backend import CompiledModelFromOnnx, OpenVinoRunner
    from nst_runtime.sidecar import read_sidecar
    runner = OpenVinoRunner(CompiledModelFromOnnx(model), sidecar=read_sidecar(model)).activate()
    run = runner.infer
else:
    import onnxruntime as ort
    if base == "ort-default":
        from nst_runtime.onnxruntime_backend import SessionFromOnnx
        sess = SessionFromOnnx(model, providers=["CPUExecutionProvider"])()
    else:
        opts = ort.SessionOptions()
        opts.enable_cpu_mem_arena = base == "ort-arena"
        opts.enable_mem_pattern = base != "ort-lean"
        sess = ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    run = lambda b: sess.run(None, {name: b})[0]
times = []
for _ in range(calls):
    t = time.perf_counter(); run(x); times.append(time.perf_counter() - t)
print(json.dumps({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "median_s": statistics.median(times), "first_s": times[0], "calls": calls}))
"""


def parse_size(text: str) -> tuple[int, int]:
    w, _, h = text.lower().partition("x")
    return (int(h or w), int(w))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=None,
                   help="FP32 nst ONNX file (with its sidecar); default: nst-bench's network, made in --work")
    p.add_argument("--work", type=Path, default=Path("/tmp/nst-cpu-memory"),
                   help="where the default network's files are made (kept for the next run)")
    p.add_argument("--int8", type=Path, default=None, help="its NAME.int8.onnx (with sidecar)")
    p.add_argument("--sizes", default="1920x1080,3840x2160", help="WIDTHxHEIGHT, comma-separated")
    p.add_argument("--settings", default=",".join(SETTINGS))
    p.add_argument("--calls", type=int, default=2, help="calls per process (the first includes warm-up)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if args.model is None:
        from nst_bench.backends import ModelSource

        source = ModelSource(work_dir=args.work)
        args.model = source.onnx_path("fp32")
        if args.int8 is None and any(s.endswith("-int8") for s in args.settings.split(",")):
            args.int8 = source.onnx_path("int8")
    rows = []
    for size in args.sizes.split(","):
        h, w = parse_size(size)
        for setting in args.settings.split(","):
            model = args.int8 if setting.endswith("-int8") else args.model
            if model is None:
                continue
            load = os.getloadavg()[0]
            t = time.time()
            res = subprocess.run([sys.executable, "-c", CHILD, setting, str(model), str(h), str(w), str(args.calls)],
                                 capture_output=True, text=True)
            if res.returncode != 0:
                rows.append({"setting": setting, "size": f"{w}x{h}", "error": res.stderr.strip()[-500:]})
                print(f"{setting:14s} {w}x{h}: failed (rc {res.returncode})", file=sys.stderr)
                continue
            row = {"setting": setting, "size": f"{w}x{h}", **json.loads(res.stdout.strip().splitlines()[-1]),
                   "wall_s": round(time.time() - t, 1), "loadavg_1m_start": load,
                   "loadavg_1m_end": os.getloadavg()[0]}
            rows.append(row)
            print(f"{setting:14s} {w}x{h}: peak {row['peak_rss_mib']:8.0f} MiB  median {row['median_s']:.2f} s  "
                  f"(load {load:.1f})", flush=True)
    import numpy

    doc = {"what": "peak RSS of one process stylizing one image per setting (tools/cpu_memory.py)",
           "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                       "python": sys.version.split()[0], "numpy": numpy.__version__},
           "model": str(args.model), "int8": str(args.int8) if args.int8 else None, "rows": rows}
    for lib in ("onnxruntime", "openvino"):
        try:
            from importlib.metadata import version

            doc["machine"][lib] = version(lib)
        except Exception:
            doc["machine"][lib] = None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}; median of times: {statistics.median([r.get('median_s', 0) for r in rows] or [0]):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
