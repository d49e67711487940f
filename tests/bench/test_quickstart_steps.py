"""make demo's stylize stage also shows --preserve-color and --scale 0.5 on its samples."""

from __future__ import annotations

import numpy as np
from PIL import Image


def test_demo_stylizes_the_samples_with_preserve_color_and_scale(tmp_path, onnx_fp32_path):
    from nst_bench.quickstart import QuickstartConfig, QuickstartResult, stylize_samples
    from nst_runtime.color import rgb_to_ycbcr

    rng = np.random.default_rng(0)
    content = []
    for i in range(2):
        path = tmp_path / f"sample{i}.png"
        Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(path)
        content.append(path)
    cfg = QuickstartConfig(out=tmp_path / "demo")
    res = QuickstartResult(out=cfg.out, content=content, artifacts=[onnx_fp32_path])
    stylize_samples(cfg, res)
    assert res.fallbacks == {}
    for label in ("preserve-color", "scale-0.5"):
        outs = sorted((cfg.out / f"stylized-{label}").glob("*.png"))
        assert len(outs) == 2, label
        assert all(Image.open(p).size == (56, 40) for p in outs)  # the input's size, also at --scale 0.5
    photo = np.asarray(Image.open(content[0]).convert("RGB"))
    kept = np.asarray(Image.open(cfg.out / "stylized-preserve-color" / "sample0.png"))
    plain = np.asarray(Image.open(cfg.out / "stylized" / "sample0.png"))
    # the photo's chroma: closer to the photo's Cb/Cr than the plain stylization is
    chroma = lambda x: rgb_to_ycbcr(x)[..., 1:]  # noqa: E731
    assert np.abs(chroma(kept) - chroma(photo)).mean() < np.abs(chroma(plain) - chroma(photo)).mean()
