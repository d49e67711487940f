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
from typing import Any

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
from nst_runtime.outputs import refuse_replacing_inputs

log = logging.getLogger("nst_train.cli")

TRAIN_EPILOG = """\
examples:
  # a smoke run on generated samples, no downloads (random VGG: the result is NOT a real stylization)
  python -c "from nst_train.samples import *; write_sample_content('samples/content'); write_sample_style('samples/style.jpg')"
  nst-train --style samples/style.jpg --content-dir samples/content -o smoke.pth --steps 20 \\
      --image-size 64 --vgg-weights random --num-workers 0

  # nst's own recipe on COCO train2014: 2 epochs at 256 px, batch 4 (pytorch/examples' objective, random crops)
  nst-train --style starry_night.jpg --content-dir coco/train2014 -o starry.pth --epochs 2

  # exactly pytorch/examples' fast_neural_style training (it reads coco/ as an ImageFolder: coco/train2014/*.jpg)
  nst-train --recipe pytorch-examples --style mosaic.jpg --content-dir coco -o mosaic.pth

  # Johnson et al. 2016 as published, with the Caffe VGG-16 (vgg16-00b39a1b.pth) and 40,000 iterations
  nst-train --recipe johnson2016 --style starry_night.jpg --content-dir coco/train2014 -o starry.pth

  # fine-tune a published pytorch/examples model (or continue from any nst checkpoint) on another style
  nst-train --recipe pytorch-examples --init mosaic.pth --style candy.jpg --content-dir coco -o candy.pth

  # continue a run that was killed or stopped with Ctrl-C (same options plus --resume)
  nst-train --style starry_night.jpg --content-dir coco/train2014 -o starry.pth --epochs 2 --resume

  # 8 GPUs (batch 4 per GPU); only rank 0 writes files
  torchrun --nproc_per_node=8 -m nst_train.cli --style starry_night.jpg --content-dir coco/train2014 \\
      -o starry.pth --epochs 2

  # the same through the nst group
  nst train --style starry_night.jpg --content-dir coco/train2014 -o starry.pth --epochs 2

recipes (docs/train.md has every setting of each and its source): nst (this project's pipeline: random
crops, shuffling, AMP on CUDA), pytorch-examples, johnson2016. Options given override the recipe's values.

files: OUTPUT (the model checkpoint), OUTPUT-without-suffix.run/ with state.pth (for --resume), loss.jsonl,
run.json (recipe and every effective setting) and previews/. Ctrl-C saves the state and prints the command
that resumes. A loss or weight that stops being finite stops the run (exit 3); nothing is written from it.
"""

GATYS_EPILOG = """\
examples:
  nst-gatys photo.jpg starry_night.jpg -o out.jpg                      # 300 L-BFGS iterations at 512 px
  nst-gatys --recipe gatys2016 photo.jpg starry_night.jpg -o out.jpg    # the paper: VGG-19, 1000 iterations
  nst-gatys photo.jpg starry_night.jpg -o out.jpg --optimizer adam --iterations 500 --history hist.json
  nst-gatys photo.jpg style.jpg -o out.png --vgg-weights random --image-size 128 --iterations 20  # smoke
  nst gatys photo.jpg starry_night.jpg -o out.jpg                      # the same through the nst group

recipes: johnson2016-baseline (default: the feed-forward network's own VGG-16 objective, as Johnson et al.
compare it in their Table 1) and gatys2016 (Gatys et al. 2016: Caffe VGG-19 vgg19-d01eb7cb.pth, content
relu4_2, style relu1_1..relu5_1, weights 5 / 100 / TV 1e-3 of jcjohnson/neural-style, white-noise start,
512 px on the longer side). Options given override the recipe's values.

One iteration is one forward+backward pass through the VGG (L-BFGS: one step with max_iter=1), so seconds
per iteration compare with one TransformerNet pass as in Johnson et al., Table 1.
"""


TRAIN_EXIT_CODES = (3, 4, 7, 9)
GATYS_EXIT_CODES = (3, 4, 7, 9)  # 3: a VGG .pth whose pickle is refused
DEVICE_HELP = "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps"


