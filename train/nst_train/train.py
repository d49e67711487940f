"""The training loop of Johnson et al. 2016: a TransformerNet trained against VGG-16 perceptual losses.

``train(TrainConfig(...))`` is what ``nst-train`` calls. What the run optimises and how it reads its data is
a named recipe (:mod:`nst_train.recipes`: ``nst``, ``pytorch-examples``, ``johnson2016``) whose values the
config's fields override one by one; the effective values go to the log, ``run.json`` and the checkpoint.
Files of a run (``out=model.pth``):

* ``model.pth``: the final model checkpoint (:func:`nst_train.checkpoint.load_checkpoint` reads it);
* ``model.run/state.pth``: the resumable training state (:mod:`nst_train.training_state`), written every
  ``checkpoint_every`` steps, at the end, and on Ctrl-C;
* ``model.run/loss.jsonl``: one JSON line per ``log_every`` steps (mean losses over those steps);
* ``model.run/previews/step_0000500.jpg``: a fixed set of content crops (top) and their stylization (bottom);
* ``model.run/run.json``: the recipe, every effective setting, the overrides, the initial weights.

A loss or weight that stops being finite ends the run with :class:`TrainingDivergedError`; no state or
checkpoint is written from a diverged network (the last good state stays).

Under ``torchrun`` the same call trains with DistributedDataParallel; ``batch_size`` is per process and only
rank 0 writes files.

Network families (:mod:`nst_train.registry`): ``arch`` names the preset (``johnson2016``, ``slim``),
``channels``/``res_blocks`` change its shape; the run logs the network's GFLOP per megapixel. Several style
images (``styles``) train one network with conditional instance norm (Dumoulin et al. 2017), one style per
batch (step ``k`` uses style ``k mod N``, so a resumed run continues the same sequence). ``teacher`` distils a
trained checkpoint into this network (:class:`~nst_train.losses.DistillationObjective`): the teacher's output is
the target, so no style image is needed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from nst_runtime.errors import CheckpointError, NstError, UsageError
from tqdm.auto import tqdm

from .atomic import atomic_write
from .checkpoint import CheckpointMetadata, file_sha256, load_checkpoint, save_checkpoint
from .data import (
    ContentImages,
    EpochSampler,
    ImagePipeline,
    build_loader,
    find_images,
    images_to_float,
    load_crop,
    scan_images,
)
from .distributed import DistContext, distributed_session, resolve_device
from .imageio import load_image_tensor, save_image_tensor
from .losses import DistillationObjective, LossWeights, PerceptualObjective
from .model import ARCHITECTURE, NetShape, TransformerNet
from .recipes import TrainRecipe, TrainSettings, resolve_train_settings
from .registry import describe, model_names, shape_for
from .training_state import load_training_state, restore_rng_state, save_training_state
from .vgg import load_vgg16

log = logging.getLogger(__name__)

__all__ = ["AmpPolicy", "StepRecord", "TrainConfig", "TrainResult", "TrainingDivergedError",
           "TrainingInterrupted", "amp_policy", "first_nonfinite", "run_dir_for", "train"]

#: the smallest CUDA compute capability with native bf16 tensor cores (Ampere). Older GPUs report
#: ``torch.cuda.is_bf16_supported()`` too, but emulate bf16 slowly; they get fp16 with a grad scaler.
BF16_MIN_CAPABILITY = (8, 0)

#: TrainConfig fields that override the recipe's setting of the same name when not None
_OVERRIDE_FIELDS = ("image_size", "style_size", "batch_size", "lr", "epochs", "steps", "seed", "vgg_weights",
                    "content_weight", "style_weight", "tv_weight", "amp", "min_image_side")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs. Paths may be str or Path; see :func:`train`.

    ``recipe`` names the preset of :mod:`nst_train.recipes`; every field below it that is not None overrides the
    recipe's value, and ``settings`` overrides any other setting by name (``{"shuffle": False}``).
    """

    #: the style image (the first of ``styles`` for a multi-style run; None with ``teacher``)
    style: Path | None
    content_dir: Path
    out: Path
    recipe: str = "nst"
    image_size: int | None = None
    #: pixels of the style image for the Gram targets (resized per the recipe's ``style_resize``), or
    #: "original"; None: the recipe's
    style_size: int | str | None = None
    batch_size: int | None = None
    lr: float | None = None
    epochs: int | None = None
    steps: int | None = None
    seed: int | None = None
    device: str = "auto"
    #: "imagenet", "caffe", a path, or "random"; None: the recipe's
    vgg_weights: str | os.PathLike[str] | None = None
    content_weight: float | None = None
    style_weight: float | None = None
    tv_weight: float | None = None
    #: any other :class:`~nst_train.recipes.TrainSettings` field by name
    settings: Mapping[str, Any] = field(default_factory=dict)
    #: all loss weights and layers at once (overrides the recipe's; the single-value fields above win over it)
    weights: LossWeights | None = None
    #: start from these TransformerNet weights (an nst checkpoint or a pytorch/examples state dict)
    init: Path | None = None
    resume: bool = False
    log_every: int = 100
    #: steps between resumable states; 0: only at the end and on Ctrl-C
    checkpoint_every: int = 1000
    #: steps between preview images; 0: only at the end
    preview_every: int = 500
    preview_count: int = 4
    #: mixed precision; None: the recipe's (nst: on for CUDA; the references: off)
    amp: bool | None = None
    channels_last: bool = False
    compile: bool = False
    num_workers: int = 4
    #: images whose shorter side is below this are skipped; None: the recipe's
    min_image_side: int | None = None
    #: where the state, loss log and previews go; None: ``<out without suffix>.run`` next to ``out``
    run_dir: Path | None = None
    progress: bool = True
    #: the network family (nst_train.registry) and its shape (None: the preset's)
    arch: str = "johnson2016"
    channels: int | None = None
    res_blocks: int | None = None
    #: every style of a multi-style run, in order (``style`` is the first); empty: one style, ``style``
    styles: tuple[Path, ...] = ()
    #: names of the styles (default: the files' stems)
    style_names: tuple[str, ...] = ()
    #: distil this trained checkpoint: its output is the target (no style image needed)
    teacher: Path | None = None
    #: weight of the distillation's output term (MSE in [0, 255] units)
    teacher_weight: float = 1.0

    def __post_init__(self) -> None:
        for name in ("style", "content_dir", "out", "run_dir", "init", "teacher"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))
        object.__setattr__(self, "styles", tuple(Path(p) for p in self.styles))
        object.__setattr__(self, "style_names", tuple(self.style_names))

    @property
    def style_paths(self) -> tuple[Path, ...]:
        """Every style image of the run, in order (empty when distilling without one)."""
        return self.styles or ((self.style,) if self.style is not None else ())

    @property
    def names_of_styles(self) -> tuple[str, ...]:
        return self.style_names or tuple(p.stem for p in self.style_paths)

    @property
    def overrides(self) -> dict[str, Any]:
        """The settings this config sets explicitly (over its recipe)."""
        given: dict[str, Any] = {}
        if self.weights is not None:
            w = self.weights
            given.update(content_weight=w.content, style_weight=w.style, tv_weight=w.tv,
                         content_layer=w.content_layer, style_layers=tuple(w.style_layers), tv_form=w.tv_form)
        given.update({name: getattr(self, name) for name in _OVERRIDE_FIELDS if getattr(self, name) is not None})
        if "vgg_weights" in given:
            given["vgg_weights"] = str(given["vgg_weights"])
        return {**given, **dict(self.settings)}

    def resolve(self) -> tuple[TrainRecipe, TrainSettings]:
        """The recipe and the effective settings (validated; :class:`UsageError` names a bad value)."""
        return resolve_train_settings(self.recipe, self.overrides)


