"""The one device vocabulary (auto, cpu, cuda, cuda:N) every command and Stylizer.open share."""

from __future__ import annotations

import pytest
from nst_runtime.devices import Device, parse_device
from nst_runtime.errors import UsageError


@pytest.mark.parametrize(("text", "expected"), [
    ("auto", Device("auto")), ("AUTO", Device("auto")), (None, Device("auto")), ("cpu", Device("cpu")),
    ("cuda", Device("cuda", 0)), ("cuda:3", Device("cuda", 3)), (" Cuda:1 ", Device("cuda", 1)),
    (2, Device("cuda", 2)), ("0", Device("cuda", 0)),
])
def test_accepted_forms(text, expected):
    assert parse_device(text) == expected


@pytest.mark.parametrize("text", ["gpu", "cuda:", "cuda:x", "cuda:-1", "-1", -1, True, "mps", ""])
def test_refused_forms_name_the_vocabulary(text):
    with pytest.raises(UsageError, match=r"auto.*cpu.*cuda"):
        parse_device(text)


def test_mps_only_where_allowed_and_str_round_trips():
    assert parse_device("mps", allow_mps=True) == Device("mps")
    for text in ("auto", "cpu", "cuda:0", "cuda:5"):
        assert str(parse_device(text)) == text
    assert parse_device(parse_device("cuda:2")) == Device("cuda", 2)
