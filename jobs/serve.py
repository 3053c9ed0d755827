"""Serve the policy-free model with Ray Serve LLM: OpenAI-compatible /v1/chat/completions (images
accepted) and /v1/models.

    python jobs/serve.py --checkpoint DIR [--config configs/default.yaml] [--host 127.0.0.1] [--port 8000]
                         [--model-id ID] [section.key=value ...]

Listens on 127.0.0.1:8000 unless told otherwise, prints the URL and the model id once the model
answers, and serves until interrupted (Ctrl-C shuts Serve down). Under `ray job submit` it joins that
cluster and deploys there; on Kubernetes use the RayService in cluster/kuberay/ instead.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from _bootstrap import config_or_exit, refuse  # first: puts the repo root on sys.path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve the policy-free model (Ray Serve LLM, OpenAI API).")
    parser.add_argument("--checkpoint", required=True, help="HF model folder (the run's export/ or a stage's hf/)")
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--host", help="bind address (default serve.host: 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default serve.port: 8000)")
    parser.add_argument("--model-id", help="model id clients name (default serve.model_id)")
    parser.add_argument("--ready-timeout", type=float, default=900.0, help="seconds to wait for the model")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides")
    args = parser.parse_intermixed_args(sys.argv[1:] if argv is None else argv)
    flags = {"serve.host": args.host, "serve.port": args.port, "serve.model_id": args.model_id}
    overrides = list(args.overrides) + [f"{key}={value}" for key, value in flags.items() if value is not None]
    cfg = config_or_exit(args.config, overrides)
    if not (Path(args.checkpoint) / "config.json").is_file():
        refuse(f"--checkpoint {args.checkpoint} is not a Hugging Face model folder (no config.json)")

    import ray
    from ray import serve

    from mpi_ray.cluster import connect
    from mpi_ray.serve.deploy import deploy

    print(connect(cfg), flush=True)
    url = deploy(str(Path(args.checkpoint).resolve()), cfg, args.ready_timeout)
    print(f"serving {cfg.serve.model_id} at {url}/v1 (OpenAI-compatible; /v1/models, /v1/chat/completions)", flush=True)

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    try:
        while not stop:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    print("shutting down", flush=True)
    serve.shutdown()
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
