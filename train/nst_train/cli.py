"""Command lines of the training stage: ``nst-train`` (also ``python -m nst_train.cli``) and ``nst-gatys``.

Only this module sees argparse; it builds the typed configs, calls the library and turns :class:`NstError`
into one line on stderr and the error's exit code.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from nst_runtime.errors import NstError

log = logging.getLogger("nst_train.cli")

TRAIN_EPILOG = """\
examples:
  # a smoke run on generated samples, no downloads (random VGG: the result is NOT a real stylization)
  python -c "from nst_train.samples import *; write_sample_content('samples/content'); write_sample_style('samples/style.jpg')"
  nst-train --style samples/style.jpg --content-dir samples/content --out smoke.pth --steps 20 \\
      --image-size 64 --vgg-weights random --num-workers 0

  # the real thing: COCO train2014, 2 epochs at 256 px, batch 4 (Johnson et al. 2016)
  nst-train --style starry_night.jpg --content-dir coco/train2014 --out starry.pth --epochs 2

  # continue a run that was killed or stopped with Ctrl-C (same options plus --resume)
  nst-train --style starry_night.jpg --content-dir coco/train2014 --out starry.pth --epochs 2 --resume

  # 8 GPUs (batch 4 per GPU); only rank 0 writes files
  torchrun --nproc_per_node=8 -m nst_train.cli --style starry_night.jpg --content-dir coco/train2014 \\
      --out starry.pth --epochs 2

files: OUT (the model checkpoint), OUT-without-suffix.run/ with state.pth (for --resume), loss.jsonl and
previews/. Exit codes: 0 ok, 2 bad options, 3 checkpoint, 4 image, 6 device, 7 VGG weights,
9 output not writable (disk full; the previous file is kept), 1 other file system errors, 130 Ctrl-C.
"""

GATYS_EPILOG = """\
examples:
  nst-gatys photo.jpg starry_night.jpg -o out.jpg                      # 300 L-BFGS iterations at 512 px
  nst-gatys photo.jpg starry_night.jpg -o out.jpg --optimizer adam --iterations 500 --history hist.json
  nst-gatys photo.jpg style.jpg -o out.png --vgg-weights random --image-size 128 --iterations 20  # smoke

