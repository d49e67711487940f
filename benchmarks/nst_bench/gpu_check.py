"""``python -m nst_bench.gpu_check --out DIR``: prove nst's GPU paths in one run, and record every number.

Made for one call on a lent GPU machine (no network, a few minutes, see docs/bench.md), and runnable anywhere:
``--device cpu --quick`` runs every step at toy sizes, so the kit is known to work before a GPU appears (CI
runs it). Steps, in order of importance, each within its share of ``--time-limit-s``:

1. ``environment``: device, driver, CUDA/cuDNN, library versions, ONNX Runtime providers, load;
2. ``pytest``: ``pytest -m "gpu or tensorrt"`` over the repository's tests, outcome per test;
3. ``train_short``: a TransformerNet trained for a short run (random VGG-16 loss network: weights move under
   real gradients, the style is not real), the network the parity step measures;
4. ``fp16_parity``: PSNR and max difference of every FP16 path present (PyTorch FP16 on the device, ONNX
   Runtime CUDA FP16, a TensorRT FP16 engine; on a CPU: PyTorch FP16 and ONNX Runtime CPU FP16) against
   PyTorch FP32 (TF32 off), on natural photos (scikit-image's samples);
5. ``training_throughput``: training images/s at 256² with AMP on and off, and the projected time of
   40,000 iterations;
6. ``bench``: nst-bench on every backend present (eager FP32/FP16, ONNX Runtime, TensorRT) at 256², 512²,
   1080p and 4K, compute and end-to-end views; backends absent are listed with their reason;
7. ``fp16_layout``: FP16 contiguous against channels_last at the same sizes (the memory-format decision);
8. ``gatys``: the Gatys baseline at 256² and 512² as full 500-iteration runs (Table 1 of Johnson et al.);
9. ``bench_compile``: torch.compile, last, because its compilation takes the longest.

Every step's outcome is ``ok``, ``skipped`` (with the reason), ``failed`` (with the error) or ``timeout``;
``DIR/gpu_check.json`` and ``DIR/gpu_check.md`` are rewritten after each step, so a run cut short still
leaves what it measured. On a GPU each step runs in its own process (a hang or a crash costs that step only).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import itertools
import json
import logging
import math
import os
import signal
import statistics
import subprocess
import sys
import time
import traceback
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("nst_bench.gpu_check")

SCHEMA_VERSION = 1
ITERATIONS_TO_PROJECT = 40_000
#: sizes as (height, width): 256², 512², 1080p, 4K UHD
FULL_SIZES = ((256, 256), (512, 512), (1080, 1920), (2160, 3840))
QUICK_SIZES = ((32, 32), (36, 52))
FULL_GATYS = ((256, 256), (512, 512))
QUICK_GATYS = ((32, 32),)
#: why onnxruntime-gpu is normally absent on the lent machine (docs/bench.md, "GPU check")
ORT_GPU_NOTE = ("onnxruntime-gpu is not on the lent GPU machine (its image has the CPU build) and its wheel (about "
                "256 MB) exceeds what one device call carries (64 MiB); ONNX Runtime CUDA is not measured by the "
                "one-call kit. docs/bench.md describes the multi-call way to bring it.")
TRT_NOTE = ("the tensorrt package is not on the lent GPU machine and its wheels (about 1 GB of libraries, "
            "tensorrt-lean alone over 100 MB) exceed what one device call carries (64 MiB)")


@dataclass(frozen=True)
class CheckConfig:
    out: Path
    device: str = "cuda"
    quick: bool = False
    time_limit_s: float = 540.0
    isolate: bool = True
    pytest_paths: tuple[str, ...] = ("tests",)
    steps: tuple[str, ...] = ()
    train_steps: int = 200
    train_size: int = 256
    sizes: tuple[tuple[int, int], ...] = FULL_SIZES
    gatys_sizes: tuple[tuple[int, int], ...] = FULL_GATYS
    throughput_steps: int = 40
    throughput_size: int = 256
    bench_budget_s: float = 2.0
    #: seconds per library of nst-bench's SGEMM roof measurement on a CPU (at the start and the end of the run)
    sgemm_seconds: float = 1.0
    #: nst-bench backends of the bench step (empty: every feed-forward backend but torch.compile)
    bench_backends: tuple[str, ...] = ()
    parity_sizes: tuple[tuple[int, int], ...] = ((256, 256), (512, 768), (1080, 1920))

    @property
    def work(self) -> Path:
        return self.out / "work"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["out"] = str(self.out)
        d["sizes"] = [f"{h}x{w}" for h, w in self.sizes]
        d["gatys_sizes"] = [f"{h}x{w}" for h, w in self.gatys_sizes]
        d["parity_sizes"] = [f"{h}x{w}" for h, w in self.parity_sizes]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CheckConfig:
        kw = dict(d)
        kw["out"] = Path(kw["out"])
        kw["pytest_paths"] = tuple(kw["pytest_paths"])
        kw["steps"] = tuple(kw["steps"])
        kw["bench_backends"] = tuple(kw["bench_backends"])
        kw["parity_sizes"] = tuple(tuple(int(v) for v in s.split("x")) for s in kw["parity_sizes"])
        kw["sizes"] = tuple(tuple(int(v) for v in s.split("x")) for s in kw["sizes"])
        kw["gatys_sizes"] = tuple(tuple(int(v) for v in s.split("x")) for s in kw["gatys_sizes"])
        return cls(**kw)


class Skip(Exception):
    """A step that cannot run here; the message is the reason, recorded as is."""


@dataclass
class StepOutcome:
    name: str
    status: str  # ok | skipped | failed | timeout
    seconds: float
    reason: str | None = None
    result: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------- helpers
def _cuda(cfg: CheckConfig) -> bool:
    return cfg.device == "cuda"


def _need_cuda(cfg: CheckConfig, what: str) -> None:
    import torch

    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise Skip(f"{what}: --device cuda, but torch {torch.__version__} sees no CUDA GPU")


def _psnr(a: Any, b: Any) -> float | None:
    """PSNR in dB of two uint8 images (None: identical)."""
    import numpy as np

    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return None if mse == 0 else 10.0 * math.log10(255.0 ** 2 / mse)


def natural_images(sizes: Sequence[tuple[int, int]]) -> list[tuple[str, Any]]:
    """scikit-image's sample photos, resized to each (height, width): what quality is measured on."""
    import numpy as np
    from PIL import Image

    try:
        import skimage.data as data
    except ImportError as exc:
        raise Skip(f"natural photos come from scikit-image, which is not installed ({exc})") from exc
    photos = [("astronaut", data.astronaut()), ("coffee", data.coffee()), ("chelsea", data.chelsea())]
    out = []
    for (h, w), (name, photo) in zip(sizes, photos * len(sizes), strict=False):
        img = Image.fromarray(np.asarray(photo)[..., :3]).resize((w, h), Image.Resampling.LANCZOS)
        out.append((f"{name} {h}x{w}", np.asarray(img)))
    return out


