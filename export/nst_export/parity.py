"""The parity gate: run an exported ONNX file through ONNX Runtime and compare it with the PyTorch FP32 model.

Both sides produce uint8 NHWC images (the deployment contract), so the numbers are in the units a user sees:
the largest absolute difference in uint8 levels, the mean, and the PSNR in dB. Every image is checked, every
failure is collected, then one :class:`ParityError` lists them all.

Agreement alone is not enough: a network with one NaN weight outputs NaN, which the uint8 cast turns into
black on *both* sides, and the two then agree perfectly. So the gate also fails

* values that are NaN or Inf **before the uint8 cast**: on the candidate, the graph is run once more with
  the network's raw output (the input of the clamp/round/transpose/cast tail, found by walking back from the
  graph output) exposed as an extra output; on a PyTorch reference (:func:`torch_reference`), a hook on the
  network returns its float output;
* degenerate outputs: an image of one colour (every channel spanning less than
  ``ParityTolerance.min_output_range_levels``) for a varied input, or images of a batch that come out
  identical although their inputs differ.

The tolerances live here and nowhere else (:class:`ParityTolerance`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
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
    #: an output image whose every channel spans fewer levels than this (over the varied test image) is
    #: degenerate: 2 fails a constant image and one that only flickers by a level
    min_output_range_levels: int = 2

    def __post_init__(self) -> None:
        if self.fp32_max_abs_levels < 0:
            raise ValueError(f"fp32_max_abs_levels must be >= 0, got {self.fp32_max_abs_levels}")
        if not self.fp16_min_psnr_db > 0:
            raise ValueError(f"fp16_min_psnr_db must be > 0 dB, got {self.fp16_min_psnr_db}")
        if self.min_output_range_levels < 0:
            raise ValueError(f"min_output_range_levels must be >= 0, got {self.min_output_range_levels}")


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
    #: the smallest, over the batch's images, of the widest channel range of the candidate's output
    output_range_levels: int = 255
    #: NaN/Inf values before the uint8 cast (candidate + reference); None where neither side's was visible
    nonfinite_before_cast: int | None = None


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


@dataclass(frozen=True)
class ReferenceOutput:
    """A reference's output: the uint8 NHWC images and, where the reference can see it, the network's float
    output before the clamp, round and uint8 cast (any layout; only its finiteness is checked)."""

    image: np.ndarray
    raw: np.ndarray | None = None


class TorchReference:
    """The PyTorch FP32 reference: a TransformerNet through the deploy wrapper on CPU.

    Calling it returns the uint8 images (a plain :data:`Reference`); :meth:`run` also returns the network's float
    output (captured by a forward hook), which the gate checks for NaN and Inf.
    """

    def __init__(self, net: Any, style: np.ndarray | None = None) -> None:
        from .wrapper import DeployWrapper

        self.wrapper = DeployWrapper(net).eval().float().cpu()
        #: a multi-style network's style weights (float32 [styles]); None for one style
        self.style = style
        self._raw: np.ndarray | None = None
        self.wrapper.net.register_forward_hook(self._capture)

    def _capture(self, _module: Any, _inputs: Any, output: Any) -> None:
        self._raw = output.detach().float().numpy().copy()

    def run(self, x: np.ndarray) -> ReferenceOutput:
        import torch

        self._raw = None
        with torch.inference_mode():
            style = None if self.style is None else torch.from_numpy(np.asarray(self.style, np.float32))
            image = self.wrapper(torch.from_numpy(x), style).numpy()
        return ReferenceOutput(image=image, raw=self._raw)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.run(x).image


def torch_reference(net: Any, style: np.ndarray | None = None) -> TorchReference:
    """A reference running a TransformerNet through the deploy wrapper in FP32 on CPU (see :class:`TorchReference`);
    ``style``: a multi-style network's style weights."""
    return TorchReference(net, style)


def onnx_reference_with(onnx_path: str | os.PathLike[str], feeds: Mapping[str, np.ndarray]) -> Reference:
    """:func:`onnx_reference` of a graph with inputs besides the image (a multi-style graph's style weights)."""
    session = _cpu_session(onnx_path)
    name = next(i.name for i in session.get_inputs() if i.name not in feeds)
    return lambda x: session.run(None, {name: x, **feeds})[0]


