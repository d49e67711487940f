"""nst_serve without Ray: model names, the replica and actor plans, query parameters, error mapping, manifest."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import pytest
from nst_runtime.errors import ImageError, ImageTooLargeError, ModelFileError, NstError, UsageError
from nst_serve.batch_job import read_manifest, verified
from nst_serve.config import ServeConfig, model_name_for, models_from_args
from nst_serve.params import StylizeParams, error_body, http_status_for, parse_query, stylize_options
from nst_serve.resources import READ_RESERVE_CPUS, plan_actor_pool, plan_replicas


def test_import_nst_serve_does_not_import_ray():
    import subprocess
    import sys

    code = "import sys, nst_serve; print('ray' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


@pytest.mark.parametrize(("path", "name"), [
    ("m/candy.onnx", "candy"), ("candy.fp16.onnx", "candy"), ("candy.fp16.engine", "candy"),
    ("x/candy.plan", "candy"), ("mosaic.v2.onnx", "mosaic.v2"), ("Candy.FP16.ONNX", "Candy"),
])
def test_model_name_is_the_stem_without_artifact_tags(path, name):
    assert model_name_for(path) == name


def test_models_group_alternatives_and_take_explicit_names(tmp_path):
    for name in ("candy.fp16.engine", "candy.onnx", "mosaic.onnx", "odd name.onnx"):
        (tmp_path / name).write_bytes(b"x")
    models = models_from_args([tmp_path / "candy.fp16.engine", tmp_path / "mosaic.onnx", tmp_path / "candy.onnx",
                               f"wave={tmp_path / 'mosaic.onnx'}"])
    assert [(m.name, [p.name for p in m.paths]) for m in models] == [
        ("candy", ["candy.fp16.engine", "candy.onnx"]), ("mosaic", ["mosaic.onnx"]), ("wave", ["mosaic.onnx"])]
    with pytest.raises(UsageError, match="model name 'odd name'"):
        models_from_args([tmp_path / "odd name.onnx"])
    with pytest.raises(UsageError, match="no such model file"):
        models_from_args([tmp_path / "missing.onnx"])
    with pytest.raises(UsageError, match="no model given"):
        models_from_args([])


def test_serve_config_refuses_bad_numbers(tmp_path):
    (tmp_path / "a.onnx").write_bytes(b"x")
    models = models_from_args([tmp_path / "a.onnx"])
    assert ServeConfig(models=models).ongoing_per_replica == 8
    for bad in ({"port": 0}, {"replicas": 0}, {"max_batch": 0}, {"max_queued": 0}, {"threads": 0},
                {"port": True}, {"request_timeout_s": 0}):
        with pytest.raises(UsageError):
            ServeConfig(models=models, **bad)


def test_cpu_replicas_share_the_cores_without_oversubscribing():
    one = plan_replicas(models=1, cluster_cpus=2)
    assert (one.replicas, one.num_cpus, one.threads) == (1, 2.0, 2)
    two = plan_replicas(models=1, cluster_cpus=2, replicas=2)
    assert (two.num_cpus, two.threads) == (1.0, 1)
    # 16 CPUs over 3 models x 2 replicas: 2 each (12 reserved), never more threads than reserved CPUs
    many = plan_replicas(models=3, cluster_cpus=16, replicas=2)
    assert many.threads == many.num_cpus == 2
    # a 64-CPU cluster of 8-CPU nodes: no replica asks for more than one node has
    assert plan_replicas(models=1, cluster_cpus=64, largest_node_cpus=8).threads == 8
    # more replicas than cores: fractions, one thread each, and all of them fit
    crowded = plan_replicas(models=2, cluster_cpus=2, replicas=3)
    assert crowded.threads == 1 and 6 * crowded.num_cpus <= 2
    with pytest.raises(UsageError, match="need 8 CPUs; the cluster has 2"):
        plan_replicas(models=2, cluster_cpus=2, replicas=2, threads=2)


def test_gpu_replicas_one_per_gpu():
    plan = plan_replicas(models=1, cluster_cpus=32, cluster_gpus=4)
    assert (plan.replicas, plan.num_gpus, plan.num_cpus) == (4, 1.0, 1.0)
    assert plan.ray_actor_options() == {"num_cpus": 1.0, "num_gpus": 1.0}
    shared = plan_replicas(models=3, cluster_cpus=32, cluster_gpus=2)
    assert shared.replicas == 1 and shared.num_gpus == pytest.approx(2 / 3)
    cpu_only = plan_replicas(models=1, cluster_cpus=8, cluster_gpus=4, use_gpus=False)
    assert cpu_only.num_gpus == 0 and "num_gpus" not in cpu_only.ray_actor_options()


def test_actor_pool_leaves_cpus_for_reading():
    # the measured hang: 2 actors x 1 CPU on a 2-CPU Ray left the read tasks nothing
    small = plan_actor_pool(node_cpus=[2.0])
    assert small.actors == 1 and small.threads == 2
    assert small.actors * small.cpus_per_actor + small.read_cpus <= 2.0
    for nodes in ([2.0], [4.0], [16.0], [8.0, 8.0, 4.0], [1.0]):
        plan = plan_actor_pool(node_cpus=nodes)
        assert plan.actors >= 1 and plan.read_cpus > 0
        assert plan.actors * plan.cpus_per_actor + plan.read_cpus * len(nodes) <= sum(nodes)
        assert plan.threads <= 4
    assert plan_actor_pool(node_cpus=[16.0]).actors == 3  # 3 x 4 CPUs beside the reserve
    gpu = plan_actor_pool(node_cpus=[16.0, 16.0], cluster_gpus=8)
    assert (gpu.actors, gpu.gpus_per_actor, gpu.cpus_per_actor) == (8, 1.0, 1.0)
    with pytest.raises(UsageError, match="do not fit beside the read tasks"):
        plan_actor_pool(node_cpus=[2.0], actors=2)
    with pytest.raises(UsageError, match="no CPUs"):
        plan_actor_pool(node_cpus=[])
    assert READ_RESERVE_CPUS > 0


def _fake_stylize(self, image, *, scale: float = 1.0, preserve_color: bool = False,
                  mode: Literal["fast", "exact"] = "fast", max_size: int | None = None):
    return image


def test_query_parameters_follow_the_stylizer_signature():
    options = stylize_options(_fake_stylize)
    assert sorted(options) == ["max_size", "mode", "preserve_color", "scale"]
    params = parse_query({"format": "JPEG", "quality": "70", "preserve-color": "true", "scale": "0.5",
                          "mode": "exact", "max_size": "640"}, options)
    assert params == StylizeParams("JPEG", 70, (("max_size", 640), ("mode", "exact"), ("preserve_color", True),
                                                ("scale", 0.5)))
    assert params.media_type == "image/jpeg"
    assert parse_query({}, options) == StylizeParams("PNG", 95, ())
    for query, message in [({"format": "gif"}, "expected png, jpeg or webp"), ({"quality": "500"}, "0 to 100"),
                           ({"quality": "x"}, "0 to 100"), ({"scale": "big"}, "scale='big': expected a number"),
                           ({"preserve_color": "maybe"}, "expected true or false"),
                           ({"mode": "slow"}, "expected one of fast, exact"),
                           ({"sharpen": "1"}, "unknown query parameter 'sharpen'; this server takes: format")]:
        with pytest.raises(UsageError, match=message):
            parse_query(query, options)


def test_the_real_stylizer_options_are_parseable():
    import inspect

    from nst_runtime import Stylizer
    from nst_runtime.steps import StepKwargs

    options = stylize_options(Stylizer.stylize)
    keyword_only = {n for n, p in inspect.signature(Stylizer.stylize).parameters.items() if p.kind is p.KEYWORD_ONLY}
    assert set(options) == set(StepKwargs.__annotations__) | keyword_only and "preserve_color" in options
    params = parse_query({"preserve-color": "1", "scale": "0.5", "upsampler": "bicubic"}, options)
    assert dict(params.options) == {"preserve_color": True, "scale": 0.5, "upsampler": "bicubic"}
    with pytest.raises(UsageError, match="upsampler='lanczos': expected one of"):
        parse_query({"upsampler": "lanczos"}, options)


def test_errors_map_to_http_and_the_cli_exit_codes():
    assert http_status_for(ImageTooLargeError("x")) == 413
    assert http_status_for(MemoryError()) == 413
    assert http_status_for(ImageError("x")) == 400
    assert http_status_for(UsageError("x")) == 400
    assert http_status_for(ModelFileError("x")) == 500
    assert http_status_for(RuntimeError("x")) == 500
    assert error_body(ImageError("a.png: broken\nmore")) == {"error": "a.png: broken more", "code": 4}
    assert error_body(UsageError("bad"))["code"] == 2
    assert error_body(KeyError("secret path"))["code"] == 1
    assert "secret path" not in error_body(KeyError("secret path"))["error"]


def test_manifest_keeps_the_last_line_per_input_and_verifies_outputs(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").write_bytes(b"stylized a")
    good = {"input": "in/a.png", "output": "a.png", "bytes": 10, "sha256": hashlib.sha256(b"stylized a").hexdigest()}
    lines = [json.dumps({"input": "in/a.png", "error": "first try failed", "code": 4}), json.dumps(good),
             '{"input": "in/b.png", "outp', json.dumps({"input": "in/c.png", "error": "bad", "code": 4})]
    (out / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    entries = read_manifest(out / "manifest.jsonl")
    assert set(entries) == {"in/a.png", "in/c.png"}  # the torn line is skipped
    assert verified(entries["in/a.png"], out)
    assert not verified(entries["in/c.png"], out)  # an error is redone
    (out / "a.png").write_bytes(b"stylized A")  # same size, other bytes
    assert not verified(entries["in/a.png"], out)
    (out / "a.png").unlink()
    assert not verified(entries["in/a.png"], out)
    assert read_manifest(Path(tmp_path / "none.jsonl")) == {}


def test_make_demo_ends_with_how_to_serve_its_model(tmp_path, capsys):
    from nst_bench.quickstart import QuickstartResult, _summary

    res = QuickstartResult(out=tmp_path)
    res.artifacts = [tmp_path / "export" / "model.onnx", tmp_path / "export" / "model.fp16.onnx"]
    _summary(res)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("=")
    hint = next(line for line in lines[-3:] if "nst-serve" in line)  # the last thing said, before the rule
    assert f"nst-serve {tmp_path / 'export' / 'model.onnx'}" in hint and "http://127.0.0.1:8000/" in hint


def test_a_replica_opens_the_first_model_file_its_device_runs(tmp_path, onnx_fp32_path):
    """Files of one model name are alternatives: an engine this replica cannot run (here: no GPU) is skipped
    with its reason, and the ONNX file behind it is opened."""
    pytest.importorskip("ray")
    import dataclasses

    from nst_runtime.sidecar import Sidecar, sidecar_path
    from nst_serve.app import open_first

    engine = tmp_path / "tiny.fp16.engine"
    engine.write_bytes(b"a TensorRT plan for another machine")
    meta = Sidecar(kind="tensorrt", precision="fp16", artifact_sha256=hashlib.sha256(engine.read_bytes()).hexdigest(),
                   tensorrt_version="10.9.0", compute_capability="9.0", gpu_name="NVIDIA H100")
    sidecar_path(engine).write_text(json.dumps(dataclasses.asdict(meta)))
    with open_first((str(engine), str(onnx_fp32_path)), device="cpu", threads=1, max_batch=2,
                    open_options={}) as stylizer:
        assert stylizer.path == Path(onnx_fp32_path)
    with pytest.raises(NstError, match="no model file of this model opens on this replica's device") as info:
        open_first((str(engine),), device="cpu", threads=1, max_batch=2, open_options={})
    assert str(engine) in str(info.value)


def test_any_style_models_refuse_text_styles_and_take_uploaded_ones(tmp_path):
    """An AdaIN model reads a text style as a path: on a server, any local file a client names. Refused; the
    style image comes as an uploaded form field. Multi-style models keep their names and weights."""
    from nst_serve.params import refuse_style_paths

    secret = tmp_path / "secret.png"
    secret.write_bytes(b"x")
    for text in (str(secret), "/etc/passwd", "a.jpg:0.5,b.jpg:0.5"):
        with pytest.raises(UsageError, match="multipart/form-data"):
            refuse_style_paths({"style": text}, adain=True)
    refuse_style_paths({"style": b"\x89PNG..."}, adain=True)
    refuse_style_paths({}, adain=True)
    refuse_style_paths({"style": "mosaic:0.7,udnie:0.3"}, adain=False)


def test_a_multipart_upload_splits_into_photo_and_style():
    from nst_serve.params import split_upload

    def form(*fields: tuple[str, bytes]) -> tuple[bytes, str]:
        boundary = "XyZ123"
        body = b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}.png"\r\n'
            f"Content-Type: image/png\r\n\r\n".encode() + data + b"\r\n" for name, data in fields)
        return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"

    photo, style = b"\x89PNG photo \r\n bytes\x00\xff", b"\xff\xd8 style \r\n\r\n--not-a-boundary"
    assert split_upload(*form(("image", photo), ("style", style))) == (photo, style)
    assert split_upload(*form(("image", photo))) == (photo, None)
    assert split_upload(photo, "image/png") == (photo, None)
    assert split_upload(photo, None) == (photo, None)
    for bad in (form(("style", style)), form(("image", photo), ("path", b"/etc/passwd")),
                form(("image", photo), ("image", photo))):
        with pytest.raises(UsageError):
            split_upload(*bad)


def test_replicas_on_one_node_share_its_default_memory_budget():
    """The runtime's default budget is half the available memory per process: replicas that share a node
    divide it, instead of each taking half."""
    from nst_runtime.memory import DEFAULT_MEMORY_SHARE, available_memory, resolve_memory_limit

    alone = plan_replicas(models=1, cluster_cpus=2)
    assert alone.per_node == 1 and alone.memory_limit() == f"{DEFAULT_MEMORY_SHARE * 100:g}%"
    four = plan_replicas(models=2, cluster_cpus=4, replicas=2)  # 4 replicas x 1 CPU on one 4-CPU node
    assert four.per_node == 4
    budget = resolve_memory_limit(four.memory_limit())
    assert budget <= available_memory() * DEFAULT_MEMORY_SHARE / 4 * 1.05
    spread = plan_replicas(models=1, cluster_cpus=64, largest_node_cpus=8, replicas=8, threads=8)
    assert spread.per_node == 1  # one 8-thread replica per 8-CPU node
    gpus = plan_replicas(models=1, cluster_cpus=32, cluster_gpus=4)
    assert gpus.per_node == 4


def test_a_metrics_scrape_closes_its_response_even_when_reading_fails(monkeypatch):
    import urllib.request

    from nst_serve.app import scrape

    class Response:
        closed = False

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            Response.closed = True

        def read(self):
            raise TimeoutError("timed out")

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: Response())
    with pytest.raises(OSError):
        scrape("http://127.0.0.1:1/metrics")
    assert Response.closed


def test_nst_serve_checks_the_model_files_once_before_deploying(tmp_path, onnx_fp32_path, monkeypatch):
    import nst_serve.server as server

    calls = []
    monkeypatch.setattr(server, "check_models", lambda config: calls.append(config))

    class Stop(Exception):
        pass

    monkeypatch.setattr(server, "cluster_plan", lambda config: (_ for _ in ()).throw(Stop()))
    config = ServeConfig(models=models_from_args([onnx_fp32_path]))
    with pytest.raises(Stop):
        server.deploy(config, checked=True)
    assert calls == []
    with pytest.raises(Stop):
        server.deploy(config)
    assert len(calls) == 1


def test_an_any_style_replica_answers_400_to_a_text_style_before_decoding(tmp_path):
    """The replica's own check (whatever the gateway let through): a text style on an AdaIN model is a 400
    naming the upload form, and no file named by the client is opened."""
    import asyncio
    import types

    from nst_serve.app import ReplicaSettings, StyleModel

    secret = tmp_path / "secret.png"
    secret.write_bytes(b"not to be read")
    replica = object.__new__(StyleModel.func_or_class)
    replica.name = "adain"
    replica.settings = ReplicaSettings(paths=(), device="cpu", threads=1, max_batch=1, batch_wait_s=0.01,
                                       max_pixels=1000)
    replica.stylizer = types.SimpleNamespace(sidecar=types.SimpleNamespace(adain=object()), close=lambda: None)
    params = StylizeParams(options=(("style", str(secret)),))
    outcome = asyncio.run(replica._stylize(b"\x89PNG whatever", params))
    assert outcome.status == 400 and "multipart/form-data" in outcome.error["error"]
