"""A real local Ray for the serve tests: started in this process with 2 CPUs, one per test module (Ray takes
~5 s to start and Serve ~7 s to deploy on a quiet 2-core machine, so modules share them), shut down at the
module's end so that no Ray outlives the module. No mocks: requests go through Serve's HTTP proxy on
loopback."""

from __future__ import annotations

import io
import socket

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="module")
def local_ray():
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             # metrics reach the Prometheus exporter within a second instead of ten
             _system_config={"metrics_report_interval_ms": 1000})
    yield ray
    try:
        from ray import serve

        serve.shutdown()
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def free_port():
    return _free_port


@pytest.fixture(scope="session")
def make_photo():
    return _photo


@pytest.fixture(scope="session")
def png():
    return _encode


@pytest.fixture(scope="session")
def decode_image():
    return _decode


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth, photo-like test image (not noise): gradients and a few discs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    img = np.stack([xx / max(w - 1, 1), yy / max(h - 1, 1), (xx + yy) / max(h + w - 2, 1)], -1) * 200 + 20
    for _ in range(4):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(max(2, h // 8), max(3, h // 3))
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.integers(0, 256, 3)
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _encode(arr: np.ndarray, fmt: str = "PNG", **params) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **params)
    return buf.getvalue()


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))
