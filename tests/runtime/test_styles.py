"""Choosing a style of a multi-style network (nst_runtime.styles) and the sidecar's style input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from nst_runtime.errors import ModelFileError, UsageError
from nst_runtime.sidecar import Sidecar, StyleInput, read_sidecar, sidecar_path
from nst_runtime.styles import describe_weights, style_names_text, style_weights

STYLE = StyleInput(name="style", size=4, names=("candy", "mosaic", "udnie", "Wave"))


def _onehot(i: int, n: int = 4) -> np.ndarray:
    v = np.zeros(n, np.float32)
    v[i] = 1
    return v


@pytest.mark.parametrize(("spec", "expected"), [
    ("mosaic", _onehot(1)),
    ("wave", _onehot(3)),  # case-insensitive when unambiguous
    (2, _onehot(2)),
    ("2", _onehot(2)),
    (np.int64(0), _onehot(0)),
    ("0:0.5,3:0.5", np.array([0.5, 0, 0, 0.5], np.float32)),
    ("candy:3,udnie:1", np.array([0.75, 0, 0.25, 0], np.float32)),  # scaled to sum 1
    ("candy,udnie", np.array([0.5, 0, 0.5, 0], np.float32)),  # equal weights
    ({"mosaic": 1, 3: 1}, np.array([0, 0.5, 0, 0.5], np.float32)),
    ([1, 1, 1, 1], np.full(4, 0.25, np.float32)),
    (np.array([0, 0, 2, 0]), _onehot(2)),
])
def test_every_way_of_naming_a_style(spec, expected):
    weights = style_weights(spec, STYLE)
    assert weights.dtype == np.float32 and weights.shape == (4,)
    np.testing.assert_allclose(weights, expected, atol=1e-7)


@pytest.mark.parametrize(("spec", "match"), [
    ("starry", r"no style of that name; it has 0 candy, 1 mosaic, 2 udnie, 3 Wave"),
    (4, r"style index 4: the model has styles 0\.\.3"),
    (-1, r"style index -1"),
    ("0:-1,1:2", r"finite and >= 0"),
    ("0:0", r"sum to 0"),
    ("0:x", r"the weight 'x' of '0' is not a number"),
    ("0:1,,1:1", r"an empty item"),
    (":0.5", r"has a weight but no style"),
    ([1, 0, 0], r"3 values for the model, which holds 4 styles"),
    ([np.nan, 1, 0, 0], r"finite"),
    (True, r"expected a name, an index"),
    (1.5, r"expected a name, an index"),
])
def test_bad_styles_are_one_line_usage_errors(spec, match):
    with pytest.raises(UsageError, match=match) as info:
        style_weights(spec, STYLE)
    assert "\n" not in str(info.value)


def test_unnamed_styles_are_listed_as_a_range():
    unnamed = StyleInput("style", 26, tuple(str(i) for i in range(26)))
    assert style_names_text(unnamed) == "styles 0..25 (unnamed)"
    assert style_weights("25", unnamed)[25] == 1


def test_describe_weights():
    assert describe_weights(style_weights("udnie", STYLE), STYLE) == "udnie"
    assert describe_weights(style_weights("0:0.7,1:0.3", STYLE), STYLE) == "0.7 candy + 0.3 mosaic"


def _write(tmp_path, style):
    artifact = tmp_path / "m.onnx"
    artifact.write_bytes(b"x")
    data = json.loads(Sidecar(kind="onnx", precision="fp32").to_json())
    data["style"] = style
    sidecar_path(artifact).write_text(json.dumps(data))
    return artifact


def test_sidecar_round_trips_the_style_input(tmp_path):
    meta = Sidecar(kind="onnx", precision="fp32", style=STYLE, gflop_per_mpx=12.5)
    artifact = tmp_path / "m.onnx"
    artifact.write_bytes(b"x")
    sidecar_path(artifact).write_text(meta.to_json())
    back = read_sidecar(artifact)
    assert back.style == STYLE and back.input_names == ["input", "style"] and back.gflop_per_mpx == 12.5
    assert read_sidecar(_write(tmp_path, None)).style is None  # older sidecars: one style


@pytest.mark.parametrize(("style", "match"), [
    ({"name": "style", "size": 3, "names": ["a", "b"]}, "expected 3 non-empty strings"),
    ({"name": "style", "size": 2, "names": ["a", "a"]}, "names repeat"),
    ({"name": "", "size": 1, "names": ["a"]}, "non-empty string"),
    ({"name": "style", "size": 0, "names": []}, "size 0"),
    ("candy", "expected an object"),
])
def test_malformed_style_inputs_are_refused(tmp_path, style, match):
    with pytest.raises(ModelFileError, match=match):
        read_sidecar(_write(tmp_path, style))


def test_a_one_style_model_refuses_style(stylizer, make_image):
    with pytest.raises(UsageError, match="holds one style"):
        stylizer.stylize(make_image(16, 16), style="candy")
    assert stylizer.style_feeds() is None