def torch_uint8(net: Any, image: Any, *, device: str, dtype: Any, channels_last: bool = False) -> Any:
    """The deploy contract in PyTorch at ``dtype``: uint8 HxWx3 in, uint8 HxWx3 out (pad, crop, round, clamp)."""
    import torch
    import torch.nn.functional as F

    h, w = image.shape[:2]
    ph, pw = (-h) % 4, (-w) % 4
    with torch.inference_mode():
        x = torch.from_numpy(image).to(device)[None].permute(0, 3, 1, 2).to(dtype)
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect")
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = net(x)[:, :, :h, :w].float()
        return torch.round(torch.clamp(y, 0.0, 255.0)).to(torch.uint8)[0].permute(1, 2, 0).cpu().numpy()


def _write_samples(work: Path, size: int) -> tuple[Path, Path]:
    from nst_train.samples import write_sample_content, write_sample_style

    content = work / f"content{size}"
    if not content.is_dir():
        write_sample_content(content, count=16, size=size + 32)
    style = work / f"style{size}.png"
    if not style.is_file():
        write_sample_style(style, size=size)
    return content, style


# ----------------------------------------------------------------------------------------- steps
def step_environment(cfg: CheckConfig, state: dict[str, Any]) -> dict[str, Any]:
    from .machine import machine_info

    info = machine_info()
    extra: dict[str, Any] = {}
    try:
        import torch

        extra["torch_cuda"] = torch.version.cuda
        extra["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        extra["cuda_available"] = torch.cuda.is_available()
    except ImportError:
        extra["torch"] = None
    try:
        import onnxruntime as ort

        extra["onnxruntime_providers"] = ort.get_available_providers()
    except ImportError:
        extra["onnxruntime_providers"] = None
    for module in ("tensorrt", "tensorrt_lean", "cuda.bindings.runtime"):
        try:
            mod = __import__(module, fromlist=["_"])
            extra[module] = getattr(mod, "__version__", "present")
        except ImportError as exc:
            extra[module] = None
            extra[f"{module}_why_not"] = str(exc)
    import nst_bench

    extra["nst_location"] = str(Path(nst_bench.__file__).resolve().parent.parent)
    notes = []
    if _cuda(cfg) and "CUDAExecutionProvider" not in (extra["onnxruntime_providers"] or []):
        notes.append(ORT_GPU_NOTE)
    if _cuda(cfg) and extra.get("tensorrt") is None:
        notes.append(f"TensorRT is not measured: {TRT_NOTE}.")
    return {"machine": info, **extra, "notes": notes}


def _junit(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    cases = []
    for suite in suites:
        for case in suite.iter("testcase"):
            outcome, message = "passed", None
            for tag in ("failure", "error", "skipped"):
                el = case.find(tag)
                if el is not None:
                    outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                    message = (el.get("message") or el.text or "").strip().splitlines()[0][:300] if (
                        el.get("message") or el.text) else None
                    break
            cases.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                          "message": message})
    counts: dict[str, int] = {}
    for c in cases:
        counts[c["outcome"]] = counts.get(c["outcome"], 0) + 1
    return {"counts": counts, "tests": cases}


