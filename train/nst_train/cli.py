"""Command lines of the training stage: ``nst-train`` (also ``python -m nst_train`` and
``python -m nst_train.cli``, for torchrun) and ``nst-gatys``.

Only this module sees command-line options; it builds the typed configs and calls the library. At module
level it imports click and ``nst_runtime`` only, so ``--help`` works where torch is not installed.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import click
from nst_runtime.errors import UsageError
from nst_runtime.options import (
    device_option,
    invocation,
    no_progress_option,
    nst_command,
    output_option,
    positive_int,
    run_command,
    setup_logging,
    threads_option,
    verbosity_options,
)

log = logging.getLogger("nst_train.cli")

TRAIN_EPILOG = """\
examples:
  # a smoke run on generated samples, no downloads (random VGG: the result is NOT a real stylization)
  python -c "from nst_train.samples import *; write_sample_content('samples/content'); write_sample_style('samples/style.jpg')"
  nst-train --style samples/style.jpg --content-dir samples/content -o smoke.pth --steps 20 \\
      --image-size 64 --vgg-weights random --num-workers 0

  # the real thing: COCO train2014, 2 epochs at 256 px, batch 4 (Johnson et al. 2016)
  nst-train --style starry_night.jpg --content-dir coco/train2014 -o starry.pth --epochs 2

  # continue a run that was killed or stopped with Ctrl-C (same options plus --resume)
  nst-train --style starry_night.jpg --content-dir coco/train2014 -o starry.pth --epochs 2 --resume

  # 8 GPUs (batch 4 per GPU); only rank 0 writes files
  torchrun --nproc_per_node=8 -m nst_train.cli --style starry_night.jpg --content-dir coco/train2014 \\
      -o starry.pth --epochs 2

  # the same through the nst group
  nst train --style starry_night.jpg --content-dir coco/train2014 -o starry.pth --epochs 2

files: OUTPUT (the model checkpoint), OUTPUT-without-suffix.run/ with state.pth (for --resume), loss.jsonl
and previews/. Ctrl-C saves the state and prints the command that resumes.
"""

GATYS_EPILOG = """\
examples:
  nst-gatys photo.jpg starry_night.jpg -o out.jpg                      # 300 L-BFGS iterations at 512 px
  nst-gatys photo.jpg starry_night.jpg -o out.jpg --optimizer adam --iterations 500 --history hist.json
  nst-gatys photo.jpg style.jpg -o out.png --vgg-weights random --image-size 128 --iterations 20  # smoke
  nst gatys photo.jpg starry_night.jpg -o out.jpg                      # the same through the nst group