def style_checks(names: Sequence[str]) -> list[tuple[str, np.ndarray | None]]:
    """The (label, style weights) a multi-style graph is gated at: its first style, its last, and an even blend
    of the two; ``[("", None)]`` for a one-style graph (``names`` empty)."""
    if not names:
        return [("", None)]
    eye = np.eye(len(names), dtype=np.float32)
    checks: list[tuple[str, np.ndarray | None]] = [(names[0], eye[0])]
    if len(names) > 1:
        checks += [(names[-1], eye[-1]), (f"0.5 {names[0]} + 0.5 {names[-1]}", (eye[0] + eye[-1]) / np.float32(2))]
    return checks


def merge_reports(reports: Sequence[ParityReport], labels: Sequence[str]) -> ParityReport:
    """One report over per-style gates: their images together (so the worst numbers show), the styles checked
    named in the reference."""
    if len(reports) == 1:
        return reports[0]
    return dataclasses.replace(
        reports[0], reference=f"{reports[0].reference.split(', style ')[0]}; styles {', '.join(labels)}",
        images=tuple(image for r in reports for image in r.images),
        failures=tuple(f for r in reports for f in r.failures))


def check_parity_styles(onnx_path: str | os.PathLike[str], reference_for: Callable[[np.ndarray | None], Reference],
                        *, style_names: Sequence[str], style_input: str = "style", precision: str,
                        reference_name: str, tolerance: ParityTolerance = DEFAULT_TOLERANCE,
                        shapes: Sequence[tuple[int, int, int]] = DEFAULT_SHAPES, label: str | None = None
                        ) -> ParityReport:
    """:func:`check_parity` at every style of :func:`style_checks` (the first, the last, a blend), each against
    ``reference_for(weights)``; one merged report. A one-style graph (``style_names`` empty) is checked once."""
    reports, labels = [], []
    for style, weights in style_checks(style_names):
        suffix = f", style {style}" if style else ""
        reports.append(check_parity(onnx_path, reference_for(weights), precision=precision,
                                    reference_name=reference_name + suffix, tolerance=tolerance, shapes=shapes,
                                    label=(label or os.fspath(onnx_path)) + (f" (style {style})" if style else ""),
                                    feeds=None if weights is None else {style_input: weights}))
        labels.append(style)
    return merge_reports(reports, labels)


def onnx_reference(onnx_path: str | os.PathLike[str]) -> Reference:
    """A reference function running another ONNX file (e.g. the FP32 export) through ONNX Runtime CPU."""
    session = _cpu_session(onnx_path)
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def _cpu_session(onnx_path: str | os.PathLike[str] | bytes) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # the FP16 graph on CPU logs a warning per inserted cast; not our problem
    source = onnx_path if isinstance(onnx_path, bytes) else str(onnx_path)
    return ort.InferenceSession(source, sess_options=opts, providers=["CPUExecutionProvider"])


#: single-data-input ops of the deployment tail (crop, clamp, round, layout, cast) the raw output passes through
_TAIL_OPS = frozenset({"Cast", "Clip", "Round", "Transpose", "Slice", "Identity", "Floor", "Ceil", "Reshape"})


def raw_output_session(onnx_path: str | os.PathLike[str]) -> tuple[Any, str] | None:
    """An ONNX Runtime session of ``onnx_path`` with one more output: the network's raw float output, the
    tensor that enters the graph's clamp/round/transpose/cast tail. Returns (session, that tensor's name), or
    None where the graph has no such tail or the tensor's type is unknown."""
    import onnx

    model = onnx.load(os.fspath(onnx_path))
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    name = graph.output[0].name
    node = producer.get(name)
    if node is None or node.op_type not in _TAIL_OPS:
        return None
    while node is not None and node.op_type in _TAIL_OPS:
        name = node.input[0]
        node = producer.get(name)
    if node is None:  # the tail reaches the graph input: no network in between
        return None
    types = {vi.name: vi.type.tensor_type.elem_type for vi in graph.value_info}
    if name not in types:
        inferred = onnx.shape_inference.infer_shapes(model).graph
        types = {vi.name: vi.type.tensor_type.elem_type for vi in inferred.value_info}
    if not types.get(name):
        log.debug("parity: no type for %s; the candidate's values before the cast are not checked", name)
        return None
    graph.output.append(onnx.helper.make_tensor_value_info(name, types[name], None))
    return _cpu_session(model.SerializeToString()), name


def _run_reference(reference: Reference, x: np.ndarray) -> ReferenceOutput:
    run = getattr(reference, "run", None)
    if callable(run):
        out = run(x)
        if isinstance(out, ReferenceOutput):
            return out
    return ReferenceOutput(image=reference(x))


