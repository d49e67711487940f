"""Where outputs may go: never onto a file a command reads, and only into a folder that can be written.

Every command calls :func:`refuse_replacing_inputs` with all the paths it will write and all the paths it
reads, before any work starts, so ``nst-stylize m.onnx photos/ -o photos/`` or ``nst-gatys photo.jpg style.jpg
-o photo.jpg`` stop with one line (exit 2) instead of replacing the originals. Paths are compared resolved
(symlinks, ``..``) and by device and inode (hard links, case-insensitive file systems).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from .errors import UsageError, write_error


def _key(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop: compare as given
        return path.absolute()


def refuse_replacing_inputs(inputs: Iterable[str | os.PathLike[str]], outputs: Iterable[str | os.PathLike[str]],
                            *, fix: str = "choose another -o") -> None:
    """Raise :class:`UsageError` (exit 2) if any path in ``outputs`` is one of ``inputs``.

    ``outputs`` are the files a command plans to write (existing or not); ``inputs`` the files it reads. The
    message names both and ends with ``fix``. Linear in the number of paths.
    """
    by_path: dict[Path, Path] = {}
    by_inode: dict[tuple[int, int], Path] = {}
    for raw in inputs:
        path = Path(raw)
        by_path.setdefault(_resolved(path), path)
        key = _key(path)
        if key is not None:
            by_inode.setdefault(key, path)
    for raw in outputs:
        out = Path(raw)
        source = by_path.get(_resolved(out))
        if source is None:
            key = _key(out)
            source = by_inode.get(key) if key is not None else None
        if source is not None:
            what = "is" if _resolved(out) == _resolved(source) else "is the same file as"
            raise UsageError(f"the output {out} {what} the input {source}: writing it would replace that input "
                             f"(nst never writes over a file it reads). Fix: {fix}.")


def ensure_writable_folder(folder: str | os.PathLike[str]) -> Path:
    """Create ``folder`` (and its parents) if needed and prove a file can be written in it, before any work.

    Raises :class:`UsageError` (exit 2) when the path is a file, :class:`~nst_runtime.errors.WriteError`
    (exit 9) when it cannot be created or written (no permission, read-only, full). The probe file is removed.
    """
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{path} is a file; expected a folder for the outputs. Fix: choose another -o.")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".nst-probe-", suffix=".tmp") as probe:
            probe.write(b"nst")
            probe.flush()
    except (FileExistsError, NotADirectoryError):
        raise UsageError(f"{path}: a part of this path is a file; expected a folder for the outputs. "
                         "Fix: choose another -o.") from None
    except OSError as exc:
        raise write_error(path, exc) from exc
    return path
