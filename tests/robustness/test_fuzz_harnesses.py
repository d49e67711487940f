"""CI runs of the fuzz harnesses (fuzz_images.py, fuzz_checkpoint.py), bounded in time: a few seconds each
by default, a minute each under ``-m slow``. Any exception other than NstError fails the run."""

from __future__ import annotations

import base64
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
HARNESSES = ["fuzz_images", "fuzz_checkpoint"]
has_atheris = importlib.util.find_spec("atheris") is not None

#: inputs the fuzzers once found (kept so the fixes stay fixed); (harness, base64)
REGRESSIONS = [
    # an external-data location with NUL bytes made Path.resolve raise ValueError
    ("fuzz_checkpoint", "BDoaKhhCAXdqEQoIbG9jYXRpb24SBXcuYmkAAAAAAABucAE="),
]


def _atheris(harness: str, seconds: int, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, str(HERE / f"{harness}.py"), f"-max_total_time={seconds}",
                           "-timeout=20", "-rss_limit_mb=4096", f"-artifact_prefix={tmp_path}/"],
                          capture_output=True, text=True, timeout=seconds + 120, cwd=tmp_path, env=env)


@pytest.mark.skipif(not has_atheris, reason="atheris is not installed (pip install 'nst[dev]'); the hypothesis "
                    "byte-fuzzing tests below cover the same harnesses")
@pytest.mark.parametrize("harness", HARNESSES)
def test_atheris_short_run(harness, tmp_path):
    res = _atheris(harness, 3, tmp_path)
    assert res.returncode == 0 and "Done" in res.stderr, res.stderr[-3000:]


@pytest.mark.parametrize("harness", HARNESSES)
def test_hypothesis_byte_fuzzing_short_run(harness):
    import logging
    import warnings

    module = __import__(harness)
    disabled, filters = logging.root.manager.disable, list(warnings.filters)
    assert module.main([harness, "--hypothesis", "--seconds", "2"]) == 0
    # run in-process: it must leave the test process's logging and warnings as it found them
    assert logging.root.manager.disable == disabled
    assert warnings.filters == filters


@pytest.mark.parametrize("harness,data", REGRESSIONS)
def test_fuzz_regressions(harness, data):
    __import__(harness).check(base64.b64decode(data))


def test_seeds_are_accepted_by_the_loaders():
    """The harnesses start from valid files (otherwise they would fuzz only the error paths)."""
    import fuzz_images
    from nst_runtime.images import read_image

    for i, seed in enumerate(fuzz_images.seeds()):
        path = fuzz_images._DIR / f"seed{i}"
        path.write_bytes(seed)
        assert read_image(path, all_frames=True).frames


@pytest.mark.slow
@pytest.mark.skipif(not has_atheris, reason="atheris is not installed")
@pytest.mark.parametrize("harness", HARNESSES)
def test_atheris_long_run(harness, tmp_path):
    res = _atheris(harness, 60, tmp_path)
    assert res.returncode == 0 and "Done" in res.stderr, res.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("harness", HARNESSES)
def test_hypothesis_byte_fuzzing_long_run(harness):
    assert __import__(harness).main([harness, "--hypothesis", "--seconds", "60"]) == 0
