"""Deploy the policy-free model on the connected Ray cluster and wait until it answers."""

from __future__ import annotations

import json
import time
import urllib.request

from mpi_ray.config.schema import PipelineConfig

APP_NAME = "mpi-ray-policy-free"


def wait_until_listed(url: str, model_id: str, timeout_s: float) -> None:
    """Poll /v1/models until the model is listed (the replica is up and its engine loaded)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{url}/v1/models", timeout=10) as reply:  # noqa: S310 - our own server
                if any(m["id"] == model_id for m in json.loads(reply.read())["data"]):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{model_id} not listed at {url}/v1/models after {timeout_s:.0f}s")
        time.sleep(2)


def deploy(checkpoint: str, cfg: PipelineConfig, ready_timeout_s: float = 900.0) -> str:
    """Start Serve's HTTP proxy on serve.host:serve.port, deploy the app, wait for the model; the base URL."""
    from ray import serve

    from mpi_ray.serve.app import openai_app

    serve.start(http_options={"host": cfg.serve.host, "port": cfg.serve.port})
    serve.run(openai_app(checkpoint, cfg), name=APP_NAME, route_prefix="/", blocking=False)
    url = f"http://{cfg.serve.host}:{cfg.serve.port}"
    wait_until_listed(url, cfg.serve.model_id, ready_timeout_s)
    return url
