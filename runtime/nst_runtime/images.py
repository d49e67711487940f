"""Images as they come: decoding with limits, the mode policy, host padding, and atomic saving.

The network sees uint8 RGB. Everything else is converted on the way in and restored on the way out:

=====================  ===============================================  ============
input mode             what the network gets                            output mode
=====================  ===============================================  ============
RGB                    as is                                            RGB
RGBA, RGBa             RGB; alpha kept and put back                     RGBA
L, 1                   gray replicated to RGB                           RGB
LA, La                 gray replicated to RGB; alpha kept               RGBA
I;16 (all variants),   scaled from 0..65535 to 0..255 (not clipped),    RGB
I                      then as L (I values outside 0..65535 clipped)
F                      read as 0.0..1.0, scaled to 0..255               RGB
P (palette)            expanded; transparency becomes alpha             RGB / RGBA
PA                     expanded; alpha kept                             RGBA
CMYK, YCbCr, LAB, HSV  converted to RGB by Pillow                       RGB
=====================  ===============================================  ============

Files: EXIF orientation is applied when reading a file (:func:`read_image`). Images handed to
:meth:`nst_runtime.Stylizer.stylize` as PIL images are taken as they are (their pixels, not their EXIF tag).
Animated GIF, WebP and PNG: :func:`read_image` returns the first frame unless ``all_frames=True``; the CLI
stylizes every frame and writes an animation of the same format with the same timing.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import threading
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError

from .atomic import atomic_output
from .errors import ImageError, ImageTooLargeError, UsageError

logger = logging.getLogger(__name__)

#: Pillow decoders allowed to run on input files; anything else is refused before decoding.
ACCEPTED_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF", "PPM")
#: the default decompression-bomb limit (the same as Pillow's default ``Image.MAX_IMAGE_PIXELS``)
DEFAULT_MAX_PIXELS = 89_478_485
#: file name suffix -> Pillow format name, for writing
FORMAT_BY_SUFFIX: dict[str, str] = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".gif": "GIF",
}
SUFFIX_BY_FORMAT: dict[str, str] = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "BMP": ".bmp",
                                    "TIFF": ".tif", "GIF": ".gif"}
#: formats that can hold an alpha channel / several frames when we write them
_ALPHA_FORMATS = frozenset({"PNG", "WEBP", "TIFF", "GIF"})
_ANIMATED_FORMATS = frozenset({"GIF", "WEBP", "PNG"})
#: formats that hold several frames: animations, and TIFF's pages (no timing)
MULTI_FRAME_FORMATS = _ANIMATED_FORMATS | {"TIFF"}
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})

_pillow_limit_lock = threading.Lock()
#: Pillow limits wanted by the reads running now (None: no limit), and Pillow's own value before the first
_pillow_wanted: list[int | None] = []
_pillow_saved: list[int | None] = []


@dataclass(frozen=True)
class DecodedImage:
    """A decoded file: one frame or all frames of an animation, oriented upright, in their decoded modes."""

    frames: tuple[Image.Image, ...]
    format: str
    #: per-frame display time in ms (animations only; empty for stills)
    durations: tuple[int, ...] = ()
    #: the animation's loop count (0 = forever) or None for stills
    loop: int | None = None

    @property
    def is_animated(self) -> bool:
        return len(self.frames) > 1


@contextlib.contextmanager
def _pillow_limit(max_pixels: int | None) -> Iterator[None]:
    """While a read runs, Pillow's own bomb guard (the process-wide ``Image.MAX_IMAGE_PIXELS``) allows what
    ``max_pixels`` allows: raised to it, or off for ``None`` (our check runs first and is the policy). The
    value is never lowered, and when the last read ends it is restored to what it was before the first."""
    with _pillow_limit_lock:
        if not _pillow_wanted:
            _pillow_saved[:] = [Image.MAX_IMAGE_PIXELS]
        _pillow_wanted.append(max_pixels)
        _apply_pillow_limit()
    try:
        yield
    finally:
        with _pillow_limit_lock:
            _pillow_wanted.remove(max_pixels)
            if _pillow_wanted:
                _apply_pillow_limit()
            else:
                Image.MAX_IMAGE_PIXELS = _pillow_saved[0]


def _apply_pillow_limit() -> None:
    saved = _pillow_saved[0]
    if saved is None or None in _pillow_wanted:
        Image.MAX_IMAGE_PIXELS = None
    else:
        Image.MAX_IMAGE_PIXELS = max(saved, *(w for w in _pillow_wanted if w is not None))


#: what :func:`read_image` decodes: a file path, encoded bytes, or a binary file object
ImageSource = str | os.PathLike[str] | bytes | bytearray | memoryview | IO[bytes]


def read_image(
    path: ImageSource,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    formats: Sequence[str] = ACCEPTED_FORMATS,
    all_frames: bool = False,
    name: str | None = None,
) -> DecodedImage:
    """Decode an image file with only the ``formats`` decoders and a pixel limit checked before decoding.

    ``path`` may also be the encoded bytes themselves (``bytes``, ``bytearray``, ``memoryview``) or a binary
    file object (an upload, ``io.BytesIO``; one that cannot seek is read whole first): the same decoders,
    limits and errors apply. Error messages name ``name``, else the file object's ``name``, else
    ``"image data"``.

    EXIF orientation is applied. ``max_pixels=None`` disables the limit (only for trusted files). With
    ``all_frames``, an animation's frames count together against ``max_pixels`` (they are held in memory
    at once). Raises :class:`ImageError` for unreadable, unsupported, truncated or oversized files: whatever
    a decoder raises on a damaged or hostile file becomes one line naming the file.
    """
    if max_pixels is not None and (isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1):
        raise UsageError(f"max_pixels {max_pixels!r}: expected a positive number of pixels, or None for no limit.")
    with _pillow_limit(max_pixels):
        return _decode(path, max_pixels=max_pixels, formats=formats, all_frames=all_frames, name=name)


def _decode(path: ImageSource, *, max_pixels: int | None, formats: Sequence[str], all_frames: bool,
            name: str | None) -> DecodedImage:
    source, path = _source_and_label(path, name)
    try:
        if _is_empty(source):
            raise ImageError(f"{path}: the file is empty (an interrupted copy or download?).")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(source, formats=list(formats))
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file.") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a folder, expected an image file.") from None
    except UnidentifiedImageError:
        raise ImageError(
            f"{path}: not an image in an accepted format (expected one of {', '.join(formats)}). "
            "Fix: convert it to PNG or JPEG, or check that the file is not truncated."
        ) from None
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(_too_many_pixels(path, "the header's size", _pixels_in(exc), max_pixels)) from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc}).") from None
    except Exception as exc:  # a decoder's header parser tripping over hostile bytes (struct.error, …)
        raise ImageError(f"{path}: corrupt image header ({type(exc).__name__}: {exc}).") from None
    with img:
        fmt = img.format or "PNG"
        try:
            w, h = img.size
            _check_pixels(path, w, h, max_pixels)
            n_frames = int(getattr(img, "n_frames", 1) or 1) if all_frames else 1
            if n_frames > 1:
                if max_pixels is not None and n_frames * w * h > max_pixels:
                    raise ImageTooLargeError(_too_many_pixels(path, f"{n_frames} frames of {w}x{h}", n_frames * w * h,
                                                      max_pixels))
                frames, durations, total = [], [], 0
                for frame in ImageSequence.Iterator(img):
                    total += frame.size[0] * frame.size[1]  # TIFF pages may differ in size; check before decoding
                    if max_pixels is not None and total > max_pixels:
                        raise ImageTooLargeError(_too_many_pixels(path, f"an animation of {len(frames) + 1}+ frames",
                                                          total, max_pixels))
                    decoded = frame.copy()  # decode first: WebP sets a frame's duration only once it is loaded
                    durations.append(int(frame.info.get("duration", img.info.get("duration", 100)) or 100))
                    frames.append(_upright(decoded))
                loop = img.info.get("loop", 0)
                return DecodedImage(tuple(frames), fmt, tuple(durations), int(loop) if loop is not None else 0)
            img.load()
            return DecodedImage((_upright(img.copy()),), fmt)
        except ImageError:
            raise
        except Image.DecompressionBombError as exc:
            raise ImageTooLargeError(_too_many_pixels(path, "a frame's size", _pixels_in(exc), max_pixels)) from None
        except MemoryError:
            raise ImageError(f"{path}: not enough memory to decode this {fmt} image.") from None
        except Exception as exc:  # OSError "truncated", ValueError, SyntaxError, EOFError, struct.error, …
            raise ImageError(f"{path}: corrupt or truncated {fmt} data ({type(exc).__name__}: {exc}).") from None


def _source_and_label(source: ImageSource, name: str | None) -> tuple[Path | IO[bytes], Any]:
    """What Pillow opens, and what error messages call it (the path itself for files)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(source)), name or "image data"
    if isinstance(source, (str, os.PathLike)):
        return Path(source), Path(source) if name is None else name
    if not hasattr(source, "read"):
        raise UsageError(f"expected an image file path, bytes or a binary file object, got {type(source).__name__}.")
    label = name or getattr(source, "name", None) or "image data"
    seekable = getattr(source, "seekable", None)
    if not (callable(seekable) and seekable()):
        source = io.BytesIO(source.read())  # Pillow seeks while identifying the format
    return source, label


