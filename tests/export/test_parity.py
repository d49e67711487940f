"""The parity gate's numbers and its all-failures-in-one-error behaviour."""

from __future__ import annotations

import math

import numpy as np
import pytest


def test_parity_images_are_fixed_varied_and_shaped():
    from nst_export.parity import DEFAULT_SHAPES, parity_images

    a, b = parity_images(), parity_images()
    assert [x.shape for x in a] == [(n, h, w, 3) for n, h, w in DEFAULT_SHAPES]
    assert all(x.dtype == np.uint8 for x in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    for batch in a:
        assert batch.std() > 20  # not flat
        if len(batch) > 1:
            assert not np.array_equal(batch[0], batch[1])
    assert any(h % 4 or w % 4 for _, h, w in DEFAULT_SHAPES)
    assert len({(h, w) for _, h, w in DEFAULT_SHAPES}) >= 2


def test_compare_images_numbers():
    from nst_export.parity import compare_images

    rng = np.random.default_rng(0)
    ref = rng.integers(10, 240, (2, 16, 16, 3), dtype=np.uint8)
    same = compare_images(ref.copy(), ref)
    assert same.max_abs_levels == 0 and same.psnr_db is None and same.differing_fraction == 0
    shifted = ref.copy()
    shifted[0, 0, 0, 0] += 5
    shifted[1, 3, 3, 1] -= 2
    r = compare_images(shifted, ref)
    mse = (25 + 4) / ref.size
    assert r.max_abs_levels == 5
    assert r.psnr_db == pytest.approx(10 * math.log10(255**2 / mse))
    assert r.differing_fraction == pytest.approx(2 / ref.size)


def test_gate_collects_every_failure_then_raises_once(onnx_fp32_path):
    from nst_export.parity import DEFAULT_SHAPES, ParityTolerance, check_parity, onnx_reference
    from nst_runtime.errors import ParityError

    ref = onnx_reference(onnx_fp32_path)

    def off_by_two(x):
        return np.clip(ref(x).astype(int) + 2, 0, 255).astype(np.uint8)

    report = check_parity(onnx_fp32_path, off_by_two, precision="fp32", reference_name="shifted",
                          raise_on_failure=False)
    assert not report.passed and len(report.failures) == len(DEFAULT_SHAPES)
    assert report.max_abs_levels >= 2
    with pytest.raises(ParityError) as info:
        check_parity(onnx_fp32_path, off_by_two, precision="fp32", reference_name="shifted")
    assert all(f in str(info.value) for f in report.failures)
    # a looser tolerance accepts the same numbers
    ok = check_parity(onnx_fp32_path, off_by_two, precision="fp32", reference_name="shifted",
                      tolerance=ParityTolerance(fp32_max_abs_levels=report.max_abs_levels))
    assert ok.passed and ok.to_dict()["passed"] is True


def test_tolerance_rejects_nonsense():
    from nst_export.parity import ParityTolerance

    with pytest.raises(ValueError, match="fp32_max_abs_levels"):
        ParityTolerance(fp32_max_abs_levels=-1)
    with pytest.raises(ValueError, match="fp16_min_psnr_db"):
        ParityTolerance(fp16_min_psnr_db=0)
