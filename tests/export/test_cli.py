"""nst-export end to end: exit codes, files, summary, one-line errors."""

from __future__ import annotations

import importlib.util
import shutil

import pytest

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


def _run(argv, capsys):
    from nst_export.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_help_teaches_with_examples_and_exit_codes(capsys):
    from nst_export.cli import main

    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for needle in ("examples:", "nst-export mosaic.pth --fp16", "--onnx-only", "--no-tiling-graph", "exit codes:", "--triton-repo",
                   "--min-shape", "--timing-cache", "--version-compatible", "--builder-opt-level", "--fp32-tol",
                   "--fp16-min-psnr"):
        assert needle in text


@pytest.fixture(scope="module")
def plain_state_dict(tmp_path_factory, tiny_net):
    """The tiny net saved the way pytorch/examples' fast_neural_style saves (a bare state dict, with the stale
    InstanceNorm running stats that old torch versions wrote)."""
    import torch

    state = dict(tiny_net.state_dict())
    state["in1.running_mean"] = torch.zeros(32)
    state["in1.running_var"] = torch.ones(32)
    path = tmp_path_factory.mktemp("examples") / "udnie.pth"
    torch.save(state, path)
    return path


def test_cli_runs_its_steps_in_order_with_progress_and_a_summary(checkpoint_path, onnx_fp32_path, tiling_onnx_path,
                                                                tmp_path, capsys, monkeypatch):
    """The command's orchestration: FP32, FP16 (real, gated against PyTorch), tiling graph, Triton repository,
    one progress line per step and the summary table. The FP32 and tiling exports are the session's, copied
    (each is tested on its own; the whole command for real: the slow test below)."""
    import shutil

    from nst_export import onnx_export, tiling_graph
    from nst_runtime.sidecar import read_sidecar, sidecar_path

    def copier(source):
        def copied(checkpoint, out, **kwargs):
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, out)
            shutil.copy(sidecar_path(source), sidecar_path(out))
            return out
        return copied

    monkeypatch.setattr(onnx_export, "onnx_from_checkpoint", copier(onnx_fp32_path))
    monkeypatch.setattr(tiling_graph, "tiling_onnx_from_checkpoint", copier(tiling_onnx_path))
    out_dir, repo = tmp_path / "out", tmp_path / "repo"
    code, out, err = _run([checkpoint_path, "--fp16", "--onnx-only", "-o", out_dir, "--name", "udnie",
                           "--triton-repo", repo], capsys)
    assert code == 0, err
    names = sorted(p.name for p in out_dir.iterdir())
    assert names == ["udnie.fp16.onnx", "udnie.fp16.onnx.json", "udnie.onnx", "udnie.onnx.json",
                     "udnie.tiling.onnx", "udnie.tiling.onnx.json"]
    assert read_sidecar(out_dir / "udnie.tiling.onnx").role == "tiling"
    fp16 = read_sidecar(out_dir / "udnie.fp16.onnx")
    assert fp16.parity["passed"] and fp16.parity["reference"] == "pytorch-fp32"
    assert (repo / "udnie" / "config.pbtxt").is_file() and (repo / "udnie" / "1" / "model.onnx").is_file()
    assert "[1/4]" in err and "[4/4]" in err  # progress per step
    assert "udnie.onnx" in out and "udnie.fp16.onnx" in out and ("dB" in out or "identical" in out)
    assert "max |diff|" in out


@pytest.mark.slow
def test_fp16_onnx_only_with_triton_repo(plain_state_dict, tmp_path, capsys):
    from nst_runtime.sidecar import read_sidecar

    out_dir, repo = tmp_path / "out", tmp_path / "repo"
    code, out, err = _run([plain_state_dict, "--fp16", "--onnx-only", "-o", out_dir, "--triton-repo", repo],
                          capsys)
    assert code == 0, err
    names = sorted(p.name for p in out_dir.iterdir())
    assert names == ["udnie.fp16.onnx", "udnie.fp16.onnx.json", "udnie.onnx", "udnie.onnx.json",
                     "udnie.tiling.onnx", "udnie.tiling.onnx.json"]
    assert read_sidecar(out_dir / "udnie.tiling.onnx").role == "tiling"
    assert read_sidecar(out_dir / "udnie.fp16.onnx").parity["passed"]
    assert (repo / "udnie" / "config.pbtxt").is_file() and (repo / "udnie" / "1" / "model.onnx").is_file()
    assert "[1/4]" in err and "[4/4]" in err  # progress per step
    # the summary table: one row per file with the parity numbers
    assert "udnie.onnx" in out and "udnie.fp16.onnx" in out and ("dB" in out or "identical" in out)
    assert "max |diff|" in out