One iteration is one forward+backward pass through VGG-16 (L-BFGS: one step with max_iter=1), so seconds
per iteration compare with one TransformerNet pass as in Johnson et al., Table 1.
"""


def _setup_logging(verbose: bool) -> None:
    rank = int(os.environ.get("RANK", "0"))
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s {'' if rank == 0 else f'[rank {rank}] '}%(levelname)s %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    # load_vgg16("random") both warns and logs the same sentence; keep the log line only.
    warnings.filterwarnings("ignore", message="VGG-16 loss network is RANDOMLY INITIALISED")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def build_train_parser() -> argparse.ArgumentParser:
    from .losses import LossWeights

    d = LossWeights()
    p = argparse.ArgumentParser(
        prog="nst-train",
        description="Train a fast style-transfer network (Johnson et al. 2016: TransformerNet with instance "
                    "norm, VGG-16 perceptual losses) for one style image on a folder of content photos.",
        epilog=TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("inputs and output")
    g.add_argument("--style", required=True, type=Path, help="the style image (any size; see --style-size)")
    g.add_argument("--content-dir", required=True, type=Path,
                   help="folder of content photos, searched recursively (jpg, png, webp, bmp, tiff); unreadable "
                        "or too small files are skipped and counted")
    g.add_argument("--out", required=True, type=Path,
                   help="the trained model checkpoint (.pth, or .safetensors); run files go to OUT.run/")
    g.add_argument("--resume", action="store_true",
                   help="continue the run whose state is in OUT.run/state.pth (same options required)")
    g = p.add_argument_group("training")
    g.add_argument("--image-size", type=int, default=256, help="training crop size in px, multiple of 4 (256)")
    g.add_argument("--style-size", type=int, default=None,
                   help="shorter side of the style image for the Gram targets (default: --image-size)")
    g.add_argument("--batch-size", type=int, default=4, help="images per step per process (4)")
    g.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (1e-3)")
    length = g.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=int, default=None, help="passes over the content images (default 2)")
    length.add_argument("--steps", type=int, default=None, help="optimisation steps instead of --epochs")
    g.add_argument("--seed", type=int, default=42, help="seed of the initial weights, data order and crops (42)")
    g.add_argument("--min-image-side", type=int, default=None,
                   help="skip content images whose shorter side is below this (default: image size / 2)")
    g = p.add_argument_group("losses")
    g.add_argument("--content-weight", type=float, default=d.content, help=f"content loss weight ({d.content:g})")
    g.add_argument("--style-weight", type=float, default=d.style, help=f"style loss weight ({d.style:g})")
    g.add_argument("--tv-weight", type=float, default=d.tv, help=f"total variation weight ({d.tv:g})")
    g.add_argument("--vgg-weights", default="imagenet",
                   help="loss network weights: 'imagenet' (torchvision's VGG-16, downloaded once through "
                        "torch.hub and hash-checked), a PATH to that .pth, or 'random' (tests and offline "
                        "smoke runs only: stylization quality is meaningless)")
    g = p.add_argument_group("hardware")
    g.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")
    g.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="mixed precision (default: on for CUDA: bf16 where supported, else fp16 + grad scaler)")
    g.add_argument("--channels-last", action="store_true", help="channels-last memory format (faster on GPUs)")
    g.add_argument("--compile", action="store_true", help="torch.compile the TransformerNet (needs a compiler)")
    g.add_argument("--num-workers", type=_positive_int, default=4, help="data loader processes (4; 0: in-process)")
    g = p.add_argument_group("logging and checkpoints")
    g.add_argument("--log-every", type=int, default=100, help="steps per loss-log line and bar update (100)")
    g.add_argument("--checkpoint-every", type=_positive_int, default=1000,
                   help="steps between resumable states (1000; 0: only at the end and on Ctrl-C)")
    g.add_argument("--preview-every", type=_positive_int, default=500,
                   help="steps between preview images of fixed content crops (500; 0: only at the end)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    g.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def train_main(argv: Sequence[str] | None = None) -> int:
    """``nst-train``: returns the process exit code."""
    args = build_train_parser().parse_args(argv)
    _setup_logging(args.verbose)
    from tqdm.contrib.logging import logging_redirect_tqdm

    from .losses import LossWeights
    from .train import TrainConfig, TrainingInterrupted, run_dir_for, train

    try:
        config = TrainConfig(
            style=args.style, content_dir=args.content_dir, out=args.out, image_size=args.image_size,
            style_size=args.style_size, batch_size=args.batch_size, lr=args.lr, epochs=args.epochs,
            steps=args.steps, seed=args.seed, device=args.device, vgg_weights=args.vgg_weights,
            weights=LossWeights(content=args.content_weight, style=args.style_weight, tv=args.tv_weight),
            resume=args.resume, log_every=args.log_every, checkpoint_every=args.checkpoint_every,
            preview_every=args.preview_every, amp=args.amp, channels_last=args.channels_last,
            compile=args.compile, num_workers=args.num_workers, min_image_side=args.min_image_side,
            progress=not args.no_progress,
        )
        with logging_redirect_tqdm():
            result = train(config)
    except NstError as exc:
        print(f"nst-train: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # a file system error nst did not wrap: still one line, no traceback
        print(f"nst-train: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        argv_list = list(sys.argv[1:] if argv is None else argv)
        again = shlex.join(["nst-train", *argv_list, *([] if "--resume" in argv_list else ["--resume"])])
        if isinstance(exc, TrainingInterrupted) and exc.state_path is not None:
            print(f"nst-train: interrupted; state at step {exc.step} saved to {exc.state_path}. "
                  f"Resume with:\n  {again}", file=sys.stderr)
        elif (run_dir_for(args.out) / "state.pth").exists():
            print(f"nst-train: interrupted; the last periodic state is in {run_dir_for(args.out) / 'state.pth'}. "
                  f"Resume with:\n  {again}", file=sys.stderr)
        else:
            print("nst-train: interrupted before any state was saved; nothing to resume.", file=sys.stderr)
        return 130
    if result.checkpoint is not None:
        losses = ", ".join(f"{k} {v:.4g}" for k, v in result.final_losses.items())
        log.info("done: %s (%d steps; %s)", result.checkpoint, result.steps, losses)
    return 0


def build_gatys_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nst-gatys",
        description="Gatys et al. 2016 style transfer by optimising the image's pixels against the VGG-16 "
                    "losses nst-train uses (the slow baseline the feed-forward network replaces).",
        epilog=GATYS_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("content", type=Path, help="the content photo")
    p.add_argument("style", type=Path, help="the style image")
    p.add_argument("-o", "--out", required=True, type=Path, help="output image (.jpg, .png, .webp)")
    p.add_argument("--iterations", type=int, default=300, help="VGG forward+backward passes (300)")
    p.add_argument("--optimizer", choices=("lbfgs", "adam"), default="lbfgs", help="lbfgs (default) or adam")
    p.add_argument("--init", choices=("content", "noise"), default="content",
                   help="start from the content image (default) or uniform noise")
    p.add_argument("--image-size", type=int, default=512,
                   help="shorter side of the content image in px (512; 0 keeps the file's size)")
    p.add_argument("--style-size", type=int, default=None,
                   help="shorter side of the style image (default: --image-size)")
    p.add_argument("--lr", type=float, default=None, help="step size (default: 1.0 for lbfgs, 10 for adam)")
    p.add_argument("--content-weight", type=float, default=None, help="content loss weight (1e5)")
    p.add_argument("--style-weight", type=float, default=None, help="style loss weight (1e10)")
    p.add_argument("--tv-weight", type=float, default=None, help="total variation weight (0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise initialisation (0)")
    p.add_argument("--vgg-weights", default="imagenet", help="imagenet (default), PATH to the .pth, or random")
    p.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, cuda:N or mps")
    p.add_argument("--history", type=Path, default=None,
                   help="write the per-iteration losses and elapsed seconds to this JSON file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def gatys_main(argv: Sequence[str] | None = None) -> int:
    """``nst-gatys``: returns the process exit code."""
    args = build_gatys_parser().parse_args(argv)
    _setup_logging(False)
    import dataclasses

    from .atomic import atomic_write
    from .distributed import DistContext, resolve_device
    from .gatys import GATYS_WEIGHTS, gatys_stylize
    from .imageio import load_image_tensor, save_image_tensor
    from .vgg import load_vgg16

    try:
        if args.image_size < 0 or (args.style_size is not None and args.style_size < 1):
            from nst_runtime.errors import UsageError

            raise UsageError(f"--image-size must be >= 0 and --style-size >= 1, got {args.image_size}, "
                             f"{args.style_size}.")
        device = resolve_device(args.device, DistContext())
        size = args.image_size or None
        content = load_image_tensor(args.content, size=size, device=device)
        style = load_image_tensor(args.style, size=args.style_size or size, device=device)
        weights = dataclasses.replace(GATYS_WEIGHTS, **{
            k: v for k, v in (("content", args.content_weight), ("style", args.style_weight),
                              ("tv", args.tv_weight)) if v is not None})
        vgg = load_vgg16(args.vgg_weights, device=device)
        result = gatys_stylize(content, style, vgg=vgg, iterations=args.iterations, optimizer=args.optimizer,
                               init=args.init, weights=weights, lr=args.lr, seed=args.seed,
                               progress=not args.no_progress)
        save_image_tensor(result.image, args.out)
        if args.history is not None:
            doc = {"content": str(args.content), "style": str(args.style), "device": str(device),
                   "height": content.shape[-2], "width": content.shape[-1], "optimizer": args.optimizer,
                   "init": args.init, "iterations": args.iterations, "vgg_weights": str(args.vgg_weights),
                   "weights": dataclasses.asdict(weights), "seconds": result.seconds,
                   "history": [dataclasses.asdict(r) for r in result.history]}
            with atomic_write(args.history, "w") as f:
                json.dump(doc, f, indent=1)
    except NstError as exc:
        print(f"nst-gatys: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        print(f"nst-gatys: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("nst-gatys: interrupted; no image written.", file=sys.stderr)
        return 130
    h = result.history
    per_it = (h[-1].elapsed_s - h[0].elapsed_s) / max(len(h) - 1, 1) if h else float("nan")
    log.info("wrote %s: loss %.4g -> %.4g in %d iterations, %.2f s (%.1f ms/iteration on %s)", args.out,
             h[0].loss, h[-1].loss, len(h), result.seconds, per_it * 1000, device)
    return 0


if __name__ == "__main__":
    sys.exit(train_main())