One iteration is one forward+backward pass through VGG-16 (L-BFGS: one step with max_iter=1), so seconds
per iteration compare with one TransformerNet pass as in Johnson et al., Table 1.
"""


TRAIN_EXIT_CODES = (3, 4, 7, 9)
GATYS_EXIT_CODES = (4, 7, 9)
DEVICE_HELP = "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps"


def _setup_logging(prog: str, *, verbose: int, quiet: bool) -> None:
    rank = int(os.environ.get("RANK", "0"))
    setup_logging(prog, verbose=verbose, quiet=quiet, default=logging.INFO if rank == 0 else logging.WARNING,
                  fmt=f"%(asctime)s {'' if rank == 0 else f'[rank {rank}] '}%(levelname)s %(message)s",
                  datefmt="%H:%M:%S")
    # load_vgg16("random") both warns and logs the same sentence; keep the log line only.
    warnings.filterwarnings("ignore", message="VGG-16 loss network is RANDOMLY INITIALISED")


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


@nst_command(
    "nst-train", exit_codes=TRAIN_EXIT_CODES, extra="train", epilog=TRAIN_EPILOG,
    short_help="Train a fast style network for one style image (Johnson et al. 2016).",
    help="Train a fast style-transfer network (Johnson et al. 2016: TransformerNet with instance norm, VGG-16 "
         "perceptual losses) for one style image on a folder of content photos.")
@click.option("--style", required=True, type=click.Path(path_type=Path),
              help="the style image (any size; see --style-size)")
@click.option("--content-dir", required=True, type=click.Path(path_type=Path),
              help="folder of content photos, searched recursively (jpg, png, webp, bmp, tiff); unreadable or "
                   "too small files are skipped and counted")
@output_option("the trained model checkpoint (.pth, or .safetensors); run files go to OUTPUT.run/",
               old_names=("--out",))
@click.option("--resume", is_flag=True,
              help="continue the run whose state is in OUTPUT.run/state.pth (same options required)")
@click.option("--image-size", type=int, default=None, metavar="PX",
              help="training crop size, multiple of 4 (default: the recipe's; nst: 256)")
@click.option("--style-size", type=click.IntRange(min=1), default=None, metavar="PX",
              help="shorter side of the style image for the Gram targets (default: --image-size)")
@positive_int("--batch-size", None, "images per step per process (default: the recipe's; nst: 4)")
@click.option("--lr", type=float, default=None, help="Adam learning rate (default: the recipe's; nst: 1e-3)")
@positive_int("--epochs", None, "passes over the content images (default 2)")
@positive_int("--steps", None, "optimisation steps instead of --epochs")
@click.option("--seed", type=int, default=None, help="seed of the initial weights, data order and crops (default: "
              "the recipe's; nst: 42)")
@click.option("--min-image-side", type=click.IntRange(min=1), default=None, metavar="PX",
              help="skip content images whose shorter side is below this (default: image size / 2)")
@click.option("--content-weight", type=float, default=None,
              help="content loss weight (default: the recipe's; nst: 1e5)")
@click.option("--style-weight", type=float, default=None, help="style loss weight (default: the recipe's; nst: 1e10)")
@click.option("--tv-weight", type=float, default=None,
              help="total variation weight (default: the recipe's; nst: 0)")
@click.option("--vgg-weights", default=None,
              help="loss network weights: 'imagenet' (torchvision's VGG-16, downloaded once through torch.hub and "
                   "hash-checked), a PATH to that .pth, or 'random' (tests and offline smoke runs only: "
                   "stylization quality is meaningless); default: the recipe's (nst: imagenet)")
@device_option(DEVICE_HELP, allow_mps=True, as_text=True)
@click.option("--amp/--no-amp", default=None,
              help="mixed precision (default: on for CUDA: bf16 where supported, else fp16 + grad scaler)")
@click.option("--channels-last", is_flag=True, help="channels-last memory format (faster on GPUs)")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the TransformerNet (needs a compiler)")
@click.option("--num-workers", type=click.IntRange(min=0), default=4, show_default=True, metavar="N",
              help="data loader processes (0: in-process)")
@threads_option("CPU threads of torch (default: torch's own choice)")
@positive_int("--log-every", 100, "steps per loss-log line and bar update")
@click.option("--checkpoint-every", type=click.IntRange(min=0), default=1000, show_default=True, metavar="N",
              help="steps between resumable states (0: only at the end and on Ctrl-C)")
@click.option("--preview-every", type=click.IntRange(min=0), default=500, show_default=True, metavar="N",
              help="steps between preview images of fixed content crops (0: only at the end)")
@no_progress_option
@verbosity_options
def train(style: Path, content_dir: Path, output: Path, resume: bool, image_size: int, style_size: int | None,
          batch_size: int | None, lr: float | None, epochs: int | None, steps: int | None, seed: int | None,
          min_image_side: int | None, content_weight: float | None, style_weight: float | None,
          tv_weight: float | None, vgg_weights: str | None, device: str,
          amp: bool | None, channels_last: bool, compile_: bool, num_workers: int, threads: int | None,
          log_every: int, checkpoint_every: int, preview_every: int, no_progress: bool, quiet: bool,
          verbose: int) -> int:
    _setup_logging("nst-train", verbose=verbose, quiet=quiet)
    if epochs is not None and steps is not None:
        raise UsageError("--epochs and --steps both given: choose one (training length in passes or in steps).")
    from tqdm.contrib.logging import logging_redirect_tqdm

    from .train import TrainConfig, TrainingInterrupted, run_dir_for
    from .train import train as run_training

    _set_threads(threads)
    config = TrainConfig(
        style=style, content_dir=content_dir, out=output, image_size=image_size, style_size=style_size,
        batch_size=batch_size, lr=lr, epochs=epochs, steps=steps, seed=seed, device=device,
        vgg_weights=vgg_weights, content_weight=content_weight, style_weight=style_weight, tv_weight=tv_weight,
        resume=resume, log_every=log_every, checkpoint_every=checkpoint_every, preview_every=preview_every,
        amp=amp, channels_last=channels_last, compile=compile_, num_workers=num_workers,
        min_image_side=min_image_side, progress=not (no_progress or quiet),
    )
    try:
        with logging_redirect_tqdm():
            result = run_training(config)
    except KeyboardInterrupt as exc:
        command = invocation() or ["nst-train"]
        again = shlex.join([*command, *([] if "--resume" in command else ["--resume"])])
        state = run_dir_for(output) / "state.pth"
        if isinstance(exc, TrainingInterrupted) and exc.state_path is not None:
            print(f"nst-train: interrupted; state at step {exc.step} saved to {exc.state_path}. "
                  f"Resume with:\n  {again}", file=sys.stderr)
        elif state.exists():
            print(f"nst-train: interrupted; the last periodic state is in {state}. Resume with:\n  {again}",
                  file=sys.stderr)
        else:
            print("nst-train: interrupted before any state was saved; nothing to resume.", file=sys.stderr)
        return 130
    if result.checkpoint is not None:
        losses = ", ".join(f"{k} {v:.4g}" for k, v in result.final_losses.items())
        log.info("done: %s (%d steps; %s)", result.checkpoint, result.steps, losses)
    return 0


def train_main(argv: Sequence[str] | None = None) -> int:
    """``nst-train``: returns the process exit code."""
    return run_command(train, argv, prog="nst-train")


@nst_command(
    "nst-gatys", exit_codes=GATYS_EXIT_CODES, extra="train", epilog=GATYS_EPILOG,
    short_help="The slow baseline: optimise one image's pixels (Gatys et al. 2016).",
    help="Gatys et al. 2016 style transfer by optimising the image's pixels against the VGG-16 losses nst-train "
         "uses (the slow baseline the feed-forward network replaces).\n\n"
         "CONTENT: the content photo. STYLE: the style image.")
@click.argument("content", type=click.Path(path_type=Path))
@click.argument("style", type=click.Path(path_type=Path))
@output_option("output image (.jpg, .png, .webp)", old_names=("--out",))
@positive_int("--iterations", 300, "VGG forward+backward passes")
@click.option("--optimizer", type=click.Choice(("lbfgs", "adam")), default="lbfgs", show_default=True,
              help="lbfgs or adam")
@click.option("--init", type=click.Choice(("content", "noise")), default="content", show_default=True,
              help="start from the content image or uniform noise")
@click.option("--image-size", type=click.IntRange(min=0), default=512, show_default=True, metavar="PX",
              help="shorter side of the content image (0 keeps the file's size)")
@click.option("--style-size", type=click.IntRange(min=1), default=None, metavar="PX",
              help="shorter side of the style image (default: --image-size)")
@click.option("--lr", type=float, default=None, help="step size (default: 1.0 for lbfgs, 10 for adam)")
@click.option("--content-weight", type=float, default=None, help="content loss weight (1e5)")
@click.option("--style-weight", type=float, default=None, help="style loss weight (1e10)")
@click.option("--tv-weight", type=float, default=None, help="total variation weight (0)")
@click.option("--seed", type=int, default=0, show_default=True, help="seed of the noise initialisation")
@click.option("--vgg-weights", default="imagenet", show_default=True, help="imagenet, PATH to the .pth, or random")
@device_option(DEVICE_HELP, allow_mps=True, as_text=True)
@click.option("--history", type=click.Path(path_type=Path), default=None,
              help="write the per-iteration losses and elapsed seconds to this JSON file")
@threads_option("CPU threads of torch (default: torch's own choice)")
@no_progress_option
@verbosity_options
def gatys(content: Path, style: Path, output: Path, iterations: int, optimizer: str, init: str, image_size: int,
          style_size: int | None, lr: float | None, content_weight: float | None, style_weight: float | None,
          tv_weight: float | None, seed: int, vgg_weights: str, device: str, history: Path | None,
          threads: int | None, no_progress: bool, quiet: bool, verbose: int) -> int:
    _setup_logging("nst-gatys", verbose=verbose, quiet=quiet)
    import dataclasses

    from .atomic import atomic_write
    from .distributed import DistContext, resolve_device
    from .gatys import GATYS_WEIGHTS, gatys_stylize
    from .imageio import load_image_tensor, save_image_tensor
    from .vgg import load_vgg16

    _set_threads(threads)
    where = resolve_device(device, DistContext())
    size = image_size or None
    content_t = load_image_tensor(content, size=size, device=where)
    style_t = load_image_tensor(style, size=style_size or size, device=where)
    weights = dataclasses.replace(GATYS_WEIGHTS, **{
        k: v for k, v in (("content", content_weight), ("style", style_weight), ("tv", tv_weight)) if v is not None})
    vgg = load_vgg16(vgg_weights, device=where)
    try:
        result = gatys_stylize(content_t, style_t, vgg=vgg, iterations=iterations, optimizer=optimizer, init=init,
                               weights=weights, lr=lr, seed=seed, progress=not (no_progress or quiet))
    except KeyboardInterrupt:
        print("nst-gatys: interrupted; no image written.", file=sys.stderr)
        return 130
    save_image_tensor(result.image, output)
    if history is not None:
        doc = {"content": str(content), "style": str(style), "device": str(where),
               "height": content_t.shape[-2], "width": content_t.shape[-1], "optimizer": optimizer,
               "init": init, "iterations": iterations, "vgg_weights": str(vgg_weights),
               "weights": dataclasses.asdict(weights), "seconds": result.seconds,
               "history": [dataclasses.asdict(r) for r in result.history]}
        with atomic_write(history, "w") as f:
            json.dump(doc, f, indent=1)
    h = result.history
    per_it = (h[-1].elapsed_s - h[0].elapsed_s) / max(len(h) - 1, 1) if h else float("nan")
    if h:
        log.info("wrote %s: loss %.4g -> %.4g in %d iterations, %.2f s (%.1f ms/iteration on %s)", output,
                 h[0].loss, h[-1].loss, len(h), result.seconds, per_it * 1000, where)
    return 0


def gatys_main(argv: Sequence[str] | None = None) -> int:
    """``nst-gatys``: returns the process exit code."""
    return run_command(gatys, argv, prog="nst-gatys")


if __name__ == "__main__":  # torchrun -m nst_train.cli ...
    sys.exit(train_main())
