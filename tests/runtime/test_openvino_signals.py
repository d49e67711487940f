"""OpenVINO and signals: Ctrl-C / SIGTERM must still stop a process cleanly after OpenVINO models were closed.

OpenVINO's CPU plugin swaps the thread's signal stack per Core; Cores released out of order left it dangling
and the next handled signal crashed the process with SIGSEGV (found when the CI's SIGTERM test segfaulted after
earlier tests had opened and closed OpenVINO Stylizers). Run in a subprocess: a crash must not take the test
runner with it.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("openvino")

SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, time
    import numpy as np
    from nst_runtime import Stylizer

    model = sys.argv[1]
    a = Stylizer.open(model, device="cpu", backend="openvino")
    a.stylize(np.zeros((32, 32, 3), np.uint8))
    b = Stylizer.open(model, device="cpu", backend="openvino")
    b.stylize(np.zeros((32, 32, 3), np.uint8))
    a.close()  # first opened, first closed: not the reverse order
    b.close()
    seen = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda num, frame: seen.append(num))
        os.kill(os.getpid(), sig)
        time.sleep(0.2)
    print("handled", len(seen))
    """
)


def test_signals_after_openvino_stylizers_closed_out_of_order(onnx_fp32_path):
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(onnx_fp32_path)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode} (-11: SIGSEGV): {proc.stderr[-2000:]}"
    assert "handled 2" in proc.stdout
