"""Steady video: blend each stylized frame with the previous result, warped along the input's optical flow.

A feed-forward style network sees every frame alone; small changes between frames (motion by a fraction of a
pixel, noise, compression) change its strokes, and the video flickers. This step keeps what the previous
result painted wherever the scene only moved:

    O_t = S_t + weight * M_t * (W(O_{t-1}) - S_t)

``S_t`` is the network's output for frame ``t``, ``W`` warps the previous *result* with the optical flow from
frame ``t`` to frame ``t-1`` computed on the **input** frames (OpenCV's DIS optical flow, Kroeger et al. 2016,
on the CPU, at a reduced resolution), and ``M_t`` is 1 where that flow can be trusted: the forward-backward
consistency test of Ruder et al., "Artistic style transfer for videos" (2016) -- a point followed to the
previous frame and back must land where it started, within ``0.01 * (|w|^2 + |w'|^2) + 0.5`` pixels^2 --
and the input itself agrees after warping (disocclusions, lighting changes and flow failures show there).
Elsewhere (newly visible regions, cuts) the frame's own stylization is used, so nothing is smeared.

The metric is the temporal warping error of Lai et al., "Learning Blind Video Temporal Consistency" (2018):
the mean squared difference between each result and the previous result warped by the input's flow, over the
non-occluded pixels (:func:`warping_error`). Measured numbers: docs/runtime.md ("Steady video").

OpenCV (``opencv-python-headless``, the ``[video]`` extra) is imported when the mode is first used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ._lazy import import_optional
from .errors import UsageError

Preset = Literal["ultrafast", "fast", "medium"]


def _cv2() -> Any:
    return import_optional("cv2", purpose="steady video (temporal mode)",
                           install="pip install 'nst[video]' (opencv-python-headless)")


@dataclass(frozen=True)
class TemporalOptions:
    """The temporal-consistency mode's settings; the defaults are the measured choice (docs/runtime.md)."""

    #: share of the warped previous result where the flow holds (0: per-frame, as without the mode)
    weight: float = 0.6
    #: optical flow is computed with the longest side at most this many pixels, then enlarged
    flow_max_size: int = 480
    #: DIS optical flow preset (OpenCV): speed against accuracy
    preset: Preset = "fast"
    #: largest luminance difference (uint8 levels) between a frame and the warped previous frame to trust
    photometric_tolerance: float = 24.0

    def __post_init__(self) -> None:
        if isinstance(self.weight, bool) or not 0.0 <= self.weight < 1.0:
            raise UsageError(f"temporal weight {self.weight!r}: expected 0 <= weight < 1 (default 0.6).")
        if not isinstance(self.flow_max_size, int) or self.flow_max_size < 16:
            raise UsageError(f"flow_max_size {self.flow_max_size!r}: expected at least 16 pixels.")
        if self.preset not in ("ultrafast", "fast", "medium"):
            raise UsageError(f"preset {self.preset!r}: expected ultrafast, fast or medium.")


def gray(rgb: np.ndarray) -> np.ndarray:
    """uint8 HxWx3 -> uint8 HxW luminance (BT.601)."""
    y = rgb[..., 0] * np.float32(0.299) + rgb[..., 1] * np.float32(0.587) + rgb[..., 2] * np.float32(0.114)
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


def dis_for(preset: Preset) -> Any:
    """OpenCV's DIS optical flow at ``preset``: made once per stream and reused for every frame pair (one
    object per thread: ``calc`` keeps state between calls)."""
    cv2 = _cv2()
    code = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
            "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}[preset]
    return cv2.DISOpticalFlow_create(code)