def _setup_logging(prog: str, *, verbose: int, quiet: bool) -> None:
    rank = int(os.environ.get("RANK", "0"))
    setup_logging(prog, verbose=verbose, quiet=quiet, default=logging.INFO if rank == 0 else logging.WARNING,
                  fmt=f"%(asctime)s {'' if rank == 0 else f'[rank {rank}] '}%(levelname)s %(message)s",
                  datefmt="%H:%M:%S")
    # load_vgg("random") both warns and logs the same sentence; keep the log line only.
    warnings.filterwarnings("ignore", message="VGG-1[69] loss network is RANDOMLY INITIALISED")


class ManyValuesOption(click.Option):
    """An option that takes every value up to the next option: ``--style a.jpg b.jpg c.jpg`` (and also
    ``--style a.jpg --style b.jpg``); the command receives a tuple. nst-train has no positional arguments, so
    nothing else can claim those values."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs["multiple"] = True
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def add_to_parser(self, parser: Any, ctx: click.Context) -> None:
        super().add_to_parser(parser, ctx)
        for name in self.opts:
            option = parser._long_opt.get(name) or parser._short_opt.get(name)
            if option is None:
                continue
            take_one = option.process

            def take_all(value: Any, state: Any, take_one: Any = take_one) -> None:
                values = [value]
                while state.rargs and not state.rargs[0].startswith("-"):
                    values.append(state.rargs.pop(0))
                for v in values:
                    take_one(v, state)

            option.process = take_all


def _style_size(ctx: click.Context, param: click.Parameter, value: str | None) -> int | str | None:
    if value is None or value == "original":
        return value
    try:
        size = int(value)
    except ValueError:
        size = 0
    if size < 16:
        raise click.BadParameter(f"expected a number of pixels (>= 16) or 'original', got {value!r}", ctx, param)
    return size


def _recipe_names(kind: str) -> tuple[str, ...]:
    # the names, without importing torch (--help must work on a runtime-only install)
    return ("nst", "pytorch-examples", "johnson2016") if kind == "train" else ("johnson2016-baseline", "gatys2016")


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


@nst_command(
    "nst-train", exit_codes=TRAIN_EXIT_CODES, extra="train", epilog=TRAIN_EPILOG,
    short_help="Train a fast style network for one style image (Johnson et al. 2016).",
    help="Train a fast style-transfer network (Johnson et al. 2016: TransformerNet with instance norm, VGG-16 "
         "perceptual losses) for one style image on a folder of content photos.")
@click.option("--recipe", type=click.Choice(_recipe_names("train")), default="nst", show_default=True,
              help="the preset of objective, data pipeline and optimisation: nst (this project's), "
                   "pytorch-examples (pytorch/examples' train() exactly), johnson2016 (the paper, Caffe VGG-16); "
                   "every option below overrides its value")
@click.option("--style", "styles", cls=ManyValuesOption, type=click.Path(path_type=Path), metavar="IMAGE...",
              help="the style image (any size; see --style-size); several (--style a.jpg b.jpg ...) train one "
                   "multi-style network (conditional instance norm, one style per batch) that holds them all")
@click.option("--style-names", metavar="n1,n2,...",
              help="names of the styles, in order (default: the style files' stems); kept in the checkpoint and "
                   "the exported sidecar (nst-stylize --style NAME)")
@click.option("--arch", type=click.Choice(("johnson2016", "slim", "adain")), default="johnson2016",
              show_default=True,
              help="network family: johnson2016 (trunk 128, 5 residual blocks, 308 GFLOP per megapixel), slim "
                   "(trunk 32, 25 GFLOP per megapixel), or adain (Huang & Belongie 2017: a decoder for a VGG-19 "
                   "encoder; any image is the style at run time; --style gives the training styles, files or "
                   "folders); nst-train prints the cost of the network it builds")
@click.option("--channels", type=click.IntRange(min=4), default=None, metavar="N",
              help="trunk width (residual blocks' channels; a multiple of 4; default: the --arch preset's)")
@click.option("--res-blocks", type=click.IntRange(0, 64), default=None, metavar="N",
              help="residual blocks (default: the --arch preset's, 5)")
@click.option("--teacher", type=click.Path(path_type=Path), default=None, metavar="CKPT",
              help="distil this trained checkpoint: train the network (e.g. --arch slim) to reproduce its output "
                   "(output loss + VGG feature and Gram losses against it); no --style needed")
@click.option("--teacher-weight", type=click.FloatRange(min=0), default=1.0, show_default=True, metavar="W",
              help="--teacher: weight of the output term (MSE in 0..255 units)")
@click.option("--content-dir", required=True, type=click.Path(path_type=Path),
              help="folder of content photos, searched recursively (jpg, png, webp, bmp, tiff); unreadable or "
                   "too small files are skipped and counted")
@output_option("the trained model checkpoint (.pth, or .safetensors); run files go to OUTPUT.run/",
               old_names=("--out",))
@click.option("--resume", is_flag=True,
              help="continue the run whose state is in OUTPUT.run/state.pth (same options required)")
@click.option("--overwrite", is_flag=True,
              help="start afresh even though OUTPUT or OUTPUT.run/ exist from an earlier run, replacing them "
                   "(without it, nst-train refuses to replace a trained model)")
@click.option("--init", "init", type=click.Path(path_type=Path), default=None, metavar="PATH",
              help="start from these TransformerNet weights: an nst checkpoint or a pytorch/examples state dict "
                   "(fine-tuning, or reproducing a reference run from its initial weights)")
@click.option("--image-size", type=int, default=None, metavar="PX",
              help="training crop size, multiple of 4 (default: the recipe's; nst: 256)")
@click.option("--style-size", default=None, metavar="PX|original", callback=_style_size,
              help="size of the style image for the Gram targets, or 'original' (default: the recipe's; nst: "
                   "--image-size on the shorter side; pytorch-examples: original; johnson2016: 256, longer side)")
@positive_int("--batch-size", None, "images per step per process (default: the recipe's; nst: 4)")
@click.option("--lr", type=float, default=None, help="Adam learning rate (default: the recipe's; nst: 1e-3)")
@positive_int("--epochs", None, "passes over the content images (default 2)")
@positive_int("--steps", None, "optimisation steps instead of --epochs")
@click.option("--seed", type=int, default=None, help="seed of the initial weights, data order and crops (default: "
              "the recipe's; nst: 42)")
@click.option("--min-image-side", type=click.IntRange(min=0), default=None, metavar="PX",
              help="skip content images whose shorter side is below this (default: the recipe's; nst: image "
                   "size / 2; the references: 0, none skipped)")
@click.option("--content-weight", type=float, default=None,
              help="content loss weight (default: the recipe's; nst: 1e5)")
@click.option("--style-weight", type=float, default=None, help="style loss weight (default: the recipe's; nst: 1e10)")
@click.option("--tv-weight", type=float, default=None,
              help="total variation weight (default: the recipe's; nst: 0)")
@click.option("--vgg-weights", default=None,
              help="loss network weights: 'imagenet' (torchvision's VGG-16, vgg16-397923af.pth), 'caffe' (the Caffe "
                   "VGG-16 converted by jcjohnson/pytorch-vgg, vgg16-00b39a1b.pth; BGR, 0-255, mean subtracted), "
                   "each downloaded once through torch.hub and hash-checked, a PATH to such a .pth (recognised by "
                   "its hash), or 'random' (tests and offline smoke runs only: stylization quality is "
                   "meaningless); default: the recipe's (nst, pytorch-examples: imagenet; johnson2016: caffe)")
@device_option(DEVICE_HELP, allow_mps=True, as_text=True)
@click.option("--amp/--no-amp", default=None,
              help="mixed precision on CUDA: bf16 on compute capability >= 8.0, else fp16 + grad scaler (default: "
                   "the recipe's; nst: on for CUDA; the references train in float32)")
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
def train(recipe: str, styles: tuple[Path, ...], content_dir: Path, output: Path, resume: bool, init: Path | None,
          image_size: int, style_size: int | str | None,
          batch_size: int | None, lr: float | None, epochs: int | None, steps: int | None, seed: int | None,
          min_image_side: int | None, content_weight: float | None, style_weight: float | None,
          tv_weight: float | None, vgg_weights: str | None, device: str,
          amp: bool | None, channels_last: bool, compile_: bool, num_workers: int, threads: int | None,
          log_every: int, checkpoint_every: int, preview_every: int, no_progress: bool, quiet: bool,
          verbose: int, overwrite: bool = False, style_names: str | None = None, arch: str = "johnson2016",
          channels: int | None = None, res_blocks: int | None = None, teacher: Path | None = None,
          teacher_weight: float = 1.0) -> int:
    _setup_logging("nst-train", verbose=verbose, quiet=quiet)
    if epochs is not None and steps is not None:
        raise UsageError("--epochs and --steps both given: choose one (training length in passes or in steps).")
    if not styles and teacher is None:
        raise UsageError("--style IMAGE is required (several for a multi-style network), unless --teacher CKPT "
                         "distils a trained network.")
    names = tuple(n.strip() for n in style_names.split(",")) if style_names else ()
    if arch == "adain":
        _refuse_flags_adain_ignores(click.get_current_context())
        return _train_adain(styles, content_dir=content_dir, output=output, steps=steps,
                            batch_size=batch_size, lr=lr, image_size=image_size, style_weight=style_weight,
                            vgg_weights=vgg_weights, device=device, seed=seed, threads=threads,
                            overwrite=overwrite, log_every=log_every, progress=not (no_progress or quiet))
    check_training_outputs(output, resume=resume, overwrite=overwrite,
                           inputs=[*styles, *([init] if init else []), *([teacher] if teacher else []),
                                   *([Path(vgg_weights)] if vgg_weights else [])])
    from tqdm.contrib.logging import logging_redirect_tqdm

    from .train import TrainConfig, TrainingInterrupted, run_dir_for
    from .train import train as run_training

    _set_threads(threads)
    config = TrainConfig(
        recipe=recipe, init=init,
        style=styles[0] if styles else None, styles=styles if len(styles) > 1 else (), style_names=names,
        arch=arch, channels=channels, res_blocks=res_blocks, teacher=teacher, teacher_weight=teacher_weight,
        content_dir=content_dir, out=output, image_size=image_size, style_size=style_size,
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


#: the nst-train parameters ``--arch adain`` honours; any other one given on the command line is refused
ADAIN_PARAMETERS = frozenset({"styles", "content_dir", "output", "steps", "batch_size", "lr", "image_size",
                              "style_weight", "vgg_weights", "device", "seed", "threads", "overwrite", "log_every",
                              "no_progress", "quiet", "verbose", "arch"})


def _refuse_flags_adain_ignores(ctx: click.Context) -> None:
    """AdaIN training (nst_train.adain) has its own loop: every option it would silently ignore is an error."""
    sources = (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.ENVIRONMENT)
    given = [max(p.opts, key=len) for p in ctx.command.params
             if p.name not in ADAIN_PARAMETERS and ctx.get_parameter_source(p.name) in sources]
    if given:
        raise UsageError(f"--arch adain: {', '.join(given)} not supported by AdaIN training (it takes --style, "
                         "--content-dir, -o, --steps, --batch-size, --lr, --image-size, --style-weight, "
                         "--vgg-weights, --device, --seed, --threads, --log-every, --overwrite); drop "
                         f"{'them' if len(given) > 1 else 'it'}.")


def _train_adain(styles: Sequence[Path], *, content_dir: Path, output: Path, steps: int | None,
                 batch_size: int | None, lr: float | None, image_size: int | None, style_weight: float | None,
                 vgg_weights: str | None, device: str, seed: int | None, threads: int | None,
                 overwrite: bool, log_every: int, progress: bool) -> int:
    """``nst-train --arch adain``: the AdaIN decoder (nst_train.adain), with the paper's settings by default."""
    paths: list[Path] = []
    for style in styles:
        if style.is_dir():
            from .data import find_images

            paths += find_images(style, "recursive")
        else:
            paths.append(style)
    check_training_outputs(output, resume=False, overwrite=overwrite, inputs=paths)
    from .adain import AdaINConfig, train_adain

    _set_threads(threads)
    given = {"steps": steps, "batch_size": batch_size, "lr": lr, "image_size": image_size,
             "style_weight": style_weight, "vgg_weights": vgg_weights, "seed": seed}
    config = AdaINConfig(content_dir=content_dir, style_paths=tuple(paths), out=output, device=device,
                         log_every=log_every, progress=progress, **{k: v for k, v in given.items() if v is not None})
    result = train_adain(config)
    log.info("done: %s (%d steps; %s)", result.checkpoint, result.steps,
             ", ".join(f"{k} {v:.4g}" for k, v in result.final_losses.items()))
    return 0


