"""FP32 ONNX -> INT8 QDQ ONNX (``NAME.int8.onnx``), calibrated on the user's photos and parity-gated.

What the file is:

* **QDQ** (QuantizeLinear/DequantizeLinear pairs around float operators), the one INT8 form that ONNX Runtime,
  OpenVINO and TensorRT's explicit quantization (strongly typed networks) all read. Only the inputs of the
  convolutions are quantized: activations per tensor, weights **per output channel** (axis 0), both symmetric
  int8 with zero point 0 (TensorRT accepts nothing else), biases kept float (TensorRT folds them itself).
* **InstanceNormalization stays float**, and so do the I/O: the uint8 -> float cast, the layout change and the
  reflection pad at the input, and the clamp/round/cast at the output are not touched; the residual adds and
  the upsampling run in float between the quantized convolutions.
* Activation ranges come from **calibration on the user's photos** (``calibration_dir``): no photos, no
  INT8 file (calibrating on noise would set ranges no photograph has). The first
  :attr:`Int8Options.max_calibration_images` photos (by name) not held out are resized so that the shorter
  side is :attr:`Int8Options.calibration_size` and centre-cropped to a square (ONNX Runtime's histogram
  calibrators need one size).
* **The gate**: every :attr:`Int8Options.held_out_every`-th photo is held out of calibration and the INT8 file's
  output on it (ONNX Runtime, and OpenVINO when installed) is compared with PyTorch FP32 (or the FP32 ONNX
  file); PSNR below :attr:`Int8Options.min_psnr_db` on any of them and nothing is written. The report (PSNR,
  max and mean difference, share of pixels more than 20 levels off) goes into the sidecar.

Defaults were set from measurements (``tools/int8_quality.py``; docs/export.md gives the numbers and says on
which networks): INT8 costs quality that a trained style network shows more than a random one.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from nst_runtime.errors import ModelFileError, ParityError, UsageError

from .parity import DEFAULT_TOLERANCE, compare_images, degenerate_output, raw_output_session

log = logging.getLogger(__name__)

CalibrationMethod = Literal["percentile", "entropy", "minmax"]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".ppm")
#: a pixel channel this many uint8 levels off the reference counts as visibly wrong in the report
VISIBLE_LEVELS = 20


@dataclass(frozen=True)
class Int8Options:
    """How ``NAME.int8.onnx`` is calibrated and gated (defaults measured: see docs/export.md)."""

    method: CalibrationMethod = "percentile"
    #: percentile of |activation| kept by the "percentile" method
    percentile: float = 99.999
    #: calibration photos are resized (shorter side) and centre-cropped to this many pixels square
    calibration_size: int = 256
    max_calibration_images: int = 32
    #: every N-th photo (by name, starting with the first) is held out for the gate, never calibrated on
    held_out_every: int = 5
    #: held-out photos are scaled down so that the longer side is at most this (evaluation cost)
    held_out_max_side: int = 512
    #: the gate: PSNR of every held-out photo against the FP32 reference, in dB
    min_psnr_db: float = 35.0
    #: also quantize the convolutions' outputs (int8 between a Conv and its InstanceNorm); off: more accurate
    quantize_conv_outputs: bool = False

    def __post_init__(self) -> None:
        if self.method not in ("percentile", "entropy", "minmax"):
            raise UsageError(f"calibration method {self.method!r}: expected percentile, entropy or minmax.")
        if not 90.0 <= self.percentile <= 100.0:
            raise UsageError(f"percentile {self.percentile}: expected 90..100 (default 99.999).")
        if self.calibration_size < 16 or self.held_out_max_side < 16:
            raise UsageError("calibration_size and held_out_max_side must be at least 16 pixels.")
        if self.max_calibration_images < 1 or self.held_out_every < 2:
            raise UsageError("max_calibration_images must be >= 1 and held_out_every >= 2.")
        if not self.min_psnr_db > 0:
            raise UsageError(f"min_psnr_db {self.min_psnr_db}: expected > 0 dB.")

    @property
    def min_images(self) -> int:
        """Fewest photos a calibration folder must hold: 2 to calibrate on and 1 held out."""
        return 3


DEFAULT_OPTIONS = Int8Options()


# ----------------------------------------------------------------------------------------- photos
def list_photos(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files directly in ``folder`` (sorted by name; hidden files skipped)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"--calibration-dir {folder}: not a folder. Fix: pass a folder of photos like the ones "
                         "you will stylize (JPEG/PNG); INT8 ranges are measured on them.")
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)


def _read_rgb(path: Path) -> np.ndarray:
    from nst_runtime.images import read_image

    frame = read_image(path).frames[0]
    return np.asarray(frame.convert("RGB"), dtype=np.uint8)


def square_crop(rgb: np.ndarray, size: int) -> np.ndarray:
    """Resize so the shorter side is ``size`` (Lanczos), then centre-crop to ``size`` x ``size``."""
    from PIL import Image

    h, w = rgb.shape[:2]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    img = Image.fromarray(rgb).resize((nw, nh), Image.LANCZOS)
    top, left = (nh - size) // 2, (nw - size) // 2
    return np.array(img, dtype=np.uint8)[top:top + size, left:left + size]


def fit_longer_side(rgb: np.ndarray, max_side: int) -> np.ndarray:
    from PIL import Image

    h, w = rgb.shape[:2]
    if max(h, w) <= max_side:
        return rgb
    scale = max_side / max(h, w)
    size = (max(8, round(w * scale)), max(8, round(h * scale)))
    return np.array(Image.fromarray(rgb).resize(size, Image.LANCZOS), dtype=np.uint8)


@dataclass(frozen=True)
class CalibrationSet:
    calibration: tuple[np.ndarray, ...]
    held_out: tuple[np.ndarray, ...]
    calibration_names: tuple[str, ...]
    held_out_names: tuple[str, ...]


def calibration_set(folder: str | os.PathLike[str], options: Int8Options = DEFAULT_OPTIONS) -> CalibrationSet:
    """Split the photos of ``folder`` into calibration crops and held-out gate images (see :class:`Int8Options`).

    Raises :class:`UsageError` when the folder holds fewer than :attr:`Int8Options.min_images` photos.
    """
    photos = list_photos(folder)
    if len(photos) < options.min_images:
        raise UsageError(
            f"--calibration-dir {folder}: found {len(photos)} photo(s) ({', '.join(IMAGE_SUFFIXES)}); INT8 "
            f"needs at least {options.min_images} (some to calibrate on, some held out for the quality gate), "
            f"{options.max_calibration_images + options.max_calibration_images // (options.held_out_every - 1)} "
            "to use the defaults fully. Fix: add photos like the ones you will stylize. INT8 is never "
            "calibrated on generated images."
        )
    held = photos[::options.held_out_every]
    calib = [p for p in photos if p not in held][:options.max_calibration_images]
    log.info("INT8 calibration: %d photos at %d² (%s), %d held out for the gate", len(calib),
             options.calibration_size, options.method, len(held))
    return CalibrationSet(
        calibration=tuple(square_crop(_read_rgb(p), options.calibration_size) for p in calib),
        held_out=tuple(fit_longer_side(_read_rgb(p), options.held_out_max_side) for p in held),
        calibration_names=tuple(p.name for p in calib),
        held_out_names=tuple(p.name for p in held),
    )


# ----------------------------------------------------------------------------------------- quantization
class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over a list of feeds (one image per call)."""

    def __init__(self, feeds: Sequence[dict[str, np.ndarray]]) -> None:
        self._feeds = list(feeds)
        self._it: Iterator[dict[str, np.ndarray]] = iter(self._feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self._feeds)


