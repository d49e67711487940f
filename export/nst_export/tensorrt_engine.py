"""ONNX -> TensorRT engine (a serialized plan) with its sidecar. Runs unchanged on TensorRT 10.x and 11.x.

Only API names present in both versions' bindings are used (``tests/export/test_trt_api.py`` checks that
statically): named tensors, no binding indices; networks created STRONGLY_TYPED, so precision comes from the
ONNX tensor types (TensorRT 11 removed ``BuilderFlag.FP16``; in 10.x strongly typed networks ignore it);
``build_serialized_network``; ``builder_optimization_level``; timing cache through
``create_timing_cache``/``set_timing_cache``/``get_timing_cache``.

``tensorrt`` is imported inside the functions: this module imports on any machine, and without TensorRT or
a GPU :class:`BackendUnavailableError` (exit code 6) says so.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nst_runtime.errors import BackendUnavailableError, ModelFileError, UsageError
from nst_runtime.sidecar import ShapeProfile, Sidecar, TensorSpec, read_sidecar

from .artifacts import INPUT_NAME, MIN_SIZE, OUTPUT_NAME, publish, temp_path_for, utc_now

log = logging.getLogger(__name__)

#: thumbnails (the graph's minimum) .. 4K UHD landscape; tactics tuned for 1080p. Portrait 4K needs
#: --max-shape 1x3840x2160 (or 1x3840x3840 for both orientations, at ~1.8x the activation memory).
DEFAULT_PROFILE = ShapeProfile(min=(1, MIN_SIZE, MIN_SIZE), opt=(1, 1080, 1920), max=(1, 2160, 3840))
DEFAULT_OPTIMIZATION_LEVEL = 3  # TensorRT's own default; 0..5
_SHAPE = re.compile(r"^\s*(\d+)\s*[xX,]\s*(\d+)\s*[xX,]\s*(\d+)\s*$")


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: str


def parse_shape(text: str, *, option: str = "shape") -> tuple[int, int, int]:
    """``"1x720x1280"`` -> ``(1, 720, 1280)`` (N, H, W); :class:`UsageError` with an example otherwise."""
    m = _SHAPE.match(text)
    if not m:
        raise UsageError(f"--{option} {text!r}: expected NxHxW (batch x height x width), e.g. 1x720x1280.")
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def validate_profile(profile: ShapeProfile, *, min_size: int = MIN_SIZE) -> ShapeProfile:
    """min <= opt <= max per axis, N >= 1, H and W >= the graph's minimum ``min_size``."""
    for label, shape in (("min", profile.min), ("opt", profile.opt), ("max", profile.max)):
        if len(shape) != 3:
            raise UsageError(f"{label} shape {shape}: expected (N, H, W).")
        if shape[0] < 1 or shape[1] < min_size or shape[2] < min_size:
            raise UsageError(f"{label} shape {'x'.join(map(str, shape))}: N must be >= 1 and H, W >= {min_size} "
                             f"(the graph's minimum; smaller images are padded by the runtime). E.g. --min-shape "
                             f"1x{min_size}x{min_size}.")
    for axis, name in enumerate(("N", "H", "W")):
        lo, mid, hi = profile.min[axis], profile.opt[axis], profile.max[axis]
        if not lo <= mid <= hi:
            raise UsageError(f"optimization profile {name}: need min <= opt <= max, got {lo}, {mid}, {hi}. "
                             "Fix --min-shape/--opt-shape/--max-shape.")
    return profile


def profile_for_graph(profile: ShapeProfile, onnx_meta: Sidecar) -> ShapeProfile:
    """The engine's profile for the ONNX file of ``onnx_meta``: ``profile`` with its minimum H/W raised to the
    graph's own minimum (the sidecar's ``min_size``: 16 for AdaIN, up to 128 for a foreign import; the runtime
    pads smaller images up to it) and, where the graph fixes its batch (the sidecar's ``profile`` has N fixed),
    that batch on every row. Opt/max below the minimum stay a :class:`UsageError` (validate_profile)."""
    min_size = onnx_meta.min_size
    lo = (profile.min[0], max(profile.min[1], min_size), max(profile.min[2], min_size))
    if lo != profile.min:
        log.info("profile minimum %s raised to %dx%d, the graph's smallest size", "x".join(map(str, profile.min)),
                 min_size, min_size)
    opt, hi = profile.opt, profile.max
    fixed = onnx_meta.profile
    if fixed is not None and fixed.min[0] == fixed.max[0]:
        n = fixed.min[0]
        if (profile.min[0], profile.opt[0], profile.max[0]) != (n, n, n):
            log.info("the graph's batch is fixed at %d: the engine's profile uses it (not N %d..%d)", n,
                     profile.min[0], profile.max[0])
        lo, opt, hi = (n, *lo[1:]), (n, *opt[1:]), (n, *hi[1:])
    return validate_profile(ShapeProfile(min=lo, opt=opt, max=hi), min_size=min_size)


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or :class:`BackendUnavailableError` with the install fix."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailableError(
            f"building a TensorRT engine needs the Python package 'tensorrt', which cannot be imported here "
            f"({exc}). Fix: on a machine with an NVIDIA GPU, `pip install tensorrt` (10.x or 11.x), or pass "
            "--onnx-only to stop after the ONNX files (ONNX Runtime and Triton's onnxruntime backend run them)."
        ) from exc
    return trt