@dataclass(frozen=True)
class StepRecord:
    """The losses of one optimisation step (weighted terms, as the bar shows them)."""

    step: int
    epoch: int
    content: float
    style: float
    tv: float
    #: distillation: the output term
    output: float = 0.0

    @property
    def total(self) -> float:
        return self.content + self.style + self.tv + self.output


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


class TrainingDivergedError(NstError):
    """The loss or the network's weights stopped being finite. Nothing was written from the diverged network;
    the last resumable state (if any) is the last good one. Exit code 3, like a bad checkpoint."""

    exit_code = 3

    def __init__(self, message: str, *, step: int, last_good_state: Path | None) -> None:
        super().__init__(message)
        self.step = step
        self.last_good_state = last_good_state


def run_dir_for(out: Path) -> Path:
    return out.parent / f"{out.stem}.run"


def _validate(config: TrainConfig) -> None:
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise UsageError(msg)

    for name in ("log_every", "checkpoint_every", "preview_every", "num_workers", "preview_count"):
        need(getattr(config, name) >= 0, f"--{name.replace('_', '-')} must be >= 0, got {getattr(config, name)}.")
    need(config.log_every >= 1, f"--log-every must be at least 1, got {config.log_every}.")
    need(config.arch in model_names() and config.arch != "adain",
         f"--arch {config.arch}: expected one of {', '.join(n for n in model_names() if n != 'adain')} "
         "(AdaIN trains with nst_train.adain: nst-train --arch adain).")
    need(bool(config.style_paths) or config.teacher is not None,
         "--style: give the style image (or several, for one multi-style network), or --teacher CHECKPOINT.")
    for path in config.style_paths:
        need(path.is_file(), f"{path}: style image not found. Pass --style PATH to an image file.")
    names = config.names_of_styles
    need(len(set(names)) == len(names), f"the style names {list(names)} repeat (files with the same stem?). Fix: "
         "--style-names n1,n2,... with one distinct name per style.")
    need(not config.style_names or len(config.style_names) == len(config.style_paths),
         f"--style-names gives {len(config.style_names)} names for {len(config.style_paths)} style images.")
    need(config.teacher is None or config.teacher.is_file(),
         f"--teacher {config.teacher}: no such checkpoint file.")
    need(config.teacher is None or not config.style_paths,
         "--teacher distils the teacher's styles: its output is the target. Drop --style (or train without "
         "--teacher).")
    need(config.teacher_weight >= 0, f"--teacher-weight {config.teacher_weight}: expected >= 0.")
    need(config.out.suffix in (".pth", ".pt", ".safetensors"),
         f"--out {config.out}: expected a .pth or .safetensors file name.")
    need(config.init is None or config.init.is_file(),
         f"--init {config.init}: no such checkpoint file. Pass an nst checkpoint or a pytorch/examples state dict.")


