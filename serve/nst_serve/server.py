"""Start, deploy, wait, stop: ``nst-serve`` as library calls.

``run_server`` is the whole command (local Ray or ``address``, deploy, print the URL once every replica is
ready, stop on Ctrl-C or SIGTERM and leave no Ray process behind). ``deploy`` and ``build_app`` are the
pieces, for tests and for embedding in a Ray cluster you already run.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nst_runtime.errors import BackendUnavailableError, ModelFileError, NstError

from .config import ServeConfig
from .resources import ReplicaPlan, plan_replicas

logger = logging.getLogger(__name__)


def deployment_name(model: str) -> str:
    """The Ray Serve deployment of ``model`` (its name in ``serve status`` and in metrics)."""
    return f"model-{model}"


@dataclass(frozen=True)
class Deployed:
    """A running application: where it answers, and how its replicas were planned."""

    url: str
    plan: ReplicaPlan
    models: tuple[str, ...]


def _require_ray() -> None:
    try:
        import ray  # noqa: F401
        from ray import serve  # noqa: F401
    except ImportError:
        raise BackendUnavailableError(
            "nst-serve and nst-stylize --ray need Ray Serve and Ray Data, which are not installed. "
            "Fix: pip install 'nst[serve]'.") from None


def cluster_plan(config: ServeConfig) -> ReplicaPlan:
    """Plan replicas from the resources of the Ray this process is connected to."""
    import ray

    resources = ray.cluster_resources()
    node_cpus = [n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")]
    use_gpus = config.device.lower() != "cpu"
    if config.device.lower().startswith("cuda") and resources.get("GPU", 0) < 1:
        raise BackendUnavailableError(f"--device {config.device}: the Ray cluster has no GPU. "
                                      "Fix: --device cpu or auto, or join a cluster with GPUs (--address).")
    return plan_replicas(models=len(config.models), cluster_cpus=resources.get("CPU", 0.0),
                         cluster_gpus=resources.get("GPU", 0.0), largest_node_cpus=max(node_cpus, default=None),
                         replicas=config.replicas, threads=config.threads, use_gpus=use_gpus)


def build_app(config: ServeConfig, plan: ReplicaPlan) -> Any:
    """The Serve application: a ``StyleModel`` deployment per model, bound into the ``Gateway``."""
    from .app import Gateway, ReplicaSettings, StyleModel

    device = "cpu" if not plan.num_gpus else 0  # a replica sees only its own GPU, as device 0
    handles = {}
    for spec in config.models:
        settings = ReplicaSettings(
            paths=tuple(str(p.resolve()) for p in spec.paths), device=device, threads=plan.threads,
            max_batch=config.max_batch, batch_wait_s=config.batch_wait_s, max_pixels=config.max_pixels,
            # replicas on one node share its memory: each one's default budget is its part of the default share
            open_options=tuple(sorted({"memory_limit": plan.memory_limit(), **config.open_options}.items())))
        handles[spec.name] = StyleModel.options(
            name=deployment_name(spec.name),
            num_replicas=plan.replicas,
            ray_actor_options=plan.ray_actor_options(),
            max_ongoing_requests=config.ongoing_per_replica,
            max_queued_requests=config.max_queued,
        ).bind(spec.name, settings)
    gateway_ongoing = max(100, len(config.models) * plan.replicas * (config.ongoing_per_replica + config.max_queued))
    return Gateway.options(
        max_ongoing_requests=gateway_ongoing,
        # the gateway only forwards; its own queue is bounded too, answered 503 + Retry-After by Serve's proxy
        max_queued_requests=gateway_ongoing,
        backpressure_config={"status_code": 503, "retry_after_s": config.retry_after_s},
    ).bind(handles, app_name=config.app_name,
           deployments={spec.name: deployment_name(spec.name) for spec in config.models},
           max_body_bytes=config.max_body_bytes, retry_after_s=config.retry_after_s,
           request_timeout_s=config.request_timeout_s)


def check_models(config: ServeConfig) -> None:
    """Refuse unusable model files before any replica starts (sidecar, hash): one line, exit 3."""
    from nst_runtime.artifact import open_artifact

    verify = bool(config.open_options.get("verify_hash", True))
    for spec in config.models:
        errors = []
        for path in spec.paths:
            try:
                open_artifact(path, verify_hash=verify)
                break
            except NstError as exc:
                errors.append(str(exc))
        else:
            raise ModelFileError(f"model {spec.name}: " + " | ".join(errors))


def deploy(config: ServeConfig, *, timeout_s: float = 600.0, checked: bool = False) -> Deployed:
    """Deploy on the Ray this process is connected to; return once every replica of every model runs.
    ``checked``: :func:`check_models` already ran (each file is hashed once here; each replica, a process of
    its own, possibly on another node, checks the file it loads again)."""
    from ray import serve

    if not checked:
        check_models(config)
    plan = cluster_plan(config)
    serve.start(http_options={"host": config.host, "port": config.port,
                              "request_timeout_s": config.request_timeout_s + 10})
    # serve.run would wait without a deadline for replicas that may never be scheduled: deploy, then wait here
    try:
        serve.run_many([serve.RunTarget(build_app(config, plan), name=config.app_name, route_prefix="/")],
                       wait_for_applications_running=False)
    except RuntimeError as exc:  # the gateway's constructor failed on the cluster
        raise ModelFileError(f"the service did not start: {str(exc).strip().splitlines()[-1]}") from None
    wait_until_ready(config, plan, timeout_s=timeout_s)
    host = "127.0.0.1" if config.host in ("0.0.0.0", "::") else config.host
    return Deployed(f"http://{host}:{config.port}/", plan, tuple(m.name for m in config.models))


def wait_until_ready(config: ServeConfig, plan: ReplicaPlan, *, timeout_s: float) -> None:
    """Until every model has ``plan.replicas`` RUNNING replicas (serve.run may return earlier)."""
    from ray import serve

    deadline = time.monotonic() + timeout_s
    while True:
        app = serve.status().applications.get(config.app_name)
        if app is not None and str(app.status).endswith("DEPLOY_FAILED"):
            message = " ".join(str(app.message).split()) or "no reason given"
            raise ModelFileError(f"the service did not start: {message[-800:]}")
        pending = []
        for spec in config.models:
            dep = app.deployments.get(deployment_name(spec.name)) if app else None
            running = int(dep.replica_states.get("RUNNING", 0)) if dep else 0
            if running < plan.replicas:
                pending.append(f"{spec.name} {running}/{plan.replicas}")
            if dep is not None and str(dep.status).endswith("DEPLOY_FAILED"):
                raise ModelFileError(f"model {spec.name} failed to start: {dep.message}")
        if not pending:
            return
        if time.monotonic() > deadline:
            raise NstError(f"replicas not ready after {timeout_s:g} s ({', '.join(pending)} running); the "
                           "cluster may lack the CPUs/GPUs they reserve (another application holding them?). "
                           "Fix: fewer --replicas or --threads, or a larger cluster.")
        time.sleep(0.25)


def run_server(config: ServeConfig, *, on_ready: Callable[[Deployed], None] | None = None,
               ray_init_options: dict[str, Any] | None = None) -> int:
    """The whole ``nst-serve``: blocks until Ctrl-C or SIGTERM, then removes everything it started.

    Without ``config.address`` a local Ray starts in this process and is shut down on exit (no Ray process
    is left). With an address the cluster keeps running; only this application is deleted.
    """
    _require_ray()
    check_models(config)  # a bad model file is one line (exit 3) before Ray starts
    import ray
    from ray import serve

    if logging.getLogger().getEffectiveLevel() > logging.INFO:  # Serve's start-up chatter only with -v
        logging.getLogger("ray.serve").setLevel(logging.WARNING)
    stop = threading.Event()
    ready = threading.Event()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def request_stop(signum: int, frame: object) -> None:
        stop.set()
        if not ready.is_set():  # still starting: abandon the start (the finally below cleans up)
            raise KeyboardInterrupt

    init: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False,
                            "include_dashboard": False, **(ray_init_options or {})}
    if config.address:
        init["address"] = config.address
    elif config.metrics_port is not None:
        init["_metrics_export_port"] = config.metrics_port
    started_here = not config.address
    try:
        ray.init(**init)
        for sig in previous:  # after ray.init, which installs its own SIGTERM handler in the driver
            signal.signal(sig, request_stop)
        deployed = deploy(config, checked=True)
        ready.set()
        if on_ready is not None:
            on_ready(deployed)
        while not stop.wait(0.5):
            pass
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if ray.is_initialized():
            try:
                if started_here:
                    serve.shutdown()
                else:
                    serve.delete(config.app_name)
            except Exception as exc:  # tearing down a half-started service: report, still shut Ray down
                logger.warning("stopping the service: %s", exc)
            ray.shutdown()


def metrics_url() -> str | None:
    """The Prometheus URL of this node's Ray (Ray Serve's metrics and nst's per-model latency)."""
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    for node in ray.nodes():
        if node["NodeID"] == node_id and node.get("MetricsExportPort"):
            return f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
    return None


__all__ = ["Deployed", "build_app", "cluster_plan", "deploy", "metrics_url", "run_server",
           "wait_until_ready"]
