"""The Ray Serve application: one ``StyleModel`` deployment per model over the runtime's ``Stylizer``, and a thin
HTTP ``Gateway`` (FastAPI) in front of them.

Imported only where Ray is wanted (it imports Ray Serve and FastAPI at the top, as deployments must be
module-level classes). Nothing here stylizes: decoding, the network and encoding are the runtime's
``read_image``, ``Stylizer.stylize_batch`` and ``encode_image``; this module adds batching, queue limits,
HTTP and metrics.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the route handlers' annotations at run time.
import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from nst_runtime.errors import NstError, UsageError
from nst_runtime.images import encode_image, read_image
from ray import serve
from ray.serve.handle import DeploymentHandle

from .params import (
    StylizeParams,
    error_body,
    http_status_for,
    parse_query,
    refuse_style_paths,
    split_upload,
    stylize_options,
)

logger = logging.getLogger(__name__)

#: per-model latency buckets (ms): a 256² image on a CPU core takes ~100 ms, 1080p several seconds
LATENCY_BUCKETS_MS = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000]


@dataclass(frozen=True)
class Outcome:
    """What a model replica answers: the encoded image, or an error already mapped to HTTP."""

    status: int
    body: bytes = b""
    media_type: str = "image/png"
    error: dict[str, Any] | None = None


@dataclass(frozen=True)
class ReplicaSettings:
    """What every replica of one model needs to open it (plain data: it travels to the replica)."""

    paths: tuple[str, ...]
    device: str
    threads: int
    max_batch: int
    batch_wait_s: float
    max_pixels: int | None
    open_options: tuple[tuple[str, Any], ...] = ()


# Helpers stay above the deployments: Serve captures a class and what it refers to when it is decorated.
class _Failed:
    """An image's own error inside a batch (raised again in that image's request only)."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc


def _unwrap(frame: Any) -> Any:
    if isinstance(frame, _Failed):
        raise frame.exc
    return frame


def _error(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers)


def scrape(url: str, *, timeout: float = 5.0) -> bytes:
    """The body at ``url``; the response is closed whether or not reading it fails."""
    import urllib.request

    with urllib.request.urlopen(url, timeout=timeout) as response:
        return bytes(response.read())


def open_first(paths: tuple[str, ...], *, device: str | int, threads: int, max_batch: int,
               open_options: dict[str, Any]) -> Any:
    """Open the first of ``paths`` this replica's device runs (an engine per GPU generation, then ONNX)."""
    from nst_runtime import Stylizer

    reasons = []
    for path in paths:
        try:
            return Stylizer.open(path, device=device, intra_op_threads=threads, batch_size=max_batch,
                                 **open_options)
        except NstError as exc:
            reasons.append(f"{path}: {exc}")
            logger.warning("cannot open %s here, trying the next file: %s", path, exc)
    raise NstError("no model file of this model opens on this replica's device:\n  " + "\n  ".join(reasons))


