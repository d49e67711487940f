"""What ``nst-serve`` serves: model names and files, and the service's limits, as frozen dataclasses."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nst_runtime.errors import UsageError
from nst_runtime.images import DEFAULT_MAX_PIXELS
from nst_runtime.models.catalog import NAME_RE

#: artifact suffixes and precision tags dropped from a file name to name its model
_ARTIFACT_SUFFIXES = (".onnx", ".engine", ".plan")
_PRECISION_TAGS = (".fp16", ".fp32", ".int8")
#: one rule for model names: the catalogue's, the cache's and the URLs'
_NAME_RE = NAME_RE

#: request bodies above this many bytes are refused with 413 before they are read whole
DEFAULT_MAX_BODY_BYTES = 50 * 1024 * 1024


def model_name_for(path: str | Path) -> str:
    """The model's name in URLs: the file name without its artifact suffix and precision tag.

    ``candy.onnx``, ``candy.fp16.onnx`` and ``candy.fp16.engine`` are all ``candy``: several files of one
    name are one model whose replicas open the first file their device can run.
    """
    name = Path(path).name
    for suffix in _ARTIFACT_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    for tag in _PRECISION_TAGS:
        if name.lower().endswith(tag):
            name = name[: -len(tag)]
            break
    return name


@dataclass(frozen=True)
class ModelSpec:
    """One served model: its URL name and the files a replica tries in order (the first that opens wins)."""

    name: str
    paths: tuple[Path, ...]


def models_from_args(args: Sequence[str | Path]) -> tuple[ModelSpec, ...]:
    """``PATH`` or ``NAME=PATH`` arguments → models, in the order first named.

    Files with the same name are alternatives for one model, tried in the order given: e.g. an engine per
    GPU generation, then the ONNX file as the fallback. Raises :class:`UsageError` for a missing file or a
    name that cannot appear in a URL.
    """
    if not args:
        raise UsageError("no model given. Fix: nst-serve models/candy.onnx [more models...].")
    grouped: dict[str, list[Path]] = {}
    for arg in args:
        text = str(arg)
        name, sep, rest = text.partition("=")
        if sep and not Path(text).exists():
            path = Path(rest)
        else:
            name, path = model_name_for(text), Path(text)
        if not _NAME_RE.match(name):
            raise UsageError(f"model name {name!r} (from {text}): expected letters, digits, '_', '.' or '-' "
                             "(at most 64, starting with a letter or digit). Fix: name it, e.g. candy=path.onnx.")
        if not path.is_file():
            raise UsageError(f"{path}: no such model file. Fix: pass an .onnx file or an engine exported by "
                             "nst-export (its .json sidecar beside it).")
        grouped.setdefault(name, []).append(path)
    return tuple(ModelSpec(name, tuple(paths)) for name, paths in grouped.items())


@dataclass(frozen=True)
class ServeConfig:
    """Everything ``nst-serve`` needs; the command line maps onto these fields one to one."""

    models: tuple[ModelSpec, ...]
    host: str = "127.0.0.1"
    port: int = 8000
    #: replicas per model; None: one per GPU on a GPU cluster, else one
    replicas: int | None = None
    #: largest dynamic batch of same-size images per network call
    max_batch: int = 4
    #: how long a replica waits for more same-size images before running a partial batch
    batch_wait_s: float = 0.01
    #: requests one replica holds at once (in decode, in the batch queue, in encode); None: 2 x max_batch
    max_ongoing: int | None = None
    #: requests per model waiting for a free replica; more are answered 503 with Retry-After
    max_queued: int = 16
    #: the Retry-After header on 503 answers, in seconds
    retry_after_s: int = 1
    #: CPU threads per replica; None: the cluster's CPUs shared out between all replicas
    threads: int | None = None
    #: auto, cpu, cuda: where replicas run their models
    device: str = "auto"
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    #: seconds a request may take end to end before it is answered 504
    request_timeout_s: float = 120.0
    #: Ray to join (``ray://host:10001`` or ``host:6379``); None starts a local Ray in this process
    address: str | None = None
    #: Prometheus exporter port of a local Ray (None: Ray picks one; with --address the cluster's own)
    metrics_port: int | None = None
    #: the Serve application's name (one nst-serve per cluster unless names differ)
    app_name: str = "nst"
    #: extra keyword arguments for Stylizer.open in every replica (e.g. verify_hash=False)
    open_options: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        checks = [
            (self.port, 1, 65535, "port"), (self.max_batch, 1, 256, "max_batch"),
            (self.max_queued, 1, 1_000_000, "max_queued"), (self.retry_after_s, 0, 3600, "retry_after_s"),
        ]
        if self.replicas is not None:
            checks.append((self.replicas, 1, 1024, "replicas"))
        if self.threads is not None:
            checks.append((self.threads, 1, 1024, "threads"))
        if self.max_ongoing is not None:
            checks.append((self.max_ongoing, 1, 100_000, "max_ongoing"))
        for value, low, high, what in checks:
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise UsageError(f"{what} {value!r}: expected an integer from {low} to {high}.")
        if not self.models:
            raise UsageError("no model given. Fix: nst-serve models/candy.onnx [more models...].")
        if self.max_body_bytes < 1 or self.request_timeout_s <= 0 or self.batch_wait_s < 0:
            raise UsageError("max_body_bytes and request_timeout_s must be > 0, batch_wait_s >= 0.")

    @property
    def ongoing_per_replica(self) -> int:
        return self.max_ongoing if self.max_ongoing is not None else 2 * self.max_batch
