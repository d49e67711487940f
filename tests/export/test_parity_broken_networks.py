"""Non-finite networks never pass the parity gate (issue 12, item 2).

A network with one NaN or Inf weight outputs NaN; the uint8 cast turns NaN into black on the PyTorch side and
on the ONNX side alike, so comparing the two says "identical". The gate must look at the values before the
cast, and must fail outputs that do not depend on a varied input.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

#: one small batch of two different images: enough for every check, and fast
SHAPES = ((2, 24, 28),)
#: a weight early in the network, so one bad value reaches every output pixel (through the norms and convs)
EARLY = "res1.conv1.conv2d.weight"


def _broken(tmp_path, onnx_path, net, kind: str):
    """(an ONNX file, the matching torch network) with one NaN or Inf weight, or a constant output."""
    import onnx
    import torch
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    net = copy.deepcopy(net)
    params = dict(net.named_parameters())
    target = "deconv3.conv2d.weight" if kind == "constant" else EARLY
    init = next(i for i in model.graph.initializer if i.name.endswith(target))
    values = numpy_helper.to_array(init).copy()
    with torch.no_grad():
        if kind == "constant":  # the last convolution ignores its input: the output is its bias, one colour
            values[...] = 0.0
            params[target].zero_()
        else:
            bad = np.nan if kind == "nan" else np.inf
            values[0, 0, 0, 0] = bad
            params[target][0, 0, 0, 0] = bad
    init.CopyFrom(numpy_helper.from_array(values, init.name))
    path = tmp_path / f"{kind}.onnx"
    onnx.save(model, str(path))
    return path, net


@pytest.mark.parametrize("kind", ["nan", "inf"])
def test_non_finite_weights_fail_the_gate_although_both_sides_agree(tmp_path, onnx_fp32_path, tiny_net, kind):
    from nst_export.parity import check_parity, onnx_reference, torch_reference
    from nst_runtime.errors import ParityError

    path, net = _broken(tmp_path, onnx_fp32_path, tiny_net, kind)
    report = check_parity(path, torch_reference(net), precision="fp32", reference_name="pytorch-fp32",
                          raise_on_failure=False, shapes=SHAPES)
    # the comparison alone is fooled: both sides cast NaN to the same uint8 values
    assert report.max_abs_levels <= 1
    assert not report.passed
    assert any("the exported graph outputs" in f and "before the uint8 cast" in f for f in report.failures)
    assert any("the reference (pytorch-fp32) outputs" in f for f in report.failures)
    assert all(i.nonfinite_before_cast and i.nonfinite_before_cast > 0 for i in report.images)
    assert report.to_dict()["images"][0]["nonfinite_before_cast"] > 0

    # a reference that only returns uint8 (here: the broken file itself) still cannot make it pass
    plain = check_parity(path, onnx_reference(path), precision="fp32", reference_name="itself",
                         raise_on_failure=False, shapes=SHAPES)
    assert plain.max_abs_levels == 0 and not plain.passed
    with pytest.raises(ParityError, match=r"before the uint8 cast.*Nothing was written"):
        check_parity(path, onnx_reference(path), precision="fp32", reference_name="itself", shapes=SHAPES)


def test_constant_output_fails_as_degenerate(tmp_path, onnx_fp32_path, tiny_net):
    from nst_export.parity import check_parity, torch_reference
    from nst_runtime.errors import ParityError

    path, net = _broken(tmp_path, onnx_fp32_path, tiny_net, "constant")
    report = check_parity(path, torch_reference(net), precision="fp32", reference_name="pytorch-fp32",
                          raise_on_failure=False, shapes=SHAPES)
    assert report.max_abs_levels <= 1  # the two sides agree on the constant image
    assert not report.passed
    assert all(i.output_range_levels == 0 for i in report.images)
    assert any("degenerate output: image 0 is flat" in f for f in report.failures)
    assert any("come out identical although their inputs differ" in f for f in report.failures)
    assert not any("before the uint8 cast" in f for f in report.failures)  # finite, just useless
    with pytest.raises(ParityError, match="degenerate output"):
        check_parity(path, torch_reference(net), precision="fp32", reference_name="pytorch-fp32", shapes=SHAPES)


def test_healthy_network_passes_with_its_numbers(onnx_fp32_path, tiny_net):
    from nst_export.parity import check_parity, raw_output_session, torch_reference

    session = raw_output_session(onnx_fp32_path)
    assert session is not None  # the raw output is found behind the clamp/round/transpose/cast tail
    report = check_parity(onnx_fp32_path, torch_reference(tiny_net), precision="fp32",
                          reference_name="pytorch-fp32")
    assert report.passed
    assert all(i.nonfinite_before_cast == 0 for i in report.images)
    assert all(i.output_range_levels >= 100 for i in report.images)


def test_torch_reference_exposes_the_float_output(tiny_net):
    from nst_export.parity import parity_images, torch_reference

    ref = torch_reference(tiny_net)
    batch = parity_images([(2, 16, 20)])[0]
    out = ref.run(batch)
    assert out.image.dtype == np.uint8 and out.image.shape == (2, 16, 20, 3)
    assert out.raw is not None and out.raw.dtype == np.float32 and out.raw.shape == (2, 3, 16, 20)
    # the uint8 image is the clamped, rounded float output
    expected = np.clip(np.rint(out.raw), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    assert np.array_equal(out.image, expected)
    assert np.array_equal(ref(batch), out.image)
