"""Measure tiling against the untiled output: quality (PSNR) of the fast and exact modes on a trained-like network
and natural photos, and speed of fast tiling against one untiled call (docs/runtime.md).

    python tools/tiling_quality.py quality --work /tmp/tq --steps 400 --json benchmarks/results/tiling_quality.json
    python tools/tiling_quality.py speed --work /tmp/tq --size 2000x3000 --tile 1024 --json benchmarks/results/tiling_speed.json
    python tools/tiling_quality.py pixels --size 2000x3000 --tile 1024

``pixels`` prints, without running a network, how many pixels fast tiling pushes through the network (statistics
pass plus tiles with their halos) against the image's: a proxy for its cost that does not depend on load.
``--stats`` picks how the statistics are estimated (``downscale``, the default, ``box`` or ``mosaic``), ``--stats-share``
and ``--halo`` override the runtime's defaults.

*Trained-like network*: a TransformerNet trained ``--steps`` steps by ``nst_train.train`` on the procedural
sample images with a RANDOMLY INITIALISED VGG-16 loss network (no ImageNet weights offline): the weights have
moved under real gradients (content, Gram style losses), but it is not a real style model. It is kept in
``--work`` and reused; ``--checkpoint`` uses another. A network with random weights is a worse case (every
statistic matters more), reported beside it as ``random`` (the tests' seeded network).

*Images*: the colour photos shipped with scikit-image (astronaut, coffee, chelsea, rocket, hubble_deep_field,
stereo_motorcycle, retina, immunohistochemistry), at their own size; tiles of ``--tile`` px (default 256, so
each photo runs in several tiles).

``quality`` does not depend on machine load. ``speed`` does: run it on a quiet machine; it records the load
average before and after, and the median of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "stereo_motorcycle", "retina",
          "immunohistochemistry")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def photos() -> dict[str, np.ndarray]:
    import skimage.data

    out = {}
    for name in PHOTOS:
        img = getattr(skimage.data, name)()
        img = img[0] if isinstance(img, tuple) else img  # stereo_motorcycle: (left, right, disparity)
        out[name] = np.ascontiguousarray(img[..., :3])
    return out


def trained_checkpoint(work: Path, steps: int, image_size: int) -> Path:
    """Train (once) the trained-like network into ``work/trained.pth``."""
    ckpt = work / "trained.pth"
    if ckpt.is_file():
        return ckpt
    from nst_train.samples import write_sample_content, write_sample_style
    from nst_train.train import TrainConfig, train

    content = work / "content"
    write_sample_content(content, count=16, size=image_size + 32)
    style = write_sample_style(work / "style.png", size=image_size)
    config = TrainConfig(style=style, content_dir=content, out=ckpt, image_size=image_size, batch_size=2,
                         steps=steps, device="cpu", vgg_weights="random", num_workers=0,
                         log_every=max(1, steps // 10), checkpoint_every=0, preview_every=0, progress=False)
    train(config)
    return ckpt


def random_checkpoint(work: Path) -> Path:
    """The tests' seeded network (random weights, perturbed norms, output spanning 0..255)."""
    ckpt = work / "random.pth"
    if ckpt.is_file():
        return ckpt
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import _seeded_net
    from nst_train.checkpoint import CheckpointMetadata, save_checkpoint

    return save_checkpoint(ckpt, _seeded_net(), CheckpointMetadata(steps=0))


def _carries_every_graph(tiling: Path) -> bool:
    """The tiling graph carries the stems, apply and statistics graphs of this version (else: re-export it)."""
    import onnx
    from nst_runtime.tiling import APPLY_KEY, STATS_KEY, STEM_DEPTH, STEM_KEY

    keys = {p.key for p in onnx.load(str(tiling), load_external_data=False).metadata_props}
    return {APPLY_KEY, STATS_KEY, *(STEM_KEY.format(depth=d) for d in range(1, STEM_DEPTH + 1))} <= keys