def run_folder(output: Path) -> Path:
    """``OUTPUT.run/`` beside the checkpoint (``nst_train.train.run_dir_for``, without importing torch)."""
    return output.parent / f"{output.stem}.run"


def check_training_outputs(output: Path, *, resume: bool, overwrite: bool, inputs: Sequence[Path]) -> None:
    """Before training: the checkpoint must not replace an input, and starting afresh must not silently replace
    an earlier run (its model and state) unless ``--overwrite`` says so. Only rank 0 decides under torchrun (the
    others would see the run folder rank 0 has just created); if it refuses, torchrun stops them all."""
    if int(os.environ.get("RANK", "0")) != 0:
        return
    if resume and overwrite:
        raise UsageError("--resume continues the earlier run and --overwrite replaces it: choose one.")
    refuse_replacing_inputs(inputs, [output], fix="choose another -o for the checkpoint")
    if resume or overwrite:
        return
    existing = [str(p) for p in (output, run_folder(output)) if p.exists()]
    if existing:
        raise UsageError(f"{' and '.join(existing)} exist from an earlier run; starting afresh would replace "
                         f"{'them' if len(existing) > 1 else 'it'}. Fix: --resume to continue that run, "
                         "--overwrite to start again and replace it, or choose another -o.")


def train_main(argv: Sequence[str] | None = None) -> int:
    """``nst-train``: returns the process exit code."""
    return run_command(train, argv, prog="nst-train")