def gpu_info() -> GpuInfo:
    """Name and compute capability of CUDA device 0 (where TensorRT builds), via torch."""
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is a dependency of the export extra
        raise BackendUnavailableError(f"cannot query the GPU: torch is not importable ({exc}).") from exc
    if not torch.cuda.is_available():
        raise BackendUnavailableError(
            "building a TensorRT engine needs a CUDA GPU, and none is visible here (torch.cuda.is_available() is "
            "False: no GPU, no driver, or a CPU-only torch build). Fix: run nst-export on the GPU machine that "
            "will serve the engine, or pass --onnx-only."
        )
    major, minor = torch.cuda.get_device_capability(0)
    return GpuInfo(name=torch.cuda.get_device_name(0), compute_capability=f"{major}.{minor}")


def _parser_errors(parser: Any) -> list[str]:
    errors = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        where = f"node {err.node()} ({err.node_operator()} {err.node_name()!r})" if err.node() >= 0 else "graph"
        errors.append(f"[{i + 1}] {where}: {err.desc()} ({err.code()})")
    return errors


def _logger(trt: Any) -> Any:
    return trt.Logger(trt.Logger.WARNING)


def profile_shapes(profile: ShapeProfile, meta: Sidecar) -> dict[str, tuple[tuple[int, ...], ...]]:
    """(min, opt, max) per network input: the image's (N, H, W, 3) from ``profile``; a multi-style network's
    style weights (``[styles]``) or an AdaIN network's statistics and alpha, whose one shape each the sidecar
    fixes, with min = opt = max."""
    shapes: dict[str, tuple[tuple[int, ...], ...]] = {
        INPUT_NAME: ((*profile.min, 3), (*profile.opt, 3), (*profile.max, 3))}
    for name, shape in meta.extra_inputs.items():  # style weights, AdaIN statistics: one fixed shape each
        shapes[name] = (shape,) * 3
    return shapes


