"""Nothing lost: every writer of nst replaces its file atomically. A writer SIGKILLed mid-write leaves the
previous file intact and loadable; a full disk (ENOSPC, simulated) leaves the previous file intact, no temp
file behind, and the CLI says so in one line (exit 9). Training killed at a random step resumes to the same
weights as an uninterrupted run."""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from nst_runtime.errors import WriteError
from PIL import Image

# The child writes version 1 of the file, then starts writing version 2 through a write that stops half-way
# (prints MIDWRITE and sleeps), and is SIGKILLed there by the parent.
CHILD = r'''
import os, sys, time
kind, path = sys.argv[1], sys.argv[2]

def stall_after_half(real_write):
    state = {"done": 0}
    def write(data):
        data = bytes(data)
        half = data[: max(1, len(data) // 2)]
        real_write(half)
        state["done"] += len(half)
        print("MIDWRITE", flush=True)
        time.sleep(600)
    return write

if kind in ("checkpoint", "state"):
    import torch
    import nst_runtime.atomic as atomic
    from nst_train.model import TransformerNet
    torch.manual_seed(int(sys.argv[3]))
    net = TransformerNet()
    def save():
        if kind == "checkpoint":
            from nst_train.checkpoint import CheckpointMetadata, save_checkpoint
            save_checkpoint(path, net, CheckpointMetadata(steps=int(sys.argv[3])))
        else:
            from nst_train.training_state import save_training_state
            opt = torch.optim.Adam(net.parameters())
            save_training_state(path, model=net, optimizer=opt, scaler=torch.amp.GradScaler("cpu", enabled=False),
                                step=int(sys.argv[3]), epoch=0, batch_in_epoch=0, fingerprint={})
    if sys.argv[4] == "stall":
        real_open = open
        def slow_open(file, mode="r", *a, **k):
            f = real_open(file, mode, *a, **k)
            real = f.write
            def w(data):
                real(bytes(data)[: len(data) // 2]); f.flush()
                print("MIDWRITE", flush=True); time.sleep(600)
            f.write = w
            return f
        atomic.open = slow_open
    save()
else:  # a stylized output image through the runtime's save_image
    import numpy as np
    from PIL import Image
    import nst_runtime.images as images
    value = int(sys.argv[3])
    if sys.argv[4] == "stall":
        real_open = open
        class Slow:
            def __init__(self, *a, **k): self.f = real_open(*a, **k)
            def __enter__(self): return self
            def __exit__(self, *e): self.f.close()
            def write(self, data):
                self.f.write(bytes(data)[: len(data) // 2]); self.f.flush()
                print("MIDWRITE", flush=True); time.sleep(600)
            def __getattr__(self, name): return getattr(self.f, name)
        images.open = Slow
    images.save_image(Image.fromarray(np.full((64, 64, 3), value, np.uint8)), path)
print("DONE", flush=True)
'''


