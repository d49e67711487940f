"""The training input pipeline: a folder of content images, resized and cropped, in a resumable order.

How an image becomes a training crop is an :class:`ImagePipeline` (a recipe's data settings): nst's own
random crops, torchvision's ``Resize`` + ``CenterCrop`` exactly as pytorch/examples uses them, or the squash
to a square of Johnson et al. The folder is listed recursively or as torchvision's ``ImageFolder``.

Order and crops are pure functions of ``(seed, epoch, position)``: the shuffle (when on) is torch's
``DistributedSampler`` (seeded with ``seed + epoch``) and each crop offset comes from a generator seeded with
``(seed, epoch, index)``, never from a global random state. A resumed run therefore replays exactly the
batches an uninterrupted one would have seen, whatever the number of loader workers.

Images are checked once up front by reading their headers (cheap, even for COCO's 118k files): files that
do not decode or whose shorter side is below ``min_side`` are skipped and counted. A file that passes the
header check but fails to decode later (a truncated JPEG) is replaced by the next readable image of the
data set, so every batch stays full and distributed ranks stay in step; those are counted too.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from nst_runtime.errors import ImageError, UsageError
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm.auto import tqdm

from .imageio import pil_to_tensor

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})

__all__ = [
    "IMAGE_EXTENSIONS",
    "ContentImages",
    "EpochSampler",
    "ImagePipeline",
    "ScanReport",
    "build_loader",
    "find_images",
    "images_to_float",
    "load_crop",
    "scan_images",
]


@dataclass(frozen=True)
class ImagePipeline:
    """How one content file becomes a uint8 ``3 x S x S`` crop (see :mod:`nst_train.recipes` for the values)."""

    image_size: int = 256
    #: "random-crop" (nst), "center-crop" (torchvision Resize + CenterCrop), "squash" (resize to S x S)
    content_resize: str = "random-crop"
    #: "lanczos" (LANCZOS down, BICUBIC up) or "bilinear" (PIL BILINEAR, as torchvision's Resize on PIL)
    resample: str = "lanczos"
    #: decode JPEGs at a reduced size when much larger than the crop (faster, slightly different pixels)
    jpeg_draft: bool = True
    #: apply the EXIF orientation (upright photos); torchvision's pil_loader does not
    exif_orientation: bool = True


def _check_root(root: Path) -> None:
    if not root.is_dir():
        raise UsageError(f"{root}: content directory not found. Pass --content-dir with a folder of images "
                         "(e.g. COCO train2014, or one made by nst_train.samples.write_sample_content).")


def _has_image_extension(name: str) -> bool:
    # torchvision's has_file_allowed_extension: lower-cased name ends with one of the extensions
    return name.lower().endswith(tuple(IMAGE_EXTENSIONS))


def _imagefolder_listing(root: Path) -> list[Path]:
    """The files torchvision's ``ImageFolder(root)`` yields, in its order (``make_dataset``)."""
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    loose = [entry.name for entry in os.scandir(root) if entry.is_file() and _has_image_extension(entry.name)]
    if not classes:
        raise UsageError(
            f"{root}: the pytorch-examples recipe reads --content-dir as torchvision's ImageFolder, which takes "
            f"images from subfolders only, and this folder has none ({len(loose)} image files directly in it). "
            f"Pass the parent folder (as pytorch/examples' --dataset, e.g. coco/ for coco/train2014/), or move "
            "the images into a subfolder.")
    if loose:
        log.warning("%s: %d image files directly in the folder are not part of an ImageFolder and are not used "
                    "(as in pytorch/examples); images must sit in subfolders", root, len(loose))
    out: list[Path] = []
    for cls in classes:
        for dirpath, _dirs, files in sorted(os.walk(root / cls, followlinks=True)):
            out.extend(Path(dirpath) / name for name in sorted(files) if _has_image_extension(name))
    return out


def find_images(root: str | os.PathLike[str], listing: str = "recursive") -> list[Path]:
    """The content files under ``root``: ``"recursive"`` (every file with an image extension, in sorted path
    order) or ``"imagefolder"`` (torchvision ``ImageFolder``'s files and order)."""
    root = Path(root)
    _check_root(root)
    if listing == "imagefolder":
        return _imagefolder_listing(root)
    if listing != "recursive":
        raise UsageError(f"listing {listing!r}: expected recursive or imagefolder.")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