def step_pytest(cfg: CheckConfig, state: dict[str, Any], *, timeout_s: float) -> dict[str, Any]:
    # the repository the kit runs from (nst itself may be installed elsewhere, e.g. a --target folder)
    root = Path.cwd() if (Path.cwd() / "tests").is_dir() else Path(__file__).resolve().parents[2]
    paths = [p if Path(p).is_absolute() else str(root / p) for p in cfg.pytest_paths]
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        raise Skip(f"the tests are not here ({', '.join(missing)}): run the kit from the repository root")
    xml = cfg.out / "pytest.xml"
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu or tensorrt", "-q", "-p", "no:cacheprovider",
           f"--junitxml={xml}", *paths]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=max(10.0, timeout_s))
    except subprocess.TimeoutExpired as exc:
        raise Skip(f"pytest did not finish within {timeout_s:.0f} s") from exc
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
    (cfg.out / "pytest.log").write_text(proc.stdout + proc.stderr)
    result = {"command": " ".join(cmd[1:]), "exit_code": proc.returncode, "seconds": round(time.perf_counter() - t0, 1),
              "summary": tail[-1] if tail else "", **_junit(xml)}
    # 0: all passed; 5: nothing selected (no gpu/tensorrt test collected); anything else is a failure
    result["passed"] = proc.returncode in (0, 5)
    return result


