"""The parity gate: run an exported ONNX file through ONNX Runtime and compare it with the PyTorch FP32 model.

Both sides produce uint8 NHWC images (the deployment contract), so the numbers are in the units a user sees:
the largest absolute difference in uint8 levels, the mean, and the PSNR in dB. Every image is checked, every
failure is collected, then one :class:`ParityError` lists them all.

The tolerances live here and nowhere else (:class:`ParityTolerance`).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from nst_runtime.errors import ParityError

log = logging.getLogger(__name__)

#: (N, H, W) of the generated test batches: a multiple of 4, sizes that are not, and one near the minimum
DEFAULT_SHAPES: tuple[tuple[int, int, int], ...] = ((1, 64, 96), (2, 37, 50), (1, 9, 13))
DEFAULT_SEED = 20160327  # fixed: the same images on every run, so numbers are comparable between exports

Reference = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class ParityTolerance:
    """Pass/fail thresholds of the gate, per precision.

    FP32: the exported graph must reproduce PyTorch within ``fp32_max_abs_levels`` (rounding of values that
    land on .5 is the only expected difference). FP16: convolutions round to 11-bit mantissas, so single pixels
    may move by several levels; the gate is on PSNR over all pixels, ``fp16_min_psnr_db``.
    """

    fp32_max_abs_levels: int = 1
    fp16_min_psnr_db: float = 40.0
    #: optional extra bound for FP16 (None: PSNR only)
    fp16_max_abs_levels: int | None = None

    def __post_init__(self) -> None:
        if self.fp32_max_abs_levels < 0:
            raise ValueError(f"fp32_max_abs_levels must be >= 0, got {self.fp32_max_abs_levels}")
        if not self.fp16_min_psnr_db > 0:
            raise ValueError(f"fp16_min_psnr_db must be > 0 dB, got {self.fp16_min_psnr_db}")


DEFAULT_TOLERANCE = ParityTolerance()


@dataclass(frozen=True)
class ImageParity:
    shape: tuple[int, int, int, int]
    max_abs_levels: int
    mean_abs_levels: float
    #: None where the outputs are identical (infinite PSNR; JSON has no infinity)
    psnr_db: float | None
    #: share of pixel channels that differ at all
    differing_fraction: float


@dataclass(frozen=True)
class ParityReport:
    precision: str
    reference: str
    provider: str
    images: tuple[ImageParity, ...]
    tolerance: dict[str, Any]
    failures: tuple[str, ...] = field(default=())

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def max_abs_levels(self) -> int:
        return max(i.max_abs_levels for i in self.images)

    @property
    def min_psnr_db(self) -> float | None:
        """Worst PSNR over the images; None when every image matched exactly."""
        values = [i.psnr_db for i in self.images if i.psnr_db is not None]
        return min(values) if values else None

    def to_dict(self) -> dict[str, Any]:
        """The form stored in the sidecar's ``parity`` field."""
        return {
            "precision": self.precision,
            "reference": self.reference,
            "provider": self.provider,
            "max_abs_levels": self.max_abs_levels,
            "min_psnr_db": self.min_psnr_db,
            "passed": self.passed,
            "tolerance": self.tolerance,
            "images": [
                {**asdict(i), "shape": list(i.shape)} for i in self.images
            ],
        }

    def summary(self) -> str:
        psnr = "identical" if self.min_psnr_db is None else f"min PSNR {self.min_psnr_db:.1f} dB"
        return f"max |diff| {self.max_abs_levels} level(s), {psnr} over {len(self.images)} batches"