@serve.deployment(max_constructor_retry_count=3, graceful_shutdown_timeout_s=10, health_check_period_s=5)
class StyleModel:
    """One model's replica: decodes uploads, batches same-size frames through the network, encodes."""

    def __init__(self, name: str, settings: ReplicaSettings) -> None:
        from ray.serve.metrics import Counter, Histogram

        self.name = name
        self.settings = settings
        self.stylizer = open_first(settings.paths, device=settings.device, threads=settings.threads,
                                   max_batch=settings.max_batch,
                                   open_options={"max_pixels": settings.max_pixels, **dict(settings.open_options)})
        self._network.set_max_batch_size(settings.max_batch)
        self._network.set_batch_wait_timeout_s(settings.batch_wait_s)
        self.latency = Histogram("nst_stylize_latency_ms", description="POST /v1/stylize time in the model "
                                 "replica (decode, queue, network, encode), ms", boundaries=LATENCY_BUCKETS_MS,
                                 tag_keys=("model",))
        self.latency.set_default_tags({"model": name})
        self.answers = Counter("nst_stylize_answers", description="stylize answers by HTTP status",
                               tag_keys=("model", "status"))
        self.batch_sizes = Histogram("nst_batch_size", description="images per network call",
                                     boundaries=[1, 2, 4, 8, 16, 32], tag_keys=("model",))
        self.batch_sizes.set_default_tags({"model": name})
        logger.info("model %s: %s on %s, %d threads", name, self.stylizer.path, self.stylizer.backend,
                    settings.threads)

    def info(self) -> dict[str, Any]:
        sidecar = self.stylizer.sidecar
        return {
            "name": self.name,
            "file": self.stylizer.path.name,
            "backend": self.stylizer.backend,
            "precision": sidecar.precision,
            "kind": sidecar.kind,
            "architecture": sidecar.architecture,
            "compute_capability": sidecar.compute_capability,
            "contract": {
                "input": dataclasses.asdict(sidecar.input),
                "output": dataclasses.asdict(sidecar.output),
                "min_size": sidecar.min_size,
                "profile": dataclasses.asdict(sidecar.profile) if sidecar.profile else None,
            },
            "threads": self.settings.threads,
            "max_batch": self.settings.max_batch,
            "max_pixels": self.settings.max_pixels,
        }

    async def stylize(self, body: bytes, params: StylizeParams) -> Outcome:
        start = time.perf_counter()
        outcome = await self._stylize(body, params)
        self.latency.observe((time.perf_counter() - start) * 1000)
        self.answers.inc(tags={"model": self.name, "status": str(outcome.status)})
        return outcome

    async def _stylize(self, body: bytes, params: StylizeParams) -> Outcome:
        try:
            # an AdaIN model would read a text style as a server-side path: only uploaded style images
            refuse_style_paths(dict(params.options), adain=self.stylizer.sidecar.adain is not None)
            # decode and encode run in threads: the event loop keeps batching and answering health checks
            decoded = await asyncio.to_thread(read_image, body, max_pixels=self.settings.max_pixels,
                                              all_frames=True, name="the uploaded image")
            frames = [_unwrap(f) for f in await asyncio.gather(
                *(self._network((frame, params.options)) for frame in decoded.frames))]
            data = await asyncio.to_thread(encode_image, frames, format=params.format,
                                           quality=params.quality, durations=decoded.durations,
                                           loop=decoded.loop)
            return Outcome(200, data, params.media_type)
        except Exception as exc:  # one bad request is answered, never raised: the replica stays up
            status = http_status_for(exc)
            if status >= 500:
                logger.exception("model %s: request failed", self.name)
            return Outcome(status, error=error_body(exc))

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.01)
    async def _network(self, items: list[tuple[Any, tuple[tuple[str, Any], ...]]]) -> list[Any]:
        self.batch_sizes.observe(len(items))
        results = await asyncio.to_thread(self._run_batch, items)
        return results

    def _run_batch(self, items: list[tuple[Any, tuple[tuple[str, Any], ...]]]) -> list[Any]:
        """Same options share one ``stylize_batch`` call (which groups same-size images); an error stays with
        its own image: a failed group is retried one image at a time."""
        results: list[Any] = [None] * len(items)
        groups: dict[tuple[tuple[str, Any], ...], list[int]] = {}
        for i, (_, options) in enumerate(items):
            groups.setdefault(options, []).append(i)
        for options, idx in groups.items():
            images = [items[i][0] for i in idx]
            try:
                outs = self.stylizer.stylize_batch(images, **dict(options))
            except Exception:
                outs = []
                for im in images:
                    try:
                        outs.append(self.stylizer.stylize(im, **dict(options)))
                    except Exception as exc:
                        outs.append(_Failed(exc))
            for i, out in zip(idx, outs, strict=True):
                results[i] = out
        return results

    def __del__(self) -> None:  # Serve calls this on a graceful stop
        stylizer = getattr(self, "stylizer", None)
        if stylizer is not None:
            stylizer.close()


api = FastAPI(title="nst", docs_url=None, redoc_url=None, openapi_url=None)


