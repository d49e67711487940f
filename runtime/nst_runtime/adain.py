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


def _rgb_of(source: Any, max_pixels: int | None) -> tuple[np.ndarray, str]:
    """(uint8 HxWx3 RGB, a cache key: the SHA-256 of the file or array) of a style image source."""
    from .images import read_image

    if isinstance(source, np.ndarray):
        rgb = np.ascontiguousarray(source[..., :3] if source.ndim == 3 else np.stack([source] * 3, axis=-1))
        if rgb.dtype != np.uint8:
            raise UsageError(f"style image array of dtype {rgb.dtype}: expected uint8 HxWx3.")
        return rgb, hashlib.sha256(rgb.tobytes() + str(rgb.shape).encode()).hexdigest()
    try:
        from PIL import Image

        if isinstance(source, Image.Image):
            buf = io.BytesIO()
            source.convert("RGB").save(buf, format="png")
            source = buf.getvalue()
    except ImportError:  # pragma: no cover - Pillow is a runtime dependency
        pass
    data = Path(source).read_bytes() if isinstance(source, (str, os.PathLike)) else source
    if not isinstance(data, (bytes, bytearray)):
        raise UsageError(f"style image {type(source).__name__}: expected a path, encoded bytes, a PIL image or "
                         "a uint8 array.")
    key = hashlib.sha256(data).hexdigest()
    decoded = read_image(bytes(data), max_pixels=max_pixels)
    frame = decoded.frames[0]
    rgb = np.asarray(frame.convert("RGB")) if hasattr(frame, "convert") else np.asarray(frame)[..., :3]
    return np.ascontiguousarray(rgb), key


class StyleStatistics:
    """The style graph (``NAME.style.onnx``) on ONNX Runtime, with a cache of statistics per style image."""

    def __init__(self, path: Path, *, providers: Sequence[Any] | None = None, intra_op_threads: int | None = None,
                 verify_hash: bool = True, max_pixels: int | None = None, min_size: int = 16) -> None:
        from .artifact import file_sha256
        from .errors import ModelFileError
        from .onnxruntime_backend import _ort
        from .sidecar import read_sidecar

        meta = read_sidecar(path)  # its output is float statistics, not an image: not an open_artifact
        if meta.role != "adain-style":
            raise ModelFileError(f"{path}: role {meta.role!r}, expected the AdaIN style graph ('adain-style'). "
                                 "Fix: re-export the AdaIN checkpoint with nst-export.")
        if verify_hash and meta.artifact_sha256 is not None and file_sha256(path) != meta.artifact_sha256:
            raise ModelFileError(f"{path}: SHA-256 does not match its sidecar: the file changed after export. "
                                 "Fix: re-export, or pass --no-verify if you changed it on purpose.")
        ort = _ort()
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if intra_op_threads:
            opts.intra_op_num_threads = intra_op_threads
        self.path = path
        self.max_pixels = max_pixels
        self.min_size = min_size
        self._session = ort.InferenceSession(str(path), sess_options=opts,
                                             providers=list(providers or ["CPUExecutionProvider"]))
        self._cache: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()
        #: style images encoded so far (cache misses), for tests and logs
        self.encoded = 0

    def stats(self, source: Any) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std), float32 [channels] each, of one style image (cached by content)."""
        from .images import pad_to_min_size

        rgb, key = _rgb_of(source, self.max_pixels)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        if rgb.shape[0] < 1 or rgb.shape[1] < 1:
            raise ImageError("style image of 0 pixels.")
        batch = pad_to_min_size(rgb, self.min_size)[None]
        mean, std = self._session.run(None, {"input": batch})
        result = (np.ascontiguousarray(mean[0], np.float32), np.ascontiguousarray(std[0], np.float32))
        with self._lock:
            self.encoded += 1
            self._cache[key] = result
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        logger.debug("style statistics of %s computed (%dx%d px)", source if isinstance(source, Path) else "an image",
                     rgb.shape[1], rgb.shape[0])
        return result

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
