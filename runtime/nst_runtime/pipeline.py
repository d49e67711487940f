"""An ordered, bounded, overlapped pipeline: decode | compute | encode run at the same time.

Each stage has its own thread pool; item *i*'s stage *k* waits only for item *i*'s stage *k-1*, so while the
accelerator computes item *i*, the CPU decodes item *i+1…* and encodes item *i-1…*. At most ``depth`` items
are in flight (bounded memory), results come out in input order, and a failing item carries its error
without stopping the others.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .errors import UsageError

T = TypeVar("T")


@dataclass(frozen=True)
class Stage:
    """One step: ``fn`` takes the previous stage's value (the item itself for the first stage)."""

    name: str
    fn: Callable[[Any], Any]
    workers: int = 1


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """What became of one input: its final value, or the error of the stage that failed."""

    item: T
    value: Any = None
    error: BaseException | None = None
    stage: str | None = None  # the failing stage's name

    @property
    def ok(self) -> bool:
        return self.error is None


class _StageFailed(Exception):
    def __init__(self, stage: str, error: BaseException) -> None:
        super().__init__(stage)
        self.stage, self.error = stage, error


_END = object()


@dataclass(frozen=True)
class _SourceError:
    error: BaseException


def _run_stage(stage: Stage, previous: Future[Any] | None, item: Any) -> Any:
    value = item if previous is None else previous.result()  # re-raises the earlier stage's _StageFailed
    try:
        return stage.fn(value)
    except Exception as exc:
        raise _StageFailed(stage.name, exc) from exc


def run_pipeline(items: Iterable[T], stages: Sequence[Stage], *, depth: int = 8) -> Iterator[Outcome[T]]:
    """Push ``items`` through ``stages``; yield one :class:`Outcome` per item, in input order.

    ``items`` is iterated in a feeder thread, so a slow source (a video decoder) overlaps with the stages.
    An error raised by the iterator itself ends the pipeline and is re-raised here.
    """
    if not stages:
        raise UsageError("run_pipeline needs at least one stage.")
    if depth < 1:
        raise UsageError(f"depth {depth}: expected >= 1.")
    pools = [ThreadPoolExecutor(max_workers=max(1, s.workers), thread_name_prefix=f"nst-{s.name}")
             for s in stages]
    inflight: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: Any) -> bool:
        while not stop.is_set():
            try:
                inflight.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def feed() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                fut: Future[Any] | None = None
                for stage, pool in zip(stages, pools, strict=True):
                    fut = pool.submit(_run_stage, stage, fut, item)
                if not put((item, fut)):
                    return
            put(_END)
        except BaseException as exc:  # the source failed: hand it to the consumer
            put(_SourceError(exc))

    feeder = threading.Thread(target=feed, name="nst-feed", daemon=True)
    feeder.start()
    try:
        while True:
            entry = inflight.get()
            if entry is _END:
                return
            if isinstance(entry, _SourceError):
                raise entry.error
            item, fut = entry
            try:
                yield Outcome(item, value=fut.result())
            except _StageFailed as failed:
                yield Outcome(item, error=failed.error, stage=failed.stage)
    finally:
        stop.set()
        # wait for the feeder however long its current item takes: the caller closes what ``items`` reads from
        # (a video container) as soon as this returns, and a decoder still running in it then reads freed
        # memory (SIGSEGV instead of exit 143 on a SIGTERM mid-video, seen on a loaded machine)
        while feeder.is_alive():
            feeder.join(timeout=1)
        for pool in pools:
            pool.shutdown(wait=True, cancel_futures=True)