@serve.deployment(ray_actor_options={"num_cpus": 0}, graceful_shutdown_timeout_s=5, health_check_period_s=5)
@serve.ingress(api)
class Gateway:
    """HTTP: the page at ``/``, ``/v1/models``, ``/healthz``, ``/metrics`` and ``POST /v1/stylize/{model}``."""

    def __init__(self, models: dict[str, DeploymentHandle], *, app_name: str, deployments: dict[str, str],
                 max_body_bytes: int, retry_after_s: int, request_timeout_s: float) -> None:
        self.models = models
        self.app_name = app_name
        self.deployments = deployments
        self.max_body_bytes = max_body_bytes
        self.retry_after_s = retry_after_s
        self.request_timeout_s = request_timeout_s
        self.options = stylize_options()
        self._info: dict[str, Any] | None = None
        self._health: tuple[float, dict[str, int]] | None = None
        self.page = resources.files("nst_serve").joinpath("page.html").read_text(encoding="utf-8")

    # ----------------------------------------------------------------------------------------- pages
    @api.get("/", response_class=HTMLResponse)
    async def index(self) -> HTMLResponse:
        return HTMLResponse(self.page)

    @api.get("/v1/models")
    async def list_models(self) -> JSONResponse:
        if self._info is None:
            infos = await asyncio.gather(*(h.info.remote() for h in self.models.values()))
            self._info = {"models": list(infos)}
        return JSONResponse(self._info)

    @api.get("/healthz")
    async def healthz(self) -> JSONResponse:
        running = await self._running_replicas()
        ready = all(running.get(name, 0) >= 1 for name in self.models)
        body = {"status": "ok" if ready else "unavailable", "running_replicas": running}
        return JSONResponse(body, status_code=200 if ready else 503,
                            headers=None if ready else {"Retry-After": str(self.retry_after_s)})

    async def _running_replicas(self) -> dict[str, int]:
        now = time.monotonic()
        if self._health is None or now - self._health[0] > 0.5:
            status = await asyncio.to_thread(serve.status)
            app = status.applications.get(self.app_name)
            counts: dict[str, int] = {}
            for model, deployment in self.deployments.items():
                dep = app.deployments.get(deployment) if app else None
                states = dep.replica_states if dep else {}
                counts[model] = int(states.get("RUNNING", 0))
            self._health = (now, counts)
        return self._health[1]

    @api.get("/metrics")
    async def metrics(self) -> Response:
        """This node's Prometheus exposition (Ray Serve's metrics and nst's per-model latency); 503 when the
        node's exporter does not answer."""
        import ray

        node_id = ray.get_runtime_context().get_node_id()
        node = next((n for n in ray.nodes() if n["NodeID"] == node_id), None)
        if node is None or not node.get("MetricsExportPort"):
            return _error(503, {"error": "this node exports no metrics", "code": 1})
        url = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
        try:
            text = await asyncio.to_thread(scrape, url)
        except OSError as exc:  # the node's exporter is down or slow: unavailable, not a server error
            logger.warning("metrics scrape of %s failed: %s", url, exc)
            return _error(503, {"error": f"this node's metrics exporter did not answer ({exc}); retry later.",
                                "code": 1}, headers={"Retry-After": str(self.retry_after_s)})
        return Response(text, media_type="text/plain; version=0.0.4")

    # ----------------------------------------------------------------------------------------- stylize
    @api.post("/v1/stylize/{model}")
    async def stylize(self, model: str, request: Request) -> Response:
        handle = self.models.get(model)
        if handle is None:
            return _error(404, {"error": f"no model {model!r}; this server has: {', '.join(self.models)}.",
                                "code": UsageError.exit_code})
        try:
            params = parse_query(request.query_params, self.options)
        except UsageError as exc:
            return _error(400, error_body(exc))
        body = await self._read_body(request)
        if isinstance(body, Response):
            return body
        try:
            body, style = split_upload(body, request.headers.get("content-type"))
            if style is not None:
                if any(name == "style" for name, _ in params.options):
                    raise UsageError("style given twice (query and form); send the style image in the form only.")
                params = dataclasses.replace(params, options=tuple(sorted((*params.options, ("style", style)))))
        except UsageError as exc:
            return _error(400, error_body(exc))
        return await self._call(handle, body, params)

    async def _read_body(self, request: Request) -> bytes | Response:
        too_big = {"error": f"the request body is larger than the limit of {self.max_body_bytes} bytes. "
                            "Fix: send a smaller image (or start nst-serve with a larger --max-body-mb).",
                   "code": 4}
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            return _error(413, too_big)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body_bytes:
                return _error(413, too_big)
            chunks.append(chunk)
        if not size:
            return _error(400, {"error": "the request body is empty; expected an encoded image "
                                         "(PNG, JPEG, WebP, …) as the body.", "code": 4})
        return b"".join(chunks)

    async def _call(self, handle: DeploymentHandle, body: bytes, params: StylizeParams) -> Response:
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
        from ray.serve.exceptions import BackPressureError

        for attempt in (1, 2):  # stylizing is idempotent: a request whose replica died is sent once more
            response = handle.stylize.remote(body, params)
            try:
                outcome: Outcome = await asyncio.wait_for(response, timeout=self.request_timeout_s)
            except BackPressureError:
                return self._busy("every replica of this model is busy and its queue is full")
            except asyncio.TimeoutError:
                response.cancel()
                return _error(504, {"error": f"no answer within {self.request_timeout_s:g} s; the server is "
                                             "overloaded or the image is very large.", "code": 1})
            except (ActorDiedError, ActorUnavailableError, RayActorError) as exc:
                logger.warning("replica lost during a request (attempt %d): %s", attempt, exc)
                if attempt == 2:
                    return self._busy("the replica serving this request stopped; it is being replaced")
                continue
            if outcome.status != 200:
                return _error(outcome.status, outcome.error or {"error": "failed", "code": 1})
            return Response(outcome.body, media_type=outcome.media_type)
        raise AssertionError("unreachable")

    def _busy(self, why: str) -> JSONResponse:
        return _error(503, {"error": f"{why}; retry after {self.retry_after_s} s.", "code": 1},
                      headers={"Retry-After": str(self.retry_after_s)})