def dis_flow(src: np.ndarray, dst: np.ndarray, *, preset: Preset = "fast", max_size: int | None = None,
             dis: Any = None) -> np.ndarray:
    """Flow from gray ``src`` to gray ``dst`` (HxWx2, in pixels of the full size): ``src(x) ~ dst(x + flow(x))``.

    Computed with the longest side at most ``max_size`` pixels and enlarged (values scaled) to the full size.
    ``dis``: a :func:`dis_for` object to reuse (default: a new one for this call).
    """
    cv2 = _cv2()
    h, w = src.shape[:2]
    factor = 1.0 if max_size is None or max(h, w) <= max_size else max_size / max(h, w)
    if factor < 1.0:
        size = (max(8, round(w * factor)), max(8, round(h * factor)))
        src = cv2.resize(src, size, interpolation=cv2.INTER_AREA)
        dst = cv2.resize(dst, size, interpolation=cv2.INTER_AREA)
    flow = (dis or dis_for(preset)).calc(np.ascontiguousarray(src), np.ascontiguousarray(dst), None)
    if factor < 1.0:
        sy, sx = h / src.shape[0], w / src.shape[1]
        flow = cv2.resize(flow, (w, h), interpolation=cv2.INTER_LINEAR)
        flow[..., 0] *= sx
        flow[..., 1] *= sy
    return flow


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``out(x) = image(x + flow(x))`` (bilinear, borders replicated); image HxW or HxWxC, any dtype."""
    cv2 = _cv2()
    h, w = flow.shape[:2]
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(image, xs + flow[..., 0], ys + flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def consistent(backward: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """Ruder et al.'s forward-backward test: bool HxW, True where following ``backward`` (t -> t-1) and then
    ``forward`` (t-1 -> t) returns to the start, and the point stays inside the previous frame."""
    h, w = backward.shape[:2]
    forward_there = warp(forward, backward)
    round_trip = backward + forward_there
    lhs = (round_trip**2).sum(-1)
    rhs = 0.01 * ((backward**2).sum(-1) + (forward_there**2).sum(-1)) + 0.5
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    tx, ty = xs + backward[..., 0], ys + backward[..., 1]
    inside = (tx >= 0) & (tx <= w - 1) & (ty >= 0) & (ty <= h - 1)
    return (lhs <= rhs) & inside


class TemporalSmoother:
    """Stateful: feed frames in order with :meth:`step`; :meth:`reset` at a cut or a new video."""

    def __init__(self, options: TemporalOptions | None = None) -> None:
        self.options = options or TemporalOptions()
        self._prev_gray: np.ndarray | None = None
        self._prev_out: np.ndarray | None = None
        self._dis: Any = None  # one DIS optical flow for every frame of this stream
        #: share of pixels of the last frame that took the previous result (for logs and tests)
        self.last_coverage = 0.0

    def reset(self) -> None:
        self._prev_gray = self._prev_out = None

    def step(self, frame: np.ndarray, styled: np.ndarray) -> np.ndarray:
        """The steady result for input ``frame`` whose per-frame stylization is ``styled`` (uint8 HxWx3)."""
        if frame.shape[:2] != styled.shape[:2]:  # the network ran at another size: follow its size
            from .scale import resize_rgb

            frame = resize_rgb(frame, styled.shape[:2])
        now = self._flow_gray(frame)
        out = styled
        if self._prev_out is not None and self._prev_gray is not None and self._prev_out.shape == styled.shape:
            out = self._blend(now, styled, self._prev_gray, self._prev_out)
        else:
            self.last_coverage = 0.0
        self._prev_gray, self._prev_out = now, out
        return out

    def _flow_gray(self, frame: np.ndarray) -> np.ndarray:
        """The frame's luminance at the flow's resolution (longest side at most ``flow_max_size``)."""
        y = gray(frame)
        h, w = y.shape
        factor = self.options.flow_max_size / max(h, w)
        if factor >= 1.0:
            return y
        cv2 = _cv2()
        return cv2.resize(y, (max(8, round(w * factor)), max(8, round(h * factor))), interpolation=cv2.INTER_AREA)

    def _blend(self, now: np.ndarray, styled: np.ndarray, prev_gray: np.ndarray, prev_out: np.ndarray
               ) -> np.ndarray:
        """Flow, mask and photometric check at the flow's resolution; one warp of the previous result at full
        resolution, with the flow and a soft mask enlarged to it."""
        cv2 = _cv2()
        o = self.options
        if self._dis is None:
            self._dis = dis_for(o.preset)
        backward = dis_flow(now, prev_gray, preset=o.preset, dis=self._dis)
        forward = dis_flow(prev_gray, now, preset=o.preset, dis=self._dis)
        mask = consistent(backward, forward)
        mask &= np.abs(warp(prev_gray, backward).astype(np.int16) - now) <= o.photometric_tolerance
        self.last_coverage = float(mask.mean())
        h, w = styled.shape[:2]
        weight = mask.astype(np.float32) * np.float32(o.weight)
        if (h, w) != now.shape:
            backward = cv2.resize(backward, (w, h), interpolation=cv2.INTER_LINEAR)
            backward[..., 0] *= w / now.shape[1]
            backward[..., 1] *= h / now.shape[0]
            weight = cv2.resize(weight, (w, h), interpolation=cv2.INTER_LINEAR)
        warped = warp(prev_out, backward).astype(np.float32)
        s = styled.astype(np.float32)
        return np.clip(np.rint(s + weight[..., None] * (warped - s)), 0, 255).astype(np.uint8)


def warping_error(outputs: list[np.ndarray], flows: list[np.ndarray], masks: list[np.ndarray]) -> float:
    """Lai et al. (2018)'s temporal warping error of a result video.

    ``outputs``: T frames (uint8 HxWx3); ``flows[t-1]``: flow from frame t to frame t-1 (computed on the input
    frames, or the true flow of a synthetic clip); ``masks[t-1]``: its non-occlusion mask. The mean over t of
    the masked mean squared difference between O_t and warp(O_{t-1}), with values in 0..1 (Lai et al.'s units;
    multiply by 1e3 for their tables).
    """
    if not len(outputs) - 1 == len(flows) == len(masks) or len(outputs) < 2:
        raise ValueError("expected T >= 2 outputs and T-1 flows and masks")
    errors = []
    for t in range(1, len(outputs)):
        warped = warp(outputs[t - 1], flows[t - 1]).astype(np.float64) / 255.0
        diff = ((outputs[t].astype(np.float64) / 255.0 - warped) ** 2).sum(-1)
        m = masks[t - 1].astype(np.float64)
        errors.append(float((diff * m).sum() / max(m.sum(), 1.0)))
    return float(np.mean(errors))


def input_flows(frames: list[np.ndarray], *, preset: Preset = "medium") -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Backward flows and Ruder masks computed on the *input* frames at full resolution: the reference the
    warping error of a real clip is measured with (not the smoother's own, faster flow)."""
    grays = [gray(f) for f in frames]
    flows, masks = [], []
    dis = dis_for(preset) if len(frames) > 1 else None
    for t in range(1, len(frames)):
        back = dis_flow(grays[t], grays[t - 1], preset=preset, dis=dis)
        fwd = dis_flow(grays[t - 1], grays[t], preset=preset, dis=dis)
        flows.append(back)
        masks.append(consistent(back, fwd))
    return flows, masks


