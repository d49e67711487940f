"""Benchmark nst on Ray: the HTTP service's overhead against the in-process Stylizer, requests/s with 1 and 2
replicas, and ``nst-stylize --ray`` images/s against the plain folder command.

Timing needs a quiet machine: run it when nothing else does, and read the load average it records::

    .venv/bin/python tools/bench_serve.py                       # ~5 min on 2 CPU cores
    .venv/bin/python tools/bench_serve.py --quick               # a smoke run (numbers not for publishing)

Writes ``benchmarks/results/serve/serve.json`` and ``serve.md`` (``--out`` to change). Inputs are natural photos
from scikit-image (astronaut, coffee, chelsea, rocket) resized to each size, sent as JPEG (what browsers
upload), answered as PNG (the service's default). Without ``--model`` the network is Johnson et al.'s
TransformerNet with random weights, exported through nst-export's own function: the same computation as a
trained style, and the only one this offline machine has (timing does not depend on the weights).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

SIZES = {"256x256": (256, 256), "512x512": (512, 512), "1080p": (1080, 1920)}


def photos(h: int, w: int, count: int) -> list[bytes]:
    """JPEG bytes of scikit-image's photos, resized to h x w (cycled when count > 4)."""
    from PIL import Image
    from skimage import data

    sources = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    out = []
    for i in range(count):
        img = Image.fromarray(sources[i % len(sources)]).resize((w, h), Image.BICUBIC)
        if i >= len(sources):  # different bytes for every image, same content statistics
            img = img.transpose(Image.FLIP_LEFT_RIGHT) if (i // len(sources)) % 2 else img
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def default_model(folder: Path) -> Path:
    from nst_export.onnx_export import onnx_from_checkpoint
    from nst_train.checkpoint import CheckpointMetadata, save_checkpoint
    from nst_train.samples import vivid_random_net

    # the project's random test network: its output spans 0..255 like a trained one's (a fresh network's is
    # flat, which the parity gate refuses); the cost of a pass does not depend on the weights
    net = vivid_random_net(0)
    ckpt = save_checkpoint(folder / "bench.pth", net, CheckpointMetadata(steps=0))
    return onnx_from_checkpoint(ckpt, folder / "bench.onnx")


def post(url: str, body: bytes, timeout: float = 300) -> int:
    request = urllib.request.Request(url, data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            answer.read()
            return answer.status
    except urllib.error.HTTPError as err:
        err.read()
        return err.code


def median_s(fn, reps: int, warmup: int) -> tuple[float, list[float]]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def throughput(url: str, bodies: list[bytes], *, clients: int, seconds: float) -> dict[str, Any]:
    """Closed loop: ``clients`` threads POST back to back for ``seconds``; requests/s of 200 answers."""
    stop, lock, counts = threading.Event(), threading.Lock(), {"ok": 0, "other": 0}

    def client(k: int) -> None:
        i = k
        while not stop.is_set():
            status = post(url, bodies[i % len(bodies)])
            with lock:
                counts["ok" if status == 200 else "other"] += 1
            i += clients

    for body in bodies[:2]:
        post(url, body)  # warm-up
    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for k in range(clients):
            pool.submit(client, k)
        time.sleep(seconds)
        stop.set()
    elapsed = time.perf_counter() - t0  # includes finishing the requests in flight
    return {"requests_per_s": counts["ok"] / elapsed, "ok": counts["ok"], "not_ok": counts["other"],
            "seconds": round(elapsed, 2), "clients": clients}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, help="an .onnx file with its sidecar (default: a random TransformerNet)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/serve"))
    p.add_argument("--quick", action="store_true", help="few repetitions: checks that it runs, not for numbers")
    p.add_argument("--port", type=int, default=8765)
    args = p.parse_args(argv)

    import ray
    from nst_runtime import Stylizer
    from nst_serve import ServeConfig, models_from_args
    from nst_serve.batch_job import stylize_folder_on_ray
    from nst_serve.server import deploy
    from ray import serve

    reps = {"256x256": 3, "512x512": 2, "1080p": 1} if args.quick else {"256x256": 15, "512x512": 8, "1080p": 4}
    tp_seconds = 5.0 if args.quick else 30.0
    folder_count = 8 if args.quick else 32
    tmp = Path(tempfile.mkdtemp(prefix="nst-bench-serve-"))
    model = args.model or default_model(tmp)
    load_before = os.getloadavg()
    cpus = os.cpu_count() or 1
    result: dict[str, Any] = {"model": str(model), "quick": args.quick, "cpus": cpus,
                              "load_average_before": load_before}

    t0 = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    result["ray_init_s"] = round(time.perf_counter() - t0, 2)
    try:
        # ---- 1. overhead: one replica with every core vs the in-process Stylizer with the same threads
        t0 = time.perf_counter()
        config = ServeConfig(models=models_from_args([model]), port=args.port, replicas=1, max_queued=64)
        deployed = deploy(config)
        result["deploy_s"] = round(time.perf_counter() - t0, 2)
        url = deployed.url + "v1/stylize/" + deployed.models[0]
        threads = deployed.plan.threads
        overhead = {}
        with Stylizer.open(model, device="cpu", intra_op_threads=threads) as local:
            result["backend"] = local.backend
            for name, (h, w) in SIZES.items():
                body = photos(h, w, 1)[0]
                inproc, _ = median_s(lambda b=body: local.stylize_bytes(b, format="png"), reps[name], 1)
                served, _ = median_s(lambda b=body: post(url, b), reps[name], 1)
                overhead[name] = {"in_process_ms": round(inproc * 1000, 1), "service_ms": round(served * 1000, 1),
                                  "overhead_pct": round((served - inproc) / inproc * 100, 1), "reps": reps[name]}
                print(f"overhead {name}: {overhead[name]}", file=sys.stderr)
        result["overhead"] = overhead

        # ---- 2. requests/s at 256² with 1 and 2 replicas (8 clients)
        bodies = photos(256, 256, 8)
        tput = {"1": throughput(url, bodies, clients=8, seconds=tp_seconds)}
        print(f"1 replica: {tput['1']}", file=sys.stderr)
        # a different resource shape: replace the application (Serve's rolling update would wait for the CPUs
        # the old replica holds)
        serve.delete(config.app_name)
        deploy(ServeConfig(models=models_from_args([model]), port=args.port, replicas=2, max_queued=64))
        tput["2"] = throughput(url, bodies, clients=8, seconds=tp_seconds)
        print(f"2 replicas: {tput['2']}", file=sys.stderr)
        result["requests_per_s_256"] = tput
        serve.shutdown()

        # ---- 3. --ray vs the plain folder command on the same folder of 512² photos
        src = tmp / "photos"
        src.mkdir()
        for i, body in enumerate(photos(512, 512, folder_count)):
            (src / f"p{i:03d}.jpg").write_bytes(body)
        from nst_runtime.cli import main as stylize_main

        t0 = time.perf_counter()
        code = stylize_main([str(model), str(src), "-o", str(tmp / "plain"), "--device", "cpu", "-q"])
        plain_s = time.perf_counter() - t0
        report = stylize_folder_on_ray(model, src, tmp / "ray", device="cpu", progress=False)
        result["folder"] = {
            "images": folder_count, "size": "512x512",
            "plain_s": round(plain_s, 2), "plain_images_per_s": round(folder_count / plain_s, 3), "plain_exit": code,
            "ray_s": round(report.seconds, 2), "ray_images_per_s": round(report.images_per_s, 3),
            "ray_actors": report.plan.actors if report.plan else None,
            "ray_threads_per_actor": report.plan.threads if report.plan else None,
            "note": "ray_s excludes starting Ray (ray_init_s); it includes starting the actors and loading the model",
        }
        print(f"folder: {result['folder']}", file=sys.stderr)
    finally:
        serve.shutdown()
        ray.shutdown()
    result["load_average_after"] = os.getloadavg()
    result["machine"] = _machine()
    result["command"] = " ".join([".venv/bin/python", "tools/bench_serve.py", *(argv or sys.argv[1:])])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "serve.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "serve.md").write_text(_markdown(result))
    print(_markdown(result))
    return 0


