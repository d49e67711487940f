"""What the stages above the runtime register with it: the runtime names no module of theirs.

The runtime is the lowest stage (train → export → runtime → serve): it must run with only itself installed, so
it never imports the export or serve stage by name. A stage that offers the runtime something declares an
entry point in its package metadata (``[project.entry-points]`` of pyproject) and the runtime loads it by group
and name when a command needs it:

============================  ==========  ==========================================================
group                         name        what
============================  ==========  ==========================================================
``nst.importers``             ``onnx``    the foreign-ONNX import (``nst-models pull``/``add``): the export stage
``nst.folder_runners``        ``ray``     ``nst-stylize --ray``'s folder job: the serve stage
============================  ==========  ==========================================================

A missing registration, or a registered stage whose own dependencies are missing, is one line naming the extra
to install (exit 6).
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

from .errors import BackendUnavailableError

IMPORTERS = "nst.importers"
FOLDER_RUNNERS = "nst.folder_runners"


def load_plugin(group: str, name: str, *, what: str, extra: str) -> Any:
    """The object registered under ``group``/``name``, or :class:`BackendUnavailableError` in one line:
    ``what`` needs the ``extra`` stage; ``pip install 'nst[EXTRA]'``."""
    found = [ep for ep in metadata.entry_points(group=group) if ep.name == name]
    fix = f"Fix: pip install 'nst[{extra}]'."
    if not found:
        raise BackendUnavailableError(f"{what} needs nst's {extra} stage, which is not installed here "
                                      f"(nothing registered as {group}:{name}). {fix}")
    try:
        return found[0].load()
    except ModuleNotFoundError as exc:
        raise BackendUnavailableError(f"{what} needs nst's {extra} stage, which cannot load here (the Python "
                                      f"package {(exc.name or str(exc)).split('.')[0]!r} is missing). {fix}") from None
