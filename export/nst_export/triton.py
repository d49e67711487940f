"""A Triton Inference Server model repository for an exported engine or ONNX file.

Layout (Triton's convention)::

    REPO/NAME/config.pbtxt
    REPO/NAME/1/model.plan        (TensorRT engine, platform tensorrt_plan)   or
    REPO/NAME/1/model.onnx        (ONNX file, platform onnxruntime_onnx)

The config is written in protobuf text format for ``inference.ModelConfig`` (Triton's model_config.proto):
uint8 tensors ``[-1, -1, 3]`` (height and width dynamic; the batch dimension is implicit because
``max_batch_size`` > 0), an instance group and dynamic batching. Dynamic batching only merges requests of
the same height and width (Triton concatenates along the batch axis), which suits video streams of one size.

Version-compatible engines (``nst-export --version-compatible``) load in Triton's TensorRT backend only when the
server is started with ``--backend-config=tensorrt,version-compatible=true`` (Triton's TensorRT backend
documentation): the writer says so at the top of ``config.pbtxt`` and in a warning when it writes the model.

Multi-style networks take a second input, ``style`` (float32 ``[styles]``, no batch axis, shared by the images
of a call). Triton's batching would add a batch axis to it, so their config has ``max_batch_size: 0`` and
full shapes (``[-1, -1, -1, 3]`` for the images): one request is one call, with its own style.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from nst_runtime.errors import ModelFileError, UsageError
from nst_runtime.sidecar import StyleInput, read_sidecar, sidecar_path

from .artifacts import INPUT_NAME, OUTPUT_NAME

log = logging.getLogger(__name__)

PLATFORMS = {"tensorrt": ("tensorrt_plan", "model.plan"), "onnx": ("onnxruntime_onnx", "model.onnx")}
#: the tritonserver option without which Triton refuses a version-compatible plan
VERSION_COMPATIBLE_FLAG = "--backend-config=tensorrt,version-compatible=true"


@dataclass(frozen=True)
class TritonOptions:
    max_batch_size: int = 8
    instance_count: int = 1
    #: KIND_GPU, KIND_CPU or KIND_AUTO (ONNX files only; engines need KIND_GPU)
    instance_kind: str = "KIND_GPU"
    max_queue_delay_microseconds: int = 2000
    version: int = 1


def config_pbtxt(name: str, *, platform: str, options: TritonOptions, version_compatible: bool = False,
                 style: StyleInput | None = None) -> str:
    """The text of ``config.pbtxt`` (with a comment naming the server option a version-compatible plan needs);
    ``style``: a multi-style network's style input (no Triton batching, see the module docstring)."""
    if style is not None:
        options = dataclasses.replace(options, max_batch_size=0)
    header = ""
    if version_compatible:
        header = ("# This TensorRT plan is version-compatible (built with VERSION_COMPATIBLE). Triton loads it only\n"
                  f"# when tritonserver runs with {VERSION_COMPATIBLE_FLAG}\n"
                  "# (that lets the backend run the lean runtime embedded in the plan: trust its source).\n")
    batching = ""
    image_dims = "[ -1, -1, 3 ]" if options.max_batch_size > 0 else "[ -1, -1, -1, 3 ]"
    style_input = ("  {\n"
                   f'    name: "{style.name}"\n'
                   "    data_type: TYPE_FP32\n"
                   f"    dims: [ {style.size} ]\n"
                   "  },\n") if style is not None else ""
    if options.max_batch_size > 1:
        batching = ("dynamic_batching {\n"
                    f"  max_queue_delay_microseconds: {options.max_queue_delay_microseconds}\n"
                    "}\n")
    return (
        header
        + f'name: "{name}"\n'
        f'platform: "{platform}"\n'
        f"max_batch_size: {options.max_batch_size}\n"
        "input [\n"
        + style_input
        + "  {\n"
        f'    name: "{INPUT_NAME}"\n'
        "    data_type: TYPE_UINT8\n"
        "    format: FORMAT_NHWC\n"
        f"    dims: {image_dims}\n"
        "  }\n"
        "]\n"
        "output [\n"
        "  {\n"
        f'    name: "{OUTPUT_NAME}"\n'
        "    data_type: TYPE_UINT8\n"
        f"    dims: {image_dims}\n"
        "  }\n"
        "]\n"
        "instance_group [\n"
        "  {\n"
        f"    count: {options.instance_count}\n"
        f"    kind: {options.instance_kind}\n"
        "  }\n"
        "]\n"
        + batching
    )


def triton_repo_from_artifact(
    artifact: str | os.PathLike[str],
    repo: str | os.PathLike[str],
    *,
    name: str,
    options: TritonOptions | None = None,
) -> Path:
    """Copy ``artifact`` (engine or ONNX, with its sidecar) into ``repo/name/<version>/`` and write the config.

    For an engine, ``max_batch_size`` defaults to the profile's max N (Triton must not send larger batches
    than the engine accepts). Returns the path of ``config.pbtxt``.
    """
    from nst_runtime.atomic import atomic_write

    artifact = Path(artifact)
    meta = read_sidecar(artifact)
    platform, filename = PLATFORMS[meta.kind]
    if options is None:
        options = TritonOptions(
            max_batch_size=meta.profile.max[0] if meta.kind == "tensorrt" and meta.profile else 8,
            instance_kind="KIND_GPU" if meta.kind == "tensorrt" else "KIND_AUTO",
        )
    if meta.kind == "tensorrt":
        if options.instance_kind != "KIND_GPU":
            raise UsageError(f"a TensorRT engine runs on a GPU only; instance kind {options.instance_kind} "
                             "is not possible. Use KIND_GPU.")
        if meta.profile and options.max_batch_size > meta.profile.max[0]:
            raise UsageError(
                f"max_batch_size {options.max_batch_size} exceeds the engine profile's max batch "
                f"{meta.profile.max[0]}. Rebuild with --max-shape {options.max_batch_size}xHxW."
            )
    if options.max_batch_size < 1 and meta.style is None:
        raise UsageError("max_batch_size must be >= 1 (the graphs have a batch dimension).")
    if not name or "/" in name or name.startswith("."):
        raise UsageError(f"Triton model name {name!r}: expected a plain folder name such as 'mosaic'.")
    model_dir = Path(repo) / name
    version_dir = model_dir / str(options.version)
    version_dir.mkdir(parents=True, exist_ok=True)
    target = version_dir / filename
    try:
        tmp = target.with_name(f".{filename}.tmp")
        shutil.copyfile(artifact, tmp)
        os.replace(tmp, target)
        shutil.copyfile(sidecar_path(artifact), sidecar_path(target))
    except OSError as exc:
        raise ModelFileError(f"cannot copy {artifact} into the Triton repository {version_dir}: {exc}.") from exc
    config = model_dir / "config.pbtxt"
    with atomic_write(config, "w") as f:
        f.write(config_pbtxt(name, platform=platform, options=options,
                             version_compatible=meta.kind == "tensorrt" and meta.version_compatible,
                             style=meta.style))
    log.info("Triton model %s: %s + %s", name, config, target)
    if meta.kind == "tensorrt" and meta.version_compatible:
        log.warning("Triton model %s is a version-compatible TensorRT plan: start tritonserver with %s, or "
                    "Triton will refuse to load it", name, VERSION_COMPATIBLE_FLAG)
    return config
