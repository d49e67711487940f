"""ONNX Runtime CPU sessions keep peak memory low by default (memory arena off; memory patterns on, for
speed), measured in subprocesses (never in the test process)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from nst_runtime.onnxruntime_backend import CPU_MEMORY_ARENA, CPU_MEMORY_PATTERNS, SessionFromOnnx


def test_cpu_sessions_turn_the_arena_off(vivid_onnx):
    opts = SessionFromOnnx(vivid_onnx, providers=["CPUExecutionProvider"])().get_session_options()
    assert (opts.enable_cpu_mem_arena, opts.enable_mem_pattern) == (CPU_MEMORY_ARENA, CPU_MEMORY_PATTERNS)
    assert not CPU_MEMORY_ARENA and CPU_MEMORY_PATTERNS
    lean = SessionFromOnnx(vivid_onnx, providers=["CPUExecutionProvider"], memory_arena=False,
                           memory_patterns=False)().get_session_options()
    assert not lean.enable_cpu_mem_arena and not lean.enable_mem_pattern


CHILD = """
import json, resource, sys
import numpy as np
from nst_runtime.onnxruntime_backend import SessionFromOnnx
arena = sys.argv[2] == "arena"
sess = (SessionFromOnnx(sys.argv[1], providers=["CPUExecutionProvider"], memory_arena=True) if arena
        else SessionFromOnnx(sys.argv[1], providers=["CPUExecutionProvider"]))()
x = np.random.default_rng(0).integers(0, 256, (1, 768, 768, 3), dtype=np.uint8)
for _ in range(2):
    sess.run(None, {"input": x})
print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
"""


@pytest.mark.slow
def test_default_cpu_session_peaks_lower_than_the_arena(vivid_onnx):
    peaks = {}
    for mode in ("arena", "default"):
        res = subprocess.run([sys.executable, "-c", CHILD, str(vivid_onnx), mode], capture_output=True, text=True,
                             timeout=600)
        assert res.returncode == 0, res.stderr
        peaks[mode] = json.loads(res.stdout.strip().splitlines()[-1])
    assert peaks["default"] < 0.75 * peaks["arena"], peaks
