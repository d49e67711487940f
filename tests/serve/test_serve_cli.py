"""``nst-serve`` as users run it: the installed script in a subprocess (its own local Ray), ready line, a request,
SIGTERM, and no Ray process left; and its one-line refusals, which come before Ray starts."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="nst-serve needs Ray (pip install 'nst[serve]')")

SCRIPT = Path(sys.executable).with_name("nst-serve")


def _children(pid: int) -> set[int]:
    """Every descendant of ``pid`` (from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def _using(marker: str) -> set[int]:
    """Processes whose command line mentions ``marker`` (the Ray session's temp folder)."""
    pids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                if marker in open(f"/proc/{entry}/cmdline", "rb").read().decode(errors="replace"):
                    pids.add(int(entry))
            except OSError:
                pass
    return _alive(pids)


@pytest.mark.skipif(not SCRIPT.exists(), reason="the nst-serve script is not installed (pip install -e .)")
def test_nst_serve_prints_its_url_serves_and_leaves_no_ray_process_on_sigterm(onnx_fp32_path, free_port):
    port = free_port()
    # a short temp root of its own (unix socket paths are limited to 107 bytes) marks this Ray's processes
    ray_tmp = tempfile.mkdtemp(prefix="nstsrv")
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([str(SCRIPT), str(onnx_fp32_path), "--port", str(port), "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        deadline, line = time.monotonic() + 240, ""
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if line.startswith("nst-serve: ready at") or proc.poll() is not None:
                break
        assert line.startswith(f"nst-serve: ready at http://127.0.0.1:{port}/ (models: tiny;"), (
            line, proc.poll(), proc.stderr.read() if proc.poll() is not None else "")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=30) as answer:
            assert answer.status == 200
        body = (Path(onnx_fp32_path).parent / "img.png")
        from PIL import Image

        Image.new("RGB", (32, 24), (120, 30, 200)).save(body)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/stylize/tiny", data=body.read_bytes(),
                                         method="POST")
        with urllib.request.urlopen(request, timeout=60) as answer:
            assert answer.status == 200 and answer.read()[:4] == b"\x89PNG"
        ray_processes = _children(proc.pid) | _using(ray_tmp)
        assert len(ray_processes) >= 3  # gcs, raylet, workers…: the check below would be empty otherwise
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=90) == 0
        time.sleep(1.0)
        assert _alive(ray_processes) == set() and _using(ray_tmp) == set()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_nst_serve_refuses_bad_models_in_one_line_before_starting_ray(tmp_path, onnx_fp32_path, capfd):
    from nst_serve.cli import main

    assert main([str(tmp_path / "missing.onnx")]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert err == [f"nst-serve: error: {tmp_path / 'missing.onnx'}: no such model file. Fix: pass an .onnx file "
                   "or an engine exported by nst-export (its .json sidecar beside it)."]
    bare = tmp_path / "bare.onnx"
    shutil.copy(onnx_fp32_path, bare)  # no sidecar beside it
    start = time.monotonic()
    assert main([str(bare)]) == 3
    assert time.monotonic() - start < 5  # refused without starting Ray
    (line,) = capfd.readouterr().err.strip().splitlines()
    assert line.startswith("nst-serve: error: model bare: ")
    assert main([str(onnx_fp32_path), "--max-batch", "0"]) == 2
    assert "--max-batch" in capfd.readouterr().err


def test_nst_group_offers_serve():
    from click.testing import CliRunner
    from nst_runtime.commands import nst

    result = CliRunner().invoke(nst, ["serve", "--help"])
    assert result.exit_code == 0 and "POST /v1/stylize/{model}" in result.output
    assert "serve" in CliRunner().invoke(nst, ["--help"]).output
