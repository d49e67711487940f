"""Runtime fixtures: the shared non-degenerate network (output spans 0..255), exported through nst-export's
own function, plus a copy with the tiling graph beside it."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def vivid_net(tiny_net):
    """The shared ``tiny_net``: its output already spans 0..255 (see tests/conftest.py)."""
    return tiny_net


@pytest.fixture(scope="session")
def vivid_onnx(tmp_path_factory, vivid_net):
    """FP32 ONNX + sidecar of ``vivid_net``, written by ``nst_export.onnx_export.onnx_from_checkpoint``."""
    from nst_export.onnx_export import onnx_from_checkpoint
    from nst_train.checkpoint import CheckpointMetadata, save_checkpoint

    folder = tmp_path_factory.mktemp("vivid")
    ckpt = save_checkpoint(folder / "vivid.pth", vivid_net, CheckpointMetadata(steps=0))
    return onnx_from_checkpoint(ckpt, folder / "vivid.onnx")


def _cpu_backends() -> list[str]:
    from nst_runtime.backends import backends_present

    return backends_present("onnx", place="cpu")


@pytest.fixture(scope="session", params=_cpu_backends())
def runtime_backend(request):
    """Every backend present here that runs ONNX files on the CPU (onnxruntime, and openvino when installed):
    tests taking ``stylizer`` run once per backend, so each one keeps the same contract."""
    return request.param


@pytest.fixture(scope="session")
def stylizer(vivid_onnx, runtime_backend):
    from nst_runtime import Stylizer

    with Stylizer.open(vivid_onnx, device="cpu", backend=runtime_backend) as s:
        assert s.backend == runtime_backend
        yield s


@pytest.fixture(scope="session")
def reference(vivid_net):
    """PyTorch reference: uint8 HxWx3 -> uint8 HxWx3 through the deployment wrapper."""
    import torch
    from nst_export.wrapper import DeployWrapper

    wrapper = DeployWrapper(vivid_net).eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return wrapper(torch.from_numpy(np.ascontiguousarray(x)[None])).numpy()[0]

    return run


@pytest.fixture(scope="session")
def make_image():
    return natural_image


@pytest.fixture(scope="session")
def measure_psnr():
    return psnr


def natural_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A photo-like test image: smooth fields at several scales, a few flat discs, sensor-like noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.float32)
    for s in (4, 16, 64):
        small = rng.random((h // s + 2, w // s + 2, 3)).astype(np.float32)
        img += np.stack([np.asarray(Image.fromarray(small[..., c]).resize((w, h), Image.BICUBIC))
                         for c in range(3)], -1) * (s / 84)
    img = (img - img.min()) / (img.max() - img.min()) * 255
    yy, xx = np.mgrid[:h, :w]
    for _ in range(6):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(max(1, h // 10), max(2, h // 4))
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.integers(0, 256, 3)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.fixture(scope="session")
def vivid_exact_onnx(tmp_path_factory, vivid_onnx):
    """``vivid.onnx`` in a folder of its own with ``vivid.tiling.onnx`` beside it (exact tiling mode).

    ``vivid_onnx`` itself has no tiling graph beside it, so it keeps testing the feathered fallback."""
    import shutil

    from nst_export.tiling_graph import tiling_onnx_from_checkpoint
    from nst_runtime.sidecar import sidecar_path

    folder = tmp_path_factory.mktemp("vivid_exact")
    for path in (vivid_onnx, sidecar_path(vivid_onnx)):
        shutil.copy(path, folder / path.name)
    tiling_onnx_from_checkpoint(vivid_onnx.with_name("vivid.pth"), folder / "vivid.tiling.onnx")
    return folder / vivid_onnx.name