def exported(ckpt: Path) -> Path:
    """NAME.onnx and NAME.tiling.onnx beside ``ckpt`` (exported once)."""
    from nst_export.onnx_export import onnx_from_checkpoint
    from nst_export.tiling_graph import tiling_onnx_from_checkpoint

    onnx_path = ckpt.with_suffix(".onnx")
    if not onnx_path.is_file():
        onnx_from_checkpoint(ckpt, onnx_path)
    tiling = ckpt.with_suffix(".tiling.onnx")
    if not tiling.is_file() or not _carries_every_graph(tiling):
        tiling_onnx_from_checkpoint(ckpt, tiling)
    return onnx_path


def quality(args: argparse.Namespace) -> dict:
    from nst_runtime import Stylizer

    nets = {"trained": args.checkpoint or trained_checkpoint(args.work, args.steps, args.image_size)}
    if not args.no_random:
        nets["random"] = random_checkpoint(args.work)
    images = photos()
    result: dict = {**_settings(args), "networks": {}}
    for tag, ckpt in nets.items():
        model = exported(Path(ckpt))
        rows = {}
        with Stylizer.open(model, device="cpu", backend="onnxruntime", memory_limit="none") as whole, \
             Stylizer.open(model, device="cpu", backend="onnxruntime", memory_limit="none", tile=args.tile,
                           tile_mode="fast", tile_halo=args.halo) as fast, \
             Stylizer.open(model, device="cpu", backend="onnxruntime", memory_limit="none", tile=args.tile,
                           tile_mode="exact") as exact:
            for name, img in images.items():
                ref = whole.stylize(img)
                row = {"size": list(img.shape[:2]), "fast_db": round(psnr(ref, fast.stylize(img)), 2)}
                if not args.no_exact:
                    row["exact_db"] = round(psnr(ref, exact.stylize(img)), 2)
                rows[name] = row
                print(f"{tag:8s} {name:22s} {img.shape[1]}x{img.shape[0]}: fast {row['fast_db']:.1f} dB"
                      + (f", exact {row['exact_db']:.1f} dB" if "exact_db" in row else ""), flush=True)
        fast_values = [r["fast_db"] for r in rows.values()]
        result["networks"][tag] = {"checkpoint": str(ckpt), "images": rows, "fast_min_db": min(fast_values),
                                   "fast_median_db": round(statistics.median(fast_values), 2)}
    return result


