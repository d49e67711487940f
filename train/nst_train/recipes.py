"""Named recipes: everything that defines a training objective and its data pipeline, or a Gatys run.

A recipe is a frozen :class:`TrainSettings` (or :class:`GatysSettings`) plus the source of every value, so the
documentation table (:func:`recipes_markdown`), the run log and the checkpoint metadata all say the same
thing. Recipes register under a name (:func:`register_train_recipe`), like the network families; individual
options override a recipe's values (:func:`resolve_train_settings`).

Training recipes:

* ``nst`` -- this project's own pipeline (random crops, shuffling, AMP on CUDA); not a reference.
* ``pytorch-examples`` -- pytorch/examples' ``fast_neural_style`` ``train()`` exactly (same objective, same
  data pipeline, same order of random draws), so a run from the same initial weights logs the same losses.
* ``johnson2016`` -- Johnson et al., ECCV 2016, as published, completed by jcjohnson/fast-neural-style's
  ``train.lua`` where the paper gives no value, with the Caffe VGG-16 loss network it used.

Gatys recipes: ``johnson2016-baseline`` (the feed-forward network's own objective, the comparison of Johnson
et al.'s Table 1) and ``gatys2016`` (Gatys et al., CVPR 2016, with jcjohnson/neural-style's weights).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nst_runtime.errors import UsageError

from .losses import TV_FORMS, LossWeights
from .vgg import CONFIGS, PREPROCESSING, STYLE_LAYERS, layer_index

__all__ = [
    "GATYS_RECIPES",
    "SOURCES",
    "TRAIN_RECIPES",
    "GatysRecipe",
    "GatysSettings",
    "TrainRecipe",
    "TrainSettings",
    "get_gatys_recipe",
    "get_train_recipe",
    "recipes_markdown",
    "register_gatys_recipe",
    "register_train_recipe",
    "resolve_gatys_settings",
    "resolve_train_settings",
]

#: the references, by the key the tables use
SOURCES: dict[str, str] = {
    "E": "pytorch/examples `fast_neural_style/neural_style/neural_style.py` `train()`, `utils.py`, `vgg.py` "
         "(argparse defaults and code)",
    "TV": "torchvision as pytorch/examples calls it: `transforms.Resize(256)` and `CenterCrop` on PIL images, "
          "`ToTensor`, `datasets.ImageFolder` (its `pil_loader`), `DataLoader` defaults",
    "P": "Johnson, Alahi, Fei-Fei, *Perceptual Losses for Real-Time Style Transfer and Super-Resolution*, "
         "ECCV 2016, sections 3 and 4.1",
    "L": "jcjohnson/fast-neural-style `train.lua` defaults and its `fast_neural_style/*.lua` modules",
    "D": "jcjohnson/fast-neural-style `scripts/make_style_dataset.py` (the HDF5 data set `train.lua` reads)",
    "V": "jcjohnson/pytorch-vgg (the Caffe VGG weights converted to PyTorch, and their preprocessing)",
    "G": "Gatys, Ecker, Bethge, *Image Style Transfer Using Convolutional Neural Networks*, CVPR 2016",
    "S": "jcjohnson/neural-style `neural_style.lua` defaults",
    "N": "nst's own choice (not a reference)",
}

CONTENT_RESIZE = {
    "random-crop": "shorter side scaled to the image size (rounded), then a random square crop",
    "center-crop": "torchvision `Resize(S)` (shorter side S, longer side int(S*long/short)) then `CenterCrop(S)`",
    "squash": "the whole image resized to S x S (aspect ratio not kept)",
}
RESAMPLE = {
    "lanczos": "PIL LANCZOS when shrinking, BICUBIC when enlarging",
    "bilinear": "PIL BILINEAR (antialiased when shrinking), as torchvision's Resize on PIL images",
}
STYLE_RESIZE = {
    "shorter-side": "shorter side scaled to the style size",
    "longer-side": "longer side scaled to the style size",
    "square": "resized to style size x style size (pytorch/examples' utils.load_image)",
}
LISTING = {
    "recursive": "every image file under the folder, recursively, in sorted path order",
    "imagefolder": "torchvision ImageFolder: class subfolders in sorted order, each walked with sorted "
                   "os.walk; files directly in the folder are not part of it",
}
TO_FLOAT = {
    "direct": "uint8 to float32",
    "div255-mul255": "uint8 to float32, / 255, * 255 (ToTensor then mul(255); the same float32 rounding)",
}


@dataclass(frozen=True)
class TrainSettings:
    """Every value that defines a training run's objective, data pipeline and optimisation."""

    # loss network and objective
    vgg_weights: str = "imagenet"
    vgg_preprocessing: str = "torchvision"
    content_layer: str = "relu2_2"
    style_layers: tuple[str, ...] = STYLE_LAYERS
    content_weight: float = 1e5
    style_weight: float = 1e10
    tv_weight: float = 0.0
    tv_form: str = "mean-abs"
    # style targets: an int (pixels), "original" (the file's size) or "image" (the training image size)
    style_size: int | str = "image"
    style_resize: str = "shorter-side"
    # content data
    image_size: int = 256
    content_resize: str = "random-crop"
    resample: str = "lanczos"
    jpeg_draft: bool = True
    exif_orientation: bool = True
    listing: str = "recursive"
    shuffle: bool = True
    drop_last: bool = True
    #: content images with a shorter side below this are skipped; None: image_size // 2; 0: none
    min_image_side: int | None = None
    to_float: str = "direct"
    # optimisation
    batch_size: int = 4
    lr: float = 1e-3
    epochs: int | None = 2
    steps: int | None = None
    seed: int = 42
    #: mixed precision; None: on for CUDA (bf16 on compute capability >= 8.0, else fp16 + grad scaler)
    amp: bool | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "style_layers", tuple(self.style_layers))

    @property
    def loss_weights(self) -> LossWeights:
        return LossWeights(content=self.content_weight, style=self.style_weight, tv=self.tv_weight,
                           content_layer=self.content_layer, style_layers=self.style_layers,
                           tv_form=self.tv_form)  # type: ignore[arg-type]

    @property
    def effective_min_image_side(self) -> int:
        return self.image_size // 2 if self.min_image_side is None else self.min_image_side

    @property
    def effective_style_size(self) -> int | None:
        """Pixels for the style image's resize, or None for its original size."""
        if self.style_size == "original":
            return None
        if self.style_size == "image":
            return self.image_size
        return int(self.style_size)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["style_layers"] = list(self.style_layers)
        return d

    def validate(self) -> None:
        """Raise :class:`UsageError` naming the setting for any value outside its range."""
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise UsageError(msg)

        def one_of(name: str, table: Mapping[str, str]) -> None:
            need(getattr(self, name) in table,
                 f"{name.replace('_', '-')} {getattr(self, name)!r}: expected one of {', '.join(table)}.")

        need(self.image_size >= 16 and self.image_size % 4 == 0,
             f"--image-size must be a multiple of 4 and at least 16, got {self.image_size}.")
        need(self.style_size in ("original", "image") or (isinstance(self.style_size, int)
                                                          and not isinstance(self.style_size, bool)
                                                          and self.style_size >= 16),
             f"--style-size must be at least 16 pixels or 'original', got {self.style_size!r}.")
        need(self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}.")
        need(self.lr > 0, f"--lr must be positive, got {self.lr}.")
        need(not (self.epochs is not None and self.steps is not None),
             f"give --epochs or --steps, not both (got --epochs {self.epochs} --steps {self.steps}).")
        need(self.epochs is None or self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}.")
        need(self.steps is None or self.steps >= 1, f"--steps must be at least 1, got {self.steps}.")
        need(self.min_image_side is None or self.min_image_side >= 0,
             f"--min-image-side must be >= 0, got {self.min_image_side}.")
        need(min(self.content_weight, self.style_weight, self.tv_weight) >= 0,
             f"loss weights must be >= 0, got content {self.content_weight:g}, style {self.style_weight:g}, "
             f"tv {self.tv_weight:g}.")
        need(bool(self.style_layers), "at least one style layer is needed.")
        for name in (self.content_layer, *self.style_layers):
            layer_index("vgg16", name)  # raises UsageError naming the layer
            need(layer_index("vgg16", name) <= layer_index("vgg16", "relu4_3"),
                 f"layer {name!r} is deeper than relu4_3, where the VGG-16 loss network ends.")
        one_of("vgg_preprocessing", PREPROCESSING)
        one_of("tv_form", TV_FORMS)
        one_of("style_resize", STYLE_RESIZE)
        one_of("content_resize", CONTENT_RESIZE)
        one_of("resample", RESAMPLE)
        one_of("listing", LISTING)
        one_of("to_float", TO_FLOAT)


