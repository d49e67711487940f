"""FLOP counting from the architecture, checked against hand arithmetic."""

from __future__ import annotations

from nst_bench.backends import Workload
from nst_train.model import count_flops


def conv_flops(cin, cout, k, h_out, w_out):
    """2 x MACs of one convolution: every output pixel of every output channel does cin*k*k MACs."""
    return 2 * cin * cout * k * k * h_out * w_out


def test_first_layer_by_hand():
    # conv1: 9x9, 3 -> 32, stride 1 on 256x256 (reflection padding keeps the size):
    # 2 * 3 * 32 * 81 * 65536 = 1,019,215,872
    assert conv_flops(3, 32, 9, 256, 256) == 1_019_215_872


def test_whole_network_matches_a_hand_table():
    h = w = 256
    layers = [
        (3, 32, 9, h, w),  # c9s1-32
        (32, 64, 3, h // 2, w // 2),  # d64
        (64, 128, 3, h // 4, w // 4),  # d128
        *[(128, 128, 3, h // 4, w // 4)] * 10,  # five residual blocks, two convs each
        (128, 64, 3, h // 2, w // 2),  # u64 (after 2x upsampling)
        (64, 32, 3, h, w),  # u32
        (32, 3, 9, h, w),  # c9s1-3
    ]
    expected = sum(conv_flops(*layer) for layer in layers)
    assert count_flops(h, w) == expected
    assert 20.0e9 < expected < 20.3e9  # the ~20.16 GFLOP quoted in the docs
    # FLOPs scale with pixels
    assert count_flops(512, 512) == 4 * count_flops(256, 256)


def test_workload_pads_to_a_multiple_of_four():
    wl = Workload(1080, 1920, 1)
    assert wl.size == "1080x1920" and wl.padded == (1080, 1920)
    assert Workload(33, 30, 2).padded == (36, 32)
    img = Workload(10, 12, 3).host_image()
    assert img.shape == (3, 10, 12, 3) and img.dtype.name == "uint8"