@nst_command(
    "nst-gatys", exit_codes=GATYS_EXIT_CODES, extra="train", epilog=GATYS_EPILOG,
    short_help="The slow baseline: optimise one image's pixels (Gatys et al. 2016).",
    help="Gatys et al. 2016 style transfer by optimising the image's pixels against VGG losses: by default the "
         "VGG-16 losses nst-train uses (the slow baseline the feed-forward network replaces), or the paper's "
         "VGG-19 objective (--recipe gatys2016).\n\n"
         "CONTENT: the content photo. STYLE: the style image.")
@click.argument("content", type=click.Path(path_type=Path))
@click.argument("style", type=click.Path(path_type=Path))
@output_option("output image (.jpg, .png, .webp)", old_names=("--out",))
@click.option("--recipe", type=click.Choice(_recipe_names("gatys")), default="johnson2016-baseline",
              show_default=True, help="johnson2016-baseline (nst-train's VGG-16 objective) or gatys2016 (the "
                                      "paper on VGG-19); every option below overrides its value")
@positive_int("--iterations", None, "VGG forward+backward passes (default: the recipe's; baseline 300, "
                                    "gatys2016 1000)")
@click.option("--optimizer", type=click.Choice(("lbfgs", "adam")), default=None,
              help="lbfgs (both recipes) or adam")
