"""AdaIN checkpoint -> two ONNX graphs, so content and style each run at their own full resolution.

* ``NAME.onnx`` (role ``stylize``): uint8 NHWC content in, the style's relu4_1 ``style_mean``/``style_std``
  (float32 [512] each) and ``alpha`` (float32 [1]) in, uint8 NHWC out. Inside: cast, reflection pad to a
  multiple of 8, VGG-19 to relu4_1, InstanceNormalization (AdaIN's normalization, the native op) scaled and
  shifted by the style statistics, ``alpha`` blend on features, decoder, crop, clamp, round, cast.
* ``NAME.style.onnx`` (role ``adain-style``): uint8 NHWC style image in (any size, no padding), its
  ``style_mean``/``style_std`` [N, 512] out. The runtime runs it once per style file and caches the result.

Why two graphs rather than one with two image inputs: the style's statistics are 4 KB; computing them once
per style file and feeding them is cheaper than running the encoder over the style on every call, and lets a
blend of styles (``a.jpg:0.7,b.jpg:0.3``) be one weighted sum of statistics. ``tools/measure_adain.py``
measures both forms on OpenVINO (the one-graph form is built there only, by :func:`export_two_input_model`).

Both graphs are checked numerically against PyTorch (the parity gate, at alpha 1 and 0.5, on the stylize graph;
the statistics within a relative tolerance on the style graph) and structurally (the TensorRT lint on the
stylize graph, which TensorRT builds into an engine; the style graph stays on ONNX Runtime).
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from nst_runtime.errors import ParityError
from nst_runtime.sidecar import AdaINInputs, Sidecar, TensorSpec

from .onnx_export import (
    DEFAULT_OPSET,
    check_onnx_model,
    onnx_sidecar,
    publish,
    quiet_torch_exporter,
    save_model,
    temp_path_for,
    utc_now,
)
from .parity import (
    DEFAULT_SHAPES,
    DEFAULT_TOLERANCE,
    ParityTolerance,
    ReferenceOutput,
    check_parity,
    merge_reports,
    parity_images,
)
from .wrapper import INPUT_NAME, OUTPUT_NAME, uint8_edges_only_at_casts

log = logging.getLogger(__name__)

MEAN_NAME, STD_NAME, ALPHA_NAME = "style_mean", "style_std", "alpha"
STYLE_GRAPH_SUFFIX = ".style.onnx"
#: the smallest content side: three 2x2 pools leave at least 2 pixels
MIN_SIZE = 16
#: relative tolerance of the style graph's statistics against PyTorch's (float32 over thousands of pixels)
STATS_RTOL = 1e-3


def _deploy_module(net: Any) -> Any:
    import torch
    import torch.nn.functional as F
    from nst_train.adain import SIZE_MULTIPLE, adain, blend_features
    from torch import nn

    class AdaINDeploy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, image: torch.Tensor, style_mean: torch.Tensor, style_std: torch.Tensor,
                    alpha: torch.Tensor) -> torch.Tensor:
            # cast first and the uint8 cast last (TensorRT: only a Cast may touch a uint8 graph input/output)
            x = image.to(torch.float32).permute(0, 3, 1, 2)
            h, w = x.shape[2], x.shape[3]
            x = F.pad(x, (0, (SIZE_MULTIPLE - w % SIZE_MULTIPLE) % SIZE_MULTIPLE,
                          0, (SIZE_MULTIPLE - h % SIZE_MULTIPLE) % SIZE_MULTIPLE), mode="reflect")
            fc = self.net.encode(x)
            t = blend_features(fc, adain(fc, style_mean.view(1, -1), style_std.view(1, -1)), alpha.view(1, 1, 1, 1))
            y = self.net.decoder(t)[:, :, :h, :w]
            return torch.round(torch.clamp(y, 0.0, 255.0)).permute(0, 2, 3, 1).to(torch.uint8)

    return AdaINDeploy().eval()


def _style_module(net: Any) -> Any:
    import torch
    from nst_train.adain import mean_std
    from torch import nn

    class AdaINStyle(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return mean_std(self.net.encode(image.to(torch.float32).permute(0, 3, 1, 2)))

    return AdaINStyle().eval()


def _export(module: Any, args: tuple[Any, ...], names: list[str], outputs: list[str], shapes: tuple[Any, ...],
            opset: int) -> Any:
    import torch

    with quiet_torch_exporter():
        program = torch.onnx.export(module, args, None, input_names=names, output_names=outputs,
                                    opset_version=opset, dynamo=True, dynamic_shapes=shapes, optimize=True,
                                    verbose=False)
    model = program.model_proto
    for value in (*model.graph.input, *model.graph.output):
        if value.name in (INPUT_NAME, OUTPUT_NAME):
            for d, name in zip(value.type.tensor_type.shape.dim, ("batch", "height", "width"), strict=False):
                d.ClearField("dim_value")
                d.dim_param = name
        elif value.name in (MEAN_NAME, STD_NAME) and len(value.type.tensor_type.shape.dim) == 2:
            value.type.tensor_type.shape.dim[0].ClearField("dim_value")
            value.type.tensor_type.shape.dim[0].dim_param = "batch"
    uint8_edges_only_at_casts(model)
    model.producer_name = "nst-export"
    return model


def export_adain_models(net: Any, *, opset: int = DEFAULT_OPSET) -> tuple[Any, Any]:
    """(the stylize graph, the style graph) of an :class:`nst_train.adain.AdaINNet`, checked structurally."""
    import torch
    from torch.export import Dim

    net = net.eval().float().cpu()
    # a batch of 2 (a batch of 1 would be specialized), and Dim.DYNAMIC: the exporter cannot prove the padding
    # to a multiple of 8 for a user-given range, and needs none
    image = torch.zeros((2, 64, 64, 3), dtype=torch.uint8)
    dims = {0: Dim.DYNAMIC, 1: Dim.DYNAMIC, 2: Dim.DYNAMIC}
    stats = (torch.zeros(512), torch.ones(512), torch.ones(1))
    deploy = _export(_deploy_module(net), (image, *stats), [INPUT_NAME, MEAN_NAME, STD_NAME, ALPHA_NAME],
                     [OUTPUT_NAME], (dims, None, None, None), opset)
    check_onnx_model(deploy)
    from .trt_lint import check_tensorrt_compatible

    check_tensorrt_compatible(deploy, label="the exported AdaIN graph")
    style = _export(_style_module(net), (image,), [INPUT_NAME], [MEAN_NAME, STD_NAME], (dims,), opset)
    import onnx

    onnx.checker.check_model(style, full_check=True)
    return deploy, style


def export_two_input_model(net: Any, *, opset: int = DEFAULT_OPSET) -> Any:
    """The one-graph form (content and style images both inputs, the encoder run on both every call): built
    only to measure it against the two-graph form (tools/measure_adain.py)."""
    import torch
    from nst_train.adain import mean_std
    from torch import nn
    from torch.export import Dim

    deploy = _deploy_module(net)

    class TwoInputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.deploy = deploy

        def forward(self, image: torch.Tensor, style_image: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
            mean, std = mean_std(self.deploy.net.encode(style_image.to(torch.float32).permute(0, 3, 1, 2)))
            return self.deploy(image, mean[0], std[0], alpha)

    image = torch.zeros((1, 64, 64, 3), dtype=torch.uint8)
    dims = {1: Dim.DYNAMIC, 2: Dim.DYNAMIC}
    return _export(TwoInputs().eval(), (image, image.clone(), torch.ones(1)), [INPUT_NAME, "style_image", ALPHA_NAME],
                   [OUTPUT_NAME], (dims, dims, None), opset)


class AdaINReference:
    """The PyTorch FP32 reference of the stylize graph at fixed style statistics and alpha."""

    def __init__(self, net: Any, mean: np.ndarray, std: np.ndarray, alpha: float) -> None:
        self.module = _deploy_module(net)
        self.feeds = (mean, std, np.array([alpha], np.float32))

    def run(self, x: np.ndarray) -> ReferenceOutput:
        import torch

        with torch.inference_mode():
            out = self.module(torch.from_numpy(x), *(torch.from_numpy(f) for f in self.feeds)).numpy()
        return ReferenceOutput(image=out)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.run(x).image


def parity_style(net: Any) -> tuple[np.ndarray, np.ndarray]:
    """The statistics of a fixed generated style image (the parity gate's style), from PyTorch."""
    import torch

    image = parity_images(((1, 96, 96),), seed=1880)[0]
    with torch.inference_mode():
        mean, std = net.style_stats(torch.from_numpy(image).permute(0, 3, 1, 2).float())
    return mean[0].numpy().astype(np.float32), std[0].numpy().astype(np.float32)


def check_style_graph(path: Path, net: Any, *, shapes: tuple[tuple[int, int, int], ...] = ((1, 40, 56), (2, 64, 64))
                      ) -> dict[str, Any]:
    """The style graph's statistics against PyTorch's on generated images; :class:`ParityError` over
    :data:`STATS_RTOL`. Returns the numbers (for the sidecar)."""
    import onnxruntime as ort
    import torch

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(os.fspath(path), sess_options=opts, providers=["CPUExecutionProvider"])
    worst = 0.0
    for batch in parity_images(shapes, seed=1881):
        mean, std = session.run([MEAN_NAME, STD_NAME], {INPUT_NAME: batch})
        with torch.inference_mode():
            ref_mean, ref_std = net.style_stats(torch.from_numpy(batch).permute(0, 3, 1, 2).float())
        for got, ref in ((mean, ref_mean.numpy()), (std, ref_std.numpy())):
            scale = np.maximum(np.abs(ref), np.abs(ref).mean() + 1e-6)
            worst = max(worst, float(np.max(np.abs(got - ref) / scale)))
    if not np.isfinite(worst) or worst > STATS_RTOL:
        raise ParityError(f"{path}: the style graph's statistics differ from PyTorch's by {worst:.2e} (relative), "
                          f"more than {STATS_RTOL:.0e}. Nothing was written. This is a bug in the export.")
    return {"max_rel_err": worst, "rtol": STATS_RTOL, "reference": "pytorch-fp32", "passed": True}


def _gflop_per_mpx(net: Any) -> float:
    """GFLOP per megapixel of the stylize graph (encoder + decoder convolutions; nst_train.model.conv_flops)."""
    import torch
    from nst_train.model import conv_flops

    x = torch.zeros(1, 3, 256, 256)
    return round(conv_flops(net, x, torch.zeros(1, 512), torch.ones(1, 512), 1.0) / (256 * 256) * 1e6 / 1e9, 1)


def style_graph_path(onnx_path: str | os.PathLike[str]) -> Path:
    """``NAME.onnx`` / ``NAME.fp16.onnx`` -> ``NAME.style.onnx``."""
    path = Path(onnx_path)
    name = path.name
    for suffix in (".onnx", ".fp16", ".fp32"):
        name = name[: -len(suffix)] if name.endswith(suffix) else name
    return path.with_name(name + STYLE_GRAPH_SUFFIX)


def adain_onnx_from_checkpoint(checkpoint: str | os.PathLike[str], out: str | os.PathLike[str], *,
                               opset: int = DEFAULT_OPSET, fp16_out: str | os.PathLike[str] | None = None,
                               tolerance: ParityTolerance = DEFAULT_TOLERANCE,
                               parity_shapes: tuple[tuple[int, int, int], ...] = DEFAULT_SHAPES) -> list[Path]:
    """Export an AdaIN checkpoint: ``out`` (the stylize graph, and ``fp16_out``), ``NAME.style.onnx``, each
    checked before it is renamed into place with its sidecar. Returns the files written."""
    from nst_train.adain import load_adain_checkpoint
    from nst_train.checkpoint import file_sha256

    from .fp16 import fp16_model_from_fp32

    out = Path(out)
    ckpt = load_adain_checkpoint(checkpoint)
    net = ckpt.net
    log.info("exporting the AdaIN network of %s (opset %d): the stylize graph and the style graph", checkpoint,
             opset)
    deploy, style = export_adain_models(net, opset=opset)
    style_out = style_graph_path(out)
    mean, std = parity_style(net)
    spec = AdaINInputs(mean=MEAN_NAME, std=STD_NAME, alpha=ALPHA_NAME, channels=512, style_graph=style_out.name)
    gflop = _gflop_per_mpx(net)
    written: list[Path] = []
    ckpt_sha = file_sha256(checkpoint)
    out.parent.mkdir(parents=True, exist_ok=True)
    # the style graph first: the stylize graph's sidecar names it
    tmp = temp_path_for(style_out)
    try:
        save_model(style, tmp, final=style_out)
        numbers = check_style_graph(tmp, net)
        log.info("style graph: statistics within %.1e of PyTorch's", numbers["max_rel_err"])
        meta = Sidecar(kind="onnx", precision="fp32", input=TensorSpec(INPUT_NAME),
                       output=TensorSpec(MEAN_NAME, dtype="float32", layout="NC", channels="features"),
                       min_size=MIN_SIZE, opset=opset, artifact_sha256=file_sha256(tmp), checkpoint_sha256=ckpt_sha,
                       parity=numbers, architecture=net.architecture, created_at=utc_now(), role="adain-style")
        written.append(publish(tmp, style_out, meta))
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    models = [(deploy, out, "fp32")]
    if fp16_out is not None:
        models.append((fp16_model_from_fp32(deploy), Path(fp16_out), "fp16"))
    fp32_sha = None
    for proto, path, precision in models:
        tmp = temp_path_for(path)
        try:
            save_model(proto, tmp, final=path)
            reports = []
            for alpha in (1.0, 0.5):  # the full style, and the content-style trade-off on features
                feeds = {MEAN_NAME: mean, STD_NAME: std, ALPHA_NAME: np.array([alpha], np.float32)}
                reports.append(check_parity(tmp, AdaINReference(net, mean, std, alpha), precision=precision,
                                            reference_name=f"pytorch-fp32, alpha {alpha:g}", tolerance=tolerance,
                                            shapes=[s for s in parity_shapes if min(s[1:]) >= MIN_SIZE] or
                                            [(1, 64, 96)], label=f"{path} (alpha {alpha:g})", feeds=feeds))
            report = merge_reports(reports, ["alpha 1", "alpha 0.5"])
            log.info("%s parity: %s", precision.upper(), report.summary())
            sha = file_sha256(tmp)
            meta = onnx_sidecar(precision=precision, opset=opset, artifact_sha256=sha, checkpoint_sha256=ckpt_sha,
                                onnx_sha256=fp32_sha, parity=report, architecture=net.architecture,
                                gflop_per_mpx=gflop)
            import dataclasses

            meta = dataclasses.replace(meta, min_size=MIN_SIZE, adain=spec,
                                       source={"encoder_weights": str(ckpt.metadata.get("encoder_weights")),
                                               "encoder_preprocessing": ckpt.metadata.get("encoder_preprocessing")})
            written.append(publish(tmp, path, meta))
            fp32_sha = fp32_sha or sha
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    return written
