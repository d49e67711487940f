"""How many replicas and actors, with how many CPUs, GPUs and threads: pure functions of the cluster's size.

Two rules from measurements on a 2-core machine:

* Replicas on one host must not oversubscribe its cores: each replica reserves ``threads`` CPUs from Ray and
  runs ONNX Runtime with exactly that many threads, so Ray's scheduler, not the OS, shares the cores.
* A Ray Data job whose stylizing actors reserve every CPU starves its read tasks and hangs at 0 % CPU.
  Actor pools are sized from the cluster's CPUs minus a share left for reading.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from nst_runtime.errors import UsageError

#: CPUs left free on each node for Ray Data's read tasks (fractional CPUs are fine for Ray)
READ_RESERVE_CPUS = 0.5


@dataclass(frozen=True)
class ReplicaPlan:
    """Resources of every replica (or actor) of one model."""

    replicas: int
    num_cpus: float
    num_gpus: float
    #: ONNX Runtime intra-op threads in each replica
    threads: int
    #: the most replicas (of all models) one node can hold with these reservations
    per_node: int = 1

    def memory_limit(self) -> str:
        """Each replica's default memory budget: the runtime's default share of the node's available memory,
        divided between the replicas that can run on one node (each would otherwise take half of it)."""
        from nst_runtime.memory import DEFAULT_MEMORY_SHARE

        return f"{DEFAULT_MEMORY_SHARE * 100 / max(1, self.per_node):.4g}%"

    def ray_actor_options(self) -> dict[str, float]:
        options = {"num_cpus": self.num_cpus}
        if self.num_gpus:
            options["num_gpus"] = self.num_gpus
        return options


def plan_replicas(
    *,
    models: int,
    cluster_cpus: float,
    cluster_gpus: float = 0.0,
    largest_node_cpus: float | None = None,
    replicas: int | None = None,
    threads: int | None = None,
    use_gpus: bool = True,
) -> ReplicaPlan:
    """Replicas per model and what each reserves.

    GPUs (when the cluster has them and ``use_gpus``): one replica per GPU by default, shared out between the
    models, each reserving its GPU (a fraction when there are more replicas than GPUs) and one CPU for the
    host side. CPUs: the cluster's CPUs shared out between all replicas of all models (at least one thread
    each), never more than the largest node has, so that replicas on one host do not oversubscribe it.
    Raises :class:`UsageError` when an explicit ``threads`` cannot be scheduled.
    """
    if models < 1:
        raise UsageError("no model to serve.")
    largest = largest_node_cpus if largest_node_cpus is not None else cluster_cpus
    if use_gpus and cluster_gpus >= 1:
        gpus = int(cluster_gpus)
        n = replicas if replicas is not None else max(1, gpus // models)
        per_gpu = min(1.0, gpus / (models * n))
        cpus = 1.0 if cluster_cpus >= models * n else cluster_cpus / (models * n)
        return ReplicaPlan(n, num_cpus=cpus, num_gpus=per_gpu, threads=threads or 1,
                           per_node=_per_node(models * n, largest, cpus))
    n = replicas if replicas is not None else 1
    total = models * n
    if threads is not None:
        if threads > largest or total * threads > cluster_cpus:
            raise UsageError(
                f"{total} replicas x {threads} threads need {total * threads} CPUs; the cluster has "
                f"{cluster_cpus:g} (largest node {largest:g}). Fix: fewer --replicas or --threads, or more nodes.")
        return ReplicaPlan(n, num_cpus=float(threads), num_gpus=0.0, threads=threads,
                           per_node=_per_node(total, largest, float(threads)))
    share = cluster_cpus / total
    if share >= 1:
        whole = max(1, min(int(share), int(largest)))
        return ReplicaPlan(n, num_cpus=float(whole), num_gpus=0.0, threads=whole,
                           per_node=_per_node(total, largest, float(whole)))
    # more replicas than CPUs: each gets a fraction and one thread (they take turns on the cores)
    cpus = math.floor(share * 100) / 100 or 0.01
    return ReplicaPlan(n, num_cpus=cpus, num_gpus=0.0, threads=1, per_node=_per_node(total, largest, cpus))


def _per_node(total: int, largest_node_cpus: float, cpus_each: float) -> int:
    """How many of ``total`` replicas reserving ``cpus_each`` CPUs fit on the largest node."""
    if cpus_each <= 0:
        return max(1, total)
    return max(1, min(total, int(largest_node_cpus / cpus_each + 1e-9)))


@dataclass(frozen=True)
class ActorPoolPlan:
    """The Ray Data job's stylizing actors and its read tasks."""

    actors: int
    cpus_per_actor: float
    gpus_per_actor: float
    threads: int
    #: CPUs each read task reserves
    read_cpus: float


def plan_actor_pool(
    *,
    node_cpus: list[float],
    cluster_gpus: float = 0.0,
    threads: int | None = None,
    actors: int | None = None,
    use_gpus: bool = True,
) -> ActorPoolPlan:
    """Actors for ``nst-stylize --ray``: every node keeps :data:`READ_RESERVE_CPUS` free for reading.

    CPU clusters: each actor runs ``threads`` ONNX Runtime threads (default: what the smallest node has
    after the reserve, rounded up, at most 4: several actors of a few threads stylize more images per
    second than one wide one) and reserves that many CPUs, or all the node has after the reserve; as many
    actors as fit on the nodes. Reading needs little CPU (the actors decode), so on a 2-CPU machine one
    actor reserves 1.5 CPUs and runs 2 threads, like the plain command. GPU clusters: one actor per GPU
    with one CPU each.
    """
    if not node_cpus or sum(node_cpus) <= 0:
        raise UsageError("the Ray cluster reports no CPUs; a Ray Data job needs at least one.")
    read_cpus = min(READ_RESERVE_CPUS, min(node_cpus) / 4)
    if use_gpus and cluster_gpus >= 1:
        n = actors if actors is not None else int(cluster_gpus)
        return ActorPoolPlan(n, cpus_per_actor=1.0, gpus_per_actor=min(1.0, cluster_gpus / n),
                             threads=threads or 1, read_cpus=read_cpus)
    usable = [c - read_cpus for c in node_cpus]
    if threads is None:
        threads = max(1, min(4, math.ceil(min(usable))))
    cpus = min(float(threads), max(usable))
    fit = sum(int(u // cpus) for u in usable) or 1
    n = actors if actors is not None else fit
    if n > fit:
        raise UsageError(f"{n} actors x {cpus:g} CPUs do not fit beside the read tasks on nodes with "
                         f"{', '.join(f'{c:g}' for c in node_cpus)} CPUs. Fix: fewer actors or --threads.")
    return ActorPoolPlan(n, cpus_per_actor=cpus, gpus_per_actor=0.0, threads=threads, read_cpus=read_cpus)
