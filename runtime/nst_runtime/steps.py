"""The steps around the network, in the one order the :class:`~nst_runtime.Stylizer` runs them.

    decode -> pre-steps -> network (tiled or not) -> post-steps -> encode

=============  =====================================================  ===========================
step           what                                                   module
=============  =====================================================  ===========================
scale          run the network at ``scale`` x the size, at most       :mod:`nst_runtime.scale`
               ``max_size`` on the longest side
*network*      the style network (tiled when the image is too large)  :mod:`nst_runtime.tiling`
upsample       back to the input's size (``output_size="input"``),    :mod:`nst_runtime.scale`
               guided by the full-resolution input
preserve       the stylized luminance with the input's chroma         :mod:`nst_runtime.color`
colour
strength       blend with the input in Oklab                          :mod:`nst_runtime.strength`
=============  =====================================================  ===========================

Video and frame streams add temporal smoothing after these (:mod:`nst_runtime.temporal`), since it needs the
previous frame. Each step is skipped when its option is at its default, so the defaults cost nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypedDict

import numpy as np

from .color import preserve_color as _preserve_color
from .errors import ImageTooLargeError, UsageError
from .scale import UPSAMPLERS, Upsampler, check_scale, processed_size, resize_rgb, upsample
from .strength import blend, check_strength

OutputSize = Literal["input", "processed"]


class StepKwargs(TypedDict, total=False):
    """The keyword arguments :meth:`Stylizer.stylize` and friends accept (see :class:`StepOptions`)."""

    scale: float
    max_size: int | None
    output_size: OutputSize
    upsampler: Upsampler
    preserve_color: bool
    strength: float


@dataclass(frozen=True)
class StepOptions:
    """What runs around the network. The defaults run the network alone, at the input's size."""

    #: run the network at this fraction of the input's width and height (0.5: strokes twice as large)
    scale: float = 1.0
    #: and at most this many pixels on the longest side (None: no limit)
    max_size: int | None = None
    #: "input": return the input's size (enlarged with ``upsampler``); "processed": the size the network ran at
    output_size: OutputSize = "input"
    upsampler: Upsampler = "guided"
    #: keep the input's colours, take only the luminance from the network
    preserve_color: bool = False
    #: 0 (the input) .. 1 (the full stylization), blended in Oklab
    strength: float = 1.0

    def __post_init__(self) -> None:
        check_scale(self.scale, self.max_size)
        check_strength(self.strength)
        if self.output_size not in ("input", "processed"):
            raise UsageError(f"output_size {self.output_size!r}: expected 'input' (the default: the input's size) "
                             "or 'processed' (the size the network ran at).")
        if self.upsampler not in UPSAMPLERS:
            raise UsageError(f"upsampler {self.upsampler!r}: expected one of {', '.join(UPSAMPLERS)}.")

    @classmethod
    def of(cls, **kwargs: object) -> StepOptions:
        try:
            return cls(**kwargs)  # type: ignore[arg-type]
        except TypeError as exc:
            known = ", ".join(StepKwargs.__annotations__)
            raise UsageError(f"{exc}; the steps around the network take {known}.") from None


#: bytes per pixel the processed image costs while held: the uint8 copy, the network's output and the resampling
#: and tiling copies (float32 work buffers of the resize)
HELD_BYTES_PER_PIXEL = 24

PostStep = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class StepPlan:
    """The ordered steps for one set of options: ``before`` (input -> what the network sees) and ``after``
    (network output -> result), each a list of ``(name, function)``.

    ``max_pixels`` and ``memory_limit`` bound what the network sees: ``scale`` up to 4 makes 16x the pixels,
    so the processed size is checked against the pixel limit of decoding and the memory budget (the image held
    at that size, :data:`HELD_BYTES_PER_PIXEL`) before it is made."""

    options: StepOptions
    after: tuple[tuple[str, PostStep], ...]
    max_pixels: int | None = None
    memory_limit: int | None = None

    @classmethod
    def of(cls, *, max_pixels: int | None = None, memory_limit: int | None = None, **kwargs: object) -> StepPlan:
        options = StepOptions.of(**kwargs)
        after: list[tuple[str, PostStep]] = []
        if options.output_size == "input" and (options.scale != 1.0 or options.max_size is not None):
            after.append(("upsample", lambda styled, original, seen: upsample(
                styled, seen, original, method=options.upsampler)))
        if options.preserve_color:
            after.append(("preserve-color", lambda styled, original, seen: _preserve_color(
                styled, _same_size(original, seen, styled))))
        if options.strength != 1.0:
            after.append(("strength", lambda styled, original, seen: blend(
                _same_size(original, seen, styled), styled, options.strength)))
        return cls(options, tuple(after), max_pixels, memory_limit)

    @property
    def names(self) -> list[str]:
        """The steps that will run, in order, the network included."""
        return (["scale"] if self.scales else []) + ["network"] + [name for name, _ in self.after]

    @property
    def scales(self) -> bool:
        return self.options.scale != 1.0 or self.options.max_size is not None

    def before(self, rgb: np.ndarray) -> np.ndarray:
        """Pre-steps: the image the network sees."""
        if not self.scales:
            return rgb
        return resize_rgb(rgb, self.processed_size(*rgb.shape[:2]))

    def processed_size(self, h: int, w: int) -> tuple[int, int]:
        """(H, W) the network sees for an ``h`` x ``w`` input; :class:`ImageTooLargeError` when that is over
        ``max_pixels`` or the memory budget."""
        size = (processed_size(h, w, scale=self.options.scale, max_size=self.options.max_size) if self.scales
                else (h, w))
        if self.scales:
            self._check_processed(w, h, size)
        return size

    def _check_processed(self, w: int, h: int, size: tuple[int, int]) -> None:
        ph, pw = size
        pixels = ph * pw
        over = []
        if self.max_pixels is not None and pixels > self.max_pixels:
            over.append(f"the limit of {self.max_pixels} pixels (max_pixels / --max-pixels)")
        if self.memory_limit is not None and pixels * HELD_BYTES_PER_PIXEL > self.memory_limit:
            over.append(f"what the memory budget of {self.memory_limit >> 20} MiB holds (memory_limit / "
                        "--memory-limit)")
        if over:
            raise ImageTooLargeError(
                f"{w}x{h} image at scale {self.options.scale:g}: the network would see {pw}x{ph} = {pixels} "
                f"pixels, more than {' and '.join(over)}. Fix: a smaller --scale or a --max-size.")

    def finish(self, styled: np.ndarray, original: np.ndarray, seen: np.ndarray) -> np.ndarray:
        """Post-steps: ``styled`` is the network's output for ``seen``, the pre-stepped ``original``."""
        for _, step in self.after:
            styled = step(styled, original, seen)
        return styled


def _same_size(original: np.ndarray, seen: np.ndarray, styled: np.ndarray) -> np.ndarray:
    """The input at the result's size: the original, or what the network saw (``output_size="processed"``)."""
    return original if original.shape[:2] == styled.shape[:2] else seen


def fit_plane(plane: np.ndarray | None, size: tuple[int, int]) -> np.ndarray | None:
    """An alpha plane (HxW uint8) brought to the result's size, or None."""
    if plane is None or plane.shape[:2] == size:
        return plane
    return resize_rgb(plane, size)