@dataclass(frozen=True)
class ScanReport:
    """Result of :func:`scan_images`: the usable images and the skipped ones, by reason."""

    usable: tuple[Path, ...]
    unreadable: tuple[Path, ...]
    too_small: tuple[Path, ...]

    @property
    def skipped(self) -> int:
        return len(self.unreadable) + len(self.too_small)


def _header_size(path: Path) -> tuple[int, int] | None:
    try:
        with Image.open(path) as img:
            w, h = img.size
            orientation = img.getexif().get(0x0112, 1)
        return (h, w) if orientation in (5, 6, 7, 8) else (w, h)
    except Exception:  # any decoder failure means: not usable
        return None


def scan_images(paths: Sequence[Path], *, min_side: int, workers: int = 8, progress: bool = False) -> ScanReport:
    """Read every header (in threads); sort files into usable, unreadable and smaller than ``min_side``."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        sizes = list(tqdm(pool.map(_header_size, paths), total=len(paths), desc="checking images",
                          unit="img", disable=not progress or len(paths) < 1000, leave=False))
    usable, unreadable, small = [], [], []
    for path, size in zip(paths, sizes, strict=True):
        if size is None:
            unreadable.append(path)
        elif min(size) < min_side:
            small.append(path)
        else:
            usable.append(path)
    return ScanReport(usable=tuple(usable), unreadable=tuple(unreadable), too_small=tuple(small))


def _decode(path: Path, pipeline: ImagePipeline) -> Image.Image:
    with Image.open(path) as img:
        if pipeline.jpeg_draft:
            w, h = img.size
            scale = pipeline.image_size / min(w, h)
            img.draft("RGB", (max(1, int(w * scale)), max(1, int(h * scale))))  # JPEG: decode at reduced size
        if pipeline.exif_orientation:
            img = ImageOps.exif_transpose(img)
        return img.convert("RGB")


def torchvision_resize_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) of torchvision's ``Resize(size)``: shorter side ``size``, longer ``int(size*long/short)``."""
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    return (new_short, new_long) if width <= height else (new_long, new_short)


def load_crop(path: Path, *, image_size: int, rng: np.random.Generator | None,
              pipeline: ImagePipeline | None = None) -> torch.Tensor:
    """Decode and make one square training image (see :class:`ImagePipeline`; ``image_size`` wins over the
    pipeline's). ``random-crop`` crops at random with ``rng`` and in the centre without one.

    Returns uint8 3 x image_size x image_size (uint8 keeps the worker-to-trainer traffic small)."""
    pipeline = dataclasses.replace(pipeline or ImagePipeline(), image_size=image_size)
    img = _decode(path, pipeline)
    w, h = img.size
    if pipeline.resample == "bilinear":
        def resize(im: Image.Image, size: tuple[int, int]) -> Image.Image:
            return im if im.size == size else im.resize(size, Image.Resampling.BILINEAR)
    else:
        def resize(im: Image.Image, size: tuple[int, int]) -> Image.Image:
            if im.size == size:
                return im
            up = size[0] * size[1] > im.size[0] * im.size[1]
            return im.resize(size, Image.Resampling.BICUBIC if up else Image.Resampling.LANCZOS)

    if pipeline.content_resize == "squash":
        return pil_to_tensor(resize(img, (image_size, image_size)))
    if pipeline.content_resize == "center-crop":
        img = resize(img, torchvision_resize_size(w, h, image_size))
        w, h = img.size
        # torchvision's center_crop: int(round(...)), Python's round (half to even)
        top, left = round((h - image_size) / 2.0), round((w - image_size) / 2.0)
    elif pipeline.content_resize == "random-crop":
        scale = image_size / min(w, h)
        img = resize(img, (max(1, round(w * scale)), max(1, round(h * scale))))
        w, h = img.size
        if rng is None:
            left, top = (w - image_size) // 2, (h - image_size) // 2
        else:
            left, top = int(rng.integers(0, w - image_size + 1)), int(rng.integers(0, h - image_size + 1))
    else:
        raise UsageError(f"content resize {pipeline.content_resize!r}: expected random-crop, center-crop or squash.")
    return pil_to_tensor(img.crop((left, top, left + image_size, top + image_size)))


