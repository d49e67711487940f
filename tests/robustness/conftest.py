"""Fixtures of the robustness suite: a non-degenerate exported network (the runtime tests' ``vivid`` network,
rebuilt here so this folder runs on its own), hostile-file builders and a helper to run CLIs as subprocesses.

Everything runs on CPU. A "sentinel" is a file that hostile input would create if its code ever ran; tests
check that it never appears.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the fuzz_*.py harnesses import as modules


@pytest.fixture(scope="session")
def vivid_net(tiny_net):
    """The shared ``tiny_net``: its output already spans 0..255 (see tests/conftest.py)."""
    return tiny_net


@pytest.fixture(scope="session")
def vivid_checkpoint(tmp_path_factory, vivid_net):
    from nst_train.checkpoint import CheckpointMetadata, save_checkpoint

    return save_checkpoint(tmp_path_factory.mktemp("rb_vivid") / "vivid.pth", vivid_net, CheckpointMetadata(steps=0))


@pytest.fixture(scope="session")
def vivid_onnx(vivid_checkpoint):
    """FP32 ONNX + sidecar of ``vivid_net``, written by nst-export's own function."""
    from nst_export.onnx_export import onnx_from_checkpoint

    return onnx_from_checkpoint(vivid_checkpoint, vivid_checkpoint.with_suffix(".onnx"))


@pytest.fixture(scope="session")
def stylizer(vivid_onnx):
    from nst_runtime import Stylizer

    with Stylizer.open(vivid_onnx, device="cpu") as s:
        yield s


def natural_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A photo-like uint8 RGB test image (smooth fields, noise), asymmetric in both axes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    img = np.stack([xx / max(w - 1, 1) * 200, yy / max(h - 1, 1) * 200, (xx * 2 + yy) % 97 * 2.5], -1)
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def make_image():
    return natural_image


class Evil:
    """Unpickling this runs ``touch SENTINEL`` (through ``os.system``) — unless the loader refuses it."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return (os.system, (f"touch {self.sentinel}",))


@pytest.fixture
def sentinel(tmp_path) -> Path:
    path = tmp_path / "SENTINEL_code_ran"
    yield path
    assert not path.exists(), "code from a hostile file ran"


@pytest.fixture
def evil_pth(tmp_path, sentinel):
    """Factory: a torch.save file holding ``payload`` plus an object whose unpickling runs code."""
    import torch

    def make(name: str = "evil.pth", payload: dict | None = None, raw_pickle: bool = False) -> Path:
        path = tmp_path / name
        obj = {**(payload or {}), "x": Evil(sentinel)}
        if raw_pickle:
            import pickle

            with open(path, "wb") as f:
                pickle.dump(obj, f, protocol=2)
        else:
            torch.save(obj, path)
        return path

    return make


@dataclass(frozen=True)
class CliResult:
    code: int
    err: str
    out: str

    def assert_one_line_error(self, code: int, *needles: str) -> str:
        """The CLI failed with ``code`` and said so in one line on stderr, without a traceback."""
        lines = [ln for ln in self.err.splitlines() if ln.strip()]
        assert self.code == code, f"exit {self.code}, expected {code}; stderr:\n{self.err}"
        assert "Traceback" not in self.err, self.err
        errors = [ln for ln in lines if ": error: " in ln]
        assert len(errors) == 1, f"expected one error line, got:\n{self.err}"
        for needle in needles:
            assert needle in errors[0], f"{needle!r} not in {errors[0]!r}"
        return errors[0]


def run_cli(module_or_code: str, args: Sequence[str], *, timeout: float = 120, env: dict | None = None,
            code: bool = False) -> CliResult:
    """Run ``python -m MODULE ARGS`` (or ``python -c CODE ARGS``) and capture exit code and streams."""
    cmd = [sys.executable, "-c", module_or_code] if code else [sys.executable, "-m", module_or_code]
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", **(env or {})}
    res = subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=full_env)
    return CliResult(res.returncode, res.stderr, res.stdout)


@pytest.fixture(scope="session")
def cli():
    return run_cli


@pytest.fixture(scope="session")
def samples(tmp_path_factory) -> Path:
    """``content/`` (6 generated 48 px photos) and ``style.png``, as in tests/train."""
    from nst_train.samples import write_sample_content, write_sample_style

    root = tmp_path_factory.mktemp("rb_samples")
    write_sample_content(root / "content", count=6, size=48, seed=0)
    write_sample_style(root / "style.png", size=48, seed=0)
    return root


TRAIN_ARGS = ("--image-size", "32", "--batch-size", "2", "--vgg-weights", "random", "--num-workers", "0",
              "--device", "cpu", "--no-progress", "--seed", "3", "--log-every", "1", "--preview-every", "0")


@pytest.fixture
def train_args(samples):
    """Factory of nst-train argument lists on the sample data (well under a second per step)."""

    def make(out: Path, *extra: str) -> list[str]:
        return ["--style", str(samples / "style.png"), "--content-dir", str(samples / "content"),
                "--out", str(out), *TRAIN_ARGS, *extra]

    return make


@pytest.fixture
def one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
