"""Bench fixtures: nst-bench's random network is the shared test network, exported once per session."""

from __future__ import annotations

import shutil

import pytest


@pytest.fixture
def shared_network_export(monkeypatch, tiny_net, onnx_fp32_path):
    """nst-bench's random network (``ModelSource(seed=0)``) and the tests' shared network are the same
    ``nst_train.samples.vivid_random_net(0)``; its FP32 ONNX export is the session's (``onnx_fp32_path``),
    copied, instead of one more export of the same weights per test. Any other network is exported for real
    (the export itself is tested in tests/export). Modules that time ONNX backends use it:
    ``pytestmark = pytest.mark.usefixtures("shared_network_export")``."""
    from nst_export import onnx_export

    real = onnx_export.onnx_from_checkpoint

    def export(checkpoint, out, **kwargs):
        import torch
        from nst_runtime.sidecar import sidecar_path
        from nst_train.checkpoint import load_checkpoint

        shared = tiny_net.state_dict()
        mine = load_checkpoint(checkpoint).model().state_dict()
        if kwargs or list(mine) != list(shared) or not all(torch.equal(mine[k], shared[k]) for k in shared):
            return real(checkpoint, out, **kwargs)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(onnx_fp32_path, out)
        shutil.copy(sidecar_path(onnx_fp32_path), sidecar_path(out))
        return out

    monkeypatch.setattr(onnx_export, "onnx_from_checkpoint", export)