def step_train_short(cfg: CheckConfig, state: dict[str, Any]) -> dict[str, Any]:
    _need_cuda(cfg, "training")
    from nst_train.train import TrainConfig, train

    size = cfg.train_size
    content, style = _write_samples(cfg.work, size)
    out = cfg.work / "short_run.pth"
    with contextlib.suppress(FileNotFoundError):
        out.unlink()
    config = TrainConfig(style=style, content_dir=content, out=out, image_size=size, batch_size=4 if not cfg.quick
                         else 2, steps=cfg.train_steps, device=cfg.device, vgg_weights="random",
                         num_workers=0 if cfg.quick else min(8, os.cpu_count() or 1),
                         log_every=max(1, cfg.train_steps // 5), checkpoint_every=0, preview_every=0, progress=False,
                         run_dir=cfg.work / "short_run.run")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random-VGG warning: said in the result
        res = train(config)
    return {"checkpoint": str(res.checkpoint), "steps": res.steps, "image_size": size,
            "batch_size": config.batch_size, "seconds": round(res.seconds, 1),
            "final_losses": res.final_losses, "loss_network": "VGG-16 with RANDOM weights (no ImageNet weights "
            "offline): the network is trained under real gradients, not a real style"}


def _fp16_candidates(cfg: CheckConfig) -> list[str]:
    names = ["torch-fp16"]
    if _cuda(cfg):
        names += ["ort-cuda-fp16", "trt-fp16"]
    elif not cfg.quick:
        names += ["ort-cpu-fp16"]
    return names


def step_fp16_parity(cfg: CheckConfig, state: dict[str, Any]) -> dict[str, Any]:
    _need_cuda(cfg, "FP16 parity")
    import torch
    from nst_train.checkpoint import load_checkpoint

    ckpt = (state.get("train_short") or {}).get("checkpoint")
    if not ckpt or not Path(ckpt).is_file():
        raise Skip("no briefly trained network (the train_short step did not succeed)")
    torch.backends.cudnn.allow_tf32 = False  # an FP32 reference, not TF32
    torch.backends.cuda.matmul.allow_tf32 = False
    device = cfg.device
    net32 = load_checkpoint(ckpt).model(device).eval().float()
    net16 = load_checkpoint(ckpt).model(device).eval().half()
    sizes = cfg.parity_sizes
    images = natural_images(sizes)
    refs = {name: torch_uint8(net32, img, device=device, dtype=torch.float32) for name, img in images}
    results: dict[str, Any] = {"reference": f"PyTorch FP32 on {device} (TF32 off), deploy contract (uint8 in/out)",
                               "images": [n for n, _ in images], "candidates": {}, "skipped": {}}

    def record(candidate: str, run: Callable[[Any], Any]) -> None:
        rows = []
        for name, img in images:
            out = run(img)
            diff = int(abs(out.astype(int) - refs[name].astype(int)).max())
            rows.append({"image": name, "max_abs_levels": diff, "psnr_db": _psnr(out, refs[name]),
                         "differing_share": float((out != refs[name]).mean())})
        psnrs = [r["psnr_db"] for r in rows if r["psnr_db"] is not None]
        results["candidates"][candidate] = {"per_image": rows, "min_psnr_db": min(psnrs) if psnrs else None,
                                            "max_abs_levels": max(r["max_abs_levels"] for r in rows),
                                            "passes_40db_gate": all(p >= 40.0 for p in psnrs)}

    for candidate in _fp16_candidates(cfg):
        try:
            if candidate == "torch-fp16":
                record(candidate, lambda img: torch_uint8(net16, img, device=device, dtype=torch.float16))
            elif candidate in ("ort-cuda-fp16", "ort-cpu-fp16"):
                record(candidate, _ort_fp16_runner(cfg, Path(ckpt), cuda=candidate == "ort-cuda-fp16"))
            elif candidate == "trt-fp16":
                record(candidate, _trt_fp16_runner(cfg, Path(ckpt), sizes))
        except Skip as exc:
            results["skipped"][candidate] = str(exc)
    return results


def _fp16_onnx(cfg: CheckConfig, ckpt: Path) -> Path:
    from nst_export.fp16 import fp16_onnx_from_onnx
    from nst_export.onnx_export import onnx_from_checkpoint
    from nst_export.parity import ParityTolerance

    fp16 = cfg.work / "short_run.fp16.onnx"
    if fp16.is_file():
        return fp16
    loose = ParityTolerance(fp32_max_abs_levels=255, fp16_min_psnr_db=1e-3)  # measured here, not gated
    fp32 = onnx_from_checkpoint(ckpt, cfg.work / "short_run.onnx", tolerance=loose)
    return fp16_onnx_from_onnx(fp32, fp16, checkpoint=ckpt, tolerance=loose)


def _ort_fp16_runner(cfg: CheckConfig, ckpt: Path, *, cuda: bool) -> Callable[[Any], Any]:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise Skip(f"onnxruntime is not installed ({exc})") from exc
    provider = "CUDAExecutionProvider" if cuda else "CPUExecutionProvider"
    if provider not in ort.get_available_providers():
        raise Skip(ORT_GPU_NOTE if cuda else f"onnxruntime has no {provider}")
    from nst_runtime.onnxruntime_backend import select_providers

    providers = select_providers(ort.get_available_providers(), device="cuda" if cuda else "cpu")
    session = ort.InferenceSession(str(_fp16_onnx(cfg, ckpt)), providers=providers)
    return lambda img: session.run(None, {"input": img[None]})[0][0]


def _trt_fp16_runner(cfg: CheckConfig, ckpt: Path, sizes: Sequence[tuple[int, int]]) -> Callable[[Any], Any]:
    try:
        import tensorrt  # noqa: F401
    except ImportError as exc:
        raise Skip(f"TensorRT is not measured: {TRT_NOTE} ({exc})") from exc
    from nst_export.tensorrt_engine import engine_from_onnx
    from nst_runtime import Stylizer
    from nst_runtime.sidecar import ShapeProfile

    hmax, wmax = max(h for h, _ in sizes), max(w for _, w in sizes)
    engine = engine_from_onnx(_fp16_onnx(cfg, ckpt), cfg.work / "short_run.fp16.engine",
                              profile=ShapeProfile(min=(1, 8, 8), opt=(1, hmax, wmax), max=(1, hmax, wmax)))
    stylizer = Stylizer.open(engine, device="cuda")
    return stylizer.stylize


def _train_throughput(cfg: CheckConfig, *, amp: bool) -> dict[str, Any]:
    import torch
    from nst_train.train import TrainConfig, train

    size = cfg.throughput_size
    batch = 2 if cfg.quick else 4
    content, style = _write_samples(cfg.work, size)
    stamps: list[float] = []
    out = cfg.work / f"throughput_amp{int(amp)}.pth"
    with contextlib.suppress(FileNotFoundError):
        out.unlink()
    config = TrainConfig(style=style, content_dir=content, out=out, image_size=size, batch_size=batch,
                         steps=cfg.throughput_steps, device=cfg.device, vgg_weights="random", amp=amp,
                         num_workers=0 if cfg.quick else min(8, os.cpu_count() or 1),
                         log_every=cfg.throughput_steps, checkpoint_every=0, preview_every=0, progress=False,
                         run_dir=cfg.work / f"throughput_amp{int(amp)}.run")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = train(config, callback=lambda rec: stamps.append(time.perf_counter()))
    steps = [b - a for a, b in itertools.pairwise(stamps)]
    steady = steps[max(1, len(steps) // 5):] or steps  # the first steps carry cuDNN autotuning and warm-up
    if not steady:
        raise Skip("too few steps to time; raise --throughput-steps")
    per_step = statistics.median(steady)
    return {"amp": amp, "amp_policy": _amp_describe(cfg.device, amp), "image_size": size, "batch_size": batch,
            "timed_steps": len(steady), "median_step_s": per_step, "images_per_s": batch / per_step,
            "images_per_s_whole_call": res.images_per_second,
            f"projected_{ITERATIONS_TO_PROJECT}_iterations_s": per_step * ITERATIONS_TO_PROJECT,
            f"projected_{ITERATIONS_TO_PROJECT}_iterations_h": per_step * ITERATIONS_TO_PROJECT / 3600.0,
            "data_workers": config.num_workers, "torch": torch.__version__}


def _amp_describe(device: str, amp: bool) -> str:
    import torch
    from nst_train.train import amp_policy

    return amp_policy(torch.device(device), amp).describe()


def step_training_throughput(cfg: CheckConfig, state: dict[str, Any]) -> dict[str, Any]:
    _need_cuda(cfg, "training throughput")
    runs: dict[str, Any] = {"off": _train_throughput(cfg, amp=False)}
    if _cuda(cfg):
        runs["on"] = _train_throughput(cfg, amp=True)
    else:
        runs["on"] = {"skipped": "AMP is used on CUDA only (nst_train.train.amp_policy); on a CPU it would be "
                                 "the same float32 run"}
    return {"amp": runs, "basis": f"median step time after warm-up x {ITERATIONS_TO_PROJECT} iterations"}


def _bench(cfg: CheckConfig, backends: Sequence[str], *, sizes: Sequence[tuple[int, int]]) -> dict[str, Any]:
    from .harness import RepetitionPolicy
    from .run import BenchConfig, run_benchmark

    bench_cfg = BenchConfig(device=cfg.device, backends=tuple(backends), sizes=tuple(sizes), batches=(1,),
                            views=("compute", "e2e"), gatys_sizes=(),
                            policy=RepetitionPolicy(warmup=2 if not cfg.quick else 1, reps=30, min_reps=3,
                                                    budget_s=cfg.bench_budget_s),
                            sgemm_seconds=cfg.sgemm_seconds, progress=False)
    doc = run_benchmark(bench_cfg)
    rows = [{k: r.get(k) for k in ("backend", "precision", "view", "size", "median_ms", "p90_ms", "images_per_s",
                                   "achieved_tflops", "peak_memory_mb", "reps")} for r in doc["results"]]
    return {"results": rows, "skipped": doc["skipped"], "notes": doc["notes"], "full": doc["results"]}


def step_bench(cfg: CheckConfig, state: dict[str, Any]) -> dict[str, Any]:
    _need_cuda(cfg, "nst-bench")
    from .backends import FEED_FORWARD

    names = list(cfg.bench_backends) or [b for b in FEED_FORWARD if b != "torch-compile"]
    return _bench(cfg, names, sizes=cfg.sizes)


def step_bench_compile(cfg: CheckConfig, state: dict[str, Any]) -> dict[str, Any]:
    _need_cuda(cfg, "torch.compile")
    from .backends import ModelSource, make_backend

    ok, why = make_backend("torch-compile", device=cfg.device, source=ModelSource(work_dir=cfg.work)).available()
    if not ok:
        raise Skip(why)
    return _bench(cfg, ["torch-compile"], sizes=cfg.sizes)


def step_fp16_layout(cfg: CheckConfig, state: dict[str, Any]) -> dict[str, Any]:
    """FP16 eager, contiguous against channels_last, compute view (input on the device), CUDA events."""
    if not _cuda(cfg):
        raise Skip("the FP16 memory-format decision is made on CUDA (FP16 convolutions on a CPU say nothing "
                   "about a GPU)")
    _need_cuda(cfg, "FP16 layout")
    import torch
    from nst_train.model import TransformerNet

    from .harness import RepetitionPolicy, time_fn

    policy = RepetitionPolicy(warmup=3, reps=30, min_reps=5, budget_s=cfg.bench_budget_s)
    torch.backends.cudnn.benchmark = True
    rows = []
    for h, w in cfg.sizes:
        ph, pw = h + (-h) % 4, w + (-w) % 4
        row: dict[str, Any] = {"size": f"{h}x{w}"}
        for layout in ("contiguous", "channels_last"):
            fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
            torch.manual_seed(0)
            net = TransformerNet().eval().to("cuda", dtype=torch.float16).to(memory_format=fmt)
            x = (torch.rand((1, 3, ph, pw), device="cuda") * 255).half().contiguous(memory_format=fmt)

            def timer(fn: Callable[[], object]) -> float:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                return float(start.elapsed_time(end))

            def call(net: Any = net, x: Any = x) -> object:
                with torch.inference_mode():
                    return net(x)

            stats = time_fn(call, policy=policy, sync=torch.cuda.synchronize, device_timer=timer)
            row[f"{layout}_median_ms"] = stats.median_ms
            del net, x
            torch.cuda.empty_cache()
        c, cl = row["contiguous_median_ms"], row["channels_last_median_ms"]
        row["faster"] = "channels_last" if cl < c else "contiguous"
        row["ratio_contiguous_over_channels_last"] = c / cl if cl else None
        rows.append(row)
    wins = [r["faster"] for r in rows]
    return {"rows": rows, "faster_at_most_sizes": max(set(wins), key=wins.count),
            "note": "InstanceNorm2d returns contiguous tensors, so channels_last converts layouts around every norm"}


def step_gatys(cfg: CheckConfig, state: dict[str, Any]) -> dict[str, Any]:
    _need_cuda(cfg, "Gatys")
    from . import gatys as gatys_mod

    ok, why = gatys_mod.available()
    if not ok:
        raise Skip(why)
    rows = []
    for h, w in cfg.gatys_sizes:
        # full 500-iteration runs on a GPU (budget far above their length); a few iterations in --quick
        timing = gatys_mod.time_gatys(height=h, width=w, device=cfg.device, iterations=3 if cfg.quick else None,
                                      budget_s=600.0)
        rec = timing.record()
        rows.append({k: rec.get(k) for k in ("size", "optimizer", "measured_iterations", "extrapolated",
                                              "median_ms", "seconds_100", "seconds_300", "seconds_500")})
    return {"rows": rows, "full_runs": all(not r["extrapolated"] for r in rows),
            "loss_network": "VGG-16 with random weights: timing only"}


STEPS: dict[str, tuple[Callable[..., dict[str, Any]], float]] = {
    # name: (function, share of the time limit it may use at most)
    "environment": (step_environment, 0.05),
    "pytest": (step_pytest, 0.25),
    "train_short": (step_train_short, 0.15),
    "fp16_parity": (step_fp16_parity, 0.15),
    "training_throughput": (step_training_throughput, 0.15),
    "bench": (step_bench, 0.35),
    "fp16_layout": (step_fp16_layout, 0.10),
    "gatys": (step_gatys, 0.15),
    "bench_compile": (step_bench_compile, 1.0),
}


# ----------------------------------------------------------------------------------------- running steps
def _run_in_process(name: str, cfg: CheckConfig, state: dict[str, Any], timeout_s: float) -> StepOutcome:
    fn, _ = STEPS[name]
    t0 = time.perf_counter()
    try:
        result = fn(cfg, state, timeout_s=timeout_s) if name == "pytest" else fn(cfg, state)
        return StepOutcome(name, "ok", time.perf_counter() - t0, result=result)
    except Skip as exc:
        return StepOutcome(name, "skipped", time.perf_counter() - t0, reason=str(exc))
    except Exception as exc:  # a step's failure is a result; the other steps still run
        log.debug("%s failed:\n%s", name, traceback.format_exc())
        return StepOutcome(name, "failed", time.perf_counter() - t0,
                           reason=f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:500] if str(exc) else ''}",
                           result={"traceback": traceback.format_exc()[-4000:]})


def _run_isolated(name: str, cfg: CheckConfig, state: dict[str, Any], timeout_s: float) -> StepOutcome:
    spec = cfg.work / f"{name}.spec.json"
    result = cfg.work / f"{name}.result.json"
    spec.write_text(json.dumps({"config": cfg.to_dict(), "state": state, "timeout_s": timeout_s}, default=str))
    with contextlib.suppress(FileNotFoundError):
        result.unlink()
    cmd = [sys.executable, "-m", "nst_bench.gpu_check", "--worker", name, "--spec", str(spec), "--result", str(result)]
    t0 = time.perf_counter()
    with open(cfg.work / f"{name}.log", "w") as logf:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return StepOutcome(name, "timeout", time.perf_counter() - t0,
                               reason=f"did not finish within its {timeout_s:.0f} s share of --time-limit-s")
    if not result.is_file():
        tail = (cfg.work / f"{name}.log").read_text(errors="replace").strip().splitlines()[-3:]
        return StepOutcome(name, "failed", time.perf_counter() - t0,
                           reason=f"the step's process ended with code {proc.returncode} and no result: "
                                  + " | ".join(tail)[:500])
    d = json.loads(result.read_text())
    return StepOutcome(name, d["status"], time.perf_counter() - t0, d.get("reason"), d.get("result") or {})


def worker_main(name: str, spec_path: Path, result_path: Path) -> int:
    spec = json.loads(spec_path.read_text())
    cfg = CheckConfig.from_dict(spec["config"])
    outcome = _run_in_process(name, cfg, spec["state"], float(spec["timeout_s"]))
    result_path.write_text(json.dumps(asdict(outcome), default=_json_default))
    return 0


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):
        return o.item()
    return str(o)