def speed(args: argparse.Namespace) -> dict:
    from nst_runtime import Stylizer

    settings = _settings(args)
    model = exported(Path(args.checkpoint or trained_checkpoint(args.work, args.steps, args.image_size)))
    h, _, w = args.size.partition("x")
    shape = (int(h), int(w or h))
    from PIL import Image

    base = photos()["retina"]  # content does not change the time; a photo keeps the numbers honest anyway
    img = np.asarray(Image.fromarray(base).resize((shape[1], shape[0]), Image.BICUBIC))
    load_before = os.getloadavg()
    times: dict[str, list[float]] = {"untiled": [], "fast": []}
    cpu: dict[str, list[float]] = {"untiled": [], "fast": []}
    outs = {}
    opts = dict(device="cpu", backend=args.backend, memory_limit="none", intra_op_threads=args.threads)
    with Stylizer.open(model, **opts) as whole, \
         Stylizer.open(model, **opts, tile=args.tile, tile_mode="fast", tile_halo=args.halo) as fast:
        whole.stylize(img[:64, :64])
        fast.stylize(img[:64, :64])
        for _ in range(args.repeat):
            for tag, s in (("untiled", whole), ("fast", fast)):
                t, c = time.perf_counter(), time.process_time()
                outs[tag] = s.stylize(img)
                times[tag].append(time.perf_counter() - t)
                cpu[tag].append(time.process_time() - c)
                print(f"{tag}: {times[tag][-1]:.1f} s ({cpu[tag][-1]:.1f} s CPU)", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    return {"size": list(shape), **settings, **pixels(args), "backend": args.backend, "threads": args.threads,
            "seconds": times, "cpu_seconds": cpu, "median_cpu_s": med_cpu,
            # CPU time of this process: with --threads 1 a proxy that load changes little (not the target)
            "fast_over_untiled_cpu": round(med_cpu["fast"] / med_cpu["untiled"], 3),
            "median_s": med, "fast_over_untiled": round(med["fast"] / med["untiled"], 3),
            "fast_psnr_db": round(psnr(outs["untiled"], outs["fast"]), 2),
            "load_average_before": load_before, "load_average_after": os.getloadavg()}


def _settings(args: argparse.Namespace) -> dict:
    """Apply --stats/--stats-share to the runtime's fast-tiling defaults; the settings in effect."""
    import nst_runtime.tiling as tiling

    if args.stats_share is not None:
        tiling.FAST_STATS_SHARE = args.stats_share
    if args.stats is not None:
        tiling.DEFAULT_FAST_STATS = args.stats
    if args.no_stems:
        tiling.FAST_STEMS = False
    if args.no_apply_arena:  # the last pass without ONNX Runtime's arena (as before it was used)
        tiling.TilingGraph.has_apply_arena = property(lambda self: False)
    halo = tiling.DEFAULT_FAST_HALO if args.halo is None else args.halo
    return {"tile": args.tile, "halo": halo, "stats": tiling.DEFAULT_FAST_STATS, "stats_share": tiling.FAST_STATS_SHARE,
            "stems": tiling.FAST_STEMS, "apply_arena": not args.no_apply_arena}


def pixels(args: argparse.Namespace) -> dict:
    """Pixels fast tiling pushes through the network for an image of --size, as a share of the image's."""
    import nst_runtime.tiling as tiling

    settings = _settings(args)
    h, _, w = args.size.partition("x")
    ph, pw = (-(-int(v) // tiling.TILE_MULTIPLE) * tiling.TILE_MULTIPLE for v in (h, w or h))
    plan, halo = tiling.plan_fast_tiles(ph, pw, tile_h=args.tile, tile_w=args.tile, halo=settings["halo"])
    stats = tiling.fast_stats_pixels(ph, pw)
    if settings["stats"] == "mosaic":
        sample = tiling.statistics_mosaic(np.zeros((ph, pw, 3), np.uint8), stats)[0]
    else:
        sample = tiling.downscale_for_statistics(np.zeros((ph, pw, 3), np.uint8), stats, box=True)
    n = ph * pw
    return {"tiles": len(plan), "halo_used": halo, "tile_pixel_ratio": round(tiling.pushed_pixels(plan) / n, 3),
            "stats_pixel_ratio": round(sample.shape[0] * sample.shape[1] / n, 3),
            "pixel_ratio": round((tiling.pushed_pixels(plan) + sample.shape[0] * sample.shape[1]) / n, 3)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=("quality", "speed", "pixels"))
    p.add_argument("--work", type=Path, default=Path("/tmp/nst-tiling-quality"))
    p.add_argument("--checkpoint", type=Path, help="use this checkpoint instead of training one")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--halo", type=int, help="fast mode's halo (default: the runtime's)")
    p.add_argument("--stats", choices=("downscale", "box", "mosaic"), help="statistics estimate (default: the runtime's)")
    p.add_argument("--stats-share", type=float, help="statistics pass's share of the pixels (default: the runtime's)")
    p.add_argument("--no-stems", action="store_true", help="fast mode without the stems (every layer's "
                   "statistics estimated from the copy; the mode before the stems)")
    p.add_argument("--no-apply-arena", action="store_true", help="fast mode's last pass without ONNX Runtime's "
                   "memory arena (the arena is used where it fits the budget)")
    p.add_argument("--no-exact", action="store_true", help="quality: skip the exact mode (16 passes)")
    p.add_argument("--no-random", action="store_true", help="quality: skip the random network")
    p.add_argument("--size", default="2000x3000", help="speed: image HxW")
    p.add_argument("--backend", default="onnxruntime", help="speed: the deploy graph's backend")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, help="speed: ONNX Runtime threads per call (default: all cores); "
                   "--threads 1 makes the CPU-time ratio a load-independent proxy")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    warnings.simplefilter("ignore")
    args.work.mkdir(parents=True, exist_ok=True)
    record = {"quality": quality, "speed": speed, "pixels": lambda a: {"size": a.size, **_settings(a), **pixels(a)}
              }[args.what](args)
    record["machine"] = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                         "python": platform.python_version()}
    record["caveat"] = ("trained-like = trained with a RANDOMLY INITIALISED VGG-16 loss network on procedural "
                        "images; not a real style model")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k != "networks"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