@pytest.mark.skipif(HAS_TRT, reason="tensorrt is installed: the engine step would run")
def test_without_tensorrt_stops_at_the_engine_with_exit_6(onnx_fp32_path, checkpoint_path, tmp_path, capsys,
                                                          monkeypatch):
    import nst_export.onnx_export as onnx_export
    from nst_runtime.sidecar import sidecar_path

    def reuse_fixture(checkpoint, out, **_):  # the FP32 export itself is covered above; save a minute here
        shutil.copyfile(onnx_fp32_path, out)
        shutil.copyfile(sidecar_path(onnx_fp32_path), sidecar_path(out))
        return out

    monkeypatch.setattr(onnx_export, "onnx_from_checkpoint", reuse_fixture)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, out, err = _run([checkpoint_path, "--fp16", "-o", out_dir, "--name", "m", "--no-tiling-graph"],
                          capsys)
    assert code == 6
    assert "engine step" in err and "--onnx-only" in err and "Traceback" not in err
    assert sorted(p.name for p in out_dir.iterdir()) == ["m.fp16.onnx", "m.fp16.onnx.json", "m.onnx", "m.onnx.json"]
    assert out == ""  # no summary for a failed run

    # a failing FP16 gate: exit 5, the FP16 file is not written
    shutil.rmtree(out_dir)
    out_dir.mkdir()
    code, _, err = _run([checkpoint_path, "--fp16", "--onnx-only", "-o", out_dir, "--name", "m",
                         "--fp16-min-psnr", "300", "--no-tiling-graph"], capsys)
    assert code == 5 and "parity gate" in err
    assert sorted(p.name for p in out_dir.iterdir()) == ["m.onnx", "m.onnx.json"]


@pytest.mark.parametrize("content", [None, b"", b"PK\x03\x04 not really"])
def test_bad_checkpoint_exit_3_one_line_no_files(tmp_path, capsys, content):
    ckpt = tmp_path / "model.pth"
    if content is not None:
        ckpt.write_bytes(content)
    out_dir = tmp_path / "out"
    code, _, err = _run([ckpt, "--fp16", "-o", out_dir], capsys)
    assert code == 3
    lines = err.strip().splitlines()
    assert lines[-1].startswith("nst-export: error:") and "model.pth" in lines[-1]
    assert "Traceback" not in err
    assert not out_dir.exists()


