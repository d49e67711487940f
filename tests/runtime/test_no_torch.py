"""The runtime never loads torch (or onnx, or the other nst stages): not on import, not running ONNX."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ("torch", "onnx", "nst_train", "nst_export", "nst_bench", "nst_serve", "ray", "tensorrt", "tensorrt_lean")

SCRIPT = """
import json, sys
import numpy as np
import nst_runtime, nst_runtime.cli, nst_runtime.video, nst_runtime.tensorrt_backend, nst_runtime.models.store
after_import = sorted(m for m in sys.modules if m.split('.')[0] in {forbidden!r})
heavy_on_import = sorted(m for m in ('onnxruntime', 'openvino', 'av') if m in sys.modules)
with nst_runtime.Stylizer.open(sys.argv[1], device='cpu', backend=sys.argv[2]) as s:
    s.stylize(np.zeros((9, 11, 3), np.uint8))
after_run = sorted(m for m in sys.modules if m.split('.')[0] in {forbidden!r})
print(json.dumps(dict(after_import=after_import, heavy_on_import=heavy_on_import, after_run=after_run,
                      ran_backend=sys.argv[2] in sys.modules)))
"""


def test_import_and_onnx_run_load_no_torch(vivid_onnx, runtime_backend):
    code = SCRIPT.format(forbidden=set(FORBIDDEN))
    res = subprocess.run([sys.executable, "-c", code, str(vivid_onnx), runtime_backend], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["after_import"] == []
    assert report["heavy_on_import"] == [], "onnxruntime/openvino/av must be imported lazily"
    assert report["after_run"] == []
    assert report["ran_backend"]  # the check is meaningful: the ONNX file really ran on that backend
