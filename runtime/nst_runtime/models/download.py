"""Download one pinned file: standard-library ``urllib``, size and sha256 checked, nothing left on failure.

The runtime stays lean (no ``requests``). The bytes go to a temp file in the destination's folder, hashed as they
arrive; the file is renamed to its name only when the transfer is complete and its size and sha256 are the ones
pinned. A network error, a stalled server (``timeout`` seconds without a byte), a truncated transfer, a larger
file than pinned, or another sha256 each raise one error of one line, with the URL and how to add the file by
hand, and leave no file behind (Ctrl-C too).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from ..errors import DownloadError, ModelFileError, write_error

log = logging.getLogger(__name__)

#: seconds without a byte (connect, or between reads) before a download is given up
DEFAULT_TIMEOUT_S = 30.0
_CHUNK = 1 << 16
USER_AGENT = "nst-models (python urllib)"


def _reason(exc: BaseException, timeout: float) -> str:
    """One short phrase for why a transfer failed."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        if not isinstance(exc.reason, BaseException):
            return str(exc.reason)
        exc = exc.reason
    if isinstance(exc, socket.gaierror):
        return f"host not found: {exc.strerror or exc}"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return f"no data for {timeout:g} s: the server stalled"
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {' '.join(str(text).split())}"


def download_pinned(url: str, dest: str | os.PathLike[str], *, sha256: str, size: int,
                    timeout: float = DEFAULT_TIMEOUT_S, fix: str = "", mismatch_fix: str | None = None,
                    on_bytes: Callable[[int, int], None] | None = None) -> Path:
    """Download ``url`` to ``dest`` if it is exactly ``size`` bytes with this ``sha256``.

    ``fix``: the end of each error line (how to add the file by hand); ``mismatch_fix``: the end of the line
    for a complete file with another sha256 (default ``fix``). ``on_bytes(done, total)`` reports
    progress. Raises :class:`DownloadError` (network, stall, truncated or oversized transfer) or
    :class:`ModelFileError` (complete, but another sha256: the file changed upstream or was altered).
    """
    import http.client

    dest = Path(dest)
    tail = f" {fix}" if fix else ""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    done = 0

    def failed(exc: BaseException) -> DownloadError:
        return DownloadError(f"{url}: download failed after {done} of {size} bytes ({_reason(exc, timeout)}).{tail}")

    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            try:
                request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
                response = urllib.request.urlopen(request, timeout=timeout)
            except (OSError, ValueError, http.client.HTTPException) as exc:  # URLError is an OSError
                raise failed(exc) from None
            with response:
                read = getattr(response, "read1", response.read)  # what has arrived, not a full chunk
                while True:
                    try:
                        block = read(min(_CHUNK, size + 1 - done))
                    except (OSError, http.client.HTTPException) as exc:  # a reset, a stall, IncompleteRead
                        raise failed(exc) from None
                    if not block:
                        break
                    done += len(block)
                    if done > size:
                        raise DownloadError(f"{url}: the server sends more than the {size} bytes nst's catalogue "
                                            f"pins; the file is refused.{tail}")
                    digest.update(block)
                    try:
                        out.write(block)
                    except OSError as exc:
                        raise write_error(dest, exc) from exc
                    if on_bytes is not None:
                        on_bytes(done, size)
            if done < size:
                raise DownloadError(f"{url}: the transfer ended after {done} of {size} bytes (truncated)."
                                    f"{tail}")
            out.flush()
            os.fsync(out.fileno())
        got = digest.hexdigest()
        if got != sha256:
            raise ModelFileError(f"{url}: sha256 {got} is not the {sha256} nst's catalogue pins; the file is "
                                 f"refused (it changed upstream, or was altered on the way)."
                                 f"{tail if mismatch_fix is None else ' ' + mismatch_fix}")
        os.replace(tmp, dest)
        log.info("downloaded %s (%d bytes, sha256 %s)", url, size, sha256[:12])
        return dest
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