@dataclass(frozen=True)
class AmpPolicy:
    """How a run uses mixed precision: autocast on or off, its dtype, and whether a grad scaler is needed."""

    enabled: bool
    dtype: torch.dtype | None
    scaler: bool

    def describe(self) -> str:
        if not self.enabled:
            return "off (float32)"
        return f"{str(self.dtype).removeprefix('torch.')} autocast" + (" + grad scaler" if self.scaler else "")


def amp_policy(device: torch.device, amp: bool | None) -> AmpPolicy:
    """``amp`` None: on for CUDA. On CUDA: bf16 where the GPU's compute capability is >= 8.0 (native bf16;
    ``torch.cuda.is_bf16_supported()`` also says yes where bf16 is only emulated), else fp16 with a grad scaler.
    Elsewhere AMP is not used (a warning when it was asked for)."""
    if amp is None:
        amp = device.type == "cuda"
    if not amp:
        return AmpPolicy(False, None, False)
    if device.type != "cuda":
        log.warning("--amp is only used on CUDA; training in float32 on %s", device)
        return AmpPolicy(False, None, False)
    if tuple(torch.cuda.get_device_capability(device)) >= BF16_MIN_CAPABILITY:
        return AmpPolicy(True, torch.bfloat16, False)
    return AmpPolicy(True, torch.float16, True)


