"""A runtime-only install (``pip install 'nst[runtime]'``: no torch, no onnx): every command answers ``--help``,
a command whose stage is missing says in one line which extra to install (exit 6), and nst-stylize works.

The missing packages are simulated: a ``sitecustomize`` on PYTHONPATH installs an import hook that raises
ModuleNotFoundError for them, exactly as an absent package would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

BLOCKED = ("torch", "onnx", "onnxscript", "onnxconverter_common", "torchvision", "safetensors", "matplotlib")

SITECUSTOMIZE = """
import os, sys

_BLOCKED = set(os.environ["NST_TEST_BLOCK_MODULES"].split(","))


class _NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in _BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _NotInstalled())
"""

# Runs every case in one interpreter (a few seconds instead of one start-up per case).
CASES = """
import contextlib, io, json, sys
from nst_runtime import commands

def run(call):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = call()
    return {"code": code, "out": out.getvalue(), "err": err.getvalue()}

cases = json.loads(sys.argv[1])
report = {key: run(lambda argv=argv: commands._script(argv[0], "nst-" + argv[0], argv[1:])) if argv[0] != "nst"
          else run(lambda argv=argv: commands.main(argv[1:])) for key, argv in cases.items()}
report["loaded"] = sorted({m.split(".")[0] for m in sys.modules} & set(BLOCKED))
print(json.dumps(report))
""".replace("BLOCKED", repr(BLOCKED))


@pytest.fixture(scope="module")
def lean_env(tmp_path_factory):
    site = tmp_path_factory.mktemp("lean_site")
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    path = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**os.environ, "PYTHONPATH": path, "NST_TEST_BLOCK_MODULES": ",".join(BLOCKED),
            "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}


def _run_cases(env, cases: dict[str, list[str]]) -> dict:
    res = subprocess.run([sys.executable, "-c", CASES, json.dumps(cases)], capture_output=True, text=True,
                         env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_the_simulation_really_hides_torch(lean_env):
    res = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True, text=True, env=lean_env,
                         timeout=60)
    assert res.returncode != 0 and "ModuleNotFoundError" in res.stderr


def test_every_command_answers_help_and_names_the_missing_extra(lean_env, tmp_path):
    (tmp_path / "model.pth").write_bytes(b"not read: the export stage is missing first")
    (tmp_path / "a.jpg").write_bytes(b"")
    cases = {
        **{f"help-{name}": [name, "--help"] for name in ("train", "gatys", "export", "stylize", "bench")},
        "help-nst": ["nst", "--help"],
        "train": ["train", "--style", str(tmp_path / "a.jpg"), "--content-dir", str(tmp_path), "-o",
                  str(tmp_path / "m.pth")],
        "gatys": ["gatys", str(tmp_path / "a.jpg"), str(tmp_path / "a.jpg"), "-o", str(tmp_path / "o.jpg")],
        "export": ["export", str(tmp_path / "model.pth"), "-o", str(tmp_path / "out")],
        "bench": ["bench", "--quick", "-o", str(tmp_path / "bench")],
        "nst-export": ["nst", "export", str(tmp_path / "model.pth"), "-o", str(tmp_path / "out")],
    }
    report = _run_cases(lean_env, cases)
    assert report["loaded"] == []
    for name in ("train", "gatys", "export", "stylize", "bench"):
        got = report[f"help-{name}"]
        assert got["code"] == 0, got
        assert f"Usage: nst-{name}" in got["out"] and "exit codes:" in got["out"] and got["err"] == ""
    listing = report["help-nst"]["out"]
    assert report["help-nst"]["code"] == 0
    assert all(name in listing for name in ("train", "gatys", "export", "stylize", "bench"))
    for key, extra in (("train", "train"), ("gatys", "train"), ("export", "export"), ("bench", "bench"),
                       ("nst-export", "export")):
        got = report[key]
        lines = [ln for ln in got["err"].splitlines() if ln.strip()]
        assert got["code"] == 6, got
        assert len(lines) == 1 and "Traceback" not in got["err"], got["err"]
        assert ": error: " in lines[0] and f"pip install 'nst[{extra}]'" in lines[0], lines[0]
    assert not (tmp_path / "out").exists() and not (tmp_path / "bench").exists()


def test_stylize_runs_without_torch_or_onnx(lean_env, vivid_onnx, tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(tmp_path / "x.png")
    report = _run_cases(lean_env, {"stylize": ["stylize", str(vivid_onnx), str(tmp_path / "x.png"), "-o",
                                               str(tmp_path / "y.png"), "--device", "cpu", "-q"]})
    assert report["stylize"]["code"] == 0, report["stylize"]
    assert report["loaded"] == []
    assert Image.open(tmp_path / "y.png").size == (24, 20)


def test_installed_scripts_answer_help_without_torch(lean_env):
    scripts = Path(sys.executable).parent
    names = ["nst", "nst-train", "nst-gatys", "nst-export", "nst-stylize", "nst-bench"]
    missing = [n for n in names if not (scripts / n).exists()]
    if missing:
        pytest.skip(f"scripts {missing} not installed next to {sys.executable} (pip install -e .)")
    for name in names:
        res = subprocess.run([str(scripts / name), "--help"], capture_output=True, text=True, env=lean_env,
                             timeout=120)
        assert res.returncode == 0 and "Usage:" in res.stdout, (name, res.stderr)


def test_onnx_backends_are_unavailable_without_the_export_stage(tmp_path):
    """With torch but without onnxscript, nst-bench lists ort as skipped (it cannot make its ONNX file) instead
    of listing it as available and then crashing."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {**os.environ, "PYTHONPATH": str(site), "NST_TEST_BLOCK_MODULES": "onnxscript"}
    code = textwrap.dedent("""
        from nst_bench.backends import ModelSource, make_backend
        ok, why = make_backend("ort", device="cpu", source=ModelSource()).available()
        print(ok, why)
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("False") and "nst[export]" in res.stdout and "onnxscript" in res.stdout
