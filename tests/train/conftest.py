"""Fixtures of the training-stage tests. Every test here uses a RANDOMLY INITIALISED VGG-16 (the ImageNet
weights cannot be downloaded in CI): the losses and gradients are real, stylization quality is never judged."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def samples(tmp_path_factory) -> Path:
    """A folder with ``content/`` (6 generated 48 px photos) and ``style.png`` (a generated 48 px texture)."""
    from nst_train.samples import write_sample_content, write_sample_style

    root = tmp_path_factory.mktemp("samples")
    write_sample_content(root / "content", count=6, size=48, seed=0)
    write_sample_style(root / "style.png", size=48, seed=0)
    return root


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """These tensors are tiny: one intra-op thread is as fast, and on a shared 2-core machine a second thread
    spinning at OpenMP barriers makes steps up to 50x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _quiet_random_vgg_warning():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="VGG-16 loss network is RANDOMLY INITIALISED")
        yield


@pytest.fixture
def tiny_config(samples: Path):
    """Factory of TrainConfigs that train at well under a second per step on a 2-core CPU (random VGG)."""
    from nst_train.train import TrainConfig

    def make(out: Path, **overrides):
        kwargs = dict(style=samples / "style.png", content_dir=samples / "content", out=out, image_size=32,
                      batch_size=2, steps=4, seed=3, device="cpu", vgg_weights="random", num_workers=0,
                      log_every=1, checkpoint_every=0, preview_every=0, preview_count=2, progress=False)
        kwargs.update(overrides)
        return TrainConfig(**kwargs)

    return make
