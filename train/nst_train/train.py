"""The training loop of Johnson et al. 2016: a TransformerNet trained against VGG-16 perceptual losses.

``train(TrainConfig(...))`` is what ``nst-train`` calls. Files of a run (``out=model.pth``):

* ``model.pth``: the final model checkpoint (:func:`nst_train.checkpoint.load_checkpoint` reads it);
* ``model.run/state.pth``: the resumable training state (:mod:`nst_train.training_state`), written every
  ``checkpoint_every`` steps, at the end, and on Ctrl-C;
* ``model.run/loss.jsonl``: one JSON line per ``log_every`` steps (mean losses over those steps);
* ``model.run/previews/step_0000500.jpg``: a fixed set of content crops (top) and their stylization (bottom).

Under ``torchrun`` the same call trains with DistributedDataParallel; ``batch_size`` is per process and only
rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import random
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from nst_runtime.errors import CheckpointError, UsageError
from tqdm.auto import tqdm

from .atomic import atomic_write
from .checkpoint import CheckpointMetadata, file_sha256, save_checkpoint
from .data import ContentImages, EpochSampler, build_loader, find_images, load_crop, scan_images
from .distributed import DistContext, distributed_session, resolve_device
from .imageio import load_image_tensor, save_image_tensor
from .losses import LossWeights, gram_matrix, perceptual_loss
from .model import SIZE_MULTIPLE, TransformerNet
from .training_state import load_training_state, restore_rng_state, save_training_state
from .vgg import load_vgg16

log = logging.getLogger(__name__)

__all__ = ["StepRecord", "TrainConfig", "TrainResult", "TrainingInterrupted", "run_dir_for", "train"]

#: pytorch/examples trains 2 epochs over COCO (~40k steps at batch 4); used when neither epochs nor steps given
DEFAULT_EPOCHS = 2


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs. Paths may be str or Path; see :func:`train`."""

    style: Path
    content_dir: Path
    out: Path
    image_size: int = 256
    #: shorter side of the style image for the Gram targets; None: ``image_size``
    style_size: int | None = None
    batch_size: int = 4
    lr: float = 1e-3
    epochs: int | None = None
    steps: int | None = None
    seed: int = 42
    device: str = "auto"
    vgg_weights: str = "imagenet"
    weights: LossWeights = field(default_factory=LossWeights)
    resume: bool = False
    log_every: int = 100
    #: steps between resumable states; 0: only at the end and on Ctrl-C
    checkpoint_every: int = 1000
    #: steps between preview images; 0: only at the end
    preview_every: int = 500
    preview_count: int = 4
    #: mixed precision; None: on for CUDA (bf16 where supported, else fp16 with a grad scaler), off elsewhere
    amp: bool | None = None
    channels_last: bool = False
    compile: bool = False
    num_workers: int = 4
    #: images whose shorter side is below this are skipped; None: ``image_size // 2``
    min_image_side: int | None = None
    #: where the state, loss log and previews go; None: ``<out without suffix>.run`` next to ``out``
    run_dir: Path | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("style", "content_dir", "out", "run_dir"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))


@dataclass(frozen=True)
class StepRecord:
    """The losses of one optimisation step (weighted terms, as the bar shows them)."""

    step: int
    epoch: int
    content: float
    style: float
    tv: float

    @property
    def total(self) -> float:
        return self.content + self.style + self.tv