@dataclass(frozen=True)
class TrainRecipe:
    name: str
    summary: str
    settings: TrainSettings
    #: setting name -> source key(s) of :data:`SOURCES` and a note
    sources: Mapping[str, str] = field(default_factory=dict)


TRAIN_RECIPES: dict[str, TrainRecipe] = {}


def register_train_recipe(fn: Callable[[], TrainRecipe]) -> Callable[[], TrainRecipe]:
    """Decorator: register the recipe a function builds under its ``name``."""
    recipe = fn()
    missing = {f.name for f in dataclasses.fields(TrainSettings)} - set(recipe.sources)
    if missing:
        raise ValueError(f"recipe {recipe.name!r} does not give the source of {sorted(missing)}")
    TRAIN_RECIPES[recipe.name] = recipe
    return fn


@register_train_recipe
def _nst() -> TrainRecipe:
    return TrainRecipe(
        name="nst",
        summary="nst's own pipeline: pytorch/examples' objective with random crops, shuffling and AMP on CUDA",
        settings=TrainSettings(),
        sources={
            "vgg_weights": "E", "vgg_preprocessing": "E", "content_layer": "E, P", "style_layers": "E, P",
            "content_weight": "E", "style_weight": "E", "tv_weight": "E", "tv_form": "N (unused at weight 0)",
            "style_size": "N", "style_resize": "N", "image_size": "E, P", "content_resize": "N",
            "resample": "N", "jpeg_draft": "N", "exif_orientation": "N", "listing": "N", "shuffle": "N",
            "drop_last": "N", "min_image_side": "N", "to_float": "N", "batch_size": "E, P", "lr": "E, P",
            "epochs": "E", "steps": "E", "seed": "E", "amp": "N",
        })


