"""Fuzz harness for the model-file loaders: ``load_checkpoint`` (``.pth`` and ``.safetensors``),
``load_training_state``, the sidecar reader and the runtime's ONNX external-data scan.

Any exception other than nst's own :class:`~nst_runtime.errors.NstError` is a finding; so is any sign that
code in a pickle ran (the harness checks a sentinel file after every input).

    python tests/robustness/fuzz_checkpoint.py -max_total_time=600         # atheris (libFuzzer)
    python tests/robustness/fuzz_checkpoint.py --hypothesis --seconds 600  # hypothesis byte fuzzing
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
from pathlib import Path

_DIR = Path(tempfile.mkdtemp(prefix="nst-fuzz-ckpt-"))
SENTINEL = _DIR / "SENTINEL"


def seeds() -> list[bytes]:
    """Small valid files of each kind; the first byte of an input picks the loader (see :func:`check`)."""
    import torch
    from safetensors.torch import save as st_save

    small = {"conv1.conv2d.weight": torch.zeros(2, 3), "conv1.conv2d.bias": torch.ones(2)}
    out = []
    for obj in (small, {"format": "nst-checkpoint", "version": 1, "architecture": "x", "metadata": {"steps": 1},
                        "state_dict": small},
                {"format": "nst-train-state", "version": 1, "model": small, "optimizer": {}, "scaler": {},
                 "rng": {}, "step": 1, "epoch": 0, "batch_in_epoch": 0, "fingerprint": {}}):
        buf = io.BytesIO()
        torch.save(obj, buf)
        out += [b"\x00" + buf.getvalue(), b"\x02" + buf.getvalue()]
        legacy = io.BytesIO()
        torch.save(obj, legacy, _use_new_zipfile_serialization=False)
        out.append(b"\x00" + legacy.getvalue())
    out.append(b"\x01" + st_save(small, metadata={"metadata": '{"steps": 1}'}))
    out.append(b"\x03" + b'{"schema_version": 1, "kind": "onnx", "precision": "fp32", "min_size": 8}')
    out.append(b"\x04" + _tiny_onnx())
    return out


def _tiny_onnx() -> bytes:
    # ModelProto{graph{initializer{name:"w", external_data{key:"location" value:"w.bin"}, data_location:1}}}
    def field(num: int, payload: bytes) -> bytes:
        return bytes([num << 3 | 2, len(payload)]) + payload

    entry = field(1, b"location") + field(2, b"w.bin")
    tensor = field(8, b"w") + field(13, entry) + bytes([14 << 3, 1])
    return field(7, field(5, tensor))


def check(data: bytes) -> None:
    from nst_runtime.artifact import check_onnx_external_data
    from nst_runtime.errors import NstError
    from nst_runtime.sidecar import read_sidecar
    from nst_train.checkpoint import load_checkpoint
    from nst_train.training_state import load_training_state

    kind = data[0] % 5 if data else 0
    body = data[1:]
    try:
        if kind in (0, 1):
            path = _DIR / ("m.safetensors" if kind == 1 else "m.pth")
            path.write_bytes(body)
            load_checkpoint(path)
        elif kind == 2:
            path = _DIR / "state.pth"
            path.write_bytes(body)
            load_training_state(path)
        elif kind == 3:
            (_DIR / "m.onnx.json").write_bytes(body)
            read_sidecar(_DIR / "m.onnx")
        else:
            (_DIR / "m.onnx").write_bytes(body)
            check_onnx_external_data(_DIR / "m.onnx")
    except NstError:
        pass
    if SENTINEL.exists():
        raise AssertionError("code from a fuzzed pickle ran")


def main(argv: list[str]) -> int:
    import logging
    import warnings

    from fuzz_common import atheris_main, atheris_or_none, hypothesis_fuzz, seconds_arg

    atheris = atheris_or_none()
    if atheris is None or "--hypothesis" in argv:
        # called in-process by the tests: silence logging and warnings for the run only (a logging.disable left
        # behind hid every later test's log lines)
        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return hypothesis_fuzz(check, seeds(), seconds=seconds_arg(argv, 60.0))
        finally:
            logging.disable(previous)
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    with atheris.instrument_imports(include=["nst_train.checkpoint", "nst_train.training_state",
                                             "nst_runtime.artifact", "nst_runtime.sidecar"]):
        import nst_runtime.artifact  # noqa: F401
        import nst_train.checkpoint  # noqa: F401
    return atheris_main(atheris, check, seeds(), argv)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sys.exit(main(sys.argv))