def _fingerprint(config: TrainConfig, settings: TrainSettings, style_sha: str | None, paths: tuple[Path, ...],
                 ctx: DistContext, architecture: str = ARCHITECTURE) -> dict[str, Any]:
    """What a resumed run must share with the run it continues (else the data order or losses differ): every
    setting except the run's length, which may grow."""
    listing = hashlib.sha256("\n".join(str(p.relative_to(config.content_dir)) for p in paths).encode()).hexdigest()
    fixed = {k: v for k, v in settings.to_dict().items() if k not in ("epochs", "steps")}
    return {
        **json.loads(json.dumps(fixed)),
        "style_sha256": style_sha,
        **({"architecture": architecture} if architecture != ARCHITECTURE else {}),
        **({"teacher": str(config.teacher)} if config.teacher is not None else {}),
        "world_size": ctx.world_size,
        "content_images": len(paths),
        "content_listing_sha256": listing,
    }


def first_nonfinite(model: torch.nn.Module) -> str | None:
    """Name of the first parameter holding NaN or Inf (one device sync), or None."""
    params = list(model.named_parameters())
    if bool(torch.stack([torch.isfinite(p.detach()).all() for _, p in params]).all()):
        return None
    return next(name for name, p in params if not bool(torch.isfinite(p.detach()).all()))


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


def _preview_grid(model: TransformerNet, images: torch.Tensor, autocast: Callable[[], Any],
                  style: torch.Tensor | None = None) -> torch.Tensor:
    with torch.no_grad(), autocast():
        out = (model(images) if style is None else model(images, style)).float().clamp(0, 255)
    top = torch.cat(list(images.float()), dim=2)
    bottom = torch.cat(list(out), dim=2)
    return torch.cat([top, bottom], dim=1)


def train(config: TrainConfig, *, callback: Callable[[StepRecord], None] | None = None) -> TrainResult:
    """Train a TransformerNet on ``config.content_dir`` for the style ``config.style``; see the module doc.

    ``callback`` (optional) receives every step's losses (it forces a device sync per step). Raises
    :class:`TrainingInterrupted` (a ``KeyboardInterrupt``) after saving the state when Ctrl-C arrives,
    :class:`TrainingDivergedError` when the loss or the weights stop being finite, and
    :class:`~nst_runtime.errors.NstError` subclasses for bad inputs.
    """
    _validate(config)
    recipe, settings = config.resolve()
    ctx = DistContext.from_env()
    device = resolve_device(config.device, ctx)
    with distributed_session(ctx, device):
        return _train(config, recipe, settings, ctx, device, callback)


