"""Any style image (AdaIN artifacts): style images -> the statistics the stylize graph takes, cached per file.

An AdaIN artifact (``nst-export`` of an ``nst-train --arch adain`` checkpoint) is two graphs: ``NAME.onnx`` takes
the content image, the style's relu4_1 ``style_mean``/``style_std`` and ``alpha``; ``NAME.style.onnx`` turns a
style image (at its own full resolution) into those statistics. :class:`StyleStatistics` runs the style graph
once per style image and caches the result by the image's SHA-256 (the same painting under another name is
not encoded again). A blend of styles (``"a.jpg:0.7,b.jpg:0.3"``) is the weighted sum of their statistics,
which is exactly Huang & Belongie's interpolation of the AdaIN outputs (AdaIN is affine in them).

``alpha`` is the content-style trade-off *on features* (the paper's eq. 14): 1 is the full style, 0 decodes
the content's own features. ``Stylizer.stylize(photo, style="painting.jpg", strength=0.6)`` feeds it from
``strength`` (on these artifacts ``strength`` is alpha, not the pixel blend of other networks).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ImageError, UsageError
from .sidecar import AdaINInputs

logger = logging.getLogger(__name__)

#: style images whose statistics one Stylizer keeps (4 KB each)
CACHE_SIZE = 256
#: what ``style=`` accepts for an AdaIN artifact: a path (or "a.jpg:0.7,b.jpg:0.3"), an image (PIL, uint8 HxWx3,
#: encoded bytes), {path: weight}, or a list of (image, weight) pairs
StyleImages = str | os.PathLike[str] | bytes | Any


def parse_style_images(spec: Any) -> list[tuple[Any, float]]:
    """``spec`` -> ``[(image source, weight), ...]`` with weights scaled to sum to 1.

    Text is a file path, or ``PATH:W,PATH:W`` (an existing file named exactly like the text wins; the last
    ``:W`` of each item is its weight, so ``C:\\\\styles\\\\a.jpg:0.5`` works)."""
    items: list[tuple[Any, float]]
    if isinstance(spec, (str, os.PathLike)) and not isinstance(spec, bytes):
        text = os.fspath(spec)
        if Path(text).is_file() or ("," not in text and ":" not in text.rsplit("/", 1)[-1].rsplit("\\", 1)[-1]):
            items = [(Path(text), 1.0)]
        else:
            items = []
            for part in text.split(","):
                path, sep, weight = part.strip().rpartition(":")
                if not sep or not path:
                    path, weight = part.strip(), "1"
                try:
                    items.append((Path(path), float(weight)))
                except ValueError:
                    items.append((Path(part.strip()), 1.0))
    elif isinstance(spec, Mapping):
        items = [(Path(k) if isinstance(k, str) else k, float(v)) for k, v in spec.items()]
    elif isinstance(spec, (list, tuple)) and spec and all(isinstance(i, tuple) and len(i) == 2 for i in spec):
        items = [(src, float(w)) for src, w in spec]
    else:
        items = [(spec, 1.0)]
    weights = np.array([w for _, w in items], np.float64)
    if not np.all(np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0:
        raise UsageError(f"style images {spec!r}: weights must be finite, >= 0 and not all 0 (e.g. "
                         "a.jpg:0.7,b.jpg:0.3).")
    for src, _ in items:
        if isinstance(src, Path) and not src.is_file():
            raise UsageError(f"style image {src}: no such file. Fix: give a painting or photo file "
                             "(--style-image painting.jpg, or a.jpg:0.7,b.jpg:0.3 for a blend).")
    return [(src, float(w / weights.sum())) for (src, _), w in zip(items, weights, strict=True)]


#: the most bytes of one style image file read (a larger file is refused unread; 200 MB holds any photo)
MAX_STYLE_FILE_BYTES = 200 << 20


def style_image_files(model: str | os.PathLike[str], style: Any) -> list[Path]:
    """The style image files a run of ``model`` reads for ``style`` (an AdaIN model's ``a.jpg:0.7,b.jpg:0.3``);
    none for other models or styles that are not text (for checks that no output replaces an input)."""
    from .errors import ModelFileError
    from .sidecar import read_sidecar

    if not isinstance(style, (str, os.PathLike)) or isinstance(style, bytes):
        return []
    try:
        if read_sidecar(model).adain is None:
            return []
        return [src for src, _ in parse_style_images(style) if isinstance(src, Path)]
    except (ModelFileError, UsageError):  # reported where the model or style is used
        return []


def _file_key(source: Path) -> tuple[str, Any, tuple[Any, ...]]:
    """(label, the open file, (path, size, mtime) key) of a style image file: a regular file only (no FIFO,
    device or socket), checked on the open descriptor."""
    from .files import open_regular

    f = open_regular(source, what="a style image", error=ImageError)
    st = os.fstat(f.fileno())
    return str(source), f, (str(source.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)


def _encoded_of(source: Any) -> bytes:
    """Encoded bytes of a PIL image or a bytes-like source (arrays and paths are handled by the caller)."""
    try:
        from PIL import Image

        if isinstance(source, Image.Image):
            buf = io.BytesIO()
            source.convert("RGB").save(buf, format="png")
            return buf.getvalue()
    except ImportError:  # pragma: no cover - Pillow is a runtime dependency
        pass
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    raise UsageError(f"style image {type(source).__name__}: expected a path, encoded bytes, a PIL image or "
                     "a uint8 array.")


class StyleStatistics:
    """The style graph (``NAME.style.onnx``) on ONNX Runtime, with a cache of statistics per style image.

    Style images are read like content images: files through :func:`nst_runtime.files.open_regular` (regular
    files only, at most :data:`MAX_STYLE_FILE_BYTES`), decoded with the ``max_pixels`` limit; a style image whose
    style-graph call would exceed ``memory_limit`` bytes (``cost``) is encoded at a smaller size that fits.
    The cache is looked up before anything is decoded: by (path, size, mtime) for files, then by the SHA-256
    of the bytes."""

    def __init__(self, path: Path, *, providers: Sequence[Any] | None = None, intra_op_threads: int | None = None,
                 verify_hash: bool = True, max_pixels: int | None = None, min_size: int = 16,
                 memory_limit: int | None = None, cost: Any = None) -> None:
        from .artifact import open_artifact
        from .onnxruntime_backend import SessionFromOnnx

        # the same checks as any model file: sidecar, role, hash (--no-verify), external data
        self.artifact = open_artifact(path, verify_hash=verify_hash, role="adain-style")
        self.path = path
        self.max_pixels = max_pixels
        self.min_size = min_size
        self.memory_limit = memory_limit
        self.cost = cost
        self._session: Any = SessionFromOnnx(path, providers=list(providers or ["CPUExecutionProvider"]),
                                             intra_op_threads=intra_op_threads)()
        self._cache: OrderedDict[Any, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()
        #: style images encoded so far (cache misses), for tests and logs
        self.encoded = 0
        #: style images decoded so far (a cache hit by path, size and mtime decodes nothing)
        self.decoded = 0

    def close(self) -> None:
        """Free the style graph's session. Idempotent."""
        self._session = None

    def _cached(self, *keys: Any) -> tuple[np.ndarray, np.ndarray] | None:
        with self._lock:
            for key in keys:
                if key is not None and key in self._cache:
                    self._cache.move_to_end(key)
                    return self._cache[key]
        return None

    def _remember(self, result: tuple[np.ndarray, np.ndarray], *keys: Any) -> None:
        with self._lock:
            for key in keys:
                if key is not None:
                    self._cache[key] = result
            while len(self._cache) > 2 * CACHE_SIZE:  # a file's entry and its content's entry
                self._cache.popitem(last=False)

    def stats(self, source: Any) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std), float32 [channels] each, of one style image (cached by file and by content)."""
        from .images import read_image

        file_key = None
        label = "an image"
        if isinstance(source, np.ndarray):
            rgb = np.ascontiguousarray(source[..., :3] if source.ndim == 3 else np.stack([source] * 3, axis=-1))
            if rgb.dtype != np.uint8:
                raise UsageError(f"style image array of dtype {rgb.dtype}: expected uint8 HxWx3.")
            key = hashlib.sha256(rgb.tobytes() + str(rgb.shape).encode()).hexdigest()
            if (hit := self._cached(key)) is not None:
                return hit
            if self.max_pixels is not None and rgb.shape[0] * rgb.shape[1] > self.max_pixels:
                from .errors import ImageTooLargeError

                raise ImageTooLargeError(f"style image of {rgb.shape[1]}x{rgb.shape[0]} pixels: more than the "
                                         f"limit of {self.max_pixels}. Fix: use a smaller style image.")
        else:
            if isinstance(source, (str, os.PathLike)):
                label, f, file_key = _file_key(Path(source))
                with f:
                    if (hit := self._cached(file_key)) is not None:
                        return hit
                    data = f.read(MAX_STYLE_FILE_BYTES + 1)
                if len(data) > MAX_STYLE_FILE_BYTES:
                    raise ImageError(f"{label}: style image file larger than {MAX_STYLE_FILE_BYTES >> 20} MiB; "
                                     "refused unread. Fix: use a smaller style image.")
            else:
                data = _encoded_of(source)
            key = hashlib.sha256(data).hexdigest()
            if (hit := self._cached(key)) is not None:
                self._remember(hit, file_key)
                return hit
            decoded = read_image(data, max_pixels=self.max_pixels, name=label if file_key else "the style image")
            self.decoded += 1
            frame = decoded.frames[0]
            rgb = np.ascontiguousarray(np.asarray(frame.convert("RGB")) if hasattr(frame, "convert")
                                       else np.asarray(frame)[..., :3])
        if rgb.shape[0] < 1 or rgb.shape[1] < 1:
            raise ImageError("style image of 0 pixels.")
        rgb = self._within_budget(rgb, label)
        from .images import pad_to_min_size

        session = self._session
        if session is None:
            raise UsageError("this Stylizer is closed; open a new one with Stylizer.open(...).")
        mean, std = session.run(None, {"input": pad_to_min_size(rgb, self.min_size)[None]})
        result = (np.ascontiguousarray(mean[0], np.float32), np.ascontiguousarray(std[0], np.float32))
        with self._lock:
            self.encoded += 1
        self._remember(result, key, file_key)
        logger.debug("style statistics of %s computed (%dx%d px)", label, rgb.shape[1], rgb.shape[0])
        return result

    def _within_budget(self, rgb: np.ndarray, label: str) -> np.ndarray:
        """``rgb``, downscaled (aspect kept) when one style-graph call on it would exceed the memory budget."""
        if self.memory_limit is None or self.cost is None:
            return rgb
        h, w = rgb.shape[:2]
        fits = self.cost.pixels_within(self.memory_limit)
        if h * w <= fits:
            return rgb
        from PIL import Image

        from .memory import format_bytes

        factor = (max(fits, self.min_size * self.min_size) / (h * w)) ** 0.5
        size = (max(self.min_size, int(w * factor)), max(self.min_size, int(h * factor)))
        logger.warning("style image %s (%dx%d): its statistics would need about %s, more than the memory budget "
                       "of %s; computed at %dx%d instead", label, w, h, format_bytes(self.cost.bytes_for(h * w)),
                       format_bytes(self.memory_limit), *size)
        return np.asarray(Image.fromarray(rgb).resize(size, Image.BICUBIC))

    def feeds(self, spec: Any, inputs: AdaINInputs, alpha: float) -> dict[str, np.ndarray]:
        """The stylize graph's inputs besides the image for style(s) ``spec`` and ``alpha``."""
        if not 0.0 <= float(alpha) <= 1.0:
            raise UsageError(f"strength {alpha}: expected 0..1 (AdaIN's alpha on features).")
        mean = np.zeros(inputs.channels, np.float64)
        std = np.zeros(inputs.channels, np.float64)
        for source, weight in parse_style_images(spec):
            m, s = self.stats(source)
            mean += weight * m
            std += weight * s
        return {inputs.mean: mean.astype(np.float32), inputs.std: std.astype(np.float32),
                inputs.alpha: np.array([alpha], np.float32)}