def _method(name: CalibrationMethod) -> Any:
    from onnxruntime.quantization import CalibrationMethod as M

    return {"percentile": M.Percentile, "entropy": M.Entropy, "minmax": M.MinMax}[name]


def quantize_onnx(
    fp32_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    feeds: Sequence[dict[str, np.ndarray]],
    *,
    options: Int8Options = DEFAULT_OPTIONS,
) -> Path:
    """Write the QDQ INT8 version of the ONNX file ``fp32_path`` to ``out``, calibrated on ``feeds``.

    No checks and no gate (see :func:`int8_onnx_from_onnx`); any ONNX graph with Conv nodes works, which is what
    lets ``tools/int8_quality.py`` measure the same recipe on networks other than nst's own.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    if not feeds:
        raise UsageError("INT8 calibration needs at least one image; none was given.")
    extra: dict[str, Any] = {
        "ActivationSymmetric": True,  # zero point 0: TensorRT's explicit quantization requires it
        "WeightSymmetric": True,
        "QuantizeBias": False,  # float bias: TensorRT fuses it; ORT and OpenVINO accept it
        "CalibPercentile": options.percentile,
        "CalibTensorRangeSymmetric": True,
    }
    if not options.quantize_conv_outputs:
        extra["OpTypesToExcludeOutputQuantization"] = ["Conv"]
    with tempfile.TemporaryDirectory(prefix="nst-int8-") as work:
        # the calibrator writes an augmented copy of the model next to this path, not next to the user's files
        src = Path(work) / "fp32.onnx"
        src.write_bytes(Path(fp32_path).read_bytes())
        # the quantizer prints its progress and logs advice to the root logger; keep both out of the user's way
        chatter = io.StringIO()
        with contextlib.redirect_stdout(chatter), _quiet_root_logger():
            quantize_static(
                str(src), str(out), _Reader(feeds), quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv"],
                per_channel=True, reduce_range=False, activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8, calibrate_method=_method(options.method),
                calibration_providers=["CPUExecutionProvider"], extra_options=extra,
            )
        log.debug("onnxruntime quantizer: %s", " | ".join(chatter.getvalue().split("\n")).strip())
    return Path(out)


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    root = logging.getLogger()

    def drop(record: logging.LogRecord) -> bool:
        return record.name != "root"

    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


# ----------------------------------------------------------------------------------------- the gate
@dataclass(frozen=True)
class Int8ImageResult:
    name: str
    engine: str
    shape: tuple[int, int]
    psnr_db: float | None
    max_abs_levels: int
    mean_abs_levels: float
    visible_fraction: float


@dataclass(frozen=True)
class Int8Report:
    reference: str
    options: dict[str, Any]
    calibration_images: tuple[str, ...]
    results: tuple[Int8ImageResult, ...]
    failures: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def min_psnr_db(self) -> float | None:
        values = [r.psnr_db for r in self.results if r.psnr_db is not None]
        return min(values) if values else None

    @property
    def mean_psnr_db(self) -> float | None:
        values = [r.psnr_db for r in self.results if r.psnr_db is not None]
        return sum(values) / len(values) if values else None

    def summary(self) -> str:
        worst = self.min_psnr_db
        return (f"min PSNR {'inf' if worst is None else f'{worst:.1f}'} dB, mean "
                f"{self.mean_psnr_db or float('inf'):.1f} dB, max |diff| "
                f"{max(r.max_abs_levels for r in self.results)} levels, mean |diff| "
                f"{np.mean([r.mean_abs_levels for r in self.results]):.2f}, "
                f"{100 * max(r.visible_fraction for r in self.results):.2f}% of pixel channels > "
                f"{VISIBLE_LEVELS} levels off (worst image) over {len(self.results)} held-out result(s)")

    def to_dict(self) -> dict[str, Any]:
        """The form stored in the sidecar's ``parity`` field."""
        return {
            "precision": "int8",
            "reference": self.reference,
            "passed": self.passed,
            "min_psnr_db": self.min_psnr_db,
            "mean_psnr_db": self.mean_psnr_db,
            "max_abs_levels": max(r.max_abs_levels for r in self.results),
            "mean_abs_levels": float(np.mean([r.mean_abs_levels for r in self.results])),
            "visible_levels": VISIBLE_LEVELS,
            "tolerance": {"int8_min_psnr_db": self.options["min_psnr_db"]},
            "calibration": {k: self.options[k] for k in ("method", "percentile", "calibration_size",
                                                        "quantize_conv_outputs")}
            | {"images": list(self.calibration_images)},
            "images": [asdict(r) | {"shape": list(r.shape)} for r in self.results],
        }