def _train(config: TrainConfig, recipe: TrainRecipe, settings: TrainSettings, ctx: DistContext,
           device: torch.device, callback: Callable[[StepRecord], None] | None) -> TrainResult:
    started = time.perf_counter()
    random.seed(settings.seed)
    np.random.seed(settings.seed % 2**32)
    torch.manual_seed(settings.seed)
    teacher_ckpt = load_checkpoint(config.teacher) if config.teacher is not None else None
    styles = teacher_ckpt.shape.styles if teacher_ckpt is not None else max(1, len(config.style_paths))
    # the TransformerNet is the first thing drawn from the seeded generator, as in pytorch/examples' train(),
    # so a seed gives the same initial weights there and here
    shape = shape_for(config.arch, channels=config.channels, res_blocks=config.res_blocks, styles=styles)
    model = TransformerNet() if shape == NetShape() else TransformerNet.from_shape(shape)
    if ctx.is_main:
        log.info("network %s", describe(model.shape))
    init_info: dict[str, Any] | None = None
    if config.init is not None:
        init_ckpt = load_checkpoint(config.init)  # CheckpointError names the file; non-finite weights refused
        if init_ckpt.shape.architecture != model.architecture:
            raise CheckpointError(f"--init {config.init}: its network is {init_ckpt.metadata.architecture}, this "
                                  f"run builds {model.architecture}. Fix: --arch/--channels/--res-blocks as it was "
                                  "trained (the same number of styles), or drop --init.")
        model.load_state_dict(init_ckpt.state_dict)
        init_info = {"path": str(config.init), "sha256": file_sha256(config.init),
                     "source": init_ckpt.metadata.source, "recipe": init_ckpt.metadata.recipe}
    teacher: TransformerNet | None = teacher_ckpt.model(device) if teacher_ckpt is not None else None
    style_names = (tuple(str(n) for n in teacher_ckpt.metadata.style_names) if teacher_ckpt is not None
                   else config.names_of_styles)
    if teacher is not None:
        for p in teacher.parameters():
            p.requires_grad_(False)
    run_dir = config.run_dir or run_dir_for(config.out)
    state_path = run_dir / "state.pth"
    loss_log = run_dir / "loss.jsonl"
    main = ctx.is_main

    # --- data
    min_side = settings.effective_min_image_side
    paths = find_images(config.content_dir, settings.listing)
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
    pipeline = ImagePipeline(image_size=settings.image_size, content_resize=settings.content_resize,
                             resample=settings.resample, jpeg_draft=settings.jpeg_draft,
                             exif_orientation=settings.exif_orientation)
    dataset = ContentImages(report.usable, image_size=settings.image_size, seed=settings.seed, pipeline=pipeline)
    sampler = EpochSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, seed=settings.seed,
                           batch_size=settings.batch_size, shuffle=settings.shuffle, drop_last=settings.drop_last)
    steps_per_epoch = sampler.batches_per_epoch
    if steps_per_epoch < 1:
        raise UsageError(f"{len(report.usable)} usable content images give {sampler.num_samples} per process, "
                         f"fewer than --batch-size {settings.batch_size}; add images or lower --batch-size.")
    total_steps = settings.steps or (settings.epochs or 1) * steps_per_epoch
    loader = build_loader(dataset, sampler, batch_size=settings.batch_size, num_workers=config.num_workers,
                          pin_memory=device.type == "cuda", seed=settings.seed)

    # --- networks and optimiser
    vgg = load_vgg16(settings.vgg_weights, preprocessing=settings.vgg_preprocessing,  # type: ignore[arg-type]
                     device=device)
    if vgg.preprocessing != settings.vgg_preprocessing:  # known weights bring their own convention
        settings = dataclasses.replace(settings, vgg_preprocessing=vgg.preprocessing)
    model = model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    amp = amp_policy(device, settings.amp)
    scaler = torch.amp.GradScaler(device.type, enabled=amp.scaler)
    style_shas = [file_sha256(p) for p in config.style_paths]
    style_sha = (style_shas[0] if len(style_shas) == 1 else
                 hashlib.sha256("".join(style_shas).encode()).hexdigest() if style_shas else None)
    fingerprint = _fingerprint(config, settings, style_sha, report.usable, ctx, model.architecture)
    run_record = {"recipe": recipe.name, "recipe_summary": recipe.summary, "settings": settings.to_dict(),
                  "overrides": {k: (str(v) if isinstance(v, os.PathLike) else v) for k, v in config.overrides.items()},
                  "init": init_info, "amp": amp.describe(), "device": str(device), "world_size": ctx.world_size,
                  "style": str(config.style), "style_sha256": style_sha, "content_dir": str(config.content_dir),
                  "content_images": len(report.usable), "architecture": model.architecture,
                  "network": describe(model.shape),
                  **({"styles": [str(p) for p in config.style_paths], "style_names": list(style_names)}
                     if styles > 1 else {}),
                  **({"teacher": {"path": str(config.teacher), "sha256": file_sha256(config.teacher),
                                  "architecture": teacher_ckpt.metadata.architecture,
                                  "output_weight": config.teacher_weight,
                                  "loss_terms": "content/style: VGG features and Grams of the teacher's output; "
                                                "output: MSE to the teacher's output"}}
                     if teacher_ckpt is not None else {})}
    if main:
        log.info("recipe %s (%s); overrides: %s", recipe.name, recipe.summary,
                 json.dumps(run_record["overrides"]) if config.overrides else "none")
        log.info("effective settings: %s", json.dumps(settings.to_dict()))
        if init_info:
            log.info("initial weights from %s (sha256 %s)", config.init, init_info["sha256"][:12])

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
        return torch.autocast(device.type, dtype=amp.dtype, enabled=amp.enabled)

    # Gram targets: once per style image, as the recipe sizes it (distillation: the teacher's output instead)
    objectives: list[Any] = []
    for path in config.style_paths:
        style_img = load_image_tensor(path, size=settings.effective_style_size, fit=settings.style_resize,
                                      exif_orientation=settings.exif_orientation, to_float=settings.to_float,
                                      device=device)
        with autocast():
            objectives.append(PerceptualObjective(vgg, settings.loss_weights,
                                                  style_img.contiguous(memory_format=memory_format)))
    distill = DistillationObjective(vgg, settings.loss_weights, config.teacher_weight) if teacher is not None else None
    onehots = torch.eye(styles, device=device) if styles > 1 else None

    def style_at(k: int) -> torch.Tensor | None:
        """The style of step k (0-based): one style per batch, in turn."""
        return None if onehots is None else onehots[k % styles]

    previews = None
    if main and config.preview_count:
        crops = [load_crop(p, image_size=settings.image_size, rng=None, pipeline=pipeline)
                 for p in report.usable[:config.preview_count]]
        previews = torch.stack(crops).to(device).float()

    last_good_state: Path | None = state_path if config.resume else None

    def diverged(what: str) -> TrainingDivergedError:
        kept = (f"the last good state is {last_good_state} (--resume continues from it)" if last_good_state
                else "no state was saved before it")
        return TrainingDivergedError(
            f"training diverged at step {step}: {what}. Nothing was written from the diverged network; {kept}. "
            f"Fix: lower --lr (now {settings.lr:g}) or the loss weights"
            + (", or train without --amp" if amp.enabled else "") + ", and start a new run.",
            step=step, last_good_state=last_good_state)

    def check_weights() -> None:
        bad = first_nonfinite(raw_model)
        if bad is not None:
            raise diverged(f"the weight tensor {bad} holds NaN or Inf")

    def save_state() -> None:
        nonlocal last_good_state
        check_weights()
        if main:
            save_training_state(state_path, model=raw_model, optimizer=optimizer, scaler=scaler, step=step,
                                epoch=epoch, batch_in_epoch=batch_in_epoch, fingerprint=fingerprint)
            last_good_state = state_path

    def save_preview() -> None:
        if previews is not None:
            grid = _preview_grid(raw_model, previews.contiguous(memory_format=memory_format), autocast, style_at(0))
            save_image_tensor(grid, run_dir / "previews" / f"step_{step:07d}.jpg")

    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        with atomic_write(run_dir / "run.json", "w") as f:
            json.dump(run_record, f, indent=1)
        log.info("training %d steps (%d per epoch, batch %d x %d process(es)) on %s, amp %s, vgg %s (%s)",
                 total_steps, steps_per_epoch, settings.batch_size, ctx.world_size, device, amp.describe(),
                 vgg.weights_name, vgg.preprocessing)

    bar = tqdm(total=total_steps, initial=step, desc="train", unit="step", dynamic_ncols=True,
               disable=not (config.progress and main))
    # float64 sums keep long logging windows exact; MPS has no float64
    window = torch.zeros(4, device=device, dtype=torch.float32 if device.type == "mps" else torch.float64)
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
                    x = images_to_float(images.to(device, non_blocking=True), settings.to_float)
                    x = x.contiguous(memory_format=memory_format)
                    style_vec = style_at(step)
                    with autocast():
                        y = forward(x) if style_vec is None else forward(x, style_vec)
                        if distill is not None and teacher is not None:
                            with torch.no_grad():
                                t = teacher(x) if style_vec is None else teacher(x, style_vec)
                            terms = distill(y, t.float())
                        else:
                            terms = objectives[step % len(objectives)](y, x)
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(terms.total).backward()
                    scaler.step(optimizer)
                    scaler.update()
                    step += 1
                    batch_in_epoch += 1
                    bar.update(1)
                    output_term = terms.output if terms.output is not None else terms.tv.new_zeros(())
                    losses = torch.stack([terms.content, terms.style, terms.tv, output_term]).detach().to(window.dtype)
                    window += losses
                    window_steps += 1
                    if callback is not None:
                        c, s, t, o = losses.tolist()
                        callback(StepRecord(step=step, epoch=epoch, content=c, style=s, tv=t, output=o))
                    if step % config.log_every == 0 or step == total_steps:
                        mean = window / window_steps
                        if ctx.is_distributed:
                            import torch.distributed as dist

                            dist.all_reduce(mean)
                            mean /= ctx.world_size
                        c, s, t, o = mean.tolist()
                        now = time.perf_counter()
                        ips = window_steps * settings.batch_size * ctx.world_size / max(now - window_start, 1e-9)
                        final_losses = {"content": c, "style": s, "tv": t, **({"output": o} if distill else {}),
                                        "total": c + s + t + o}
                        # with a grad scaler an overflowing fp16 step is skipped, not applied: only the
                        # weights tell whether the run diverged
                        if not amp.scaler and not all(math.isfinite(v) for v in final_losses.values()):
                            raise diverged(f"the loss is not finite ({final_losses})")
                        check_weights()
                        bar.set_postfix(content=f"{c:.3g}", style=f"{s:.3g}", tv=f"{t:.3g}", refresh=False)
                        if main:
                            record = {"step": step, "epoch": epoch, **final_losses, "steps_averaged": window_steps,
                                      "images_per_second": ips, "lr": optimizer.param_groups[0]["lr"],
                                      "elapsed_s": now - started}
                            with loss_log.open("a") as f:
                                f.write(json.dumps(record) + "\n")
                            log.debug("step %d: content %.6g, style %.6g, tv %.6g (mean of %d steps)",
                                      step, c, s, t, window_steps)
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
    save_state()  # checks the weights on every rank first
    if main:
        save_preview()
        metadata = CheckpointMetadata(
            architecture=raw_model.architecture,
            style_names=list(style_names) if styles > 1 else [],
            teacher=run_record.get("teacher"),
            style_image_sha256=style_sha,
            loss_weights=json.loads(json.dumps(dataclasses.asdict(settings.loss_weights))),
            image_size=settings.image_size,
            steps=step,
            vgg_weights=str(vgg.weights_name),
            recipe=recipe.name,
            training=json.loads(json.dumps(settings.to_dict())),
            init=init_info,
        )
        checkpoint = save_checkpoint(config.out, raw_model, metadata)
    steps_run = step - start_step
    ips = steps_run * settings.batch_size * ctx.world_size / seconds if seconds > 0 else 0.0
    if main:
        log.info("trained %d steps in %.1f s (%.1f images/s); wrote %s", steps_run, seconds, ips, checkpoint)
        if decode_failures:
            log.warning("%d content images failed to decode while training and were replaced", decode_failures)
    return TrainResult(checkpoint=checkpoint, run_dir=run_dir, steps=step, epoch=epoch, steps_this_run=steps_run,
                       seconds=time.perf_counter() - started, images_per_second=ips, final_losses=final_losses,
                       skipped_images=report.skipped + decode_failures, model=raw_model.eval())
