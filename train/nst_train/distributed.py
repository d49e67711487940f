"""Distributed data parallel plumbing: read torchrun's environment, pick the backend, set up and tear down.

Under ``torchrun`` the variables ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` are set; without them the
training runs as a single process and none of this touches ``torch.distributed``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from nst_runtime.errors import BackendUnavailableError, UsageError

log = logging.getLogger(__name__)

__all__ = ["DistContext", "distributed_session", "resolve_device"]


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> DistContext:
        try:
            world = int(os.environ.get("WORLD_SIZE", "1"))
            rank = int(os.environ.get("RANK", "0"))
            local = int(os.environ.get("LOCAL_RANK", str(rank)))
        except ValueError as exc:
            raise UsageError(f"WORLD_SIZE/RANK/LOCAL_RANK must be integers ({exc}); launch with torchrun.") from exc
        return cls(rank=rank, world_size=world, local_rank=local)


def resolve_device(spec: str, ctx: DistContext) -> torch.device:
    """``auto`` → cuda (this rank's GPU), else mps (single process only), else cpu; explicit names are checked."""
    spec = spec.lower()
    if spec == "auto":
        if torch.cuda.is_available():
            spec = "cuda"
        elif torch.backends.mps.is_available() and not ctx.is_distributed:
            spec = "mps"
        else:
            spec = "cpu"
    kind = spec.split(":")[0]
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise BackendUnavailableError(
                f"--device {spec}: this torch ({torch.__version__}) sees no CUDA GPU. Use --device cpu or auto, "
                "or install a CUDA build of torch on a GPU machine."
            )
        if ctx.is_distributed and ":" not in spec:
            return torch.device("cuda", ctx.local_rank % torch.cuda.device_count())
        return torch.device(spec)
    if kind == "mps":
        if not torch.backends.mps.is_available():
            raise BackendUnavailableError(f"--device {spec}: Apple MPS is not available here; use cpu or auto.")
        if ctx.is_distributed:
            raise UsageError("distributed training runs on cuda (nccl) or cpu (gloo), not mps.")
        return torch.device("mps")
    if kind == "cpu":
        return torch.device("cpu")
    raise UsageError(f"--device {spec!r}: expected auto, cpu, cuda, cuda:N or mps.")


@contextlib.contextmanager
def distributed_session(ctx: DistContext, device: torch.device) -> Iterator[None]:
    """Initialise the default process group (nccl on CUDA, gloo otherwise) for the block; no-op when single."""
    if not ctx.is_distributed:
        yield
        return
    import torch.distributed as dist

    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend=backend)
    log.info("distributed: rank %d of %d, backend %s, device %s", ctx.rank, ctx.world_size, backend, device)
    try:
        yield
    finally:
        if owns and dist.is_initialized():
            dist.destroy_process_group()
