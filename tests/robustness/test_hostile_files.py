"""Hostile files: pickles that would run code, ONNX files reading data outside their folder, tampered engines.

Every test checks the refusal (error type, file named) and that the hostile payload had no effect (the
sentinel file is never created; no TensorRT import happened)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from nst_runtime.errors import CheckpointError, ModelFileError

GATYS = "import sys; from nst_train.cli import gatys_main; sys.exit(gatys_main())"


# ------------------------------------------------------------------------------------------ pickles
@pytest.mark.parametrize("raw", [False, True], ids=["torch-zip", "raw-pickle"])
def test_load_checkpoint_refuses_code(evil_pth, raw):
    from nst_train.checkpoint import load_checkpoint

    path = evil_pth(payload={"format": "nst-checkpoint"}, raw_pickle=raw)
    with pytest.raises(CheckpointError, match=r"evil\.pth: cannot load checkpoint: refused") as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert "\n" not in msg and "weights_only` set to `False" not in msg  # no advice to unpickle it anyway


def test_training_state_refuses_code(evil_pth):
    from nst_train.training_state import load_training_state

    with pytest.raises(CheckpointError, match=r"state\.pth: cannot load the training state: refused"):
        load_training_state(evil_pth("state.pth", payload={"format": "nst-train-state", "version": 1}))


def test_vgg_weights_refuse_code(evil_pth):
    from nst_train.vgg import load_vgg16

    with pytest.raises(CheckpointError, match=r"vgg\.pth: cannot load VGG-16 weights: refused"):
        load_vgg16(evil_pth("vgg.pth"))


def test_train_resume_cli_refuses_hostile_state(tmp_path, samples, evil_pth, cli):
    run = tmp_path / "m.run"
    run.mkdir()
    evil = evil_pth("state.pth", payload={"format": "nst-train-state", "version": 1})
    evil.rename(run / "state.pth")
    res = cli("nst_train.cli", ["--style", samples / "style.png", "--content-dir", samples / "content",
                                "--out", tmp_path / "m.pth", "--steps", "2", "--image-size", "32",
                                "--batch-size", "2", "--vgg-weights", "random", "--num-workers", "0",
                                "--device", "cpu", "--no-progress", "--resume"])
    res.assert_one_line_error(3, "state.pth", "refused")
    assert not (tmp_path / "m.pth").exists()


def test_gatys_and_train_refuse_hostile_vgg_weights(tmp_path, samples, evil_pth, cli):
    vgg = evil_pth("vgg.pth")
    content = next((samples / "content").iterdir())
    res = cli(GATYS, [content, samples / "style.png", "-o", tmp_path / "o.png", "--vgg-weights", vgg,
                      "--image-size", "32", "--iterations", "1", "--no-progress", "--device", "cpu"], code=True)
    res.assert_one_line_error(3, "vgg.pth", "refused")


def test_export_cli_refuses_hostile_checkpoint(evil_pth, tmp_path, capsys):
    from nst_export.cli import main

    code = main([str(evil_pth()), "--onnx-only", "--out-dir", str(tmp_path / "out"), "-q"])
    err = capsys.readouterr().err
    assert code == 3 and "evil.pth" in err and "refused" in err and err.strip().count("\n") == 0
    assert not (tmp_path / "out" / "evil.onnx").exists()


# ------------------------------------------------------------------------------------------ ONNX external data
def _external_data_model(folder, location, *, in_constant=False):
    """A graph ``y = x + w`` (uint8 NHWC in/out like nst's) whose ``w`` lives in external data at ``location``,
    with a matching sidecar, so that only the external-data check can refuse it."""
    from nst_runtime.artifact import file_sha256
    from nst_runtime.sidecar import Sidecar, sidecar_path
    from onnx import TensorProto, helper

    w = TensorProto(name="w", data_type=TensorProto.UINT8, dims=[3], data_location=TensorProto.EXTERNAL)
    for k, v in (("location", location), ("offset", "0"), ("length", "3")):
        w.external_data.add(key=k, value=v)
    x = helper.make_tensor_value_info("input", TensorProto.UINT8, ["n", "h", "w", 3])
    y = helper.make_tensor_value_info("output", TensorProto.UINT8, ["n", "h", "w", 3])
    if in_constant:  # hidden in a Constant node's attribute instead of an initializer
        nodes = [helper.make_node("Constant", [], ["w"], value=w), helper.make_node("Add", ["input", "w"], ["output"])]
        graph = helper.make_graph(nodes, "g", [x], [y])
    else:
        graph = helper.make_graph([helper.make_node("Add", ["input", "w"], ["output"])], "g", [x], [y], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    sidecar_path(path).write_text(Sidecar(kind="onnx", precision="fp32", min_size=1,
                                          artifact_sha256=file_sha256(path)).to_json())
    return path


@pytest.fixture
def secret(tmp_path):
    path = tmp_path / "secret"
    path.write_bytes(b"\x07\x08\x09")
    (tmp_path / "models").mkdir()
    return path


@pytest.mark.parametrize("where", ["../secret", "ABS", "sub/../../secret", "link.bin", "CONSTANT"])
def test_onnx_external_data_outside_folder_is_refused(tmp_path, secret, where):
    from nst_runtime import Stylizer

    folder = tmp_path / "models"
    location = {"ABS": str(secret), "CONSTANT": "../secret"}.get(where, where)
    if where == "link.bin":
        (folder / "link.bin").symlink_to(secret)
    path = _external_data_model(folder, location, in_constant=where == "CONSTANT")
    for verify in (True, False):
        with pytest.raises(ModelFileError, match=r"model\.onnx: a tensor reads external data from .*outside"):
            Stylizer.open(path, device="cpu", verify_hash=verify)


def test_onnx_external_data_inside_folder_is_allowed(tmp_path, secret):
    """The check is not a blanket refusal: data beside the model loads (and is used)."""
    from nst_runtime import Stylizer

    folder = tmp_path / "models"
    (folder / "w.bin").write_bytes(b"\x01\x02\x03")
    path = _external_data_model(folder, "w.bin")
    with Stylizer.open(path, device="cpu") as s:
        out = s.stylize(np.zeros((2, 2, 3), np.uint8))
    assert out[0, 0].tolist() == [1, 2, 3]


def test_onnxruntime_itself_also_refuses_escaping_external_data(tmp_path, secret):
    """Why the runtime's own check is defence in depth: this onnxruntime refuses too (older ones did not),
    so the file outside the folder is never read by either layer."""
    import onnxruntime as ort

    path = _external_data_model(tmp_path / "models", "../secret")
    with pytest.raises(Exception, match=r"(?i)external data"):
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_external_data_check_runs_before_onnxruntime(tmp_path, secret, monkeypatch):
    """Refused from the file's bytes: onnxruntime never sees it (so an old onnxruntime is protected too)."""
    from nst_runtime import Stylizer, onnxruntime_backend

    def boom(*a, **k):
        raise AssertionError("onnxruntime was asked to load a hostile file")

    monkeypatch.setattr(onnxruntime_backend.SessionFromOnnx, "__call__", boom)
    path = _external_data_model(tmp_path / "models", str(secret))
    with pytest.raises(ModelFileError, match="outside"):
        Stylizer.open(path, device="cpu")


# ------------------------------------------------------------------------------------------ engines
BLOCK_TRT = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorrt", "tensorrt_lean", "cuda"):
            raise ImportError(f"TEST: import of {name} attempted before the hash check")
sys.meta_path.insert(0, Block())
from nst_runtime.cli import main
sys.exit(main())
"""


def _engine_with_sidecar(folder, payload=b"pretend-serialized-engine" * 100):
    from nst_runtime.artifact import file_sha256
    from nst_runtime.sidecar import Sidecar, sidecar_path

    path = folder / "m.fp16.engine"
    path.write_bytes(payload)
    sidecar_path(path).write_text(Sidecar(kind="tensorrt", precision="fp16", tensorrt_version="10.16.1",
                                          compute_capability="9.0", artifact_sha256=file_sha256(path)).to_json())
    return path


@pytest.mark.parametrize("damage", ["tampered", "truncated", "empty"])
def test_engine_hash_checked_before_any_tensorrt_import(tmp_path, damage, cli, make_image):
    from PIL import Image

    engine = _engine_with_sidecar(tmp_path)
    data = engine.read_bytes()
    engine.write_bytes({"tampered": data[:10] + b"X" + data[11:], "truncated": data[: len(data) // 2],
                        "empty": b""}[damage])
    Image.fromarray(make_image(8, 8)).save(tmp_path / "x.png")
    res = cli(BLOCK_TRT, [engine, tmp_path / "x.png", "-o", tmp_path / "out"], code=True)
    res.assert_one_line_error(3, "m.fp16.engine", "does not match the sidecar")
    assert "TEST: import" not in res.err


def test_engine_without_sidecar_is_refused(tmp_path):
    from nst_runtime import Stylizer

    (tmp_path / "m.engine").write_bytes(b"x" * 64)
    with pytest.raises(ModelFileError, match=r"m\.engine: no sidecar"):
        Stylizer.open(tmp_path / "m.engine")


def test_sidecar_of_another_file_is_refused(tmp_path):
    """A valid sidecar copied beside another engine (hash of a different file) is refused."""
    from nst_runtime import Stylizer
    from nst_runtime.sidecar import sidecar_path

    engine = _engine_with_sidecar(tmp_path)
    other = tmp_path / "other.engine"
    other.write_bytes(b"another engine" * 50)
    sidecar_path(other).write_text(sidecar_path(engine).read_text())
    with pytest.raises(ModelFileError, match="does not match the sidecar"):
        Stylizer.open(other)
    assert "tensorrt" not in sys.modules


def test_malformed_sidecar_is_one_model_file_error(tmp_path):
    from nst_runtime import Stylizer
    from nst_runtime.sidecar import sidecar_path

    engine = _engine_with_sidecar(tmp_path)
    for text in ("{not json", json.dumps([1, 2]), json.dumps({"schema_version": 1, "kind": "tensorrt"}),
                 json.dumps({"schema_version": 1, "kind": "tensorrt", "precision": "fp16", "input": 5}),
                 json.dumps({"schema_version": 1, "kind": "tensorrt", "precision": "fp16", "min_size": "8"}),
                 '{"a": ' * 100_000, b"\xff\xfe{}"):
        sidecar_path(engine).write_bytes(text if isinstance(text, bytes) else text.encode())
        with pytest.raises(ModelFileError, match=r"m\.fp16\.engine"):
            Stylizer.open(engine)


def _field(num: int, payload: bytes) -> bytes:
    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
            n >>= 7
            if not n:
                return bytes(out)

    return varint(num << 3 | 2) + varint(len(payload)) + payload


def _escaping_graph(location: bytes = b"../secret") -> bytes:
    entry = _field(1, b"location") + _field(2, location)
    return _field(7, _field(5, _field(8, b"w") + _field(13, entry)))


@pytest.mark.parametrize("wrapping", ["group-before", "damaged-tail", "deep"])
def test_external_data_scan_cannot_be_dodged(tmp_path, wrapping):
    """Protobuf tricks around an escaping location: an unknown field encoded as a group before the graph
    (legal protobuf, skipped by real parsers), garbage after it, or nesting too deep to scan."""
    from nst_runtime.artifact import check_onnx_external_data

    if wrapping == "group-before":
        data = b"\x9b\x06" + b"\x08\x01" + b"\x9c\x06" + _escaping_graph()  # field 99: start group .. end group
    elif wrapping == "damaged-tail":
        data = _escaping_graph() + b"\x0f\xff"
    else:
        body = _field(8, b"w")
        for _ in range(120):  # Constant attribute -> graph -> node -> attribute ... deeper than any model
            body = _field(1, _field(5, _field(6, body)))
        data = _field(7, body)
    path = tmp_path / "m.onnx"
    path.write_bytes(data)
    with pytest.raises(ModelFileError, match=r"outside the model's folder|nested deeper"):
        check_onnx_external_data(path)