def run_check(cfg: CheckConfig, *, command: str = "nst_bench.gpu_check.run_check") -> dict[str, Any]:
    """Run every step (or ``cfg.steps``) within ``cfg.time_limit_s``; write and return the document."""
    cfg.out.mkdir(parents=True, exist_ok=True)
    cfg.work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "config": cfg.to_dict(),
        "steps": [],
    }
    state: dict[str, Any] = {}
    names = list(cfg.steps or STEPS)
    for i, name in enumerate(names):
        remaining = cfg.time_limit_s - (time.monotonic() - started)
        later = len(names) - i - 1
        share = STEPS[name][1] * cfg.time_limit_s
        reserve = min(10.0 * later, remaining * 0.3)  # keep a little for the steps after this one
        budget = min(share, remaining - reserve)
        if budget < 5.0:
            outcome = StepOutcome(name, "skipped", 0.0, reason=f"time limit: {remaining:.0f} s of "
                                  f"--time-limit-s {cfg.time_limit_s:.0f} left")
        elif cfg.isolate and name != "environment":
            outcome = _run_isolated(name, cfg, state, budget)
        else:
            outcome = _run_in_process(name, cfg, state, budget)
        log.info("%-20s %-8s %6.1f s%s", name, outcome.status, outcome.seconds,
                 f"  {outcome.reason}" if outcome.reason else "")
        state[name] = outcome.result if outcome.status == "ok" else None
        doc["steps"].append(asdict(outcome))
        doc["wall_s"] = round(time.monotonic() - started, 1)
        doc["skips"] = collect_skips(doc)
        write_outputs(cfg.out, doc)
    return doc