def pan_zoom_clip(image: np.ndarray, *, frames: int, size: tuple[int, int], pan: tuple[float, float] = (0.0, 0.0),
                  zoom: float = 1.0, start: tuple[float, float] | None = None
                  ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """A synthetic clip with known motion, for measuring: a camera of ``size`` = (H, W) panning by ``pan`` =
    (dx, dy) pixels per frame and zooming in by ``zoom`` per frame over the still ``image``.

    Returns the frames (uint8 HxWx3, bilinear), the true backward flows (frame t -> t-1) and the masks of pixels
    whose source lies inside the previous frame.
    """
    cv2 = _cv2()
    h, w = size
    ih, iw = image.shape[:2]
    cx, cy = start if start is not None else ((iw - 1) / 2, (ih - 1) / 2)
    xc, yc = (w - 1) / 2, (h - 1) / 2

    def camera(t: int) -> tuple[float, float, float]:
        return zoom ** (-t), cx + pan[0] * t, cy + pan[1] * t

    out, flows, masks = [], [], []
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    for t in range(frames):
        s, ccx, ccy = camera(t)
        m = np.array([[s, 0, ccx - s * xc], [0, s, ccy - s * yc]], np.float64)
        out.append(cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                  borderMode=cv2.BORDER_REFLECT))
        if t:
            ps, pcx, pcy = camera(t - 1)
            px, py = s * (xs - xc) + ccx, s * (ys - yc) + ccy  # canvas point of each pixel of frame t
            tx, ty = (px - pcx) / ps + xc, (py - pcy) / ps + yc  # the same point in frame t-1
            flows.append(np.stack([tx - xs, ty - ys], -1).astype(np.float32))
            masks.append((tx >= 0) & (tx <= w - 1) & (ty >= 0) & (ty <= h - 1))
    return out, flows, masks