def _is_empty(source: Path | IO[bytes]) -> bool:
    if isinstance(source, Path):
        return source.is_file() and source.stat().st_size == 0
    here = source.tell()
    end = source.seek(0, io.SEEK_END)
    source.seek(here)
    return end - here == 0


def _too_many_pixels(path: Path, what: str, pixels: int | None, max_pixels: int | None) -> str:
    limit = max_pixels if max_pixels is not None else Image.MAX_IMAGE_PIXELS
    return (f"{path}: {what} = {pixels if pixels is not None else 'too many'} pixels, more than the limit of "
            f"{limit} (a guard against decompression bombs). Fix: raise the limit (--max-pixels, or "
            "max_pixels=...) if you trust the file.")


def _pixels_in(exc: Exception) -> int | None:
    """The pixel count in Pillow's DecompressionBombError message ("Image size (N pixels) exceeds …")."""
    import re

    match = re.search(r"\((\d+) pixels\)", str(exc))
    return int(match.group(1)) if match else None


def _check_pixels(path: Path, w: int, h: int, max_pixels: int | None) -> None:
    if max_pixels is not None and w * h > max_pixels:
        raise ImageTooLargeError(_too_many_pixels(path, f"{w}x{h}", w * h, max_pixels))


def _upright(img: Image.Image) -> Image.Image:
    # exif_transpose keeps the palette and info; it returns a copy only when there is something to do
    return ImageOps.exif_transpose(img) or img