def images_to_float(images: torch.Tensor, to_float: str = "direct") -> torch.Tensor:
    """uint8 batches to float32 in [0, 255]; ``"div255-mul255"`` rounds as ``ToTensor`` then ``mul(255)``."""
    x = images.float()
    if to_float == "div255-mul255":
        return x.div(255).mul(255)
    return x


class ContentImages(Dataset):
    """Random ``image_size`` crops of a list of image files.

    Indexed by ``(epoch, index)`` (what :class:`EpochSampler` yields) so that the crop of an image depends only
    on the seed, the epoch and the index. ``dataset[(epoch, i)]`` returns ``(uint8 3xSxS, failures)`` where
    ``failures`` counts files that failed to decode and were replaced by the next readable one.
    """

    def __init__(self, paths: Sequence[Path], *, image_size: int, seed: int = 0,
                 pipeline: ImagePipeline | None = None) -> None:
        if not paths:
            raise UsageError("no usable content images; expected at least one image file.")
        self.paths = list(paths)
        self.image_size = image_size
        self.seed = seed
        self.pipeline = dataclasses.replace(pipeline or ImagePipeline(), image_size=image_size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: tuple[int, int] | int) -> tuple[torch.Tensor, int]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        n = len(self.paths)
        for attempt in range(n):
            i = (index + attempt) % n
            rng = np.random.default_rng([self.seed, epoch, i])
            try:
                return load_crop(self.paths[i], image_size=self.image_size, rng=rng,
                                 pipeline=self.pipeline), attempt
            except Exception as exc:  # a truncated or corrupt file that passed the header check
                log.warning("skipping unreadable image %s (%s: %s)", self.paths[i], type(exc).__name__, exc)
        raise ImageError(f"none of the {n} content images could be decoded; check the --content-dir files.")


class EpochSampler(DistributedSampler):
    """torch's ``DistributedSampler`` that yields ``(epoch, index)`` and can start part-way into an epoch.

    Without a process group pass ``num_replicas=1, rank=0``. :meth:`set_position` selects the epoch and how
    many batches of it were already consumed (for ``--resume``). ``shuffle=False`` keeps the file order (as a
    plain ``DataLoader`` does); ``drop_last`` says whether the last partial batch of an epoch is dropped.
    """

    def __init__(self, dataset: Dataset, *, num_replicas: int, rank: int, seed: int, batch_size: int,
                 shuffle: bool = True, drop_last: bool = True) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=False)
        self.batch_size = batch_size
        self.drop_last_batch = drop_last
        self.start = 0

    @property
    def batches_per_epoch(self) -> int:
        if self.drop_last_batch:
            return self.num_samples // self.batch_size
        return -(-self.num_samples // self.batch_size)

    def set_position(self, epoch: int, batch: int) -> None:
        self.set_epoch(epoch)
        self.start = min(batch * self.batch_size, self.num_samples)

    def __len__(self) -> int:
        return self.num_samples - self.start

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        indices = list(super().__iter__())[self.start:]
        return iter([(self.epoch, int(i)) for i in indices])


def collate(items: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, int]:
    """Stack the crops; sum the decode failures."""
    return torch.stack([img for img, _ in items]), sum(f for _, f in items)


def _worker_init(_worker_id: int) -> None:
    # Ctrl-C is the trainer's to handle (it saves a resumable state); workers must not die on it first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def build_loader(dataset: ContentImages, sampler: EpochSampler, *, batch_size: int, num_workers: int,
                 pin_memory: bool = False, seed: int = 0) -> DataLoader:
    """A DataLoader over ``sampler``; the last partial batch of an epoch is dropped when the sampler says so."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate,
        drop_last=sampler.drop_last_batch,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        worker_init_fn=_worker_init if num_workers > 0 else None,
        # its own generator, so creating an iterator never draws from the global torch RNG
        generator=torch.Generator().manual_seed(seed),
        prefetch_factor=4 if num_workers > 0 else None,
    )
