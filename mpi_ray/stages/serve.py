"""Stage `serve`: deploy the newest (exported) model with Ray Serve LLM on the job's Ray cluster.

On a long-lived cluster (`ray job submit`) the deployment outlives the job; serve it from a checkout
with `jobs/serve.py`, which also serves until interrupted. A local run's Ray cluster, and with it the
deployment, ends with the job: the stage then only proves the model serves.
"""

from __future__ import annotations

from typing import Any

from mpi_ray.pipeline import StageContext
from mpi_ray.serve.deploy import deploy


def describe(ctx: StageContext) -> str:
    serve = ctx.cfg.serve
    return (f"Ray Serve LLM ({'GPU' if serve.use_gpu else 'CPU'}, {serve.min_replicas}-{serve.max_replicas} replicas) "
            f"of the newest model at http://{serve.host}:{serve.port}/v1 as {serve.model_id}")


def run(ctx: StageContext) -> dict[str, Any]:
    url = deploy(ctx.current_model(), ctx.cfg)
    print(f"[serve] serving {ctx.cfg.serve.model_id} at {url}/v1", flush=True)
    return {"url": f"{url}/v1", "model_id": ctx.cfg.serve.model_id}
