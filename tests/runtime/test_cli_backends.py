"""nst-stylize --backend openvino|onnxruntime, and -v naming the backend chosen and the order of the table."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from nst_runtime.backends import backends_present
from nst_runtime.cli import main
from PIL import Image


@pytest.mark.parametrize("backend", ["auto", *backends_present("onnx", place="cpu")])
def test_backend_option_and_verbose_shows_the_choice(vivid_onnx, make_image, tmp_path, capsys, backend):
    Image.fromarray(make_image(16, 24)).save(tmp_path / "x.png")
    code = main([str(vivid_onnx), str(tmp_path / "x.png"), "-o", str(tmp_path / "y.png"), "--device", "cpu",
                 "--backend", backend, "-v", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 0, err
    chosen = backends_present("onnx", place="cpu")[0] if backend == "auto" else backend
    assert f"backend {chosen} on cpu ({backend}; order:" in err
    assert np.asarray(Image.open(tmp_path / "y.png")).shape == (16, 24, 3)


def test_openvino_without_the_package_is_exit_6_with_the_extra(vivid_onnx, make_image, tmp_path, capsys,
                                                                  monkeypatch):
    from nst_runtime import backends

    real = importlib.util.find_spec
    monkeypatch.setattr(backends.importlib.util, "find_spec",
                        lambda name, *a: None if name == "openvino" else real(name, *a))
    Image.fromarray(make_image(16, 16)).save(tmp_path / "x.png")
    code = main([str(vivid_onnx), str(tmp_path / "x.png"), "-o", str(tmp_path / "y.png"), "--device", "cpu",
                 "--backend", "openvino", "-q"])
    err = capsys.readouterr().err
    assert code == 6 and "pip install 'nst[openvino]'" in err and err.strip().count("\n") == 0
    assert not (tmp_path / "y.png").exists()