@dataclass(frozen=True)
class TrainResult:
    #: the final model checkpoint; None on ranks other than 0
    checkpoint: Path | None
    run_dir: Path
    steps: int
    epoch: int
    #: steps run by this call (fewer than ``steps`` after a resume)
    steps_this_run: int
    seconds: float
    #: training images per second over this call, all ranks together
    images_per_second: float
    #: mean weighted losses over the last logging window
    final_losses: dict[str, float]
    #: content images skipped (unreadable or too small at the scan, plus decode failures while training)
    skipped_images: int
    #: the trained network (unwrapped, on the training device)
    model: TransformerNet


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training: the state was saved at ``step`` to ``state_path``; rerun with ``--resume``."""

    def __init__(self, step: int, state_path: Path | None) -> None:
        super().__init__(f"training interrupted at step {step}")
        self.step = step
        self.state_path = state_path


def run_dir_for(out: Path) -> Path:
    return out.parent / f"{out.stem}.run"


def _validate(config: TrainConfig) -> None:
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise UsageError(msg)

    need(config.image_size >= 16 and config.image_size % SIZE_MULTIPLE == 0,
         f"--image-size must be a multiple of {SIZE_MULTIPLE} and at least 16, got {config.image_size}.")
    need(config.style_size is None or config.style_size >= 16,
         f"--style-size must be at least 16 pixels, got {config.style_size}.")
    need(config.batch_size >= 1, f"--batch-size must be at least 1, got {config.batch_size}.")
    need(config.lr > 0, f"--lr must be positive, got {config.lr}.")
    need(not (config.epochs is not None and config.steps is not None),
         f"give --epochs or --steps, not both (got --epochs {config.epochs} --steps {config.steps}).")
    need(config.epochs is None or config.epochs >= 1, f"--epochs must be at least 1, got {config.epochs}.")
    need(config.steps is None or config.steps >= 1, f"--steps must be at least 1, got {config.steps}.")
    for name in ("log_every", "checkpoint_every", "preview_every", "num_workers", "preview_count"):
        need(getattr(config, name) >= 0, f"--{name.replace('_', '-')} must be >= 0, got {getattr(config, name)}.")
    need(config.log_every >= 1, f"--log-every must be at least 1, got {config.log_every}.")
    need(config.style.is_file(), f"{config.style}: style image not found. Pass --style PATH to an image file.")
    need(config.out.suffix in (".pth", ".pt", ".safetensors"),
         f"--out {config.out}: expected a .pth or .safetensors file name.")
    w = config.weights
    need(min(w.content, w.style, w.tv) >= 0, f"loss weights must be >= 0, got {w}.")


def _amp_setup(device: torch.device, amp: bool | None) -> tuple[bool, torch.dtype | None, bool]:
    """(use autocast, its dtype, use a grad scaler)."""
    if amp is None:
        amp = device.type == "cuda"
    if not amp:
        return False, None, False
    if device.type != "cuda":
        log.warning("--amp is only used on CUDA; training in float32 on %s", device)
        return False, None, False
    if torch.cuda.is_bf16_supported():
        return True, torch.bfloat16, False
    return True, torch.float16, True


def _fingerprint(config: TrainConfig, style_sha: str, paths: tuple[Path, ...], ctx: DistContext) -> dict[str, Any]:
    """The options a resumed run must share with the run it continues (else the data order or losses differ)."""
    listing = hashlib.sha256("\n".join(str(p.relative_to(config.content_dir)) for p in paths).encode()).hexdigest()
    return {
        "style_sha256": style_sha,
        "image_size": config.image_size,
        "style_size": config.style_size,
        "batch_size": config.batch_size,
        "world_size": ctx.world_size,
        "seed": config.seed,
        "lr": config.lr,
        "weights": json.loads(json.dumps(dataclasses.asdict(config.weights))),
        "content_images": len(paths),
        "content_listing_sha256": listing,
    }


class _InterruptFlag:
    """First Ctrl-C: finish the current step, save, stop. Second Ctrl-C: the default (immediate) behaviour."""

    def __init__(self) -> None:
        self.requested = False

    def _handler(self, signum: int, frame: Any) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)
        log.warning("interrupt: finishing this step and saving a resumable state (Ctrl-C again to abort now)")

    @contextlib.contextmanager
    def installed(self, enabled: bool) -> Iterator[_InterruptFlag]:
        previous = None
        if enabled:
            try:
                previous = signal.signal(signal.SIGINT, self._handler)
            except ValueError:  # not the main thread: leave Ctrl-C alone
                previous = None
        try:
            yield self
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)


def _truncate_log(path: Path, step: int) -> None:
    """Drop loss-log lines written after the state we resume from (the killed run got further)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            if json.loads(line).get("step", 0) <= step:
                kept.append(line)
    with atomic_write(path, "w") as f:
        f.write("".join(line + "\n" for line in kept))


