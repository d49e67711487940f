"""One device vocabulary for every command and library call: ``auto``, ``cpu``, ``cuda``, ``cuda:N``.

``--device`` in every command and ``device=`` in :meth:`nst_runtime.Stylizer.open` take the same strings (an
int ``N`` is accepted as ``cuda:N`` for older callers). The training stage adds ``mps`` (Apple GPUs), which
only PyTorch can use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .errors import UsageError

DeviceKind = Literal["auto", "cpu", "cuda", "mps"]
DEVICE_HELP = "auto (a GPU when one is usable, else the CPU), cpu, cuda (GPU 0) or cuda:N"


@dataclass(frozen=True)
class Device:
    """A parsed device. ``index`` is the GPU number for ``cuda`` (0 for plain ``cuda``), else None."""

    kind: DeviceKind
    index: int | None = None

    @property
    def is_gpu(self) -> bool:
        return self.kind in ("cuda", "mps")

    @property
    def gpu_index(self) -> int:
        """The CUDA device number (0 for ``auto``, which may still land on a GPU)."""
        return self.index if self.index is not None else 0

    def __str__(self) -> str:
        return f"cuda:{self.index}" if self.kind == "cuda" and self.index is not None else self.kind


def parse_device(value: str | int | Device | None, *, allow_mps: bool = False) -> Device:
    """``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` (and ``"mps"`` where allowed), or an int GPU index.

    Raises :class:`UsageError` naming the accepted forms for anything else.
    """
    if value is None:
        return Device("auto")
    if isinstance(value, Device):
        return value
    if isinstance(value, bool):  # bool is an int; True/False are not devices
        raise UsageError(f"device {value!r}: expected {DEVICE_HELP}.")
    if isinstance(value, int):
        if value < 0:
            raise UsageError(f"device {value}: expected a GPU index >= 0, or {DEVICE_HELP}.")
        return Device("cuda", value)
    text = str(value).strip().lower()
    if text in ("auto", "cpu"):
        return Device(text)  # type: ignore[arg-type]
    if text == "mps" and allow_mps:
        return Device("mps")
    if text == "cuda":
        return Device("cuda", 0)
    if text.startswith("cuda:"):
        number = text[len("cuda:"):]
        if number.isdigit():
            return Device("cuda", int(number))
    if text.isdigit():  # "0", "1": the old nst-stylize syntax
        return Device("cuda", int(text))
    accepted = DEVICE_HELP + (", or mps" if allow_mps else "")
    raise UsageError(f"device {value!r}: expected {accepted}.")