def compare(name: str, engine: str, candidate: np.ndarray, reference: np.ndarray) -> Int8ImageResult:
    """The parity gate's numbers (:func:`nst_export.parity.compare_images`) plus the share of visible errors."""
    r = compare_images(candidate, reference)
    diff = np.abs(candidate.astype(np.int16) - reference.astype(np.int16))
    return Int8ImageResult(
        name=name, engine=engine, shape=(int(candidate.shape[0]), int(candidate.shape[1])), psnr_db=r.psnr_db,
        max_abs_levels=r.max_abs_levels, mean_abs_levels=r.mean_abs_levels,
        visible_fraction=float(np.count_nonzero(diff > VISIBLE_LEVELS)) / diff.size,
    )


def int8_engines(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Run functions (uint8 HxWx3 -> uint8 HxWx3) for the INT8 file on ONNX Runtime CPU and, when installed,
    OpenVINO CPU: the gate holds for every engine that will run the file here."""
    import importlib.util

    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    in_name = session.get_inputs()[0].name
    engines: dict[str, Any] = {"onnxruntime": lambda x: session.run(None, {in_name: x[None]})[0][0]}
    if importlib.util.find_spec("openvino") is not None:
        from nst_runtime.openvino_backend import shared_core

        compiled = shared_core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        request = compiled.create_infer_request()
        engines["openvino"] = lambda x: np.array(request.infer({0: x[None]})[compiled.output(0)][0])
    return engines


def gate_int8(
    int8_path: str | os.PathLike[str],
    reference: Any,
    images: Sequence[np.ndarray],
    names: Sequence[str],
    *,
    reference_name: str,
    calibration_names: Sequence[str] = (),
    options: Int8Options = DEFAULT_OPTIONS,
) -> Int8Report:
    """Compare the INT8 file with ``reference`` (uint8 NHWC batch -> batch) on ``images``; a report, never raises."""
    engines = int8_engines(int8_path)
    # the parity gate's checks that agreement alone misses: NaN/Inf before the uint8 cast (which turns them
    # into black on both sides) and degenerate outputs (one colour for a varied photo)
    raw = raw_output_session(int8_path)
    min_range = DEFAULT_TOLERANCE.min_output_range_levels
    results, failures = [], []
    for name, img in zip(names, images, strict=True):
        ref = reference(img[None])[0]
        if raw is not None:
            session, raw_name = raw
            values = session.run([raw_name], {session.get_inputs()[0].name: img[None]})[0]
            bad = int(values.size - np.count_nonzero(np.isfinite(values)))
            if bad:
                failures.append(f"{name}: the INT8 graph outputs {bad} NaN/Inf values of {values.size} before the "
                                "uint8 cast (the cast hides them as black)")
        for engine, run in engines.items():
            out = run(img)
            r = compare(name, engine, out, ref)
            results.append(r)
            failures += [f"{name} on {engine}: degenerate output: {p}"
                         for p in degenerate_output(out[None], img[None], min_range)[1]]
            log.info("INT8 %s on %s: PSNR %s dB, max %d, mean %.2f levels", name, engine,
                     "inf" if r.psnr_db is None else f"{r.psnr_db:.2f}", r.max_abs_levels, r.mean_abs_levels)
            if r.psnr_db is not None and r.psnr_db < options.min_psnr_db:
                failures.append(f"{name} on {engine}: PSNR {r.psnr_db:.2f} dB < {options.min_psnr_db} dB "
                                f"(max |diff| {r.max_abs_levels}, {100 * r.visible_fraction:.1f}% of pixel "
                                f"channels > {VISIBLE_LEVELS} levels off)")
    return Int8Report(reference=reference_name, options=asdict(options),
                      calibration_images=tuple(calibration_names), results=tuple(results),
                      failures=tuple(failures))


def int8_onnx_from_onnx(
    onnx_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    calibration_dir: str | os.PathLike[str] | None,
    checkpoint: str | os.PathLike[str] | Any | None = None,
    options: Int8Options = DEFAULT_OPTIONS,
) -> Path:
    """Write ``out`` (``NAME.int8.onnx``), the INT8 QDQ version of the FP32 nst ONNX file ``onnx_path``.

    Calibrated on the photos in ``calibration_dir`` and gated on the held-out ones against the PyTorch FP32
    model of ``checkpoint`` (what ``nst-export --int8`` does) or, without it, the FP32 ONNX file on ONNX
    Runtime. Written to a temp name and published with its sidecar only after the gate passed.

    Raises:
        UsageError: no ``calibration_dir`` or too few photos in it.
        ParityError: the gate failed (the report's numbers are in the message; nothing was written).
        ModelFileError: ``onnx_path`` is not an FP32 nst ONNX file.
    """
    import onnx
    from nst_runtime.artifact import file_sha256
    from nst_runtime.sidecar import read_sidecar

    from .artifacts import check_onnx_model, onnx_sidecar, publish, temp_path_for
    from .parity import onnx_reference, torch_reference

    if calibration_dir is None:
        raise UsageError(
            "INT8 export needs calibration photos: --calibration-dir FOLDER with photos like the ones you will "
            f"stylize (at least {options.min_images}; the first {options.max_calibration_images} not held out "
            "are used). INT8 is never calibrated on generated images, which would set ranges no photo has."
        )
    onnx_path, out = Path(onnx_path), Path(out)
    if not onnx_path.is_file():
        raise ModelFileError(f"{onnx_path}: no such ONNX file. Export it first (nst-export CHECKPOINT).")
    model = onnx.load_model(os.fspath(onnx_path))
    check_onnx_model(model, expect_precision="fp32")
    photos = calibration_set(calibration_dir, options)
    source_meta = None
    with contextlib.suppress(ModelFileError):
        source_meta = read_sidecar(onnx_path)
    if checkpoint is not None:
        from nst_train.checkpoint import checkpoint_sha256, load_checkpoint

        ckpt = load_checkpoint(checkpoint)  # a loaded Checkpoint is used as it is
        reference, reference_name = torch_reference(ckpt.model()), "pytorch-fp32"
        checkpoint_sha, architecture = checkpoint_sha256(ckpt), ckpt.metadata.architecture
    else:
        reference, reference_name = onnx_reference(onnx_path), f"onnx-fp32 ({onnx_path.name}, onnxruntime CPU)"
        checkpoint_sha = source_meta.checkpoint_sha256 if source_meta else None
        architecture = source_meta.architecture if source_meta else None
    input_name = model.graph.input[0].name
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(out)
    try:
        quantize_onnx(onnx_path, tmp, [{input_name: x[None]} for x in photos.calibration], options=options)
        quantized = onnx.load_model(os.fspath(tmp))
        check_int8_model(quantized)
        _tensorrt_lint(quantized, label=str(out))
        report = gate_int8(tmp, reference, photos.held_out, photos.held_out_names, reference_name=reference_name,
                           calibration_names=photos.calibration_names, options=options)
        log.info("INT8 gate: %s", report.summary())
        if not report.passed:
            raise ParityError(
                f"{out} (int8) failed the quality gate against {reference_name} on {len(report.failures)} of "
                f"{len(report.results)} held-out results: " + "; ".join(report.failures)
                + f". Overall: {report.summary()}. Nothing was written. INT8 loses more on some networks than "
                "others; use the FP32 (or FP16 on a GPU) file, or, if the images look acceptable to you, lower "
                "the gate (--int8-min-psnr / Int8Options.min_psnr_db)."
            )
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
        meta = onnx_sidecar(precision="int8", opset=opset, artifact_sha256=file_sha256(tmp),
                            checkpoint_sha256=checkpoint_sha, onnx_sha256=file_sha256(onnx_path),
                            parity=report, architecture=architecture)  # type: ignore[arg-type]
        return publish(tmp, out, meta)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _tensorrt_lint(model: Any, *, label: str) -> None:
    """The same QDQ file is TensorRT's explicit-quantization input: hold it to the parser's documented rules."""
    from .trt_lint import check_tensorrt_compatible

    check_tensorrt_compatible(model, label=label)


def check_int8_model(model: Any) -> None:
    """The structure every nst INT8 file has; :class:`ModelFileError` listing what is not so.

    Every Conv reads its input and weight through DequantizeLinear (weights per channel, axis 0), all zero
    points are 0, InstanceNormalization reads and writes float, and the graph's I/O is the uint8 contract.
    """
    import onnx
    from onnx import numpy_helper

    from .artifacts import check_onnx_model

    problems: list[str] = []
    try:
        check_onnx_model(model)
    except ModelFileError as exc:
        problems.append(str(exc))
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Conv":
            for k, role in ((0, "input"), (1, "weight")):
                src = producers.get(node.input[k])
                if src is None or src.op_type != "DequantizeLinear":
                    problems.append(f"{node.name}: {role} is not dequantized from int8")
                elif role == "weight":
                    scale = inits.get(src.input[1])
                    if scale is None or len(scale.dims) != 1:
                        problems.append(f"{node.name}: weight scale is not per channel")
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
            zp = inits.get(node.input[2])
            if zp is not None and np.any(numpy_helper.to_array(zp) != 0):
                problems.append(f"{node.name}: zero point is not 0 (TensorRT needs symmetric int8)")
            if zp is not None and zp.data_type != onnx.TensorProto.INT8:
                problems.append(f"{node.name}: {onnx.TensorProto.DataType.Name(zp.data_type)}, expected INT8")
        if node.op_type == "InstanceNormalization":
            # a quantized norm reads its data through a Q/DQ pair (QDQ form): it must read the Conv's float
            # output directly, so that it computes in float (TensorRT's native norm, the FP32 island)
            src = producers.get(node.input[0])
            if src is not None and src.op_type in ("QuantizeLinear", "DequantizeLinear"):
                problems.append(f"{node.name}: reads its data through {src.op_type} {src.name!r} (quantized); "
                                "expected the float output of the layer before it")
    from .fp16 import fp32_island_problems

    problems += [f"InstanceNormalization {p}" for p in fp32_island_problems(model)]
    if problems:
        raise ModelFileError(f"the INT8 graph breaks the nst contract: {'; '.join(problems[:10])}. This is a bug "
                             "in the export (or an unsupported onnxruntime version); please report it.")
