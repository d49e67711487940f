"""Artifact metadata: the JSON sidecar written next to every ONNX file and engine.

``model.fp16.engine`` gets ``model.fp16.engine.json``; ``model.onnx`` gets ``model.onnx.json``. The export
stage writes it (this dataclass, serialized); the runtime reads it before touching the artifact itself.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import ModelFileError
from .files import read_capped

SCHEMA_VERSION = 1
SIDECAR_SUFFIX = ".json"
#: a sidecar is a few KB of JSON (the parity report included); a larger file is refused unread
MAX_SIDECAR_BYTES = 1 << 20
#: range of ``min_size``: the runtime pads smaller images up to it, so a huge value would make every call huge
MAX_MIN_SIZE = 1024
#: range of an engine profile's shapes (N, H, W), and of N x H x W at its maximum (the buffers are sized for it)
MAX_PROFILE_BATCH, MAX_PROFILE_SIDE, MAX_PROFILE_PIXELS = 4096, 1 << 16, 1 << 31

Precision = Literal["fp32", "fp16", "int8"]
ArtifactKind = Literal["onnx", "tensorrt"]


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output. nst graphs take and return uint8 NHWC RGB in [0, 255]."""

    name: str
    dtype: str = "uint8"
    layout: str = "NHWC"
    channels: str = "RGB"
    value_range: tuple[float, float] = (0.0, 255.0)


@dataclass(frozen=True)
class ShapeProfile:
    """TensorRT optimization profile for the input, each shape as (N, H, W) (C is always 3)."""

    min: tuple[int, int, int]
    opt: tuple[int, int, int]
    max: tuple[int, int, int]


#: most styles one network's style input may hold (Dumoulin et al. trained 32; the registry's networks 26)
MAX_STYLES = 4096


@dataclass(frozen=True)
class StyleInput:
    """A graph's style input: a float32 vector of ``size`` weights, one per style of ``names`` (a multi-style
    network holds every style and blends them by these weights; the runtime feeds it on every call)."""

    name: str = "style"
    size: int = 1
    #: one name per style, in the order of the vector
    names: tuple[str, ...] = ()

    def _problems(self) -> list[str]:
        bad = []
        if not isinstance(self.name, str) or not self.name:
            bad.append(f"name {self.name!r}, expected a non-empty string")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or not 1 <= self.size <= MAX_STYLES:
            bad.append(f"size {self.size!r}, expected an integer 1..{MAX_STYLES}")
        elif len(self.names) != self.size or not all(isinstance(n, str) and n for n in self.names):
            bad.append(f"names {list(self.names)[:5]}..., expected {self.size} non-empty strings")
        elif len(set(self.names)) != len(self.names):
            bad.append("names repeat; each style needs its own name")
        return bad


@dataclass(frozen=True)
class AdaINInputs:
    """An arbitrary-style (AdaIN) graph's inputs besides the image: the style's relu4_1 mean and standard
    deviation (float32 [channels] each, from the style graph ``style_graph`` beside it) and ``alpha`` (float32
    [1], the content-style trade-off on features)."""

    mean: str = "style_mean"
    std: str = "style_std"
    alpha: str = "alpha"
    channels: int = 512
    #: the file name of the style graph (style image -> mean, std), beside this artifact
    style_graph: str = ""

    def _problems(self) -> list[str]:
        bad = [f"{k} {getattr(self, k)!r}, expected a non-empty string" for k in ("mean", "std", "alpha")
               if not isinstance(getattr(self, k), str) or not getattr(self, k)]
        if isinstance(self.channels, bool) or not isinstance(self.channels, int) or not 1 <= self.channels <= 65536:
            bad.append(f"channels {self.channels!r}, expected an integer 1..65536")
        if not isinstance(self.style_graph, str) or "/" in self.style_graph or "\\" in self.style_graph:
            bad.append(f"style_graph {self.style_graph!r}, expected a file name beside the artifact")
        return bad