def engine_from_onnx(
    onnx_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    profile: ShapeProfile = DEFAULT_PROFILE,
    timing_cache: str | os.PathLike[str] | None = None,
    optimization_level: int = DEFAULT_OPTIMIZATION_LEVEL,
    version_compatible: bool = False,
    exclude_lean_runtime: bool = False,
    workspace_bytes: int | None = None,
) -> Path:
    """Build a TensorRT engine from an nst ONNX file and write it (atomically) with its sidecar.

    ``profile``: the input's min/opt/max (N, H, W). ``timing_cache``: a file to load tactic timings from (if
    it exists) and to save them to afterwards, which makes rebuilds much faster. ``optimization_level``:
    ``builder_optimization_level`` (0..5; higher builds longer and may run faster). ``version_compatible``:
    the plan embeds TensorRT's lean runtime and runs on the same or any later TensorRT release of the same major
    version (the runtime must then allow host code: ``--allow-engine-host-code``). ``exclude_lean_runtime``
    (only with ``version_compatible``) leaves the lean runtime out: a smaller plan that runs *only* with the
    lean runtime of the very TensorRT version that built it, so it does not survive an upgrade; off by
    default. Precision is whatever the ONNX file holds (strongly typed network).

    Raises :class:`BackendUnavailableError` (no tensorrt / no GPU), :class:`ModelFileError` (parser errors,
    listed one by one; build failure), :class:`UsageError` (bad profile or options).
    """
    from nst_runtime.artifact import file_sha256
    from nst_runtime.atomic import atomic_write

    onnx_path, out = Path(onnx_path), Path(out)
    validate_profile(profile)  # the general rules first; the graph's own minimum and batch below
    if not 0 <= optimization_level <= 5:
        raise UsageError(f"builder optimization level {optimization_level}: expected 0..5 (TensorRT's default 3).")
    if exclude_lean_runtime and not version_compatible:
        raise UsageError("excluding the lean runtime only applies to version-compatible engines; add "
                         "--version-compatible.")
    if not onnx_path.is_file():
        raise ModelFileError(f"{onnx_path}: no such ONNX file. Export it first (nst-export CHECKPOINT --onnx-only).")
    onnx_meta = read_sidecar(onnx_path)
    profile = profile_for_graph(profile, onnx_meta)
    # nothing the parser would reject is handed to TensorRT: one line naming the node and the rule instead
    from .trt_lint import check_tensorrt_compatible

    # foreign imports may normalize with primitive ops (their FP16 file keeps those FP32: nst_export.foreign)
    check_tensorrt_compatible(onnx_path, label=str(onnx_path), expect_instance_norm=onnx_meta.role == "stylize"
                              and onnx_meta.source.get("kind") != "foreign-onnx")
    trt = import_tensorrt()
    gpu = gpu_info()
    log.info("building TensorRT %s engine on %s (sm %s) from %s", trt.__version__, gpu.name,
             gpu.compute_capability, onnx_path.name)

    logger = _logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    # TensorRT's own InstanceNormalization layer, never the plugin (which version-compatible engines cannot
    # hold); on by default since 10.0, set here so that no environment default can change it
    parser.set_flag(trt.OnnxParserFlag.NATIVE_INSTANCENORM)
    if not parser.parse_from_file(os.fspath(onnx_path)):
        errors = _parser_errors(parser)
        raise ModelFileError(
            f"{onnx_path}: TensorRT {trt.__version__}'s ONNX parser rejected the graph with {len(errors)} "
            f"error(s): " + "; ".join(errors) + ". Fix: re-export with this nst version (opset 18); if the "
            "errors name an operator, this TensorRT version does not support it."
        )
    names = [network.get_input(i).name for i in range(network.num_inputs)]
    if sorted(names) != sorted(onnx_meta.input_names):
        raise ModelFileError(f"{onnx_path}: expected the inputs {onnx_meta.input_names} (the sidecar's), the parsed "
                             f"network has {names}.")

    config = builder.create_builder_config()
    config.builder_optimization_level = optimization_level
    if workspace_bytes is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    if version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if exclude_lean_runtime:
        config.set_flag(trt.BuilderFlag.EXCLUDE_LEAN_RUNTIME)
    opt_profile = builder.create_optimization_profile()
    for name, shapes in profile_shapes(profile, onnx_meta).items():
        opt_profile.set_shape(name, *shapes)
    config.add_optimization_profile(opt_profile)

    cache_path = Path(timing_cache) if timing_cache is not None else None
    cache_blob = cache_path.read_bytes() if cache_path is not None and cache_path.is_file() else b""
    if cache_path is not None:
        log.info("timing cache %s (%s)", cache_path, f"{len(cache_blob)} bytes loaded" if cache_blob else "new")
    cache = config.create_timing_cache(cache_blob)
    # strict check (ignore_mismatch=False): timings measured on another GPU would pick wrong tactics
    if cache is None or not config.set_timing_cache(cache, False):
        log.warning("timing cache %s was made by another TensorRT version or GPU, or is corrupt; starting a "
                    "new one (it will be overwritten)", cache_path)
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, False)

    start = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    build_time = time.perf_counter() - start
    if plan is None:
        raise ModelFileError(
            f"TensorRT {trt.__version__} could not build an engine from {onnx_path} (see the TensorRT messages "
            "above). Common fixes: a smaller --max-shape (GPU memory), or --builder-opt-level 3."
        )
    log.info("engine built in %.1f s", build_time)
    if version_compatible and exclude_lean_runtime:
        log.info("version-compatible plan without its lean runtime: it runs only with TensorRT %s's lean "
                 "runtime (not after an upgrade)", trt.__version__)
    elif version_compatible:
        log.info("version-compatible plan with the lean runtime embedded: runs on TensorRT %s.x from %s on; "
                 "loading it runs that embedded code (nst-stylize --allow-engine-host-code; Triton: "
                 "--backend-config=tensorrt,version-compatible=true)", trt.__version__.split(".")[0],
                 trt.__version__)

    if cache_path is not None:
        with atomic_write(cache_path) as f:
            f.write(memoryview(config.get_timing_cache().serialize()))
    # like the ONNX files: the plan stays under a temp name until its sidecar can be written beside it
    tmp = temp_path_for(out)
    try:
        with open(tmp, "wb") as f:
            f.write(memoryview(plan))
            os.fsync(f.fileno())
        meta = Sidecar(
            kind="tensorrt", precision=onnx_meta.precision, input=TensorSpec(INPUT_NAME),
            output=TensorSpec(OUTPUT_NAME), min_size=onnx_meta.min_size, profile=profile, opset=onnx_meta.opset,
            tensorrt_version=trt.__version__, version_compatible=version_compatible,
            exclude_lean_runtime=exclude_lean_runtime, gpu_name=gpu.name, compute_capability=gpu.compute_capability,
            artifact_sha256=file_sha256(tmp), checkpoint_sha256=onnx_meta.checkpoint_sha256,
            onnx_sha256=file_sha256(onnx_path),
            # the engine itself is not run here; these are the numbers of the ONNX file it was built from
            parity={**onnx_meta.parity, "measured_on": f"source ONNX {onnx_path.name}"},
            build_time_s=round(build_time, 3), architecture=onnx_meta.architecture,
            created_at=utc_now(), style=onnx_meta.style, gflop_per_mpx=onnx_meta.gflop_per_mpx, adain=onnx_meta.adain,
            source=onnx_meta.source,
        )
        return publish(tmp, out, meta)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