def degenerate_output(images: np.ndarray, inputs: np.ndarray, min_range: int) -> tuple[int, list[str]]:
    """(the smallest widest-channel range over the uint8 NHWC ``images``, the problems found): an image of one
    colour for a varied input, or two images of a batch identical although their inputs differ."""
    flat = images.reshape(images.shape[0], -1, images.shape[-1]).astype(np.int16)
    ranges = (flat.max(axis=1) - flat.min(axis=1)).max(axis=1)  # per image: its widest channel
    problems = [f"image {i} is flat (every channel spans {int(r)} level(s), need >= {min_range}) for a varied "
                "input" for i, r in enumerate(ranges) if r < min_range]
    for i in range(1, len(images)):
        if np.array_equal(images[i], images[0]) and not np.array_equal(inputs[i], inputs[0]):
            problems.append(f"images 0 and {i} come out identical although their inputs differ")
            break
    return int(ranges.min()), problems


def _raw_candidate(raw_session: tuple[Any, str] | None, input_name: str, batch: np.ndarray,
                   feeds: Mapping[str, np.ndarray] | None = None) -> np.ndarray | None:
    if raw_session is None:
        return None
    session, name = raw_session
    return session.run([name], {input_name: batch, **(feeds or {})})[0]


def check_parity(onnx_path: str | os.PathLike[str], reference: Reference, *, precision: str,
                 reference_name: str, tolerance: ParityTolerance = DEFAULT_TOLERANCE,
                 shapes: Sequence[tuple[int, int, int]] = DEFAULT_SHAPES, raise_on_failure: bool = True,
                 label: str | None = None, feeds: Mapping[str, np.ndarray] | None = None) -> ParityReport:
    """Run ``onnx_path`` on the fixed test images, compare with ``reference`` and apply the gate.

    ``feeds``: the candidate's inputs besides the image (a multi-style graph's style weights), the same on
    every batch; the reference is expected to use the same style.

    Raises :class:`ParityError` listing every failing batch (unless ``raise_on_failure`` is False, in which case
    the report carries the failures).
    """
    if precision not in ("fp32", "fp16"):
        raise ValueError(f"precision must be 'fp32' or 'fp16', got {precision!r}")
    session = _cpu_session(onnx_path)
    input_name = next(i.name for i in session.get_inputs() if i.name not in (feeds or {}))
    raw_session = raw_output_session(onnx_path)
    results, failures = [], []
    for batch in parity_images(shapes):
        out = session.run(None, {input_name: batch, **(feeds or {})})[0]
        ref = _run_reference(reference, batch)
        r = compare_images(out, ref.image)
        shape = "x".join(map(str, r.shape[:3]))
        nonfinite: int | None = None
        for side, raw in (("the exported graph", _raw_candidate(raw_session, input_name, batch, feeds)),
                          (f"the reference ({reference_name})", ref.raw)):
            if raw is None:
                continue
            bad = int(raw.size - np.count_nonzero(np.isfinite(raw)))
            nonfinite = (nonfinite or 0) + bad
            if bad:
                failures.append(f"{shape}: {side} outputs {bad} NaN/Inf values of {raw.size} before the uint8 cast "
                                "(non-finite weights or an overflow; the cast hides them as black)")
        out_range, problems = degenerate_output(out, batch, tolerance.min_output_range_levels)
        failures += [f"{shape}: degenerate output: {p}" for p in problems]
        r = dataclasses.replace(r, output_range_levels=out_range, nonfinite_before_cast=nonfinite)
        results.append(r)
        psnr = "inf" if r.psnr_db is None else f"{r.psnr_db:.2f}"
        log.debug("parity %s %s: max %d levels, PSNR %s dB, output range %d, non-finite before cast %s",
                  precision, shape, r.max_abs_levels, psnr, out_range, nonfinite)
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
        if any("before the uint8 cast" in f or "degenerate output" in f for f in failures):
            raise ParityError(
                f"{what} ({precision}) failed the parity gate: its output is broken, whatever the reference says: "
                + "; ".join(failures) + ". Nothing was written. The network is not fit to ship: export an earlier "
                "checkpoint, or retrain (lower --lr; the training stops by itself when its weights stop being "
                "finite).")
        fix = ("--fp32-tol / ParityTolerance.fp32_max_abs_levels" if precision == "fp32"
               else "--fp16-min-psnr / ParityTolerance.fp16_min_psnr_db")
        raise ParityError(
            f"{what} ({precision}) failed the parity gate against {reference_name} on "
            f"{len(failures)} of {len(results)} test batches: " + "; ".join(failures)
            + f". Nothing was written. Expected: within tolerance {asdict(tolerance)}. If the numbers are "
            f"acceptable for your use, loosen {fix}; otherwise export FP32 only or report the checkpoint."
        )
    return report
