"""``ContextPool``: hands each calling thread its own object (a TensorRT execution context with its stream and
buffers, an OpenVINO infer request) and takes it back after the call.

Objects are made lazily, up to ``size``, and never shared. Making one (GPU allocations, an OpenVINO request) runs
outside the pool's lock, so a slow or failing creation never blocks threads that could take an idle object.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

from .errors import UsageError

logger = logging.getLogger(__name__)

T = TypeVar("T")


class ContextPool(Generic[T]):
    """Hands out objects one thread at a time; creates up to ``size`` lazily; never shares one.

    ``with pool.acquire() as slot``. ``acquire(prefer=...)`` takes an idle object the predicate likes first,
    else creates a new one while fewer than ``size`` exist (or are being made), else takes any idle one, else
    waits. A creation that fails frees its place and raises to its caller only. :meth:`close` waits for every
    object (and every creation) to come back before destroying them.
    """

    def __init__(self, factory: Callable[[], T], *, size: int) -> None:
        if size < 1:
            raise UsageError(f"contexts={size}: expected at least 1.")
        self._factory = factory
        self.size = size
        self._idle: list[T] = []
        self._created: list[T] = []
        self._creating = 0
        self._in_use = 0
        self._cond = threading.Condition()
        self._closed = False

    @property
    def created(self) -> int:
        return len(self._created)

    @property
    def in_use(self) -> int:
        return self._in_use

    @contextmanager
    def acquire(self, prefer: Callable[[T], bool] | None = None) -> Iterator[T]:
        item = self._take(prefer)
        try:
            yield item
        finally:
            with self._cond:
                self._idle.append(item)
                self._in_use -= 1
                self._cond.notify_all()

    def _take(self, prefer: Callable[[T], bool] | None) -> T:
        with self._cond:
            while True:
                if self._closed:
                    raise UsageError("the execution-context pool is closed (the Stylizer was closed).")
                liked = next((i for i in reversed(self._idle) if prefer is not None and prefer(i)), None)
                if liked is not None:
                    self._idle.remove(liked)
                    item = liked
                elif len(self._created) + self._creating < self.size:
                    self._creating += 1
                    self._in_use += 1  # close() waits for a creation as for a call
                    break
                elif self._idle:
                    item = self._idle.pop()  # most recently used: its memory is warm
                else:
                    self._cond.wait()
                    continue
                self._in_use += 1
                return item
        try:
            made = self._factory()  # outside the lock: other threads keep taking idle objects
        except BaseException:
            with self._cond:
                self._creating -= 1
                self._in_use -= 1
                self._cond.notify_all()
            raise
        with self._cond:
            self._creating -= 1
            self._created.append(made)
        return made

    def close(self, destroy: Callable[[T], None], *, log_after_s: float = 5.0) -> None:
        """Refuse new calls, wait for the calls in flight, then ``destroy`` every object (idempotent)."""
        start = time.monotonic()
        logged = False
        with self._cond:
            self._closed = True
            while self._in_use:
                self._cond.wait(timeout=0.5)
                if not logged and time.monotonic() - start > log_after_s:
                    logger.info("closing: waiting for %d call(s) in flight to finish", self._in_use)
                    logged = True
            self._cond.notify_all()  # threads waiting for an idle object see the pool closed
            items, self._created, self._idle = self._created, [], []
        for item in items:
            destroy(item)
