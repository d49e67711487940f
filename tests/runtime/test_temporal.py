"""Steady video (nst_runtime.temporal): flow conventions, the consistency mask, and the warping-error metric
(Lai et al. 2018) measured on a short synthetic clip with known motion, with and without the mode."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("cv2", reason="the temporal mode needs opencv-python-headless (the [video] extra)")


@pytest.fixture(scope="module")
def clip():
    """Nine frames of 96x160 panning and zooming over a natural photo (true flows known)."""
    import cv2
    import skimage.data
    from nst_runtime.temporal import pan_zoom_clip

    canvas = cv2.resize(skimage.data.astronaut(), (768, 768), interpolation=cv2.INTER_CUBIC)
    return pan_zoom_clip(canvas, frames=9, size=(96, 160), pan=(1.6, -0.7), zoom=1.01)


def test_true_flow_maps_each_frame_onto_the_previous(clip):
    from nst_runtime.temporal import warping_error

    frames, flows, masks = clip
    assert len(flows) == len(masks) == len(frames) - 1
    assert all(m.mean() > 0.9 for m in masks)  # a slow camera: almost everything stays in view
    # the input itself is temporally consistent under its true flow (only bilinear resampling differs)
    assert warping_error(frames, flows, masks) < 1e-3
    shuffled = [frames[0], *frames[:0:-1]][: len(frames)]
    assert warping_error(shuffled, flows, masks) > 10 * warping_error(frames, flows, masks)


def test_dis_flow_finds_the_true_motion(clip):
    from nst_runtime.temporal import dis_flow, gray

    frames, flows, masks = clip
    est = dis_flow(gray(frames[3]), gray(frames[2]), preset="medium")
    err = np.linalg.norm(est - flows[2], axis=-1)[masks[2]]
    assert np.median(err) < 0.3  # pixels


def test_forward_backward_check_marks_disocclusion():
    """A square that jumps: the pixels it uncovers and covers fail the check, the static rest passes."""
    from nst_runtime.temporal import consistent

    back = np.zeros((40, 40, 2), np.float32)
    fwd = np.zeros((40, 40, 2), np.float32)
    back[10:20, 10:20, 0] = -6  # in frame t the square sits at x 10..20 and came from x 4..14
    fwd[10:20, 4:14, 0] = 6
    mask = consistent(back, fwd)
    assert mask[30:, 30:].all() and mask[12:18, 12:18].all()
    assert not mask[12:18, 4:10].any()  # background uncovered at t whose flow leads into the moving square


def test_steady_mode_lowers_the_warping_error(clip, stylizer):
    from nst_runtime.temporal import TemporalOptions, TemporalSmoother, warping_error

    frames, flows, masks = clip
    per_frame = [stylizer.stylize(f) for f in frames]
    smoother = TemporalSmoother(TemporalOptions(weight=0.6))
    steady = [smoother.step(f, s) for f, s in zip(frames, per_frame, strict=True)]
    e_per, e_steady = warping_error(per_frame, flows, masks), warping_error(steady, flows, masks)
    assert e_steady < 0.5 * e_per, (e_per, e_steady)
    assert np.array_equal(steady[0], per_frame[0])  # nothing to follow yet
    psnr = [10 * np.log10(255**2 / np.mean((a.astype(float) - b) ** 2)) for a, b in zip(steady[1:], per_frame[1:], strict=True)]
    assert min(psnr) > 15  # it changes the look, not the picture (measured numbers: docs/runtime.md)
    # weight 0 is the per-frame result
    off = TemporalSmoother(TemporalOptions(weight=0.0))
    assert all(np.array_equal(off.step(f, s), s) for f, s in zip(frames, per_frame, strict=True))


def test_stylize_frames_temporal_matches_the_smoother(clip, stylizer):
    from nst_runtime.temporal import TemporalOptions, TemporalSmoother

    frames = clip[0][:4]
    got = list(stylizer.stylize_frames(frames, temporal=TemporalOptions()))
    smoother = TemporalSmoother(TemporalOptions())
    want = [smoother.step(f, stylizer.stylize(f)) for f in frames]
    assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))


def test_bad_options():
    from nst_runtime.errors import UsageError
    from nst_runtime.temporal import TemporalOptions

    for kwargs in (dict(weight=1.0), dict(weight=-0.1), dict(flow_max_size=4), dict(preset="slow")):
        with pytest.raises(UsageError):
            TemporalOptions(**kwargs)


def test_video_with_steady_mode_and_codec(stylizer, tmp_path):
    pytest.importorskip("av")
    import av
    from nst_runtime.errors import UsageError
    from nst_runtime.temporal import TemporalOptions
    from nst_runtime.video import stylize_video

    src = tmp_path / "in.mkv"
    frames = [np.full((32, 48, 3), 40 * i, np.uint8) for i in range(5)]
    with av.open(str(src), "w") as c:
        vs = c.add_stream("libx264", rate=10)
        vs.width, vs.height, vs.pix_fmt = 48, 32, "yuv420p"
        for f in frames:
            c.mux(vs.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(vs.encode(None))
    report = stylize_video(stylizer, src, tmp_path / "out.mkv", temporal=TemporalOptions(), codec="mpeg4")
    assert report.frames == 5
    with av.open(str(tmp_path / "out.mkv")) as c:
        assert c.streams.video[0].codec_context.name == "mpeg4"
    small = stylize_video(stylizer, src, tmp_path / "small.mkv", scale=0.5, output_size="processed", crf=30)
    assert (small.width, small.height) == (24, 16)
    with pytest.raises(UsageError, match="no such encoder"):
        stylize_video(stylizer, src, tmp_path / "x.mkv", codec="not-a-codec")


def test_one_optical_flow_object_per_stream(monkeypatch):
    """The smoother makes OpenCV's DIS optical flow once and reuses it for every frame (it was made twice per
    frame)."""
    cv2 = pytest.importorskip("cv2")
    from nst_runtime.temporal import TemporalSmoother

    made = []
    real = cv2.DISOpticalFlow_create
    monkeypatch.setattr(cv2, "DISOpticalFlow_create", lambda code: made.append(code) or real(code))
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (40, 48, 3), np.uint8)
    smoother = TemporalSmoother()
    for i in range(5):
        frame = np.roll(base, i, axis=1)
        smoother.step(frame, frame)
    assert len(made) == 1