def _run_child(kind: str, path: Path, version: int, mode: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen([sys.executable, "-c", CHILD, kind, str(path), str(version), mode],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _load(kind: str, path: Path):
    if kind == "checkpoint":
        from nst_train.checkpoint import load_checkpoint

        return load_checkpoint(path).metadata.steps
    if kind == "state":
        from nst_train.training_state import load_training_state

        return load_training_state(path).step
    return int(np.asarray(Image.open(path))[0, 0, 0])


@pytest.mark.parametrize("kind,name", [("checkpoint", "m.pth"), ("image", "out.png"),
                                       pytest.param("state", "state.pth", marks=pytest.mark.slow)])
def test_sigkill_mid_write_keeps_previous_file(tmp_path, kind, name):
    path = tmp_path / name
    first = _run_child(kind, path, 1, "plain")
    assert first.wait(timeout=120) == 0, first.stderr.read()
    assert _load(kind, path) == 1
    before = path.read_bytes()
    child = _run_child(kind, path, 2, "stall")
    try:
        line = child.stdout.readline()
        assert line.strip() == "MIDWRITE", child.stderr.read()
        temps = [p for p in tmp_path.iterdir() if p.name.startswith(f".{name}.")]
        assert temps and temps[0].stat().st_size > 0  # really mid-write: a partial temp file exists
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    assert path.read_bytes() == before and _load(kind, path) == 1  # the previous file, intact and loadable


class _DiskFull:
    """A file wrapper whose writes fail with ENOSPC once ``budget`` bytes have been written."""

    def __init__(self, f, budget: int) -> None:
        self._f, self._left = f, budget

    def write(self, data):
        data = data if isinstance(data, str) else bytes(data)
        if len(data) > self._left:
            self._f.write(data[: self._left])
            self._left = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._left -= len(data)
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


@pytest.fixture
def disk_full(monkeypatch):
    """After ``arm(budget)``, files opened by nst's writers fail with ENOSPC after ``budget`` bytes."""
    import nst_runtime.atomic as atomic
    import nst_runtime.images as images

    real_open = open

    def arm(budget: int = 1000) -> None:
        for module in (atomic, images):
            monkeypatch.setattr(module, "open", lambda *a, **k: _DiskFull(real_open(*a, **k), budget),
                                raising=False)

    yield arm


def _no_temps(folder: Path) -> None:
    assert not [p.name for p in folder.rglob(".*.tmp")], "a temp file was left behind"


def test_disk_full_checkpoint(tmp_path, tiny_net, disk_full):
    from nst_train.checkpoint import CheckpointMetadata, load_checkpoint, save_checkpoint

    path = save_checkpoint(tmp_path / "m.pth", tiny_net, CheckpointMetadata(steps=1))
    disk_full(1000)
    with pytest.raises(WriteError, match=r"m\.pth: cannot write \(No space left on device\)") as info:
        save_checkpoint(path, tiny_net, CheckpointMetadata(steps=2))
    assert isinstance(info.value, OSError) and info.value.errno == errno.ENOSPC
    assert load_checkpoint(path).metadata.steps == 1
    _no_temps(tmp_path)


def test_disk_full_stylized_output_cli(tmp_path, vivid_onnx, make_image, disk_full, capsys):
    from nst_runtime.cli import main

    Image.fromarray(make_image(16, 16)).save(tmp_path / "x.png")
    out = tmp_path / "out.png"
    out.write_bytes(b"previous result")
    disk_full(100)
    code = main([str(vivid_onnx), str(tmp_path / "x.png"), "-o", str(out), "--device", "cpu", "-q"])
    err = capsys.readouterr().err
    assert code == 9, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "out.png: cannot write (No space left on device)" in lines[0]
    assert out.read_bytes() == b"previous result"
    _no_temps(tmp_path)


def test_disk_full_training_cli(tmp_path, train_args, disk_full, capsys, one_torch_thread):
    """nst-train with a full disk when it saves the resumable state: one line, exit 9, old state intact."""
    from nst_train.cli import train_main
    from nst_train.training_state import load_training_state

    args = train_args(tmp_path / "m.pth", "--steps", "2", "--checkpoint-every", "1")
    assert train_main(args) == 0
    state = tmp_path / "m.run" / "state.pth"
    step_before = load_training_state(state).step
    capsys.readouterr()
    disk_full(100_000)  # a nearly full disk: run.json (about 2 KB) still fits, the multi-MB state does not
    assert train_main([*train_args(tmp_path / "m.pth", "--steps", "4", "--checkpoint-every", "1"), "--resume"]) == 9
    errors = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln]
    assert len(errors) == 1 and "state.pth: cannot write (No space left on device)" in errors[0], errors
    assert load_training_state(state).step == step_before
    _no_temps(tmp_path)


def test_disk_full_export_cli_one_line(tmp_path, vivid_checkpoint, monkeypatch, capsys):
    import onnx
    from nst_export.cli import main

    def full(model, path, *a, **k):
        Path(path).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(onnx, "save_model", full)
    try:
        code = main([str(vivid_checkpoint), "--onnx-only", "--out-dir", str(tmp_path), "-q"])
    except OSError:
        code = "traceback"
    err = capsys.readouterr().err
    assert code == 9 and "No space left on device" in err
    _no_temps(tmp_path)


def test_training_sigkill_at_random_step_resumes_to_same_weights(tmp_path, train_args):
    """nst-train killed with SIGKILL at a random step (not Ctrl-C: nothing gets to save) and rerun with
    --resume ends with exactly the weights of an uninterrupted run."""
    import torch

    steps, every = 8, 2
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    base = [sys.executable, "-m", "nst_train.cli"]

    ref = subprocess.run([*base, *train_args(tmp_path / "ref.pth", "--steps", str(steps), "--checkpoint-every",
                                             str(every))], env=env, capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr
    kill_at = random.Random().randint(every + 1, steps - 1)  # after at least one saved state
    args = train_args(tmp_path / "m.pth", "--steps", str(steps), "--checkpoint-every", str(every))
    proc = subprocess.Popen([*base, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = tmp_path / "m.run" / "loss.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if log.is_file() and len(log.read_text().splitlines()) >= kill_at:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"the run ended before step {kill_at}"
    assert not (tmp_path / "m.pth").exists()
    res = subprocess.run([*base, *args, "--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    a = torch.load(tmp_path / "ref.pth", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "m.pth", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a), f"resumed weights differ (killed at step {kill_at})"
