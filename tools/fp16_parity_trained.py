"""Measure FP16 ONNX parity on a *trained-like* TransformerNet, not only a freshly initialised one.

FP16 problems show up with real activations (large InstanceNorm inputs, saturated outputs), which a fresh
network does not have. This script trains a TransformerNet for a short run with ``nst_train.train`` on the
procedurally generated sample images (``nst_train.samples``) and a RANDOMLY INITIALISED VGG-16 loss network
(no ImageNet weights offline: the losses and gradients are real, the "style" is not), then exports FP32 and
FP16 ONNX with the library functions and measures both against PyTorch FP32 on the parity images at several
sizes, next to the same numbers for a fresh seeded network.

    python tools/fp16_parity_trained.py --steps 200 --out benchmarks/results/fp16_parity_cpu.json

Caveat, also written into the JSON: this runs ONNX Runtime's CPU provider, which executes the FP16 graph
through inserted casts (FP32 arithmetic on FP16-rounded tensors), so it flatters FP16 compared with a GPU
running true FP16 kernels (TensorRT, ORT CUDA).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

from nst_bench.machine import cpu_model

SHAPES = ((1, 256, 256), (1, 181, 243), (2, 96, 130))



def _measure(ckpt: Path, work: Path, tag: str) -> dict:
    from nst_export.fp16 import fp16_onnx_from_onnx
    from nst_export.onnx_export import onnx_from_checkpoint
    from nst_export.parity import ParityTolerance, check_parity, torch_reference
    from nst_train.checkpoint import load_checkpoint

    loose = ParityTolerance(fp32_max_abs_levels=255, fp16_min_psnr_db=1e-3)  # write the files whatever happens
    onnx32 = onnx_from_checkpoint(ckpt, work / f"{tag}.onnx", tolerance=loose)
    onnx16 = fp16_onnx_from_onnx(onnx32, work / f"{tag}.fp16.onnx", checkpoint=ckpt, tolerance=loose)
    ref = torch_reference(load_checkpoint(ckpt).model())
    out = {}
    for precision, path in (("fp32", onnx32), ("fp16", onnx16)):
        report = check_parity(path, ref, precision=precision, reference_name="pytorch-fp32",
                              shapes=SHAPES, raise_on_failure=False)
        out[precision] = report.to_dict()
        out[precision]["passed_default_gate"] = report.passed
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/fp16_parity_cpu.json"))
    p.add_argument("--keep", type=Path, help="keep the trained checkpoint and ONNX files in this folder")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    warnings.simplefilter("ignore")

    import onnxruntime
    import torch
    from nst_train.checkpoint import CheckpointMetadata, save_checkpoint
    from nst_train.model import TransformerNet
    from nst_train.samples import write_sample_content, write_sample_style
    from nst_train.train import TrainConfig, train

    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        content = work / "content"
        write_sample_content(content, count=16, size=args.image_size + 32)
        style = write_sample_style(work / "style.png", size=args.image_size)
        config = TrainConfig(style=style, content_dir=content, out=work / "trained.pth",
                             image_size=args.image_size, batch_size=args.batch_size, steps=args.steps,
                             device="cpu", vgg_weights="random", num_workers=0, log_every=max(1, args.steps // 10),
                             checkpoint_every=0, preview_every=0, progress=False)
        t0 = time.perf_counter()
        result = train(config)
        train_s = time.perf_counter() - t0

        torch.manual_seed(0)
        fresh = save_checkpoint(work / "fresh.pth", TransformerNet(), CheckpointMetadata(steps=0))
        record = {
            "what": "FP16 and FP32 ONNX parity against PyTorch FP32 (uint8 outputs)",
            "caveat": ("ONNX Runtime CPUExecutionProvider runs the FP16 graph through inserted casts (FP32 "
                       "arithmetic on FP16-rounded tensors); true FP16 kernels on a GPU will score lower. The "
                       "training used a RANDOMLY INITIALISED VGG-16 loss network on procedural images: the "
                       "weights have moved away from initialisation under real gradients, but the network "
                       "is not a real style model."),
            "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
                        "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                        "provider": "CPUExecutionProvider"},
            "training": {"steps": result.steps, "image_size": args.image_size, "batch_size": args.batch_size,
                         "vgg_weights": "random", "seconds": round(train_s, 1),
                         "final_losses": result.final_losses},
            "shapes": [list(s) for s in SHAPES],
            "trained": _measure(result.checkpoint, work, "trained"),
            "fresh": _measure(fresh, work, "fresh"),
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    for tag in ("trained", "fresh"):
        for precision in ("fp32", "fp16"):
            r = record[tag][precision]
            per = ", ".join(f"{'x'.join(map(str, i['shape'][:3]))}: {i['max_abs_levels']} lvl / "
                            f"{'inf' if i['psnr_db'] is None else format(i['psnr_db'], '.1f')} dB"
                            for i in r["images"])
            print(f"{tag:8s} {precision}: {per}")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