def pil_to_planes(img: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """Split a PIL image into (RGB uint8 HxWx3, alpha uint8 HxW or None) following the module's mode table."""
    mode = img.mode
    if mode == "RGB":
        return np.asarray(img), None
    if mode in ("RGBA", "RGBa"):
        rgba = np.asarray(img.convert("RGBA") if mode == "RGBa" else img)
        return np.ascontiguousarray(rgba[..., :3]), np.ascontiguousarray(rgba[..., 3])
    if mode in ("L", "1"):
        return _gray_to_rgb(np.asarray(img.convert("L"))), None
    if mode in ("LA", "La"):
        la = np.asarray(img.convert("LA"))
        return _gray_to_rgb(la[..., 0]), np.ascontiguousarray(la[..., 1])
    if mode in _SIXTEEN_BIT_MODES:
        return _gray_to_rgb(scale_16bit(np.asarray(img))), None
    if mode == "F":
        f = np.clip(np.nan_to_num(np.asarray(img, dtype=np.float32), nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
        return _gray_to_rgb(np.rint(f * 255.0).astype(np.uint8)), None
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in img.info
        conv = img.convert("RGBA" if has_alpha else "RGB")
        return pil_to_planes(conv)
    # CMYK, YCbCr, LAB, HSV and anything else Pillow can convert
    try:
        return np.asarray(img.convert("RGB")), None
    except (ValueError, OSError) as exc:
        raise ImageError(f"image mode {mode!r} cannot be converted to RGB ({exc}).") from None


def scale_16bit(values: np.ndarray) -> np.ndarray:
    """0..65535 -> 0..255 by rounding ``v * 255 / 65535`` (scaled, not clipped; out-of-range values clip)."""
    v = np.clip(values.astype(np.int64), 0, 65535)
    return ((v * 255 + 32767) // 65535).astype(np.uint8)


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=2))


def array_to_planes(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Split a numpy image into (RGB uint8 HxWx3, alpha or None).

    Accepted: uint8 or uint16 (scaled to 8 bits), shape HxW or HxWx1 (gray), HxWx3 (RGB), HxWx4 (RGBA).
    """
    if not isinstance(arr, np.ndarray):
        raise UsageError(f"expected a numpy array or a PIL image, got {type(arr).__name__}.")
    if arr.dtype == np.uint16:
        arr = scale_16bit(arr)
    elif arr.dtype != np.uint8:
        raise UsageError(
            f"expected a uint8 (or uint16) image array, got dtype {arr.dtype}. "
            "Fix: for floats in 0..1 pass np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)."
        )
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        return _gray_to_rgb(arr), None
    if arr.ndim == 3 and arr.shape[2] == 3:
        return np.ascontiguousarray(arr), None
    if arr.ndim == 3 and arr.shape[2] == 4:
        return np.ascontiguousarray(arr[..., :3]), np.ascontiguousarray(arr[..., 3])
    raise UsageError(
        f"expected an image array of shape HxW, HxWx1, HxWx3 (RGB) or HxWx4 (RGBA), got shape {arr.shape}. "
        "Fix: a CHW array needs arr.transpose(1, 2, 0); a batch goes to stylize_batch as a list."
    )


def merge_planes(rgb: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """RGB (+ alpha) -> HxWx3 or HxWx4 uint8."""
    if alpha is None:
        return rgb
    return np.concatenate([rgb, alpha[..., None]], axis=2)


def pad_to_min_size(rgb: np.ndarray, min_size: int) -> np.ndarray:
    """Pad H and W (bottom/right) up to ``min_size`` by mirroring, so the padding holds image content.

    Mirroring (numpy's ``symmetric``) works from 1x1 up and, unlike zero padding, does not drag a dark
    border into the instance-norm statistics. The caller crops the output back to the original size.
    """
    h, w = rgb.shape[:2]
    pad_h, pad_w = max(0, min_size - h), max(0, min_size - w)
    if not pad_h and not pad_w:
        return rgb
    return np.pad(rgb, ((0, pad_h), (0, pad_w), (0, 0)), mode="symmetric")


def output_format_for(input_format: str | None, requested: str | None, *, animated: bool = False) -> str:
    """The Pillow format to write: ``requested`` if given, else the input's where sensible, else PNG."""
    if requested:
        fmt = requested.upper()
        fmt = "JPEG" if fmt == "JPG" else "TIFF" if fmt == "TIF" else fmt
        if fmt not in SUFFIX_BY_FORMAT:
            raise UsageError(f"--format {requested!r}: expected one of png, jpeg, webp, bmp, tiff, gif.")
        return fmt
    fmt = (input_format or "PNG").upper()
    if fmt == "GIF" and not animated:
        return "PNG"  # a 256-colour palette throws the stylized colours away; keep stills lossless
    return fmt if fmt in SUFFIX_BY_FORMAT else "PNG"


def save_image(
    frames: Image.Image | Sequence[Image.Image],
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    quality: int = 95,
    durations: Sequence[int] = (),
    loop: int | None = None,
) -> Path:
    """Write atomically (temp file in the same folder, fsync, rename): a crash or a full disk never leaves a
    partial file, and the previous file at ``path`` stays intact. Raises :class:`WriteError` when the file
    cannot be written.

    Several ``frames`` are written as an animation when the format allows (GIF, WebP, PNG) or as pages
    (TIFF), else only the first frame is written and a warning is logged. Alpha is dropped for formats
    without it (JPEG, BMP), with a warning when it held any transparency.
    """
    path = Path(path)
    fmt = (format or FORMAT_BY_SUFFIX.get(path.suffix.lower(), "PNG")).upper()
    # w+b: Pillow's multi-page TIFF writer reads back what it wrote
    with atomic_output(path) as tmp, open(tmp, "w+b") as f:
        _write_frames(frames, f, fmt=fmt, quality=quality, durations=durations, loop=loop, label=path)
    return path


def encode_image(
    frames: Image.Image | Sequence[Image.Image],
    *,
    format: str = "PNG",
    quality: int = 95,
    durations: Sequence[int] = (),
    loop: int | None = None,
) -> bytes:
    """The bytes :func:`save_image` would write, in memory (for web services): the same format rules,
    alpha and animation handling, and quality. ``format`` is a Pillow format name (``"PNG"``, ``"JPEG"``…)."""
    buf = io.BytesIO()
    _write_frames(frames, buf, fmt=format.upper(), quality=quality, durations=durations, loop=loop,
                  label="image data")
    return buf.getvalue()


def _write_frames(
    frames: Image.Image | Sequence[Image.Image], out: IO[bytes], *, fmt: str, quality: int,
    durations: Sequence[int], loop: int | None, label: object,
) -> None:
    """The one encoder behind :func:`save_image` and :func:`encode_image`."""
    frame_list = [frames] if isinstance(frames, Image.Image) else list(frames)
    if not frame_list:
        raise UsageError(f"{label}: nothing to save (no frames).")
    if len(frame_list) > 1 and fmt not in MULTI_FRAME_FORMATS:
        logger.warning("%s: %s cannot hold an animation or several pages; writing the first of %d frames only "
                       "(write GIF, WebP, PNG or TIFF to keep them all)", label, fmt, len(frame_list))
        frame_list = frame_list[:1]
    if fmt not in _ALPHA_FORMATS:
        if any(_has_transparency(f) for f in frame_list):
            logger.warning("%s: %s has no alpha channel; the image's transparency is dropped (write PNG, WebP or "
                           "TIFF to keep it)", label, fmt)
        frame_list = [f.convert("RGB") if f.mode in ("RGBA", "LA", "PA", "RGBa", "La") else f for f in frame_list]
    params: dict[str, Any] = {}
    if fmt in ("JPEG", "WEBP"):
        params["quality"] = quality
    if len(frame_list) > 1 and fmt == "TIFF":
        params.update(save_all=True, append_images=frame_list[1:])
    elif len(frame_list) > 1:
        params.update(save_all=True, append_images=frame_list[1:], duration=list(durations) or 100,
                      loop=0 if loop is None else loop)
    frame_list[0].save(out, format=fmt, **params)


def _has_transparency(frame: Image.Image) -> bool:
    """Any pixel less than fully opaque (an alpha plane of all 255 loses nothing when dropped)."""
    if frame.mode not in ("RGBA", "LA", "PA", "RGBa", "La"):
        return False
    lowest, _ = frame.getchannel(frame.mode[-1] if frame.mode[-1] == "A" else "a").getextrema()
    return lowest < 255