@click.option("--init", type=click.Choice(("content", "noise")), default=None,
              help="start from the content image (baseline) or uniform white noise (gatys2016)")
@click.option("--image-size", type=click.IntRange(min=0), default=None, metavar="PX",
              help="size of the content image, 0 keeps the file's (default: the recipe's; baseline: 512 on the "
                   "shorter side; gatys2016: 512 on the longer side)")
@click.option("--style-size", type=click.IntRange(min=1), default=None, metavar="PX",
              help="size of the style image, on the same side (default: --image-size)")
@click.option("--lr", type=float, default=None, help="step size (default: 1.0 for lbfgs, 10 for adam)")
@click.option("--content-weight", type=float, default=None, help="content loss weight (baseline 1e5, gatys2016 5)")
@click.option("--style-weight", type=float, default=None,
              help="style loss weight (baseline 1e10, gatys2016 100 per layer)")
@click.option("--tv-weight", type=float, default=None, help="total variation weight (baseline 0, gatys2016 1e-3)")
@click.option("--seed", type=int, default=None, help="seed of the noise initialisation (0)")
@click.option("--vgg-weights", default=None,
              help="imagenet (torchvision's), caffe (jcjohnson/pytorch-vgg's conversion), a PATH to the .pth, or "
                   "random (default: the recipe's; baseline: imagenet VGG-16; gatys2016: caffe VGG-19)")
