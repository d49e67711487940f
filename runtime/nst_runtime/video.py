"""Video through the same pipeline: PyAV decodes, the Stylizer runs, PyAV encodes; audio is remuxed.

Decoding runs in the pipeline's feeder thread while frames are stylized and the main thread encodes, so
the accelerator is not idle while the CPU decodes. The video stream is re-encoded (H.264 for MP4/MOV/MKV,
VP9 for WebM, MPEG-4 Part 2 for AVI) with the input's frame timestamps; the first audio stream is copied
packet for packet (no re-encoding) when the output container accepts its codec, and dropped with a warning
otherwise. The output is written to a temporary file, fsynced and renamed: no partial file on failure.
A packet the decoder cannot decode (a damaged stretch or tail) is skipped and counted
(``VideoReport.skipped_packets``); the CLI writes the video and lists it among the failures.
"""

from __future__ import annotations

import collections
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
    **steps: Unpack[StepKwargs],
) -> VideoReport:
    """Stylize every frame of ``src`` into ``dst`` (container from ``dst``'s suffix), keeping timing and audio.

    ``codec``: an FFmpeg encoder name (default: H.264 for MP4/MOV/MKV, VP9 for WebM, MPEG-4 for AVI); ``crf``:
    its constant-rate quality (libx264/libx265/libvpx-vp9; lower is better, 18 is near-transparent for x264).
    ``temporal``: steady video (:mod:`nst_runtime.temporal`). ``steps``: as in :meth:`Stylizer.stylize`.
    """
    import time

    from .steps import StepPlan

    av = _av()
    src, dst = Path(src), Path(dst)
    plan = StepPlan.of(**steps)
    codec = codec or _CODEC_BY_SUFFIX.get(dst.suffix.lower())
    if codec is None or dst.suffix.lower() not in _CODEC_BY_SUFFIX:
        raise MediaError(f"{dst}: expected a video suffix ({', '.join(VIDEO_SUFFIXES)}) for the output.")
    _check_codec(av, codec, crf)
    t0 = time.perf_counter()
    try:
        inp = av.open(str(src))
    except (av.FFmpegError, OSError) as exc:
        raise MediaError(f"{src}: cannot open as a video ({exc}).") from None
    skipped = 0
    with inp, atomic_output(dst, suffix=dst.suffix) as tmp:
        try:
            if not inp.streams.video:
                raise MediaError(f"{src}: no video stream.")
            vin = inp.streams.video[0]
            vin.thread_type = "AUTO"
            ain = inp.streams.audio[0] if inp.streams.audio else None
            width, height = vin.codec_context.width, vin.codec_context.height
            if plan.options.output_size == "processed":
                height, width = plan.before(np.zeros((height, width, 3), np.uint8)).shape[:2]
            with av.open(tmp, "w", format=_container_format(dst)) as out:
                rate = vin.average_rate or vin.guessed_rate or 25
                vout = out.add_stream(codec, rate=rate)
                vout.width, vout.height = width + width % 2, height + height % 2
                vout.pix_fmt = "yuv420p"
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
                    nonlocal skipped
                    streams = [vin] + ([ain] if aout is not None else [])
                    for packet in inp.demux(*streams):
                        if packet.stream.type == "audio":
                            if packet.dts is None:
                                continue
                            packet.stream = aout
                            with mux_lock:
                                out.mux(packet)
                            continue
                        try:
                            decoded = packet.decode()
                        except av.error.InvalidDataError as exc:  # a damaged packet: skip it, keep going
                            skipped += 1
                            logger.debug("%s: undecodable packet at pts %s skipped (%s)", src, packet.pts, exc)
                            continue
                        for frame in decoded:
                            timestamps.append(frame.pts)
                            yield frame.to_ndarray(format="rgb24")

                count = 0
                for styled in stylizer.stylize_frames(frames(), batch_size=batch_size, temporal=temporal, **steps):
                    if styled.shape[:2] != (vout.height, vout.width):
                        styled = np.pad(styled, ((0, vout.height - height), (0, vout.width - width), (0, 0)),
                                        mode="edge")
                    vf = av.VideoFrame.from_ndarray(styled, format="rgb24")
                    vf.pts = timestamps.popleft()
                    vf.time_base = vin.time_base
                    packets = vout.encode(vf)
                    with mux_lock:
                        out.mux(packets)
                    count += 1
                    if on_frame is not None:
                        on_frame(count)
                with mux_lock:
                    out.mux(vout.encode(None))
            if count == 0:
                raise MediaError(f"{src}: no decodable video frames ({skipped} damaged packets).")
        except av.FFmpegError as exc:
            if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS:
                raise write_error(dst, exc) from None
            raise MediaError(f"{src}: video decoding/encoding failed ({exc}).") from None
    if skipped:
        logger.warning("%s: %d undecodable video packets were skipped (a damaged stretch or tail)", src, skipped)
    return VideoReport(dst, count, width, height, audio_state, time.perf_counter() - t0, skipped)


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


def _container_format(dst: Path) -> str:
    return {".mkv": "matroska", ".webm": "webm", ".avi": "avi", ".mov": "mov"}.get(dst.suffix.lower(), "mp4")


def count_frames(path: str | os.PathLike[str]) -> int:
    """Decode and count the video frames of ``path`` (used for progress totals and tests)."""
    av = _av()
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))
