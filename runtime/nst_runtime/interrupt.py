"""SIGTERM handled like Ctrl-C: raised in the main thread, so every cleanup that runs on Ctrl-C runs.

A process manager (systemd, Kubernetes, ``timeout``, a batch scheduler) stops a command with SIGTERM, whose
default action kills the process at once: the temp file of the output being written stays behind. Inside
:func:`sigterm_as_interrupt`, SIGTERM raises :class:`Terminated` (a :class:`KeyboardInterrupt`) instead:
``atomic_output`` removes its temp file, the pipelines stop their threads, and the
command exits with :data:`EXIT_TERMINATED` (128 + 15, the shell's convention for a SIGTERM death).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

#: exit code of a command stopped by SIGTERM (Ctrl-C: 130)
EXIT_TERMINATED = 128 + signal.SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: raised in the main thread, and handled wherever Ctrl-C is."""

    exit_code = EXIT_TERMINATED


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread; the handler that was there
    before is restored after. A SIGTERM that was ignored stays ignored; outside the main thread (where no
    handler can be set) the block runs unchanged."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def exit_code_of(exc: BaseException) -> int:
    """130 for Ctrl-C, 143 for SIGTERM (also when click wrapped it in its ``Abort``)."""
    for err in (exc, exc.__cause__, exc.__context__):
        if isinstance(err, Terminated):
            return EXIT_TERMINATED
    return 130