def _preview_grid(model: TransformerNet, images: torch.Tensor, autocast: Callable[[], Any]) -> torch.Tensor:
    with torch.no_grad(), autocast():
        out = model(images).float().clamp(0, 255)
    top = torch.cat(list(images.float()), dim=2)
    bottom = torch.cat(list(out), dim=2)
    return torch.cat([top, bottom], dim=1)


def train(config: TrainConfig, *, callback: Callable[[StepRecord], None] | None = None) -> TrainResult:
    """Train a TransformerNet on ``config.content_dir`` for the style ``config.style``; see the module doc.

    ``callback`` (optional) receives every step's losses (it forces a device sync per step). Raises
    :class:`TrainingInterrupted` (a ``KeyboardInterrupt``) after saving the state when Ctrl-C arrives, and
    :class:`~nst_runtime.errors.NstError` subclasses for bad inputs.
    """
    _validate(config)
    ctx = DistContext.from_env()
    device = resolve_device(config.device, ctx)
    with distributed_session(ctx, device):
        return _train(config, ctx, device, callback)


def _train(config: TrainConfig, ctx: DistContext, device: torch.device,
           callback: Callable[[StepRecord], None] | None) -> TrainResult:
    started = time.perf_counter()
    random.seed(config.seed)
    np.random.seed(config.seed % 2**32)
    torch.manual_seed(config.seed)
    run_dir = config.run_dir or run_dir_for(config.out)
    state_path = run_dir / "state.pth"
    loss_log = run_dir / "loss.jsonl"
    main = ctx.is_main

    # --- data
    min_side = config.min_image_side if config.min_image_side is not None else config.image_size // 2
    paths = find_images(config.content_dir)
    report = scan_images(paths, min_side=min_side, progress=config.progress and main)
    if main:
        log.info("content images: %d usable of %d found in %s", len(report.usable), len(paths), config.content_dir)
        if report.skipped:
            examples = ", ".join(p.name for p in (report.unreadable + report.too_small)[:3])
            log.warning("skipped %d of %d content images: %d unreadable, %d with a side under %d px (e.g. %s)",
                        report.skipped, len(paths), len(report.unreadable), len(report.too_small), min_side,
                        examples)
    if not report.usable:
        raise UsageError(f"{config.content_dir}: no usable content images ({len(paths)} image files found, "
                         f"{len(report.unreadable)} unreadable, {len(report.too_small)} under {min_side} px). "
                         "Pass a folder of photos, e.g. COCO train2014.")
    dataset = ContentImages(report.usable, image_size=config.image_size, seed=config.seed)
    sampler = EpochSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, seed=config.seed,
                           batch_size=config.batch_size)
    steps_per_epoch = sampler.batches_per_epoch
    if steps_per_epoch < 1:
        raise UsageError(f"{len(report.usable)} usable content images give {sampler.num_samples} per process, "
                         f"fewer than --batch-size {config.batch_size}; add images or lower --batch-size.")
    total_steps = config.steps or (config.epochs or DEFAULT_EPOCHS) * steps_per_epoch
    loader = build_loader(dataset, sampler, batch_size=config.batch_size, num_workers=config.num_workers,
                          pin_memory=device.type == "cuda", seed=config.seed)

    # --- networks and optimiser
    vgg = load_vgg16(config.vgg_weights, device=device)
    model = TransformerNet().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    use_amp, amp_dtype, use_scaler = _amp_setup(device, config.amp)
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
    style_sha = file_sha256(config.style)
    fingerprint = _fingerprint(config, style_sha, report.usable, ctx)

    step = epoch = batch_in_epoch = 0
    if config.resume:
        state = load_training_state(state_path)
        changed = {k: (state.fingerprint.get(k), v) for k, v in fingerprint.items() if state.fingerprint.get(k) != v}
        if changed:
            details = "; ".join(f"{k}: run had {old!r}, now {new!r}" for k, (old, new) in changed.items())
            raise UsageError(f"{state_path}: cannot resume, options differ from the run being resumed ({details}). "
                             "Resume with the original options, or start a new run with another --out.")
        try:
            model.load_state_dict(state.model)
            optimizer.load_state_dict(state.optimizer)
            scaler.load_state_dict(state.scaler)
            restore_rng_state(state.rng)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise CheckpointError(f"{state_path}: the training state does not fit this model/optimizer ({first}); "
                                  "it was written by another nst version or tool. Start a new run without "
                                  "--resume.") from exc
        step, epoch, batch_in_epoch = state.step, state.epoch, state.batch_in_epoch
        if main:
            _truncate_log(loss_log, step)
            log.info("resuming from %s at step %d (epoch %d, batch %d)", state_path, step, epoch, batch_in_epoch)
    elif main:
        if state_path.exists():
            log.warning("%s exists from an earlier run; starting afresh overwrites it (pass --resume to continue)",
                        state_path)
        _truncate_log(loss_log, 0)  # a fresh run starts a fresh log
    if step >= total_steps and main:
        log.info("the run is already at step %d of %d; nothing to train", step, total_steps)

    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
        vgg = vgg.to(memory_format=torch.channels_last)
    raw_model = model
    forward: torch.nn.Module = model
    if ctx.is_distributed:
        from torch.nn.parallel import DistributedDataParallel

        forward = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        forward = torch.compile(forward)  # type: ignore[assignment]

    def autocast() -> Any:
        return torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp)

    # Gram targets: once, from the style image at style_size (shorter side).
    weights = config.weights
    layers = weights.layers
    style_img = load_image_tensor(config.style, size=config.style_size or config.image_size, device=device)
    with torch.no_grad(), autocast():
        style_feats = vgg(style_img.contiguous(memory_format=memory_format), weights.style_layers)
        style_grams = {k: gram_matrix(v) for k, v in style_feats.items()}

    previews = None
    if main and config.preview_count:
        crops = [load_crop(p, image_size=config.image_size, rng=None) for p in report.usable[:config.preview_count]]
        previews = torch.stack(crops).to(device).float()

    def save_state() -> None:
        if main:
            save_training_state(state_path, model=raw_model, optimizer=optimizer, scaler=scaler, step=step,
                                epoch=epoch, batch_in_epoch=batch_in_epoch, fingerprint=fingerprint)

    def save_preview() -> None:
        if previews is not None:
            grid = _preview_grid(raw_model, previews.contiguous(memory_format=memory_format), autocast)
            save_image_tensor(grid, run_dir / "previews" / f"step_{step:07d}.jpg")

    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        log.info("training %d steps (%d per epoch, batch %d x %d process(es)) on %s, amp=%s, vgg=%s",
                 total_steps, steps_per_epoch, config.batch_size, ctx.world_size, device,
                 amp_dtype if use_amp else "off", config.vgg_weights)

    bar = tqdm(total=total_steps, initial=step, desc="train", unit="step", dynamic_ncols=True,
               disable=not (config.progress and main))
    # float64 sums keep long logging windows exact; MPS has no float64
    window = torch.zeros(3, device=device, dtype=torch.float32 if device.type == "mps" else torch.float64)
    window_steps = 0
    window_start = time.perf_counter()
    final_losses: dict[str, float] = {}
    decode_failures = 0
    start_step = step
    loop_start = time.perf_counter()
    flag = _InterruptFlag()
    try:
        with flag.installed(enabled=not ctx.is_distributed):
            while step < total_steps:
                sampler.set_position(epoch, batch_in_epoch)
                for images, failures in loader:
                    decode_failures += failures
                    x = images.to(device, non_blocking=True).float().contiguous(memory_format=memory_format)
                    with autocast():
                        y = forward(x)
                        out_feats = vgg(y, layers)
                        with torch.no_grad():
                            target = vgg(x, (weights.content_layer,))[weights.content_layer]
                        terms = perceptual_loss(out_feats, target, style_grams, y, weights)
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(terms.total).backward()
                    scaler.step(optimizer)
                    scaler.update()
                    step += 1
                    batch_in_epoch += 1
                    bar.update(1)
                    losses = torch.stack([terms.content, terms.style, terms.tv]).detach().to(window.dtype)
                    window += losses
                    window_steps += 1
                    if callback is not None:
                        c, s, t = losses.tolist()
                        callback(StepRecord(step=step, epoch=epoch, content=c, style=s, tv=t))
                    if step % config.log_every == 0 or step == total_steps:
                        mean = window / window_steps
                        if ctx.is_distributed:
                            import torch.distributed as dist

                            dist.all_reduce(mean)
                            mean /= ctx.world_size
                        c, s, t = mean.tolist()
                        now = time.perf_counter()
                        ips = window_steps * config.batch_size * ctx.world_size / max(now - window_start, 1e-9)
                        final_losses = {"content": c, "style": s, "tv": t, "total": c + s + t}
                        if not all(math.isfinite(v) for v in final_losses.values()):
                            log.error("loss is not finite at step %d (%s); lower --lr or the loss weights",
                                      step, final_losses)
                        bar.set_postfix(content=f"{c:.3g}", style=f"{s:.3g}", tv=f"{t:.3g}", refresh=False)
                        if main:
                            record = {"step": step, "epoch": epoch, **final_losses, "steps_averaged": window_steps,
                                      "images_per_second": ips, "lr": optimizer.param_groups[0]["lr"],
                                      "elapsed_s": now - started}
                            with loss_log.open("a") as f:
                                f.write(json.dumps(record) + "\n")
                        window.zero_()
                        window_steps = 0
                        window_start = now
                    if config.checkpoint_every and step % config.checkpoint_every == 0 and step < total_steps:
                        save_state()
                    if config.preview_every and step % config.preview_every == 0:
                        save_preview()
                    if flag.requested:
                        save_state()
                        raise TrainingInterrupted(step, state_path if main else None)
                    if step >= total_steps:
                        break
                if batch_in_epoch >= steps_per_epoch:
                    epoch += 1
                    batch_in_epoch = 0
    finally:
        bar.close()
    seconds = time.perf_counter() - loop_start

    checkpoint: Path | None = None
    if main:
        save_state()
        save_preview()
        metadata = CheckpointMetadata(
            style_image_sha256=style_sha,
            loss_weights=json.loads(json.dumps(dataclasses.asdict(weights))),
            image_size=config.image_size,
            steps=step,
            vgg_weights=str(config.vgg_weights),
        )
        checkpoint = save_checkpoint(config.out, raw_model, metadata)
    steps_run = step - start_step
    ips = steps_run * config.batch_size * ctx.world_size / seconds if seconds > 0 else 0.0
    if main:
        log.info("trained %d steps in %.1f s (%.1f images/s); wrote %s", steps_run, seconds, ips, checkpoint)
        if decode_failures:
            log.warning("%d content images failed to decode while training and were replaced", decode_failures)
    return TrainResult(checkpoint=checkpoint, run_dir=run_dir, steps=step, epoch=epoch, steps_this_run=steps_run,
                       seconds=time.perf_counter() - started, images_per_second=ips, final_losses=final_losses,
                       skipped_images=report.skipped + decode_failures, model=raw_model.eval())