def _machine() -> dict[str, Any]:
    try:
        from nst_bench.machine import cpu_model

        cpu = cpu_model()
    except Exception:
        cpu = platform.processor()
    import ray

    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "ray": ray.__version__,
            "date": time.strftime("%Y-%m-%d %H:%M")}


def _markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [
        "# nst on Ray: service overhead, requests/s, --ray images/s", "",
        f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, Ray {m['ray']}, {m['date']}. "
        f"Load average before {r['load_average_before'][0]:.2f}, after {r['load_average_after'][0]:.2f}"
        + (" (**--quick: smoke run, not for publishing**)" if r["quick"] else "") + ".",
        f"Backend {r.get('backend')}; `ray.init` {r['ray_init_s']} s, first deploy {r['deploy_s']} s. "
        f"Command: `{r['command']}`", "",
        "| size | in-process `stylize_bytes` ms | `POST /v1/stylize` ms | overhead |", "|---|---|---|---|"]
    for name, o in r["overhead"].items():
        lines.append(f"| {name} | {o['in_process_ms']} | {o['service_ms']} | {o['overhead_pct']} % |")
    lines += ["", "| replicas | requests/s (256², 8 clients) | answered 200 | other |", "|---|---|---|---|"]
    for n, t in r["requests_per_s_256"].items():
        lines.append(f"| {n} | {t['requests_per_s']:.2f} | {t['ok']} | {t['not_ok']} |")
    f = r["folder"]
    lines += ["", f"Folder of {f['images']} photos at {f['size']}: plain `nst-stylize` {f['plain_images_per_s']} "
              f"images/s ({f['plain_s']} s), `--ray` {f['ray_images_per_s']} images/s ({f['ray_s']} s, "
              f"{f['ray_actors']} actor(s) x {f['ray_threads_per_actor']} threads; {f['note']}).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
