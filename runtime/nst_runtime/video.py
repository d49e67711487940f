"""Video through the same pipeline: PyAV decodes, the Stylizer runs, PyAV encodes; audio is remuxed.

Decoding runs in the pipeline's feeder thread while frames are stylized and the main thread encodes, so
the accelerator is not idle while the CPU decodes. The video stream is re-encoded (H.264 for MP4/MOV/MKV,
VP9 for WebM, MPEG-4 Part 2 for AVI) with the input's frame timestamps; the first audio stream is copied
packet for packet (no re-encoding) when the output container accepts its codec, and dropped with a warning
otherwise. The output is written to a temporary file, fsynced and renamed: no partial file on failure.
A packet the decoder cannot decode (a damaged stretch or tail) is skipped and counted
(``VideoReport.skipped_packets``); data the demuxer cannot read ends the input there. Frames lost without an
error (Matroska and WebM resynchronize silently past damage) are counted too (``VideoReport.lost_frames``):
from the container's frame count where it declares one (MP4, MOV, AVI), from gaps in the decoded frames'
timestamps, and from the container's duration past the last decoded frame. The CLI writes the decodable
frames and lists the video among the failures (exit 8).

Frames larger than ``max_pixels`` are refused before decoding, like images. The output keeps the input's size:
H.264/H.265 4:2:0 cannot hold an odd width or height, so an odd-size video is encoded 4:4:4 (High 4:4:4
Predictive; some hardware players and browsers do not play it, which is logged); VP9 and MPEG-4 keep odd
sizes in 4:2:0.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._lazy import import_optional
from .atomic import atomic_output
from .errors import MediaError, write_error
from .images import DEFAULT_MAX_PIXELS

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .steps import StepKwargs
    from .stylizer import Stylizer
    from .temporal import TemporalOptions

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EFBIG})
_CODEC_BY_SUFFIX = {".mp4": "libx264", ".m4v": "libx264", ".mov": "libx264", ".mkv": "libx264",
                    ".webm": "libvpx-vp9", ".avi": "mpeg4"}


@dataclass(frozen=True)
class VideoReport:
    path: Path
    frames: int
    width: int
    height: int
    audio: str  # "copied", "none" or "dropped: <why>"
    seconds: float
    #: video packets the decoder could not decode (a damaged stretch or tail); they are skipped, not fatal
    skipped_packets: int = 0
    #: frames of the input that were not decoded (damage, an unreadable tail), as far as the container tells
    lost_frames: int = 0
    #: how many frames the input should have held (declared count, or frames written plus lost)
    expected_frames: int | None = None

    @property
    def complete(self) -> bool:
        """Every frame of the input was decoded and written."""
        return not self.skipped_packets and not self.lost_frames

    def damage(self) -> str:
        """One line on what was lost (empty when nothing was)."""
        if self.complete:
            return ""
        parts = [f"{self.lost_frames} of {self.expected_frames or self.frames + self.lost_frames} frames lost"]
        if self.skipped_packets:
            parts.append(f"{self.skipped_packets} undecodable packets")
        return (f"{'; '.join(parts)} (damaged or unreadable data); the {self.frames} decodable frames were "
                f"written to {self.path}")


def _av() -> Any:
    return import_optional("av", purpose="video input", install="pip install 'nst[video]' (PyAV)")


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def stylize_video(
    stylizer: Stylizer,
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    batch_size: int | None = None,
    crf: int = 18,
    on_frame: Callable[[int], None] | None = None,
    codec: str | None = None,
    temporal: TemporalOptions | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    **steps: Unpack[StepKwargs],
) -> VideoReport:
    """Stylize every frame of ``src`` into ``dst`` (container from ``dst``'s suffix), keeping timing and audio.

    ``codec``: an FFmpeg encoder name (default: H.264 for MP4/MOV/MKV, VP9 for WebM, MPEG-4 for AVI); ``crf``:
    its constant-rate quality (libx264/libx265/libvpx-vp9; lower is better, 18 is near-transparent for x264).
    ``temporal``: steady video (:mod:`nst_runtime.temporal`). ``steps``: as in :meth:`Stylizer.stylize`.
    ``max_pixels``: refuse frames larger than this (as :func:`nst_runtime.read_image`; None: no limit).
    Damaged input is not fatal: what could be decoded is written and the report counts what was lost.
    """
    import time

    from .steps import StepPlan

    av = _av()
    src, dst = Path(src), Path(dst)
    # the size the network sees (scale up to 4) gets the frames' pixel limit and the budget, before any frame
    plan = StepPlan.of(**steps, max_pixels=max_pixels, memory_limit=stylizer.memory_limit)
    codec = codec or _CODEC_BY_SUFFIX.get(dst.suffix.lower())
    if codec is None or dst.suffix.lower() not in _CODEC_BY_SUFFIX:
        raise MediaError(f"{dst}: expected a video suffix ({', '.join(VIDEO_SUFFIXES)}) for the output.")
    _check_codec(av, codec, crf)
    t0 = time.perf_counter()
    try:
        inp = av.open(str(src))
    except (av.FFmpegError, OSError) as exc:
        raise MediaError(f"{src}: cannot open as a video ({exc}).") from None
    skipped, demux_error = 0, None
    seen_pts: list[int] = []
    with inp, atomic_output(dst, suffix=dst.suffix) as tmp:
        try:
            if not inp.streams.video:
                raise MediaError(f"{src}: no video stream.")
            vin = inp.streams.video[0]
            vin.thread_type = "AUTO"
            ain = inp.streams.audio[0] if inp.streams.audio else None
            width, height = vin.codec_context.width, vin.codec_context.height
            _check_frame_pixels(src, width, height, max_pixels)
            processed = plan.processed_size(height, width)
            if plan.options.output_size == "processed":
                height, width = processed
            with av.open(tmp, "w", format=_container_format(dst)) as out:
                rate = vin.average_rate or vin.guessed_rate or 25
                vout = out.add_stream(codec, rate=rate)
                vout.width, vout.height = width, height
                vout.pix_fmt = _pixel_format(codec, width, height, src)
                vout.time_base = vin.time_base
                if codec == "libx264":
                    vout.options = {"crf": str(crf), "preset": "veryfast"}
                elif codec in _CRF_CODECS:
                    vout.options = {"crf": str(crf), **({"b:v": "0"} if codec == "libvpx-vp9" else {})}
                audio_state, aout = "none", None
                if ain is not None:
                    try:
                        aout = out.add_stream_from_template(ain)
                        audio_state = "copied"
                    except (av.FFmpegError, ValueError) as exc:
                        audio_state = f"dropped: {exc}"
                        logger.warning("%s: audio not kept (%s)", src, exc)
                mux_lock = threading.Lock()
                timestamps: collections.deque[int | None] = collections.deque()

                def frames() -> Iterator[np.ndarray]:
                    nonlocal skipped, demux_error
                    streams = [vin] + ([ain] if aout is not None else [])
                    packets = inp.demux(*streams)
                    while True:
                        try:
                            packet = next(packets)
                        except StopIteration:
                            return
                        except av.FFmpegError as exc:  # unreadable container data: the input ends here
                            if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS:
                                raise
                            demux_error = exc
                            logger.debug("%s: demuxing stopped (%s)", src, exc)
                            return
                        if packet.stream.type == "audio":
                            if packet.dts is None:
                                continue
                            packet.stream = aout
                            with mux_lock:
                                out.mux(packet)
                            continue
                        try:
                            decoded = packet.decode()
                        except (av.FFmpegError, ValueError) as exc:  # a damaged packet: skip it, keep going
                            skipped += 1
                            logger.debug("%s: undecodable packet at pts %s skipped (%s)", src, packet.pts, exc)
                            continue
                        for frame in decoded:
                            _check_frame_pixels(src, frame.width, frame.height, max_pixels)
                            if frame.pts is not None and seen_pts and frame.pts <= seen_pts[-1]:
                                # a damaged stream can hand back frames out of order, which no muxer takes
                                logger.debug("%s: frame at pts %s out of order after %s; dropped", src, frame.pts,
                                             seen_pts[-1])
                                continue
                            timestamps.append(frame.pts)
                            if frame.pts is not None:
                                seen_pts.append(frame.pts)
                            yield frame.to_ndarray(format="rgb24")

                count = 0
                # closed on any exit (an error, Ctrl-C, SIGTERM): the pipeline stops reading the input before the
                # input is closed, and the temp file is removed by atomic_output
                with contextlib.closing(stylizer.stylize_frames(frames(), batch_size=batch_size, temporal=temporal,
                                                                **steps)) as styled_frames:
                    for styled in styled_frames:
                        if styled.shape[:2] != (vout.height, vout.width):
                            styled = np.pad(styled, ((0, vout.height - height), (0, vout.width - width), (0, 0)),
                                            mode="edge")
                        vf = av.VideoFrame.from_ndarray(styled, format="rgb24")
                        vf.pts = timestamps.popleft()
                        vf.time_base = vin.time_base
                        encoded = vout.encode(vf)
                        with mux_lock:
                            out.mux(encoded)
                        count += 1
                        if on_frame is not None:
                            on_frame(count)
                with mux_lock:
                    out.mux(vout.encode(None))
            if count == 0:
                why = f"; {demux_error}" if demux_error is not None else ""
                raise MediaError(f"{src}: no decodable video frames ({skipped} damaged packets{why}).")
            declared = int(vin.frames or 0)
            lost = estimate_lost_frames(seen_pts, decoded=count, declared=declared,
                                        interval=_frame_interval(vin), start=_stream_start(vin, inp),
                                        end=_stream_end(vin, inp), truncated=demux_error is not None)
        except av.FFmpegError as exc:
            if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS:
                raise write_error(dst, exc) from None
            raise MediaError(f"{src}: video decoding/encoding failed ({exc}).") from None
    report = VideoReport(dst, count, width, height, audio_state, time.perf_counter() - t0, skipped, lost,
                         declared or (count + lost if lost else count))
    if not report.complete:
        logger.warning("%s: %s", src, report.damage())
    return report


#: encoders that take a constant-rate-factor quality
_CRF_CODECS = frozenset({"libx264", "libx265", "libvpx-vp9"})


def _check_codec(av: Any, codec: str, crf: int) -> None:
    """Refuse an encoder this FFmpeg build lacks, or a CRF out of range, before any work."""
    from .errors import UsageError

    try:
        av.codec.Codec(codec, "w")
    except Exception:
        raise UsageError(f"codec {codec!r}: this FFmpeg build (PyAV {av.__version__}) has no such encoder. Fix: "
                         "use libx264 (MP4/MOV/MKV), libvpx-vp9 (WebM) or mpeg4 (AVI).") from None
    if isinstance(crf, bool) or not isinstance(crf, int) or not 0 <= crf <= 63:
        raise UsageError(f"crf {crf!r}: expected an integer 0..51 (x264/x265) or 0..63 (VP9); lower is better.")


def _check_frame_pixels(src: Path, width: int, height: int, max_pixels: int | None) -> None:
    if max_pixels is not None and width * height > max_pixels:
        raise MediaError(f"{src}: video frames of {width}x{height} = {width * height} pixels, more than the limit "
                         f"of {max_pixels} (a guard against decompression bombs). Fix: raise the limit "
                         "(--max-pixels, or max_pixels=...) if you trust the file.")


#: encoders whose 4:2:0 needs even sizes; an odd-size video is encoded 4:4:4 with them to keep its size
_EVEN_420_CODECS = frozenset({"libx264", "libx265"})


def _pixel_format(codec: str, width: int, height: int, src: Path) -> str:
    if codec in _EVEN_420_CODECS and (width % 2 or height % 2):
        logger.warning("%s: %dx%d is odd and %s 4:2:0 needs even sizes; encoding 4:4:4 (High 4:4:4 Predictive) to "
                       "keep the size, which some hardware players and browsers do not play. Fix: an even size, or "
                       "WebM (VP9 keeps odd sizes in 4:2:0).", src, width, height, codec)
        return "yuv444p"
    return "yuv420p"


def _frame_interval(stream: Any) -> float | None:
    rate = stream.average_rate or stream.guessed_rate
    if not rate or not stream.time_base:
        return None
    return float(1 / (rate * stream.time_base))


def _stream_start(stream: Any, container: Any) -> float | None:
    if stream.start_time is not None:
        return float(stream.start_time)
    if container.start_time is not None and stream.time_base:
        return float(container.start_time / 1_000_000 / stream.time_base)
    return None


def _stream_end(stream: Any, container: Any) -> float | None:
    """Where the stream ends, in its time base: its start plus its duration (the stream's, else the
    container's), or None where the container does not say."""
    start = _stream_start(stream, container) or 0.0
    if stream.duration:
        return start + float(stream.duration)
    if container.duration and stream.time_base:
        return float(container.duration / 1_000_000 / stream.time_base) + float(
            (container.start_time or 0) / 1_000_000 / stream.time_base)
    return None


def estimate_lost_frames(pts: list[int], *, decoded: int, declared: int = 0, interval: float | None = None,
                         start: float | None = None, end: float | None = None, truncated: bool = False) -> int:
    """Frames of a stream that were not decoded, from what the container tells.

    ``pts``: the decoded frames' timestamps; ``declared``: the container's frame count (0: unknown);
    ``interval``: the nominal frame interval; ``start``/``end``: where the stream starts and ends (all in the
    stream's time base). The largest of: declared minus decoded; frames missing in timestamp gaps (a gap
    over 1.5 intervals for a constant frame rate, over 3 for a variable one); frames missing before the
    first and after the last decoded frame. ``truncated``: the demuxer stopped on damage.
    """
    lost = max(0, declared - decoded) if declared else 0
    times = np.unique(np.asarray(pts, np.float64))
    diffs = np.diff(times)
    step = float(np.median(diffs)) if len(diffs) else (interval or 0.0)
    if interval and len(diffs) < 2:
        step = interval
    if step <= 0 or not len(times):
        return lost
    steady = not len(diffs) or float(np.mean(np.abs(diffs - step) <= 0.1 * step)) >= 0.9
    k = 1.5 if steady else 3.0
    gaps = int(sum(round(d / step) - 1 for d in diffs if d > k * step))
    edges = 0
    if end is not None:
        tail = (end - (times[-1] + step)) / step
        if tail > k - 1 or (truncated and tail > 0.5):
            edges += round(tail)
    if start is not None:
        head = (times[0] - start) / step
        if head > k - 1:
            edges += round(head)
    return max(lost, gaps + edges)


def _container_format(dst: Path) -> str:
    return {".mkv": "matroska", ".webm": "webm", ".avi": "avi", ".mov": "mov"}.get(dst.suffix.lower(), "mp4")


def count_frames(path: str | os.PathLike[str]) -> int:
    """Decode and count the video frames of ``path`` (used for progress totals and tests)."""
    av = _av()
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))