@dataclass(frozen=True)
class Sidecar:
    kind: ArtifactKind
    precision: Precision
    input: TensorSpec = field(default_factory=lambda: TensorSpec("input"))
    output: TensorSpec = field(default_factory=lambda: TensorSpec("output"))
    #: smallest H and W the graph accepts; the runtime pads smaller images on the host
    min_size: int = 8
    profile: ShapeProfile | None = None
    opset: int | None = None
    tensorrt_version: str | None = None
    version_compatible: bool = False
    #: built with EXCLUDE_LEAN_RUNTIME: a version-compatible plan without the lean runtime embedded; the host
    #: must load a tensorrt_lean library of the building TensorRT version (IRuntime.load_runtime)
    exclude_lean_runtime: bool = False
    gpu_name: str | None = None
    compute_capability: str | None = None
    artifact_sha256: str | None = None
    checkpoint_sha256: str | None = None
    onnx_sha256: str | None = None
    parity: dict[str, Any] = field(default_factory=dict)
    build_time_s: float | None = None
    architecture: str | None = None
    #: "stylize" (the deploy graph or engine) or "tiling" (NAME.tiling.onnx: statistics in, moments out; used
    #: by the runtime to tile large images with whole-image instance-norm statistics)
    role: str = "stylize"
    #: where a network nst did not train came from (``nst-export FOREIGN.onnx``): kind, file name, sha256,
    #: original opset and shapes, import mode; empty for nst's own exports
    source: dict[str, Any] = field(default_factory=dict)
    #: multi-style networks: the second graph input (style weights) and the style names; None: one style
    style: StyleInput | None = None
    #: the network's cost in GFLOP per megapixel of input (multiply-adds x 2), where the exporter measured it
    gflop_per_mpx: float | None = None
    #: arbitrary-style (AdaIN) graphs: the style statistics and alpha inputs; None for other networks
    adain: AdaINInputs | None = None
    nst_version: str = "0.1.0"
    created_at: str | None = None
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Sidecar:
        if not isinstance(d, dict):
            raise ValueError(f"expected a JSON object, found {type(d).__name__}")
        version = d.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(f"schema_version {version!r}; this nst reads {SCHEMA_VERSION}")
        known = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        for key in ("input", "output"):
            if isinstance(kw.get(key), dict):
                spec = dict(kw[key])
                if "value_range" in spec:
                    spec["value_range"] = tuple(spec["value_range"])
                kw[key] = TensorSpec(**spec)
        if isinstance(kw.get("profile"), dict):
            kw["profile"] = ShapeProfile(**{k: tuple(v) for k, v in kw["profile"].items()})
        if isinstance(kw.get("adain"), dict):
            kw["adain"] = AdaINInputs(**{k: v for k, v in kw["adain"].items()
                                         if k in {f.name for f in dataclasses.fields(AdaINInputs)}})
        if isinstance(kw.get("style"), dict):
            style = {k: v for k, v in kw["style"].items() if k in {f.name for f in dataclasses.fields(StyleInput)}}
            if isinstance(style.get("names"), list):
                style["names"] = tuple(style["names"])
            kw["style"] = StyleInput(**style)
        meta = cls(**kw)
        meta._check_types()
        return meta

    def _check_types(self) -> None:
        """A sidecar is read before anything else and steers every later check: wrong types are refused here
        (as ValueError, which read_sidecar reports as a malformed sidecar), not deep inside the runtime."""
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise ValueError(what)

        need(self.kind in ("onnx", "tensorrt"), f"kind {self.kind!r}, expected 'onnx' or 'tensorrt'")
        need(self.precision in ("fp32", "fp16", "int8"),
             f"precision {self.precision!r}, expected 'fp32', 'fp16' or 'int8'")
        for io in ("input", "output"):
            spec = getattr(self, io)
            need(isinstance(spec, TensorSpec) and all(isinstance(getattr(spec, f), str)
                                                      for f in ("name", "dtype", "layout", "channels")),
                 f"{io} is {spec!r}, expected an object with string name/dtype/layout/channels")
        need(isinstance(self.min_size, int) and not isinstance(self.min_size, bool),
             f"min_size {self.min_size!r}, expected an integer")
        need(1 <= self.min_size <= MAX_MIN_SIZE, f"min_size {self.min_size}, expected 1..{MAX_MIN_SIZE} pixels")
        if self.profile is not None:
            need(isinstance(self.profile, ShapeProfile) and all(
                len(shape) == 3 and all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
                for shape in (self.profile.min, self.profile.opt, self.profile.max)),
                f"profile {self.profile!r}, expected min/opt/max as [N, H, W] integers")
            for name in ("min", "opt", "max"):
                n, h, w = getattr(self.profile, name)
                need(1 <= n <= MAX_PROFILE_BATCH and 1 <= h <= MAX_PROFILE_SIDE and 1 <= w <= MAX_PROFILE_SIDE,
                     f"profile {name} {[n, h, w]}, expected N in 1..{MAX_PROFILE_BATCH} and H, W in "
                     f"1..{MAX_PROFILE_SIDE}")
            need(all(a <= b <= c for a, b, c in zip(self.profile.min, self.profile.opt, self.profile.max, strict=True)),
                 f"profile min {list(self.profile.min)} / opt {list(self.profile.opt)} / max "
                 f"{list(self.profile.max)}, expected min <= opt <= max in every dimension")
            n, h, w = self.profile.max
            need(n * h * w <= MAX_PROFILE_PIXELS,
                 f"profile max {[n, h, w]} = {n * h * w} pixels, expected at most {MAX_PROFILE_PIXELS}")
        for name in ("tensorrt_version", "gpu_name", "compute_capability", "artifact_sha256", "checkpoint_sha256",
                     "onnx_sha256", "architecture", "created_at"):
            value = getattr(self, name)
            need(value is None or isinstance(value, str), f"{name} {value!r}, expected a string or null")
        need(isinstance(self.role, str), f"role {self.role!r}, expected a string")
        need(isinstance(self.parity, dict), f"parity {self.parity!r}, expected an object")
        need(isinstance(self.source, dict), f"source {self.source!r}, expected an object")
        if self.style is not None:
            need(isinstance(self.style, StyleInput), f"style {self.style!r}, expected an object")
            problems = self.style._problems()
            need(not problems, f"style input: {'; '.join(problems)}")
        if self.adain is not None:
            need(isinstance(self.adain, AdaINInputs), f"adain {self.adain!r}, expected an object")
            problems = self.adain._problems()
            need(not problems, f"adain inputs: {'; '.join(problems)}")
        need(self.gflop_per_mpx is None or (isinstance(self.gflop_per_mpx, (int, float))
                                            and not isinstance(self.gflop_per_mpx, bool) and self.gflop_per_mpx > 0),
             f"gflop_per_mpx {self.gflop_per_mpx!r}, expected a positive number or null")

    @property
    def input_names(self) -> list[str]:
        """The graph's inputs in order: the image, then a multi-style network's style input or an AdaIN graph's
        style statistics and alpha."""
        return [self.input.name, *self.extra_inputs]

    @property
    def extra_inputs(self) -> dict[str, tuple[int, ...]]:
        """The inputs besides the image, each with its fixed shape (all float32)."""
        extra: dict[str, tuple[int, ...]] = {}
        if self.style is not None:
            extra[self.style.name] = (self.style.size,)
        if self.adain is not None:
            extra.update({self.adain.mean: (self.adain.channels,), self.adain.std: (self.adain.channels,),
                          self.adain.alpha: (1,)})
        return extra


def sidecar_path(artifact: str | os.PathLike[str]) -> Path:
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + SIDECAR_SUFFIX)


def read_sidecar(artifact: str | os.PathLike[str]) -> Sidecar:
    """Read the sidecar of ``artifact``; :class:`ModelFileError` naming the file if missing or malformed."""
    path = sidecar_path(artifact)
    if not path.exists():
        raise ModelFileError(
            f"{artifact}: no sidecar {path.name} beside it. Re-export with nst-export, which writes both"
            + ("; an ONNX style network from elsewhere is imported the same way: nst-export FILE.onnx."
               if Path(artifact).suffix.lower() == ".onnx" else ".")
        )
    try:
        data = read_capped(path, max_bytes=MAX_SIDECAR_BYTES, what="a sidecar", error=ModelFileError)
        return Sidecar.from_dict(json.loads(data.decode("utf-8")))
    except (ValueError, TypeError, RecursionError) as exc:
        raise ModelFileError(f"{path}: malformed sidecar ({str(exc)[:200]}). Re-export with nst-export.") from exc
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read the sidecar ({exc.strerror or exc}).") from exc
