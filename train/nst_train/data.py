"""The training input pipeline: a folder of content images, resized and randomly cropped, in a resumable order.

Order and crops are pure functions of ``(seed, epoch, position)``: the shuffle is torch's
``DistributedSampler`` (seeded with ``seed + epoch``) and each crop offset comes from a generator seeded with
``(seed, epoch, index)``, never from a global random state. A resumed run therefore replays exactly the
batches an uninterrupted one would have seen, whatever the number of loader workers.

Images are checked once up front by reading their headers (cheap, even for COCO's 118k files): files that
do not decode or whose shorter side is below ``min_side`` are skipped and counted. A file that passes the
header check but fails to decode later (a truncated JPEG) is replaced by the next readable image of the
data set, so every batch stays full and distributed ranks stay in step; those are counted too.
"""

from __future__ import annotations

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

from .imageio import pil_to_tensor, resize_shorter_side

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})

__all__ = [
    "IMAGE_EXTENSIONS",
    "ContentImages",
    "EpochSampler",
    "ScanReport",
    "build_loader",
    "find_images",
    "load_crop",
    "scan_images",
]


def find_images(root: str | os.PathLike[str]) -> list[Path]:
    """Every file under ``root`` (recursively) with an image extension, in sorted order."""
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"{root}: content directory not found. Pass --content-dir with a folder of images "
                         "(e.g. COCO train2014, or one made by nst_train.samples.write_sample_content).")
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


def load_crop(path: Path, *, image_size: int, rng: np.random.Generator | None) -> torch.Tensor:
    """Decode, scale the shorter side to ``image_size``, crop a square (random with ``rng``, else centred).

    Returns uint8 3 x image_size x image_size (uint8 keeps the worker-to-trainer traffic small)."""
    with Image.open(path) as img:
        w, h = img.size
        scale = image_size / min(w, h)
        img.draft("RGB", (max(1, int(w * scale)), max(1, int(h * scale))))  # JPEG: decode at reduced size
        img = ImageOps.exif_transpose(img).convert("RGB")
    img = resize_shorter_side(img, image_size)
    w, h = img.size
    if rng is None:
        left, top = (w - image_size) // 2, (h - image_size) // 2
    else:
        left, top = int(rng.integers(0, w - image_size + 1)), int(rng.integers(0, h - image_size + 1))
    return pil_to_tensor(img.crop((left, top, left + image_size, top + image_size)))


class ContentImages(Dataset):
    """Random ``image_size`` crops of a list of image files.

    Indexed by ``(epoch, index)`` (what :class:`EpochSampler` yields) so that the crop of an image depends only
    on the seed, the epoch and the index. ``dataset[(epoch, i)]`` returns ``(uint8 3xSxS, failures)`` where
    ``failures`` counts files that failed to decode and were replaced by the next readable one.
    """

    def __init__(self, paths: Sequence[Path], *, image_size: int, seed: int = 0) -> None:
        if not paths:
            raise UsageError("no usable content images; expected at least one image file.")
        self.paths = list(paths)
        self.image_size = image_size
        self.seed = seed

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: tuple[int, int] | int) -> tuple[torch.Tensor, int]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        n = len(self.paths)
        for attempt in range(n):
            i = (index + attempt) % n
            rng = np.random.default_rng([self.seed, epoch, i])
            try:
                return load_crop(self.paths[i], image_size=self.image_size, rng=rng), attempt
            except Exception as exc:  # a truncated or corrupt file that passed the header check
                log.warning("skipping unreadable image %s (%s: %s)", self.paths[i], type(exc).__name__, exc)
        raise ImageError(f"none of the {n} content images could be decoded; check the --content-dir files.")


class EpochSampler(DistributedSampler):
    """torch's ``DistributedSampler`` that yields ``(epoch, index)`` and can start part-way into an epoch.

    Without a process group pass ``num_replicas=1, rank=0``. :meth:`set_position` selects the epoch and how
    many batches of it were already consumed (for ``--resume``).
    """

    def __init__(self, dataset: Dataset, *, num_replicas: int, rank: int, seed: int, batch_size: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.batch_size = batch_size
        self.start = 0

    @property
    def batches_per_epoch(self) -> int:
        return self.num_samples // self.batch_size

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
    """A DataLoader of full batches (the last partial batch of an epoch is dropped)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate,
        drop_last=True,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        worker_init_fn=_worker_init if num_workers > 0 else None,
        # its own generator, so creating an iterator never draws from the global torch RNG
        generator=torch.Generator().manual_seed(seed),
        prefetch_factor=4 if num_workers > 0 else None,
    )