@pytest.mark.parametrize("argv, match", [
    (["--max-shape", "1x100"], "NxHxW"),
    (["--min-shape", "1x64x64", "--opt-shape", "1x32x32"], "min <= opt <= max"),
    (["--fp32-tol", "-1"], "fp32_max_abs_levels"),
    (["--opset", "13", "--onnx-only"], "opset 13"),
])
def test_bad_options_exit_2(tmp_path, capsys, checkpoint_path, argv, match):
    from nst_export.cli import main

    code = main([str(checkpoint_path), "-o", str(tmp_path / "o"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and match in err
    assert not (tmp_path / "o").exists()


def test_version_compatible_help_says_it_survives_upgrades_and_runs_host_code(capsys):
    from nst_export.cli import main

    assert main(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--exclude-lean-runtime" in text and "survives an upgrade" in text
    assert "--allow-engine-host-code" in text and "version-compatible=true" in text


def test_exclude_lean_runtime_needs_version_compatible(checkpoint_path, tmp_path, capsys):
    code, _out, err = _run([checkpoint_path, "--exclude-lean-runtime", "-o", tmp_path / "out"], capsys)
    assert code == 2 and "--version-compatible" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()  # refused before minutes of export


def test_cli_passes_lean_runtime_choice_to_the_builder(checkpoint_path, onnx_fp32_path, tmp_path, capsys,
                                                      fake_trt, monkeypatch):
    """With a fake tensorrt module: --version-compatible --exclude-lean-runtime reaches the builder flags and the
    engine's sidecar. The ONNX step is the session's export, copied (this test is about the engine options)."""
    import shutil

    import nst_export.cli as cli
    from nst_export import onnx_export
    from nst_runtime.sidecar import read_sidecar, sidecar_path

    def copied_export(checkpoint, out, **kwargs):
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(onnx_fp32_path, out)
        shutil.copy(sidecar_path(onnx_fp32_path), sidecar_path(out))
        return out

    monkeypatch.setattr(onnx_export, "onnx_from_checkpoint", copied_export)
    monkeypatch.setattr(cli, "use_only_gpu", lambda index: None, raising=False)
    out_dir = tmp_path / "out"
    code, _out, err = _run([checkpoint_path, "--no-tiling-graph", "--version-compatible", "--exclude-lean-runtime",
                           "-o", out_dir, "--name", "m"], capsys)
    assert code == 0, err
    assert fake_trt.builder_flags == {"VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME"}
    meta = read_sidecar(out_dir / "m.fp32.engine")
    assert meta.version_compatible and meta.exclude_lean_runtime


def test_the_export_step_gets_the_checkpoint_the_cli_read(checkpoint_path, onnx_fp32_path, tmp_path, capsys,
                                                          monkeypatch):
    """nst-export reads the checkpoint file once and hands the loaded checkpoint to the steps (the FP32 step
    is the session's export, copied: this test is about what it is given)."""
    import shutil

    from nst_export import onnx_export
    from nst_runtime.sidecar import sidecar_path
    from nst_train import checkpoint as checkpoint_mod

    reads, given = [], []
    real = checkpoint_mod.torch_load_plain
    monkeypatch.setattr(checkpoint_mod, "torch_load_plain", lambda path, **kw: reads.append(path) or real(path, **kw))

    def copied_export(checkpoint, out, **kwargs):
        given.append(checkpoint)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(onnx_fp32_path, out)
        shutil.copy(sidecar_path(onnx_fp32_path), sidecar_path(out))
        return out

    monkeypatch.setattr(onnx_export, "onnx_from_checkpoint", copied_export)
    code, _out, err = _run([checkpoint_path, "--onnx-only", "--no-tiling-graph", "-o", tmp_path / "o"], capsys)
    assert code == 0, err
    assert reads == [checkpoint_path]
    assert isinstance(given[0], checkpoint_mod.Checkpoint) and given[0].path == checkpoint_path
    assert checkpoint_mod.load_checkpoint(given[0]) is given[0]  # the steps load nothing more


@pytest.mark.slow
def test_the_checkpoint_is_read_once_for_every_step(small_checkpoint, tmp_path, capsys, monkeypatch):
    """FP32, FP16 and the tiling graph all come from one read of the checkpoint file (it is loaded once and
    passed down), and their sidecars still record its hash."""
    from nst_runtime.artifact import file_sha256
    from nst_runtime.sidecar import read_sidecar
    from nst_train import checkpoint as checkpoint_mod

    reads = []
    real = checkpoint_mod.torch_load_plain
    monkeypatch.setattr(checkpoint_mod, "torch_load_plain", lambda path, **kw: reads.append(path) or real(path, **kw))
    out = tmp_path / "out"
    code, _out, err = _run([small_checkpoint, "--fp16", "--onnx-only", "-o", out, "--name", "m"], capsys)
    assert code == 0, err
    assert reads == [small_checkpoint]
    for name in ("m.onnx", "m.fp16.onnx", "m.tiling.onnx"):
        assert read_sidecar(out / name).checkpoint_sha256 == file_sha256(small_checkpoint), name