def collect_skips(doc: dict[str, Any]) -> list[dict[str, str]]:
    """Every skip in the run with its reason: skipped steps, and what skipped inside a step."""
    skips = []
    for step in doc["steps"]:
        if step["status"] != "ok":
            skips.append({"what": step["name"], "status": step["status"], "reason": step.get("reason") or ""})
            continue
        res = step.get("result") or {}
        for s in res.get("skipped", []) if isinstance(res.get("skipped"), list) else []:
            where = " ".join(str(s[k]) for k in ("backend", "size", "view") if s.get(k))
            skips.append({"what": f"{step['name']}: {where}", "status": "skipped", "reason": s.get("reason", "")})
        if isinstance(res.get("skipped"), dict):
            for what, why in res["skipped"].items():
                skips.append({"what": f"{step['name']}: {what}", "status": "skipped", "reason": why})
        for t in res.get("tests", []):
            if t["outcome"] == "skipped":
                skips.append({"what": f"pytest: {t['test']}", "status": "skipped", "reason": t.get("message") or ""})
        for run, r in (res.get("amp") or {}).items():
            if isinstance(r, dict) and "skipped" in r:
                skips.append({"what": f"{step['name']}: AMP {run}", "status": "skipped", "reason": r["skipped"]})
    return skips


# ----------------------------------------------------------------------------------------- reports
def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def markdown(doc: dict[str, Any]) -> str:
    steps = {s["name"]: s for s in doc["steps"]}
    lines = ["# nst GPU check", "", f"Created {doc['created_at']}, {doc.get('wall_s', 0)} s. Command: "
             f"`{doc['command']}`.", ""]
    env = (steps.get("environment") or {}).get("result") or {}
    machine = env.get("machine") or {}
    gpu = machine.get("gpu") or {}
    libs = machine.get("libraries") or {}
    lines += ["## Device and versions", "",
              f"- device: {doc['config']['device']}{' (quick)' if doc['config']['quick'] else ''}; "
              f"GPU: {gpu.get('name', 'none')}, compute capability {gpu.get('compute_capability', '-')}, "
              f"{gpu.get('memory_gib', '-')} GiB, driver {gpu.get('driver', '-')}, CUDA runtime "
              f"{env.get('torch_cuda', '-')}, cuDNN {env.get('cudnn', '-')}",
              f"- CPU: {machine.get('cpu_model', '-')}, {machine.get('cpu_cores', '-')} cores; load average at "
              f"start {machine.get('loadavg_start')}",
              "- libraries: " + ", ".join(f"{k} {v}" for k, v in libs.items() if v),
              f"- ONNX Runtime providers: {env.get('onnxruntime_providers')}; tensorrt: {env.get('tensorrt')}",
              *[f"- note: {n}" for n in env.get("notes", [])], ""]
    lines += ["## Steps", "", "| step | status | seconds | reason |", "|---|---|---|---|"]
    lines += [f"| {s['name']} | {s['status']} | {s['seconds']:.1f} | {s.get('reason') or ''} |" for s in doc["steps"]]
    lines.append("")
    py = (steps.get("pytest") or {}).get("result") or {}
    if py:
        lines += ["## pytest -m \"gpu or tensorrt\"", "", f"exit code {py.get('exit_code')}, {py.get('counts')}: "
                  f"{py.get('summary')}", ""]
        lines += [f"- {t['test']}: {t['outcome']}{': ' + t['message'] if t.get('message') else ''}"
                  for t in py.get("tests", [])]
        lines.append("")
    tr = (steps.get("train_short") or {}).get("result") or {}
    if tr:
        lines += ["## Short training run", "", f"{tr['steps']} steps at {tr['image_size']}², batch "
                  f"{tr['batch_size']}, {tr['seconds']} s; final losses {tr['final_losses']}. {tr['loss_network']}.", ""]
    par = (steps.get("fp16_parity") or {}).get("result") or {}
    if par:
        lines += ["## FP16 parity", "", f"Reference: {par['reference']}.", "",
                  "| path | image | max |diff| (levels) | PSNR (dB) |", "|---|---|---|---|"]
        for cand, r in par["candidates"].items():
            lines += [f"| {cand} | {row['image']} | {row['max_abs_levels']} | "
                      f"{'identical' if row['psnr_db'] is None else format(row['psnr_db'], '.1f')} |"
                      for row in r["per_image"]]
        lines += [f"- {k}: skipped: {v}" for k, v in par.get("skipped", {}).items()]
        lines.append("")
    tp = (steps.get("training_throughput") or {}).get("result") or {}
    if tp:
        lines += ["## Training throughput", "", "| AMP | policy | size | batch | images/s | projected "
                  f"{ITERATIONS_TO_PROJECT:,} iterations |", "|---|---|---|---|---|---|"]
        for run, r in tp["amp"].items():
            if "skipped" in r:
                lines.append(f"| {run} | skipped: {r['skipped']} | | | | |")
            else:
                lines.append(f"| {run} | {r['amp_policy']} | {r['image_size']}² | {r['batch_size']} | "
                             f"{r['images_per_s']:.1f} | {r[f'projected_{ITERATIONS_TO_PROJECT}_iterations_h']:.2f} h |")
        lines.append("")
    for key, title in (("bench", "nst-bench"), ("bench_compile", "nst-bench: torch.compile")):
        b = (steps.get(key) or {}).get("result") or {}
        if b:
            lines += [f"## {title}", "", "| backend | precision | view | size | median ms | p90 ms | images/s |",
                      "|---|---|---|---|---|---|---|"]
            lines += [f"| {r['backend']} | {r['precision']} | {r['view']} | {r['size']} | {_fmt(r['median_ms'])} | "
                      f"{_fmt(r['p90_ms'])} | {_fmt(r['images_per_s'])} |" for r in b["results"]]
            lines += [f"- skipped {s.get('backend')}{' ' + s['size'] if s.get('size') else ''}: {s['reason']}"
                      for s in b["skipped"]]
            lines.append("")
    lay = (steps.get("fp16_layout") or {}).get("result") or {}
    if lay:
        lines += ["## FP16 memory format", "", "| size | contiguous ms | channels_last ms | faster |", "|---|---|---|---|"]
        lines += [f"| {r['size']} | {_fmt(r['contiguous_median_ms'], 3)} | {_fmt(r['channels_last_median_ms'], 3)} | "
                  f"{r['faster']} |" for r in lay["rows"]]
        lines += ["", f"Faster at most sizes: **{lay['faster_at_most_sizes']}**.", ""]
    gat = (steps.get("gatys") or {}).get("result") or {}
    if gat:
        lines += ["## Gatys baseline", "", "| size | iterations run | extrapolated | s for 100 | s for 300 | s for 500 |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['size']} | {r['measured_iterations']} | {r['extrapolated']} | {_fmt(r['seconds_100'])} | "
                  f"{_fmt(r['seconds_300'])} | {_fmt(r['seconds_500'])} |" for r in gat["rows"]]
        lines.append("")
    lines += ["## Every skip", ""]
    lines += [f"- {s['what']} ({s['status']}): {s['reason']}" for s in doc.get("skips", [])] or ["- none"]
    return "\n".join(lines) + "\n"


