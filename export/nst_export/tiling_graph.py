"""The tiling graph: TransformerNet with its instance-norm statistics as inputs and per-tile moments as outputs.

InstanceNorm statistics are per image, so a large image run tile by tile with the deploy graph gets one set of
statistics per tile and shows seams. This graph lets the runtime keep one set for the whole image: every
InstanceNorm layer normalizes with the mean/variance it is *given* (``norm_mean``/``norm_var``), and the graph
also reports, per layer, the moments of that layer's input over the pixels the tile owns (``mask``). The
runtime (``nst_runtime.tiling``) runs all tiles once per layer, combines the moments of layer k across tiles,
feeds them back for layer k+1, and finishes with a pass that uses all 15 whole-image statistics.

I/O (``NAME.tiling.onnx`` beside ``NAME.onnx``; sidecar ``role="tiling"``):

==============  ===============  ==========================================================================
name            type             meaning
==============  ===============  ==========================================================================
``input``       uint8 [N,H,W,3]  a tile including its halo; H and W multiples of 4, >= 8 (no padding inside)
``mask``        f32 [N,H,W]      1 on the pixels the tile owns (its core), 0 on the halo
``norm_mean``   f32 [1600]       mean of every InstanceNorm layer, concatenated in forward order
``norm_var``    f32 [1600]       biased variance of every layer, same order (eps 1e-5 is added in the graph)
``norm_own``    f32 [1]          0: normalize with ``norm_mean``/``norm_var``; 1: with the tile's own masked
                                 moments (mask all ones: the deploy graph's behaviour, so one pass over a
                                 whole image reports all 15 layers' statistics; the runtime's fast tiling
                                 estimates the whole image's statistics this way from a downscaled copy)
``output``      uint8 [N,H,W,3]  stylized tile (rounded, clamped), as the deploy graph
``tile_count``  f32 [N,15]       owned pixels at each layer's resolution
``tile_mean``   f32 [N,1600]     masked mean of each layer's input (pre-norm activation)
``tile_m2``     f32 [N,1600]     masked sum of squared deviations from ``tile_mean``
==============  ===============  ==========================================================================

Layers, in order: in1 (32 ch, full resolution), in2 (64, /2), in3 (128, /4), res1..res5 in1/in2 (128, /4),
in4 (64, /2), in5 (32, full). The mask at /2 and /4 is the full mask subsampled with stride 2 and 4, i.e. the
value at the pixel each strided convolution centres on; with core boundaries at multiples of 4 in input
coordinates the cores then partition every layer's grid exactly. The same ordering is written to the ONNX
metadata (``nst.tiling.channels``, ``nst.tiling.strides``) so the runtime needs no copy of the model.

The metadata also carries two *stems* (``nst.tiling.stem.1``, ``nst.tiling.stem.2``: serialized ONNX models,
base64; :func:`build_stem_module`): the network up to the input of its first / second norm layer only, with
the tiling graph's ``input``, a ``core`` box (int64 [4]: top, left, bottom, right of the owned pixels) in
place of its mask (and, for the second, layer 0's ``norm_mean``/``norm_var``) and its moment outputs for the
last of those layers. Fast tiling runs them over the full-resolution tiles to get the
first two layers' whole-image statistics exactly (both together: about a sixth of a network call), the ones a
downscaled copy gets most wrong. It also carries the *apply graph* (``nst.tiling.apply``;
:func:`build_apply_module`): the network normalizing with given statistics and computing nothing else, for
fast tiling's last pass, and the *statistics graph* (``nst.tiling.stats``; :func:`build_stats_module`): the
network normalizing with each layer's own statistics and reporting them, for fast tiling's pass over the
downscaled copy (no mask, no output image: on OpenVINO a quarter of the tiling graph's time saved there).
Each carries a copy of the weights: the file is about 3.8 times the deploy graph's size. They live inside
this file so that its hash covers them and nothing else has to be shipped; all of them are
checked against PyTorch with the rest (:func:`check_tiling_graph`).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from nst_runtime.errors import ModelFileError, ParityError
from nst_runtime.sidecar import Sidecar, TensorSpec
from nst_runtime.tiling import APPLY_KEY, STATS_KEY, STEM_DEPTH, STEM_KEY  # graphs carried in the metadata

# only the public helpers of onnx_export (it is being worked on; private names may move)
from . import onnx_export
from .onnx_export import DEFAULT_OPSET, publish, quiet_torch_exporter, save_model, temp_path_for, utc_now
from .wrapper import INPUT_NAME, MIN_SIZE, OUTPUT_NAME

log = logging.getLogger(__name__)

MASK_NAME, MEAN_NAME, VAR_NAME, OWN_NAME = "mask", "norm_mean", "norm_var", "norm_own"
#: the stems' core box (top, left, bottom, right in window pixels; build_stem_module)
CORE_NAME = "core"
COUNT_NAME, TILE_MEAN_NAME, TILE_M2_NAME = "tile_count", "tile_mean", "tile_m2"
INPUT_NAMES = (INPUT_NAME, MASK_NAME, MEAN_NAME, VAR_NAME, OWN_NAME)
OUTPUT_NAMES = (OUTPUT_NAME, COUNT_NAME, TILE_MEAN_NAME, TILE_M2_NAME)
#: tile origins, sizes and core boundaries must be multiples of this (the network's two stride-2 convolutions)
TILE_MULTIPLE = 4
#: largest |difference| in uint8 levels between the tiling graph (one tile, true statistics) and the deploy
#: graph's PyTorch model; 1 allows for values that land on .5 before rounding
MAX_ABS_LEVELS = 1
#: relative tolerance of the reported moments against PyTorch's (float32 sums over a few thousand pixels)
MOMENT_RTOL = 1e-3
_CHECK_SHAPES = ((2, 48, 80),)
#: the deploy graph's opset range (lowest the dynamo exporter emits .. highest TensorRT 10.x's parser documents)
MIN_OPSET, MAX_OPSET = getattr(onnx_export, "MIN_OPSET", 18), getattr(onnx_export, "MAX_OPSET", 24)
_MAX_DIM = 1 << 14


def _set_metadata(model: Any, items: dict[str, str]) -> None:
    existing = {p.key: p for p in model.metadata_props}
    for key, value in items.items():
        prop = existing.get(key) or model.metadata_props.add()
        prop.key, prop.value = key, value


def norm_layers(net: Any) -> list[tuple[str, Any]]:
    """The InstanceNorm layers of ``net`` in forward order, with their names (``in1``, ``res1.in1``, …)."""
    blocks = _res_blocks(net)
    names = ["in1", "in2", "in3"] + [f"res{i}.in{j}" for i in range(1, blocks + 1) for j in (1, 2)] + ["in4", "in5"]
    modules = dict(net.named_modules())
    return [(name, modules[name]) for name in names]


#: each layer's resolution relative to the input (1, 2 or 4), in forward order
LAYER_STRIDES = (1, 2, 4) + (4,) * 10 + (2, 1)


def _res_blocks(net: Any) -> int:
    """Residual blocks of ``net`` (every family of nst_train.registry; Johnson et al.'s has 5)."""
    shape = getattr(net, "shape", None)
    return int(shape.res_blocks) if shape is not None else 5


def layer_strides(net: Any) -> tuple[int, ...]:
    """Each norm layer's resolution relative to the input, in forward order (:data:`LAYER_STRIDES` for 5 blocks)."""
    return (1, 2, 4) + (4,) * (2 * _res_blocks(net)) + (2, 1)


def _forward_with_norm(net: Any, image: Any, norm: Any) -> Any:
    """TransformerNet's forward pass on a uint8 NHWC ``image`` with ``norm(x)`` in place of each InstanceNorm
    layer, called in forward order; uint8 NHWC out, as the deploy graph (cast first and the uint8 cast last:
    TensorRT lets only a Cast touch a uint8 graph input/output)."""
    import torch
    import torch.nn.functional as F

    x = image.to(torch.float32).permute(0, 3, 1, 2)
    y = F.relu(norm(net.conv1(x)))
    y = F.relu(norm(net.conv2(y)))
    y = F.relu(norm(net.conv3(y)))
    for block in (getattr(net, f"res{i}") for i in range(1, _res_blocks(net) + 1)):
        y = norm(block.conv2(block.relu(norm(block.conv1(y))))) + y
    y = F.relu(norm(net.deconv1(y)))
    y = F.relu(norm(net.deconv2(y)))
    y = net.deconv3(y)
    return torch.round(torch.clamp(y, 0.0, 255.0)).permute(0, 2, 3, 1).to(torch.uint8)


def build_tiling_module(net: Any) -> Any:
    """A ``torch.nn.Module`` with the tiling graph's I/O (see the module docstring) around ``net``."""
    import torch
    from torch import nn

    layers = norm_layers(net)
    strides = layer_strides(net)
    channels = [m.num_features for _, m in layers]
    offsets = np.concatenate([[0], np.cumsum(channels)]).tolist()

    class TilingGraph(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, image: torch.Tensor, mask: torch.Tensor, norm_mean: torch.Tensor,
                    norm_var: torch.Tensor, norm_own: torch.Tensor) -> tuple[torch.Tensor, ...]:
            net = self.net
            m1 = mask.unsqueeze(1)
            masks = {1: m1, 2: m1[:, :, ::2, ::2], 4: m1[:, :, ::4, ::4]}
            counts: list[torch.Tensor] = []
            means: list[torch.Tensor] = []
            m2s: list[torch.Tensor] = []
            index = 0

            def norm(x: torch.Tensor) -> torch.Tensor:
                nonlocal index
                _, module = layers[index]
                m = masks[strides[index]]
                lo, hi = offsets[index], offsets[index + 1]
                count = m.sum(dim=(2, 3))  # [N, 1]
                # a tile that owns nothing at some resolution must report zeros, not NaN
                mean = (x * m).sum(dim=(2, 3)) / count.clamp(min=1.0)
                dev = (x - mean[:, :, None, None]) * m
                m2 = (dev * dev).sum(dim=(2, 3))
                counts.append(count)
                means.append(mean)
                m2s.append(m2)
                # norm_own blends the given statistics with the tile's own (0 or 1 in practice)
                mu = norm_own * mean + (1.0 - norm_own) * norm_mean[lo:hi]  # [N, C]
                var = norm_own * (m2 / count.clamp(min=1.0)) + (1.0 - norm_own) * norm_var[lo:hi]
                scale = module.weight / torch.sqrt(var + module.eps)
                index += 1
                return (x - mu[:, :, None, None]) * scale[:, :, None, None] + module.bias.view(1, -1, 1, 1)

            out = _forward_with_norm(net, image, norm)
            return out, torch.cat(counts, dim=1), torch.cat(means, dim=1), torch.cat(m2s, dim=1)

    return TilingGraph().eval()




def build_stem_module(net: Any, depth: int) -> Any:
    """The network's first ``depth`` norm layers' inputs and nothing after: a *stem* for fast tiling.

    Fast tiling estimates the whole image's statistics from a downscaled copy; the first two layers' are the
    ones a copy gets most wrong (fine detail the copy lacks) and the ones the output depends on most, and
    they are cheap to find exactly at full resolution: conv1 (layer 0), then conv1 and conv2 (layer 1),
    together about a sixth of a network call. Inputs ``input`` (as the tiling graph) and ``core`` (int64 [4]:
    top, left, bottom, right of the pixels the tile owns, in window pixels, multiples of 4), and for
    ``depth`` > 1 ``norm_mean``/``norm_var`` of layers 0..depth-2 (concatenated); outputs ``tile_count``
    [N, 1], ``tile_mean`` and ``tile_m2`` [N, channels of layer depth-1]: the moments of that layer's input
    over the core (at its stride), as the tiling graph reports them.

    The core is a box that the graph slices, not a mask it multiplies by: on OpenVINO a mask broadcast over
    the channels makes every convolution's output change memory layout before it is reduced (a fifth of
    the stems' time, docs/runtime.md)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    layers = norm_layers(net)[:depth]
    strides = layer_strides(net)[:depth]
    convs = [net.conv1, net.conv2, net.conv3][:depth]
    if len(convs) < depth:
        raise ValueError(f"stem depth {depth}: the network's stem has {len(convs)} convolutions")
    stride = strides[depth - 1]

    class Stem(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.convs = nn.ModuleList(convs)
            self.norms = nn.ModuleList(m for _, m in layers)

        def stem(self, image: torch.Tensor, core: torch.Tensor, norm_mean: torch.Tensor | None,
                 norm_var: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
            x = image.to(torch.float32).permute(0, 3, 1, 2)
            at = 0
            for k, conv in enumerate(self.convs):
                x = conv(x)
                if k + 1 < len(self.convs):
                    norm = self.norms[k]
                    c = norm.num_features
                    assert norm_mean is not None and norm_var is not None
                    scale = norm.weight / torch.sqrt(norm_var[at:at + c] + norm.eps)
                    x = F.relu((x - norm_mean[at:at + c][None, :, None, None]) * scale[None, :, None, None]
                               + norm.bias.view(1, -1, 1, 1))
                    at += c
            # the moments of the last layer only, over the core at this layer's stride: the ones before it
            # are given (computing them again costs a quarter of the stem's time at full resolution)
            top, left, bottom, right = (int(v) // stride for v in core.tolist())
            torch._check(top >= 0)
            torch._check(left >= 0)
            torch._check(bottom <= x.shape[2])
            torch._check(right <= x.shape[3])
            torch._check(bottom > top)
            torch._check(right > left)
            owned = x[:, :, top:bottom, left:right]
            mean = owned.mean(dim=(2, 3))
            dev = owned - mean[:, :, None, None]
            count = torch.full((x.shape[0], 1), float((bottom - top) * (right - left)), dtype=torch.float32)
            return count, mean, (dev * dev).sum(dim=(2, 3))

    class Stem1(Stem):
        def forward(self, image: torch.Tensor, core: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return self.stem(image, core, None, None)

    class StemN(Stem):
        def forward(self, image: torch.Tensor, core: torch.Tensor, norm_mean: torch.Tensor,
                    norm_var: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return self.stem(image, core, norm_mean, norm_var)

    return (Stem1 if depth == 1 else StemN)().eval()


def _spatial_dims() -> dict[int, Any]:
    """Dynamic N and H, W as 4 * k for an NHWC tile (the exporter can then prove that outputs and a
    full-resolution mask keep the input's size: no padding or cropping in these graphs)."""
    from torch.export import Dim

    h4 = Dim("h4", min=MIN_SIZE // TILE_MULTIPLE, max=_MAX_DIM)
    w4 = Dim("w4", min=MIN_SIZE // TILE_MULTIPLE, max=_MAX_DIM)
    return {0: Dim("batch", min=1, max=_MAX_DIM), 1: TILE_MULTIPLE * h4, 2: TILE_MULTIPLE * w4}


def _export_small(module: Any, example: tuple[Any, ...], inputs: list[str], outputs: list[str],
                  dynamic: tuple[Any, ...], opset: int) -> Any:
    """A graph carried in the tiling graph's metadata, exported like it: in memory, dims named, checked."""
    import onnx
    import torch

    with quiet_torch_exporter():
        program = torch.onnx.export(module, example, None, input_names=inputs, output_names=outputs,
                                    opset_version=opset, dynamo=True, dynamic_shapes=dynamic, optimize=True,
                                    verbose=False)
    model = program.model_proto
    _name_dims(model)
    model.producer_name = "nst-export"
    onnx.checker.check_model(model, full_check=True)
    return model


def export_stem_model(net: Any, depth: int, *, opset: int = DEFAULT_OPSET) -> Any:
    """Export :func:`build_stem_module` to an in-memory, checked ``onnx.ModelProto``."""
    import torch

    given = sum(m.num_features for _, m in norm_layers(net)[:depth - 1])
    example: tuple[torch.Tensor, ...] = (torch.zeros((2, 64, 64, 3), dtype=torch.uint8),
                                         torch.tensor([8, 4, 56, 60], dtype=torch.int64))
    names = [INPUT_NAME, CORE_NAME]
    if depth > 1:
        example += (torch.zeros(given), torch.ones(given))
        names += [MEAN_NAME, VAR_NAME]
    spatial = _spatial_dims()
    return _export_small(build_stem_module(net, depth), example, names, [COUNT_NAME, TILE_MEAN_NAME, TILE_M2_NAME],
                         (spatial,) + (None,) * (len(names) - 1), opset)


def build_apply_module(net: Any) -> Any:
    """The network with every InstanceNorm layer normalizing with the statistics it is given and nothing else:
    fast tiling's last pass (``input`` uint8 [N,H,W,3], ``norm_mean``/``norm_var`` [1600] -> ``output``). The
    tiling graph does the same but also computes every layer's masked moments, which that pass does not need
    (on OpenVINO the tiling graph takes 2.2 s per megapixel, this one with the statistics baked in as
    constants 1.8, the deploy graph 1.9; docs/runtime.md)."""
    import torch
    from torch import nn

    norms = [m for _, m in norm_layers(net)]
    offsets = np.concatenate([[0], np.cumsum([m.num_features for m in norms])]).tolist()

    class Apply(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, image: torch.Tensor, norm_mean: torch.Tensor, norm_var: torch.Tensor) -> torch.Tensor:
            index = 0

            def norm(x: torch.Tensor) -> torch.Tensor:
                nonlocal index
                module, lo, hi = norms[index], offsets[index], offsets[index + 1]
                index += 1
                scale = module.weight / torch.sqrt(norm_var[lo:hi] + module.eps)
                shift = module.bias - norm_mean[lo:hi] * scale
                return x * scale[None, :, None, None] + shift[None, :, None, None]

            return _forward_with_norm(self.net, image, norm)

    return Apply().eval()


def export_apply_model(net: Any, *, opset: int = DEFAULT_OPSET) -> Any:
    """Export :func:`build_apply_module` to an in-memory, checked ``onnx.ModelProto``."""
    import torch

    c_total = sum(m.num_features for _, m in norm_layers(net))
    example = (torch.zeros((2, 64, 64, 3), dtype=torch.uint8), torch.zeros(c_total), torch.ones(c_total))
    return _export_small(build_apply_module(net), example, [INPUT_NAME, MEAN_NAME, VAR_NAME], [OUTPUT_NAME],
                         (_spatial_dims(), None, None), opset)


def build_stats_module(net: Any) -> Any:
    """The network with every InstanceNorm layer normalizing with its input's own statistics (the deploy
    graph's behaviour) and reporting them: fast tiling's pass over a downscaled copy of the image (``input``
    uint8 [N,H,W,3] -> ``norm_mean``, ``norm_var`` [N,1600], biased variance, layers in forward order).

    The tiling graph in ``norm_own`` mode reports the same, but computes them under a mask, blends them with
    given statistics and finishes the output image, none of which this pass needs: on OpenVINO it takes
    2.2 s per megapixel where this graph takes 1.6 (ONNX Runtime: 2.6 against 2.2; docs/runtime.md). The last
    convolution, which no statistic depends on, is left out by the exporter (its result is not an output)."""
    import torch
    from torch import nn

    norms = [m for _, m in norm_layers(net)]

    class Stats(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            means: list[torch.Tensor] = []
            variances: list[torch.Tensor] = []

            def norm(x: torch.Tensor) -> torch.Tensor:
                module = norms[len(means)]
                mean = x.mean(dim=(2, 3))
                dev = x - mean[:, :, None, None]
                var = (dev * dev).mean(dim=(2, 3))
                means.append(mean)
                variances.append(var)
                scale = module.weight / torch.sqrt(var + module.eps)
                return dev * scale[:, :, None, None] + module.bias[None, :, None, None]

            _forward_with_norm(self.net, image, norm)
            return torch.cat(means, dim=1), torch.cat(variances, dim=1)

    return Stats().eval()


def export_stats_model(net: Any, *, opset: int = DEFAULT_OPSET) -> Any:
    """Export :func:`build_stats_module` to an in-memory, checked ``onnx.ModelProto``."""
    import torch

    example = (torch.zeros((2, 64, 64, 3), dtype=torch.uint8),)
    return _export_small(build_stats_module(net), example, [INPUT_NAME], [MEAN_NAME, VAR_NAME], (_spatial_dims(),),
                         opset)


def export_tiling_model(net: Any, *, opset: int = DEFAULT_OPSET) -> Any:
    """Export the tiling graph of ``net`` to an in-memory, checked ``onnx.ModelProto``."""
    import onnx
    import torch
    from nst_runtime.errors import UsageError

    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise UsageError(f"opset {opset}: expected {MIN_OPSET}..{MAX_OPSET} (as the deploy graph). "
                         f"Pass --opset {DEFAULT_OPSET} (the default).")
    net = net.eval().float().cpu()
    module = build_tiling_module(net)
    c_total = sum(m.num_features for _, m in norm_layers(net))
    # batch 2 in the example: torch.export specializes a dimension whose example size is 1
    example = (torch.zeros((2, 64, 64, 3), dtype=torch.uint8), torch.ones((2, 64, 64)),
               torch.zeros(c_total), torch.ones(c_total), torch.zeros(1))
    # H and W as 4 * k (the runtime pads the whole image once)
    spatial = _spatial_dims()
    with quiet_torch_exporter():
        program = torch.onnx.export(
            module, example, None, input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
            opset_version=opset, dynamo=True, dynamic_shapes=(spatial, spatial, None, None, None), optimize=True,
            verbose=False,
        )
    model = program.model_proto
    _name_dims(model)
    from .wrapper import uint8_edges_only_at_casts

    uint8_edges_only_at_casts(model)
    model.producer_name = "nst-export"
    _set_metadata(model, {
        "nst.contract": "tiling graph: uint8 NHWC tile + mask + whole-image norm stats -> uint8 tile + moments",
        "nst.min_size": str(MIN_SIZE),
        "nst.tiling.channels": ",".join(str(m.num_features) for _, m in norm_layers(net)),
        "nst.tiling.strides": ",".join(map(str, layer_strides(net))),
        "nst.tiling.multiple": str(TILE_MULTIPLE),
        # the stems ride inside the tiling graph (its hash covers them): no extra artifact to ship or verify
        **{STEM_KEY.format(depth=d): base64.b64encode(export_stem_model(net, d, opset=opset).SerializeToString())
           .decode("ascii") for d in range(1, STEM_DEPTH + 1)},
        APPLY_KEY: base64.b64encode(export_apply_model(net, opset=opset).SerializeToString()).decode("ascii"),
        STATS_KEY: base64.b64encode(export_stats_model(net, opset=opset).SerializeToString()).decode("ascii"),
    })
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ModelFileError(f"the exported tiling graph fails onnx.checker: {str(exc).splitlines()[0]}. This is "
                             "a bug in the export (or an unsupported PyTorch version); please report it.") from exc
    from .trt_lint import check_tensorrt_compatible

    # no InstanceNormalization here by design: the norms take their statistics as inputs
    check_tensorrt_compatible(model, label="the exported tiling graph", expect_instance_norm=False)
    return model


def _name_dims(model: Any) -> None:
    """Name the dynamic dims plainly (the exporter writes expressions such as ``4*h4``)."""
    plain = {INPUT_NAME: 3, MASK_NAME: 3, OUTPUT_NAME: 3, COUNT_NAME: 1, TILE_MEAN_NAME: 1, TILE_M2_NAME: 1}
    outputs = {MEAN_NAME: 1, VAR_NAME: 1}  # the statistics graph's [N, 1600] (as inputs elsewhere: [1600])
    values = [(v, plain) for v in model.graph.input] + [(v, plain | outputs) for v in model.graph.output]
    for value, named in values:
        dims = value.type.tensor_type.shape.dim
        for d, name in zip(dims, ("batch", "height", "width")[: named.get(value.name, 0)], strict=False):
            d.ClearField("dim_value")
            d.dim_param = name


def torch_norm_moments(net: Any, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Whole-image (mean, biased variance) of every norm layer's input, float64 [N, 1600], from PyTorch.

    ``image``: uint8 [N, H, W, 3] with H, W multiples of 4 (so no padding is involved).
    """
    import torch

    stats: list[tuple[np.ndarray, np.ndarray]] = []

    def hook(_module: Any, args: tuple[Any, ...]) -> None:
        x = args[0].detach().double()
        stats.append((x.mean(dim=(2, 3)).numpy(), x.var(dim=(2, 3), unbiased=False).numpy()))

    handles = [m.register_forward_pre_hook(hook) for _, m in norm_layers(net)]
    try:
        with torch.no_grad():
            net(torch.from_numpy(image).permute(0, 3, 1, 2).float())
    finally:
        for h in handles:
            h.remove()
    return np.concatenate([s[0] for s in stats], axis=1), np.concatenate([s[1] for s in stats], axis=1)


def check_tiling_graph(path: Path, net: Any, *, shapes: tuple[tuple[int, int, int], ...] = _CHECK_SHAPES
                       ) -> dict[str, Any]:
    """Numerical check: one tile = the whole image, mask all ones, PyTorch's true statistics given; and the
    same tile normalizing with its own statistics (``norm_own`` = 1).

    Both outputs must match the PyTorch deploy model within :data:`MAX_ABS_LEVELS` and the reported moments
    PyTorch's within :data:`MOMENT_RTOL`. Every shape is checked; failures are collected into one
    :class:`ParityError`. Returns the measured numbers (for the sidecar).
    """
    import onnxruntime as ort
    import torch

    from .wrapper import DeployWrapper

    wrapper = DeployWrapper(net).eval()
    session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(20160327)
    report: dict[str, Any] = {"max_abs_levels": 0, "max_moment_rel_err": 0.0, "shapes": []}
    problems: list[str] = []
    for n, h, w in shapes:
        image = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
        mean, var = torch_norm_moments(net, image)
        with torch.no_grad():
            want = wrapper(torch.from_numpy(image)).numpy()
        mean32 = np.ascontiguousarray(mean.astype(np.float32))
        var32 = np.ascontiguousarray(var.astype(np.float32))
        levels, rel = 0, 0.0
        for own in (0.0, 1.0):
            got = []
            for i in range(n):  # the statistics inputs are per call, so one image per call
                got.append(session.run(None, {
                    INPUT_NAME: image[i:i + 1], MASK_NAME: np.ones((1, h, w), np.float32),
                    MEAN_NAME: mean32[i] if not own else np.zeros_like(mean32[i]),
                    VAR_NAME: var32[i] if not own else np.ones_like(var32[i]),
                    OWN_NAME: np.array([own], np.float32)}))
            out = np.concatenate([g[0] for g in got])
            t_mean = np.concatenate([g[2] for g in got]).astype(np.float64)
            t_var = np.concatenate([g[3] / g[1][:, _layer_index(net)] for g in got]).astype(np.float64)
            levels = max(levels, int(np.abs(out.astype(np.int16) - want.astype(np.int16)).max()))
            scale = np.sqrt(var) + 1e-3
            rel = max(rel, float(max(np.abs(t_mean - mean).max() / scale.max(),
                                     (np.abs(t_var - var) / (var + 1e-6)).max())))
        applied = apply_session(session)
        if applied is not None:
            out = np.concatenate([applied.run(None, {INPUT_NAME: image[i:i + 1], MEAN_NAME: mean32[i],
                                                     VAR_NAME: var32[i]})[0] for i in range(n)])
            levels = max(levels, int(np.abs(out.astype(np.int16) - want.astype(np.int16)).max()))
            report["apply"] = True
        stats = stats_session(session)
        if stats is not None:
            s_mean, s_var = stats.run(None, {INPUT_NAME: image})
            scale = np.sqrt(var) + 1e-3
            rel = max(rel, float(max(np.abs(s_mean - mean).max() / scale.max(),
                                     (np.abs(s_var - var) / (var + 1e-6)).max())))
            report["stats"] = True
        stems = stem_sessions(session)
        for depth, stem in stems.items():
            g = int(np.sum([m.num_features for _, m in norm_layers(net)[:depth - 1]]))
            c = g + norm_layers(net)[depth - 1][1].num_features
            for i in range(n):
                feed = {INPUT_NAME: image[i:i + 1], CORE_NAME: np.array([0, 0, h, w], np.int64)}
                if depth > 1:
                    feed |= {MEAN_NAME: mean32[i, :g], VAR_NAME: var32[i, :g]}
                count, s_mean, s_m2 = stem.run(None, feed)
                s_var = s_m2[0] / count[0, 0]
                scale = np.sqrt(var[i, g:c]) + 1e-3
                rel = max(rel, float(max(np.abs(s_mean[0] - mean[i, g:c]).max() / scale.max(),
                                         (np.abs(s_var - var[i, g:c]) / (var[i, g:c] + 1e-6)).max())))
        report["stem_depths"] = sorted(stems)
        report["shapes"].append([n, h, w])
        report["max_abs_levels"] = max(report["max_abs_levels"], levels)
        report["max_moment_rel_err"] = max(report["max_moment_rel_err"], rel)
        if levels > MAX_ABS_LEVELS:
            problems.append(f"{(n, h, w)}: output differs by up to {levels} levels (allowed {MAX_ABS_LEVELS})")
        if rel > MOMENT_RTOL:
            problems.append(f"{(n, h, w)}: moments differ from PyTorch's by {rel:.2e} relative (allowed "
                            f"{MOMENT_RTOL:.0e})")
    if problems:
        raise ParityError(f"{path}: the tiling graph does not reproduce the model: {'; '.join(problems)}. This is "
                          "a bug in the export; please report it.")
    return report


def _embedded_session(session: Any, key: str) -> Any:
    """The graph carried under ``key`` in a tiling graph's metadata on ONNX Runtime's CPU, or None."""
    import onnxruntime as ort

    data = session.get_modelmeta().custom_metadata_map.get(key)
    return ort.InferenceSession(base64.b64decode(data), providers=["CPUExecutionProvider"]) if data else None


def apply_session(session: Any) -> Any:
    """The apply graph inside a tiling graph's metadata (``APPLY_KEY``) on ONNX Runtime's CPU, or None."""
    return _embedded_session(session, APPLY_KEY)


def stats_session(session: Any) -> Any:
    """The statistics graph inside a tiling graph's metadata (``STATS_KEY``) on ONNX Runtime's CPU, or None."""
    return _embedded_session(session, STATS_KEY)


def stem_sessions(session: Any) -> dict[int, Any]:
    """The stems inside a tiling graph's metadata (``STEM_KEY``), opened with ONNX Runtime on the CPU."""
    out = {}
    for depth in range(1, STEM_DEPTH + 1):
        stem = _embedded_session(session, STEM_KEY.format(depth=depth))
        if stem is not None:
            out[depth] = stem
    return out


def _layer_index(net: Any) -> np.ndarray:
    """For each of the 1600 concatenated channels, the index of its layer (to broadcast ``tile_count``)."""
    return np.repeat(np.arange(len(layer_strides(net))), [m.num_features for _, m in norm_layers(net)])


def tiling_path_for(onnx_path: str | os.PathLike[str]) -> Path:
    """``NAME.onnx`` (or ``NAME.fp16.onnx``, ``NAME.fp16.engine``) -> ``NAME.tiling.onnx``."""
    from nst_runtime.tiling import tiling_graph_path

    return tiling_graph_path(Path(onnx_path))


def tiling_onnx_from_checkpoint(
    checkpoint: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Export the tiling graph of ``checkpoint`` to ``out`` (by convention ``NAME.tiling.onnx``).

    Written to a temp name, checked with ``onnx.checker`` and numerically (:func:`check_tiling_graph`), then
    renamed into place with its sidecar (``role="tiling"``). Nothing is left at ``out`` on failure.
    """
    from nst_train.checkpoint import checkpoint_sha256, file_sha256, load_checkpoint

    out = Path(out)
    ckpt = load_checkpoint(checkpoint)  # a loaded Checkpoint is used as it is
    net = ckpt.model().eval().float().cpu()
    log.info("exporting the tiling graph of %s (opset %d)", ckpt.path, opset)
    model = export_tiling_model(net, opset=opset)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(out)
    try:
        save_model(model, tmp, final=out)
        report = check_tiling_graph(tmp, net)
        log.info("tiling graph check: max %d levels, moments within %.1e", report["max_abs_levels"],
                 report["max_moment_rel_err"])
        meta = Sidecar(
            kind="onnx", precision="fp32", input=TensorSpec(INPUT_NAME), output=TensorSpec(OUTPUT_NAME),
            min_size=MIN_SIZE, opset=opset, artifact_sha256=file_sha256(tmp),
            checkpoint_sha256=checkpoint_sha256(ckpt), parity=report, architecture=ckpt.metadata.architecture,
            created_at=utc_now(), role="tiling",
        )
        return publish(tmp, out, meta)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