def parity_images(shapes: Sequence[tuple[int, int, int]] = DEFAULT_SHAPES, *,
                seed: int = DEFAULT_SEED) -> list[np.ndarray]:
    """Deterministic uint8 NHWC RGB batches that look a little like photographs.

    Smooth gradients and low-frequency waves (large flat regions, where InstanceNorm statistics matter),
    hard-edged rectangles (high contrast) and mild noise (texture), different per image.
    """
    rng = np.random.default_rng(seed)
    batches = []
    for n, h, w in shapes:
        imgs = np.empty((n, h, w, 3), dtype=np.uint8)
        yy, xx = np.meshgrid(np.linspace(0.0, 1.0, h), np.linspace(0.0, 1.0, w), indexing="ij")
        for i in range(n):
            img = np.empty((h, w, 3))
            for c in range(3):
                fx, fy, phase = rng.uniform(0.5, 4.0), rng.uniform(0.5, 4.0), rng.uniform(0, 2 * np.pi)
                a, b = rng.uniform(-1, 1, size=2)
                img[..., c] = 128 + 60 * np.sin(2 * np.pi * (fx * xx + fy * yy) + phase) + 50 * (a * xx + b * yy)
            for _ in range(int(rng.integers(1, 5))):
                y0, x0 = int(rng.integers(0, h)), int(rng.integers(0, w))
                y1, x1 = y0 + int(rng.integers(1, max(2, h // 2))), x0 + int(rng.integers(1, max(2, w // 2)))
                img[y0:y1, x0:x1] = rng.uniform(0, 255, size=3)
            img += rng.normal(0.0, 6.0, size=img.shape)
            imgs[i] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
        batches.append(imgs)
    return batches


def compare_images(candidate: np.ndarray, reference: np.ndarray) -> ImageParity:
    """Difference numbers between two uint8 arrays of the same shape."""
    if candidate.shape != reference.shape:
        raise ParityError(
            f"output shape {candidate.shape} differs from the reference {reference.shape}: the exported "
            "graph does not keep the input size. Re-export; if it persists, report it as a bug."
        )
    diff = np.abs(candidate.astype(np.int16) - reference.astype(np.int16))
    mse = float(np.mean(diff.astype(np.float64) ** 2))
    psnr = None if mse == 0.0 else 10.0 * math.log10(255.0**2 / mse)
    return ImageParity(
        shape=tuple(int(s) for s in candidate.shape),  # type: ignore[arg-type]
        max_abs_levels=int(diff.max()),
        mean_abs_levels=float(diff.mean()),
        psnr_db=psnr,
        differing_fraction=float(np.count_nonzero(diff)) / diff.size,
    )


def torch_reference(net: Any) -> Reference:
    """A reference function running a TransformerNet through the deploy wrapper in FP32 on CPU."""
    import torch

    from .wrapper import DeployWrapper

    wrapper = DeployWrapper(net).eval().float().cpu()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return wrapper(torch.from_numpy(x)).numpy()

    return run


def onnx_reference(onnx_path: str | os.PathLike[str]) -> Reference:
    """A reference function running another ONNX file (e.g. the FP32 export) through ONNX Runtime CPU."""
    session = _cpu_session(onnx_path)
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def _cpu_session(onnx_path: str | os.PathLike[str]) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # the FP16 graph on CPU logs a warning per inserted cast; not our problem
    return ort.InferenceSession(str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"])


def check_parity(onnx_path: str | os.PathLike[str], reference: Reference, *, precision: str,
                 reference_name: str, tolerance: ParityTolerance = DEFAULT_TOLERANCE,
                 shapes: Sequence[tuple[int, int, int]] = DEFAULT_SHAPES, raise_on_failure: bool = True,
                 label: str | None = None) -> ParityReport:
    """Run ``onnx_path`` on the fixed test images, compare with ``reference`` and apply the gate.

    Raises :class:`ParityError` listing every failing batch (unless ``raise_on_failure`` is False, in which case
    the report carries the failures).
    """
    if precision not in ("fp32", "fp16"):
        raise ValueError(f"precision must be 'fp32' or 'fp16', got {precision!r}")
    session = _cpu_session(onnx_path)
    input_name = session.get_inputs()[0].name
    results, failures = [], []
    for batch in parity_images(shapes):
        out = session.run(None, {input_name: batch})[0]
        r = compare_images(out, reference(batch))
        results.append(r)
        shape = "x".join(map(str, r.shape[:3]))
        psnr = "inf" if r.psnr_db is None else f"{r.psnr_db:.2f}"
        log.debug("parity %s %s: max %d levels, PSNR %s dB", precision, shape, r.max_abs_levels, psnr)
        if precision == "fp32" and r.max_abs_levels > tolerance.fp32_max_abs_levels:
            failures.append(f"{shape}: max |diff| {r.max_abs_levels} levels > {tolerance.fp32_max_abs_levels} "
                            f"(PSNR {psnr} dB)")
        if precision == "fp16":
            if r.psnr_db is not None and r.psnr_db < tolerance.fp16_min_psnr_db:
                failures.append(f"{shape}: PSNR {psnr} dB < {tolerance.fp16_min_psnr_db} dB "
                                f"(max |diff| {r.max_abs_levels} levels)")
            elif tolerance.fp16_max_abs_levels is not None and r.max_abs_levels > tolerance.fp16_max_abs_levels:
                failures.append(f"{shape}: max |diff| {r.max_abs_levels} levels > {tolerance.fp16_max_abs_levels}")
    report = ParityReport(precision=precision, reference=reference_name,
                          provider="onnxruntime CPUExecutionProvider", images=tuple(results),
                          tolerance=asdict(tolerance), failures=tuple(failures))
    if failures and raise_on_failure:
        what = label or os.fspath(onnx_path)
        fix = ("--fp32-tol / ParityTolerance.fp32_max_abs_levels" if precision == "fp32"
               else "--fp16-min-psnr / ParityTolerance.fp16_min_psnr_db")
        raise ParityError(
            f"{what} ({precision}) failed the parity gate against {reference_name} on "
            f"{len(failures)} of {len(results)} test batches: " + "; ".join(failures)
            + f". Nothing was written. Expected: within tolerance {asdict(tolerance)}. If the numbers are "
            f"acceptable for your use, loosen {fix}; otherwise export FP32 only or report the checkpoint."
        )
    return report