def write_outputs(out: Path, doc: dict[str, Any]) -> None:
    tmp = out / ".gpu_check.json.tmp"
    tmp.write_text(json.dumps(doc, indent=1, default=_json_default) + "\n")
    os.replace(tmp, out / "gpu_check.json")
    tmp_md = out / ".gpu_check.md.tmp"
    tmp_md.write_text(markdown(doc))
    os.replace(tmp_md, out / "gpu_check.md")


# ----------------------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m nst_bench.gpu_check", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=False, help="folder for gpu_check.json, gpu_check.md and work files")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--quick", action="store_true", help="toy sizes and few steps (CI: proves the kit runs)")
    p.add_argument("--time-limit-s", type=float, default=None,
                   help="stop starting steps after this (default 540, or 300 with --quick)")
    p.add_argument("--steps", default="", help=f"comma-separated subset of: {', '.join(STEPS)}")
    p.add_argument("--pytest-paths", default="tests", help="comma-separated test paths for the pytest step")
    p.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=None,
                   help="each step in its own process (default: on for cuda, off for cpu)")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    return p


def config_from_args(args: argparse.Namespace) -> CheckConfig:
    steps = tuple(s.strip() for s in args.steps.split(",") if s.strip())
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        raise SystemExit(f"gpu_check: unknown step(s) {', '.join(unknown)}; choose from {', '.join(STEPS)}")
    quick = args.quick
    return CheckConfig(
        out=args.out, device=args.device, quick=quick,
        time_limit_s=args.time_limit_s or (300.0 if quick else 540.0),
        isolate=args.isolate if args.isolate is not None else args.device == "cuda",
        pytest_paths=tuple(s for s in args.pytest_paths.split(",") if s),
        steps=steps,
        train_steps=2 if quick else 200,
        train_size=32 if quick else 256,
        sizes=QUICK_SIZES if quick else FULL_SIZES,
        gatys_sizes=QUICK_GATYS if quick else FULL_GATYS,
        throughput_steps=3 if quick else 40,
        throughput_size=32 if quick else 256,
        bench_budget_s=0.2 if quick else 2.0,
        sgemm_seconds=0.0 if quick else 1.0,  # --quick: no SGEMM roof (seconds of 2048³ products; tested in nst-bench)
        # --quick proves the kit runs: the PyTorch backend only (exports and INT8 calibration take minutes on
        # a small CPU; nst-bench's own tests cover the other backends)
        bench_backends=("torch",) if quick else (),
        parity_sizes=((48, 64),) if quick else ((256, 256), (512, 768), (1080, 1920)),
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.worker:
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
        return worker_main(args.worker, args.spec, args.result)
    if args.out is None:
        raise SystemExit("gpu_check: --out DIR is required")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="gpu_check: %(message)s")
    for noisy in ("nst_bench.run", "nst_export", "nst_train", "nst_runtime"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    cfg = config_from_args(args)
    argv_text = " ".join(sys.argv[1:] if argv is None else argv)
    doc = run_check(cfg, command=f"python -m nst_bench.gpu_check {argv_text}")
    failed = [s["name"] for s in doc["steps"] if s["status"] in ("failed", "timeout")]
    py = next((s for s in doc["steps"] if s["name"] == "pytest" and s["status"] == "ok"), None)
    if py and not py["result"].get("passed"):
        failed.append("pytest (tests failed)")
    print(f"gpu_check: {cfg.out / 'gpu_check.json'} and gpu_check.md written; "
          + (f"failed: {', '.join(failed)}" if failed else "no step failed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