@register_train_recipe
def _pytorch_examples() -> TrainRecipe:
    return TrainRecipe(
        name="pytorch-examples",
        summary="pytorch/examples fast_neural_style train() exactly: objective, data pipeline, order, fp32",
        settings=TrainSettings(
            style_size="original", style_resize="square", content_resize="center-crop", resample="bilinear",
            jpeg_draft=False, exif_orientation=False, listing="imagefolder", shuffle=False, drop_last=False,
            min_image_side=0, to_float="div255-mul255", amp=False),
        sources={
            "vgg_weights": "E (VGG16_Weights.IMAGENET1K_V1)", "vgg_preprocessing": "E (normalize_batch)",
            "content_layer": "E", "style_layers": "E (vgg.py slices)", "content_weight": "E",
            "style_weight": "E", "tv_weight": "E (no TV term)", "tv_form": "- (no TV term)",
            "style_size": "E (--style-size default: the original size)",
            "style_resize": "E (utils.load_image, when --style-size is given)",
            "image_size": "E", "content_resize": "E, TV", "resample": "TV (Resize default)",
            "jpeg_draft": "TV (pil_loader decodes fully)", "exif_orientation": "TV (pil_loader ignores EXIF)",
            "listing": "E, TV (ImageFolder)", "shuffle": "E (DataLoader without shuffle)",
            "drop_last": "E, TV (DataLoader default)", "min_image_side": "E (no image skipped)",
            "to_float": "E, TV (ToTensor, mul(255))", "batch_size": "E", "lr": "E", "epochs": "E",
            "steps": "E", "seed": "E (TransformerNet built first after seeding)", "amp": "E (fp32)",
        })


