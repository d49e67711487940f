"""nst on Ray: an HTTP service (Ray Serve) and dataset-sized batch jobs (Ray Data) over the runtime's Stylizer.

Install with ``pip install 'nst[serve]'``. Ray is imported only inside the functions that need it, so
``import nst_serve`` stays cheap and this package adds nothing to the lean runtime::

    from nst_serve import ServeConfig, models_from_args, run_server
    run_server(ServeConfig(models=models_from_args(["models/candy.onnx"])))      # blocks until Ctrl-C

    from nst_serve import stylize_folder_on_ray
    report = stylize_folder_on_ray("models/candy.onnx", "photos/", "styled/")   # a Ray Data job

Only ``nst_runtime`` and Ray are imported here; no other nst package imports this one.
"""

from .batch_job import BatchJobReport, stylize_folder_on_ray
from .config import ModelSpec, ServeConfig, model_name_for, models_from_args
from .resources import ReplicaPlan, plan_actor_pool, plan_replicas
from .server import build_app, run_server

__all__ = [
    "BatchJobReport",
    "ModelSpec",
    "ReplicaPlan",
    "ServeConfig",
    "build_app",
    "model_name_for",
    "models_from_args",
    "plan_actor_pool",
    "plan_replicas",
    "run_server",
    "stylize_folder_on_ray",
]