@device_option(DEVICE_HELP, allow_mps=True, as_text=True)
@click.option("--history", type=click.Path(path_type=Path), default=None,
              help="write the per-iteration losses and elapsed seconds to this JSON file")
@threads_option("CPU threads of torch (default: torch's own choice)")
@no_progress_option
@verbosity_options
def gatys(content: Path, style: Path, output: Path, recipe: str, iterations: int | None, optimizer: str | None,
          init: str | None, image_size: int | None, style_size: int | None, lr: float | None,
          content_weight: float | None, style_weight: float | None, tv_weight: float | None, seed: int | None,
          vgg_weights: str | None, device: str, history: Path | None, threads: int | None, no_progress: bool,
          quiet: bool, verbose: int) -> int:
    _setup_logging("nst-gatys", verbose=verbose, quiet=quiet)
    refuse_replacing_inputs(
        [content, style, *([Path(vgg_weights)] if vgg_weights and Path(vgg_weights).is_file() else [])],
        [output, *([history] if history is not None else [])],
        fix="choose another -o (the stylized image is a new file)")
    import dataclasses

    from .atomic import atomic_write
    from .distributed import DistContext, resolve_device
    from .gatys import gatys_stylize, load_gatys_images, load_gatys_vgg
    from .imageio import save_image_tensor
    from .recipes import resolve_gatys_settings

    _set_threads(threads)
    rec, settings = resolve_gatys_settings(recipe, {
        "iterations": iterations, "optimizer": optimizer, "init": init, "image_size": image_size,
        "style_size": style_size, "lr": lr, "content_weight": content_weight, "style_weight": style_weight,
        "tv_weight": tv_weight, "seed": seed, "vgg_weights": vgg_weights})
    log.info("recipe %s (%s): %s", rec.name, rec.summary, json.dumps(settings.to_dict()))
    where = resolve_device(device, DistContext())
    content_t, style_t = load_gatys_images(content, style, settings, device=where)
    vgg = load_gatys_vgg(settings, device=where)
    weights = settings.loss_weights
    try:
        result = gatys_stylize(content_t, style_t, vgg=vgg, iterations=settings.iterations,
                               optimizer=settings.optimizer,  # type: ignore[arg-type]
                               init=settings.init,  # type: ignore[arg-type]
                               weights=weights, lr=settings.lr, seed=settings.seed,
                               lbfgs_history=settings.lbfgs_history, progress=not (no_progress or quiet))
    except KeyboardInterrupt:
        print("nst-gatys: interrupted; no image written.", file=sys.stderr)
        return 130
    save_image_tensor(result.image, output)
    if history is not None:
        doc = {"content": str(content), "style": str(style), "device": str(where),
               "height": content_t.shape[-2], "width": content_t.shape[-1], "recipe": rec.name,
               "settings": settings.to_dict(), "optimizer": settings.optimizer, "init": settings.init,
               "iterations": settings.iterations, "vgg_weights": vgg.weights_name,
               "vgg_preprocessing": vgg.preprocessing, "weights": dataclasses.asdict(weights),
               "seconds": result.seconds,
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