@register_train_recipe
def _johnson2016() -> TrainRecipe:
    return TrainRecipe(
        name="johnson2016",
        summary="Johnson et al. 2016 as published (train.lua where the paper is silent), Caffe VGG-16",
        settings=TrainSettings(
            vgg_weights="caffe", vgg_preprocessing="caffe", content_weight=1.0, style_weight=5.0,
            tv_weight=1e-6, tv_form="half-sum-sq", style_size=256, style_resize="longer-side",
            content_resize="squash", resample="bilinear", jpeg_draft=False, exif_orientation=False,
            shuffle=False, drop_last=False, min_image_side=0, to_float="div255-mul255", epochs=None,
            steps=40_000, amp=False),
        sources={
            "vgg_weights": "L (models/vgg16.t7), V (vgg16-00b39a1b.pth)",
            "vgg_preprocessing": "L (preprocess.vgg), V", "content_layer": "P (train.lua's default is "
            "relu3_3)", "style_layers": "P, L", "content_weight": "L (the paper gives no value)",
            "style_weight": "L (per layer; the paper gives no value)",
            "tv_weight": "P (1e-6 to 1e-4 per style), L (default 1e-6)",
            "tv_form": "L (TotalVariation.lua, summed over the batch)",
            "style_size": "L (-style_image_size)", "style_resize": "L (image.scale: the longer side)",
            "image_size": "P, D", "content_resize": "P, D (make_style_dataset.py)",
            "resample": "D (imresize's bilinear)", "jpeg_draft": "D", "exif_orientation": "D (imread)",
            "listing": "N (D lists one folder in os.listdir order)", "shuffle": "L (DataLoader.lua reads in order)",
            "drop_last": "L (partial batch, then wraps)", "min_image_side": "D (every image resized)",
            "to_float": "L (div(255), then preprocess mul(255))", "batch_size": "P, L", "lr": "P, L",
            "epochs": "P (roughly two epochs)", "steps": "P, L (40,000 iterations)", "seed": "N",
            "amp": "P (Torch7/cuDNN float32)",
        })


def get_train_recipe(name: str) -> TrainRecipe:
    try:
        return TRAIN_RECIPES[name]
    except KeyError:
        raise UsageError(f"--recipe {name!r}: unknown training recipe; expected one of "
                         f"{', '.join(TRAIN_RECIPES)}.") from None


def resolve_train_settings(recipe: str | TrainRecipe, overrides: Mapping[str, Any] | None = None
                           ) -> tuple[TrainRecipe, TrainSettings]:
    """The recipe's settings with ``overrides`` (setting name -> value; None values ignored) applied.

    Giving ``steps`` clears the recipe's ``epochs`` and vice versa; naming an unknown setting is a UsageError.
    """
    rec = get_train_recipe(recipe) if isinstance(recipe, str) else recipe
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    known = {f.name for f in dataclasses.fields(TrainSettings)}
    unknown = sorted(set(given) - known)
    if unknown:
        raise UsageError(f"unknown training setting(s) {unknown}; known: {', '.join(sorted(known))}.")
    if "steps" in given and "epochs" not in given:
        given["epochs"] = None
    elif "epochs" in given and "steps" not in given:
        given["steps"] = None
    if "vgg_weights" in given and "vgg_preprocessing" not in given:
        # a named weight set brings its own preprocessing; a path keeps the recipe's
        from .vgg import KNOWN_WEIGHTS

        known_weights = KNOWN_WEIGHTS.get(("vgg16", str(given["vgg_weights"])))
        if known_weights is not None:
            given["vgg_preprocessing"] = known_weights.preprocessing
    settings = dataclasses.replace(rec.settings, **given)
    settings.validate()
    return rec, settings


# --------------------------------------------------------------------------------------------- Gatys


