import numpy as np


def test_fixture_onnx_runs_with_exact_contract(onnx_fp32_path, tiny_net):
    import onnxruntime as ort
    import torch
    from nst_export.wrapper import DeployWrapper

    sess = ort.InferenceSession(str(onnx_fp32_path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).integers(0, 256, (2, 21, 34, 3), dtype=np.uint8)
    out = sess.run(None, {"input": x})[0]
    assert out.dtype == np.uint8 and out.shape == x.shape
    ref = DeployWrapper(tiny_net)(torch.from_numpy(x)).numpy()
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1
