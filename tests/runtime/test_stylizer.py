"""Stylizer over ONNX Runtime: parity with PyTorch, sizes, types, batches, frames."""

from __future__ import annotations

import numpy as np
import pytest
from nst_runtime import Stylizer, UsageError
from PIL import Image


@pytest.mark.parametrize("hw", [(37, 50), (64, 64), (8, 8), (19, 33)])
def test_parity_with_pytorch_within_one_level(stylizer, reference, make_image, hw):
    x = make_image(*hw, seed=hw[0])
    out = stylizer.stylize(x)
    ref = reference(x)
    assert out.shape == x.shape and out.dtype == np.uint8
    assert ref.std() > 20, "reference output is degenerate; the test would prove nothing"
    assert np.abs(out.astype(int) - ref).max() <= 1


def test_parity_on_the_shared_export_fixture(onnx_fp32_path, tiny_net, make_image):
    import torch
    from nst_export.wrapper import DeployWrapper

    x = make_image(24, 40, seed=3)
    with Stylizer.open(onnx_fp32_path, device="cpu") as s:
        out = s.stylize(x)
    ref = DeployWrapper(tiny_net)(torch.from_numpy(x[None])).numpy()[0]
    assert np.abs(out.astype(int) - ref).max() <= 1


@pytest.mark.parametrize("hw", [(1, 1), (3, 5), (7, 9), (1, 40), (40, 2)])
def test_tiny_and_odd_sizes_keep_their_shape(stylizer, make_image, hw):
    x = make_image(*hw, seed=1) if min(hw) > 1 else np.random.default_rng(0).integers(0, 256, (*hw, 3), np.uint8)
    out = stylizer.stylize(x)
    assert out.shape == x.shape and out.dtype == np.uint8


@pytest.mark.parametrize("hw", [(1, 1), (3, 5), (7, 9), (37, 50)])
def test_host_padding_adds_no_border_artifact(stylizer, hw):
    # A constant image stays constant through reflection-padded convolutions and instance norm, so any
    # pixel that differs from the big image's colour was made by the padding.
    colour = np.array([200, 90, 30], np.uint8)
    big = stylizer.stylize(np.broadcast_to(colour, (32, 32, 3)).copy())
    small = stylizer.stylize(np.broadcast_to(colour, (*hw, 3)).copy())
    assert np.abs(small.astype(int) - big[0, 0]).max() <= 1


def test_tiny_image_equals_stylizing_its_mirror_padding(stylizer, reference):
    x = np.random.default_rng(5).integers(0, 256, (3, 5, 3), np.uint8)
    padded = np.pad(x, ((0, 5), (0, 3), (0, 0)), mode="symmetric")
    assert np.abs(stylizer.stylize(x).astype(int) - reference(padded)[:3, :5]).max() <= 1


def test_pil_in_pil_out_and_numpy_in_numpy_out(stylizer, make_image):
    x = make_image(20, 30)
    pil = stylizer.stylize(Image.fromarray(x))
    arr = stylizer.stylize(x)
    assert isinstance(pil, Image.Image) and pil.mode == "RGB" and pil.size == (30, 20)
    assert isinstance(arr, np.ndarray)
    np.testing.assert_array_equal(np.asarray(pil), arr)


def test_batch_matches_single_calls(vivid_onnx, make_image):
    images = [make_image(16, 24, seed=i) for i in range(5)] + [make_image(20, 12, seed=9)]
    with Stylizer.open(vivid_onnx, device="cpu", batch_size=4) as s:
        batch = s.stylize_batch(images)
        singles = [s.stylize(x) for x in images]
    for a, b in zip(batch, singles, strict=True):
        assert np.abs(a.astype(int) - b).max() <= 1  # batched kernels may round differently by one level


def test_frames_come_out_lazily_and_in_order(stylizer, make_image):
    frames = [make_image(16, 16, seed=i) for i in range(7)]
    out = list(stylizer.stylize_frames(iter(frames), batch_size=3))
    assert len(out) == 7
    for x, y in zip(frames, out, strict=True):
        # batched kernels may round differently by one level (OpenVINO picks kernels per batch shape)
        assert np.abs(y.astype(int) - stylizer.stylize(x)).max() <= 1


def test_gray_and_uint16_arrays(stylizer, make_image):
    gray = make_image(16, 16)[..., 0]
    out = stylizer.stylize(gray)
    assert out.shape == (16, 16, 3)
    np.testing.assert_array_equal(out, stylizer.stylize(np.repeat(gray[..., None], 3, 2)))
    wide = gray.astype(np.uint16) * 257  # 8-bit values stretched to the full 16-bit range
    np.testing.assert_array_equal(stylizer.stylize(wide), out)


@pytest.mark.parametrize("bad", [np.zeros((4, 4, 3), np.float32), np.zeros((3, 8, 8), np.uint8), "photo.jpg"])
def test_bad_inputs_are_usage_errors_that_say_the_fix(stylizer, bad):
    with pytest.raises(UsageError, match="expected"):
        stylizer.stylize(bad)


def test_closed_stylizer_refuses_calls(vivid_onnx):
    s = Stylizer.open(vivid_onnx, device="cpu")
    s.close()
    s.close()  # idempotent
    with pytest.raises(UsageError, match="closed"):
        s.stylize(np.zeros((8, 8, 3), np.uint8))


def test_engine_on_onnxruntime_and_onnx_on_tensorrt_are_refused(vivid_onnx):
    with pytest.raises(UsageError, match="tensorrt backend runs engines"):
        Stylizer.open(vivid_onnx, backend="tensorrt")
