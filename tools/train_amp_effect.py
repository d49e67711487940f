"""What mixed precision does to the training objective: the same steps in float32 and under bf16 autocast.

Both runs start from the same TransformerNet weights (seed 42) and see the same batches (natural photos from
scikit-image through the pytorch-examples pipeline), with the pytorch-examples objective. Reported:

* step 1: the relative L2 difference of the parameter gradients, over all parameters and per tensor;
* every step: the relative difference of the content, style and total losses (the loss curve);
* the end: the relative L2 difference of the weights.

On CPU, bf16 autocast is an imitation of the GPU's (``--device cpu``, the default): the same dtype and the
same autocast op lists' intent, other kernels. On a GPU (``--device cuda``) it measures the real thing, with
the dtype the trainer would pick there (``nst_train.train.amp_policy``). The VGG loss network is RANDOMLY
INITIALISED unless ``--vgg-weights`` names real weights: the numbers measure numerics, not style.

    python tools/train_amp_effect.py --steps 20 --image-size 128 --json amp.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
import warnings
from pathlib import Path


def _relative_l2(a, b) -> float:
    import torch

    num = float(torch.linalg.vector_norm((a - b).double()))
    den = float(torch.linalg.vector_norm(b.double()))
    return num / den if den else math.inf


def _run(model, objective, batches, *, steps: int, lr: float, autocast_dtype, device) -> dict:
    import torch

    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype == torch.float16)
    losses, first_grads = [], None
    for step in range(steps):
        x = batches[step % len(batches)].to(device)
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            terms = objective(model(x), x)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(terms.total).backward()
        if step == 0:
            scale = scaler.get_scale() if scaler.is_enabled() else 1.0
            first_grads = {k: p.grad.detach().float().cpu() / scale for k, p in model.named_parameters()}
        scaler.step(optimizer)
        scaler.update()
        losses.append([float(terms.content.detach()), float(terms.style.detach()), float(terms.total.detach())])
    return {"losses": losses, "first_grads": first_grads,
            "weights": {k: v.detach().float().cpu() for k, v in model.state_dict().items()}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--device", default="cpu", help="cpu (bf16 autocast imitation) or cuda")
    p.add_argument("--dtype", choices=("bf16", "fp16", "auto"), default="auto",
                   help="autocast dtype (auto: bf16 on CPU; on CUDA what the trainer picks)")
    p.add_argument("--vgg-weights", default="random")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", type=Path, default=None, help="write every number here")
    args = p.parse_args(argv)

    import numpy as np
    import torch
    from nst_train.data import ImagePipeline, images_to_float, load_crop
    from nst_train.losses import PerceptualObjective
    from nst_train.model import TransformerNet
    from nst_train.recipes import resolve_train_settings
    from nst_train.samples import write_sample_style
    from nst_train.train import amp_policy
    from nst_train.vgg import load_vgg16
    from PIL import Image
    from skimage import data

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.dtype == "bf16":
        dtype = torch.bfloat16
    elif args.dtype == "fp16":
        dtype = torch.float16
    elif device.type == "cuda":
        dtype = amp_policy(device, True).dtype
    else:
        dtype = torch.bfloat16
    _, settings = resolve_train_settings("pytorch-examples", {"image_size": args.image_size})
    with tempfile.TemporaryDirectory() as tmp:
        photos = {"astronaut": data.astronaut(), "coffee": data.coffee(), "chelsea": data.chelsea(),
                  "rocket": data.rocket(), "immunohistochemistry": data.immunohistochemistry(),
                  "motorcycle": data.stereo_motorcycle()[0], "hubble": data.hubble_deep_field()[:400, :500],
                  "colorwheel": data.colorwheel()[..., :3]}
        pipeline = ImagePipeline(args.image_size, "center-crop", "bilinear", False, False)
        crops = []
        for name, arr in photos.items():
            path = Path(tmp) / f"{name}.png"
            Image.fromarray(np.ascontiguousarray(arr)).convert("RGB").save(path)
            crops.append(images_to_float(load_crop(path, image_size=args.image_size, rng=None, pipeline=pipeline),
                                         settings.to_float))
        batches = [torch.stack(crops[i:i + args.batch_size]) for i in range(0, len(crops), args.batch_size)]
        style_path = write_sample_style(Path(tmp) / "style.png", size=args.image_size * 2, seed=3)
        torch.manual_seed(0)  # a random VGG: the same one in both runs and every time
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            vgg = load_vgg16(args.vgg_weights, device=device)
        from nst_train.imageio import load_image_tensor

        style = load_image_tensor(style_path, to_float=settings.to_float, device=device)

        def fresh():
            torch.manual_seed(42)
            return TransformerNet().to(device)

        runs = {}
        for label, autocast_dtype in (("fp32", None), (str(dtype).removeprefix("torch."), dtype)):
            t0 = time.perf_counter()
            with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
                objective = PerceptualObjective(vgg, settings.loss_weights, style)
            runs[label] = _run(fresh(), objective, batches, steps=args.steps, lr=args.lr,
                               autocast_dtype=autocast_dtype, device=device)
            runs[label]["seconds"] = time.perf_counter() - t0
    ref, amp = runs["fp32"], runs[str(dtype).removeprefix("torch.")]
    # InstanceNorm shifts followed by another InstanceNorm have a gradient that is zero up to rounding (a constant
    # per channel is normalised away): their relative difference is noise over noise, so per-tensor figures skip
    # tensors whose float32 gradient norm is below 1e-4 of the median tensor's
    norms = {k: float(torch.linalg.vector_norm(g.double())) for k, g in ref["first_grads"].items()}
    floor = 1e-4 * float(np.median(list(norms.values())))
    per_tensor = {k: _relative_l2(amp["first_grads"][k], ref["first_grads"][k]) for k in ref["first_grads"]
                  if norms[k] >= floor}
    skipped = sorted(k for k in norms if norms[k] < floor)
    flat = lambda g: torch.cat([v.flatten() for v in g.values()])  # noqa: E731
    curve = [[abs(a - r) / abs(r) for a, r in zip(sa, sr, strict=True)]
             for sa, sr in zip(amp["losses"], ref["losses"], strict=True)]
    result = {
        "device": str(device), "autocast_dtype": str(dtype), "steps": args.steps, "image_size": args.image_size,
        "batch_size": args.batch_size, "vgg_weights": args.vgg_weights, "torch": torch.__version__,
        "step1_grad_rel_l2_all": _relative_l2(flat(amp["first_grads"]), flat(ref["first_grads"])),
        "step1_grad_rel_l2_per_tensor": {"min": min(per_tensor.values()),
                                         "median": float(np.median(list(per_tensor.values()))),
                                         "max": max(per_tensor.values()),
                                         "worst": max(per_tensor, key=per_tensor.get),
                                         "tensors": len(per_tensor), "skipped_zero_gradient": skipped},
        "loss_rel_diff_per_step": [{"step": i + 1, "content": c, "style": s, "total": t}
                                   for i, (c, s, t) in enumerate(curve)],
        "loss_rel_diff_max": {"content": max(c[0] for c in curve), "style": max(c[1] for c in curve),
                              "total": max(c[2] for c in curve)},
        "final_weights_rel_l2": _relative_l2(flat(amp["weights"]), flat(ref["weights"])),
        "loss_first_last": {"fp32": [ref["losses"][0][2], ref["losses"][-1][2]],
                            "amp": [amp["losses"][0][2], amp["losses"][-1][2]]},
        "seconds": {"fp32": ref["seconds"], "amp": amp["seconds"]},
    }
    t = result["step1_grad_rel_l2_per_tensor"]
    print(f"device {device}, autocast {dtype}, {args.steps} steps of batch {args.batch_size} at {args.image_size}px, "
          f"VGG {args.vgg_weights}")
    print(f"step-1 parameter gradients, relative L2 difference: all {result['step1_grad_rel_l2_all']:.3%}; "
          f"per tensor min {t['min']:.3%}, median {t['median']:.3%}, max {t['max']:.3%} ({t['worst']}; "
          f"{len(skipped)} tensors with a zero-up-to-rounding gradient left out)")
    m = result["loss_rel_diff_max"]
    print(f"loss curve, largest relative difference over the steps: content {m['content']:.3%}, style "
          f"{m['style']:.3%}, total {m['total']:.3%}")
    print(f"weights after {args.steps} steps, relative L2 difference: {result['final_weights_rel_l2']:.3%}")
    print("total loss first/last: fp32 {:.5g} -> {:.5g}, amp {:.5g} -> {:.5g}".format(
        *result["loss_first_last"]["fp32"], *result["loss_first_last"]["amp"]))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