@dataclass(frozen=True)
class GatysSettings:
    """Every value that defines a Gatys et al. optimisation."""

    vgg_arch: str = "vgg16"
    vgg_weights: str = "imagenet"
    vgg_preprocessing: str = "torchvision"
    content_layer: str = "relu2_2"
    style_layers: tuple[str, ...] = STYLE_LAYERS
    content_weight: float = 1e5
    style_weight: float = 1e10
    tv_weight: float = 0.0
    tv_form: str = "mean-abs"
    optimizer: str = "lbfgs"
    iterations: int = 300
    #: None: 1.0 for L-BFGS, 10 for Adam
    lr: float | None = None
    lbfgs_history: int = 100
    init: str = "content"
    #: the content image's size in pixels along ``size_side``; 0 keeps the file's size
    image_size: int = 512
    size_side: str = "shorter"
    #: the style image's size; None: the same as ``image_size`` (neural-style's style_scale 1.0)
    style_size: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "style_layers", tuple(self.style_layers))

    @property
    def loss_weights(self) -> LossWeights:
        return LossWeights(content=self.content_weight, style=self.style_weight, tv=self.tv_weight,
                           content_layer=self.content_layer, style_layers=self.style_layers,
                           tv_form=self.tv_form)  # type: ignore[arg-type]

    @property
    def deepest_layer(self) -> str:
        return max((self.content_layer, *self.style_layers), key=lambda n: layer_index(self.vgg_arch, n))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["style_layers"] = list(self.style_layers)
        return d

    def validate(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise UsageError(msg)

        need(self.vgg_arch in CONFIGS, f"VGG architecture {self.vgg_arch!r}: expected one of {sorted(CONFIGS)}.")
        for name in (self.content_layer, *self.style_layers):
            layer_index(self.vgg_arch, name)
        need(self.optimizer in ("lbfgs", "adam"), f"--optimizer {self.optimizer!r}: expected lbfgs or adam.")
        need(self.init in ("content", "noise"), f"--init {self.init!r}: expected content or noise.")
        need(self.iterations >= 1, f"--iterations must be at least 1, got {self.iterations}.")
        need(self.lr is None or self.lr > 0, f"--lr must be positive, got {self.lr}.")
        need(self.image_size >= 0, f"--image-size must be >= 0 (0 keeps the file's size), got {self.image_size}.")
        need(self.style_size is None or self.style_size >= 1, f"--style-size must be >= 1, got {self.style_size}.")
        need(self.size_side in ("shorter", "longer"), f"size side {self.size_side!r}: expected shorter or longer.")
        need(min(self.content_weight, self.style_weight, self.tv_weight) >= 0, "loss weights must be >= 0.")
        need(self.tv_form in TV_FORMS, f"tv form {self.tv_form!r}: expected one of {', '.join(TV_FORMS)}.")
        need(self.vgg_preprocessing in PREPROCESSING,
             f"VGG preprocessing {self.vgg_preprocessing!r}: expected one of {', '.join(PREPROCESSING)}.")


@dataclass(frozen=True)
class GatysRecipe:
    name: str
    summary: str
    settings: GatysSettings
    sources: Mapping[str, str] = field(default_factory=dict)


GATYS_RECIPES: dict[str, GatysRecipe] = {}


def register_gatys_recipe(fn: Callable[[], GatysRecipe]) -> Callable[[], GatysRecipe]:
    recipe = fn()
    missing = {f.name for f in dataclasses.fields(GatysSettings)} - set(recipe.sources)
    if missing:
        raise ValueError(f"recipe {recipe.name!r} does not give the source of {sorted(missing)}")
    GATYS_RECIPES[recipe.name] = recipe
    return fn


@register_gatys_recipe
def _johnson2016_baseline() -> GatysRecipe:
    return GatysRecipe(
        name="johnson2016-baseline",
        summary="the feed-forward network's own VGG-16 objective optimised per image (Johnson et al., Table 1)",
        settings=GatysSettings(),
        sources={
            "vgg_arch": "P (the loss network of the comparison)", "vgg_weights": "E", "vgg_preprocessing": "E",
            "content_layer": "E, P", "style_layers": "E, P", "content_weight": "E", "style_weight": "E",
            "tv_weight": "E", "tv_form": "N (unused at weight 0)", "optimizer": "P (L-BFGS)",
            "iterations": "N (P times 100, 300 and 500)", "lr": "N (1.0: torch's and optim.lbfgs' default)",
            "lbfgs_history": "N", "init": "N", "image_size": "N (P times 256 to 1024)", "size_side": "N",
            "style_size": "N", "seed": "N",
        })


@register_gatys_recipe
def _gatys2016() -> GatysRecipe:
    return GatysRecipe(
        name="gatys2016",
        summary="Gatys et al. 2016: VGG-19, relu4_2 / relu1_1..relu5_1, L-BFGS, jcjohnson/neural-style weights",
        settings=GatysSettings(
            vgg_arch="vgg19", vgg_weights="caffe", vgg_preprocessing="caffe", content_layer="relu4_2",
            style_layers=("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"), content_weight=5.0,
            style_weight=100.0, tv_weight=1e-3, tv_form="half-sum-sq", iterations=1000, lr=1.0, init="noise",
            image_size=512, size_side="longer"),
        sources={
            "vgg_arch": "G, S", "vgg_weights": "S (VGG_ILSVRC_19_layers.caffemodel), V (vgg19-d01eb7cb.pth)",
            "vgg_preprocessing": "S (preprocess; S scales by 256, nst by 255), V",
            "content_layer": "G (conv4_2, after its ReLU), S", "style_layers": "G, S",
            "content_weight": "S (-content_weight 5)", "style_weight": "S (-style_weight 100, per layer)",
            "tv_weight": "S (-tv_weight 1e-3)", "tv_form": "S (TVLoss)", "optimizer": "G, S",
            "iterations": "S (-num_iterations 1000)", "lr": "S (optim.lbfgs learningRate 1)",
            "lbfgs_history": "S (optim.lbfgs nCorrection 100)",
            "init": "G (white noise; S starts from the mean pixel with 0.001 noise)",
            "image_size": "S (-image_size 512)", "size_side": "S (image.scale: the longer side)",
            "style_size": "S (-style_scale 1.0)", "seed": "N",
        })


def get_gatys_recipe(name: str) -> GatysRecipe:
    try:
        return GATYS_RECIPES[name]
    except KeyError:
        raise UsageError(f"--recipe {name!r}: unknown Gatys recipe; expected one of "
                         f"{', '.join(GATYS_RECIPES)}.") from None


def resolve_gatys_settings(recipe: str | GatysRecipe, overrides: Mapping[str, Any] | None = None
                           ) -> tuple[GatysRecipe, GatysSettings]:
    rec = get_gatys_recipe(recipe) if isinstance(recipe, str) else recipe
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    known = {f.name for f in dataclasses.fields(GatysSettings)}
    unknown = sorted(set(given) - known)
    if unknown:
        raise UsageError(f"unknown Gatys setting(s) {unknown}; known: {', '.join(sorted(known))}.")
    if "vgg_weights" in given and "vgg_preprocessing" not in given:
        from .vgg import KNOWN_WEIGHTS

        arch = given.get("vgg_arch", rec.settings.vgg_arch)
        known_weights = KNOWN_WEIGHTS.get((arch, str(given["vgg_weights"])))
        if known_weights is not None:
            given["vgg_preprocessing"] = known_weights.preprocessing
    settings = dataclasses.replace(rec.settings, **given)
    settings.validate()
    return rec, settings


# --------------------------------------------------------------------------------------------- docs


def _number(v: float) -> str:
    """1e5 rather than 100000, 1e-06 as 1e-6; other numbers as %g."""
    if v and (abs(v) >= 1e4 or abs(v) < 1e-3):
        mantissa, exponent = f"{v:e}".split("e")
        m = mantissa.rstrip("0").rstrip(".")
        return f"{'' if m == '1' else m}{'' if m == '1' else 'x'}1e{int(exponent)}".replace("x1e", "e")
    return f"{v:g}"


def _cell(value: Any) -> str:
    if isinstance(value, tuple):
        return ", ".join(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "-"
    if isinstance(value, float):
        return _number(value)
    return str(value)


def _table(recipes: Mapping[str, Any], fields: list[str]) -> list[str]:
    names = list(recipes)
    lines = ["| setting | " + " | ".join(f"`{n}`" for n in names) + " |",
             "|---|" + "---|" * len(names)]
    for f in fields:
        cells = []
        for n in names:
            r = recipes[n]
            cells.append(f"`{_cell(getattr(r.settings, f))}` &mdash; {r.sources[f]}")
        lines.append(f"| `{f}` | " + " | ".join(cells) + " |")
    return lines


def recipes_markdown() -> str:
    """The documentation tables: recipe x every setting (value and source), then the source keys.

    docs/train.md embeds exactly this text (a test keeps them equal)."""
    train_fields = [f.name for f in dataclasses.fields(TrainSettings)]
    gatys_fields = [f.name for f in dataclasses.fields(GatysSettings)]
    lines = ["Training recipes (`nst-train --recipe NAME`), each cell *value &mdash; source* (keys below):", ""]
    lines += _table(TRAIN_RECIPES, train_fields)
    lines += ["", "Gatys recipes (`nst-gatys --recipe NAME`):", ""]
    lines += _table(GATYS_RECIPES, gatys_fields)
    lines += ["", "Sources:", ""]
    lines += [f"* **{k}**: {v}" for k, v in SOURCES.items()]
    return "\n".join(lines) + "\n"
