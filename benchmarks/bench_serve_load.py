"""Serving under load: concurrent clients with images against `jobs/serve.py` on the tiny model, and
Serve's autoscaling from 1 to 2 replicas.

    python benchmarks/bench_serve_load.py [--checkpoint DIR] [--clients 50] [--seconds 60]
                                          [--max-tokens 16] [--target-ongoing 8]

This process starts a local Ray on 127.0.0.1, then `jobs/serve.py` joins it (RAY_ADDRESS) exactly as
a user starts it, with serve.min_replicas=1, serve.max_replicas=2 and serve.target_ongoing_requests
set low enough that the clients exceed it. Each client thread sends chat completions, each with one
112 x 112 PNG as a data URL, one after the other for `--seconds`. Printed: requests, errors (non-200
or no answer), throughput, p50/p99 latency, and the replica count over time (read from Serve's
status every 2 s). Nothing else should run on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from PIL import Image
from serve_process import ROOT, serving

from mpi_ray.serve.deploy import APP_NAME


def image_url(seed: int) -> str:
    image = Image.new("RGB", (112, 112), ((seed * 37) % 256, (seed * 91) % 256, (seed * 53) % 256))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def request_body(model_id: str, seed: int, max_tokens: int) -> bytes:
    content = [{"type": "image_url", "image_url": {"url": image_url(seed)}},
               {"type": "text", "text": "Which case of the policy applies to this image?"}]
    return json.dumps({"model": model_id, "max_tokens": max_tokens, "temperature": 0.0,
                       "messages": [{"role": "user", "content": content}]}).encode()


def client(url: str, model_id: str, index: int, deadline: float, max_tokens: int, results: list) -> None:
    sent = 0
    while time.monotonic() < deadline:
        body = request_body(model_id, index * 1000 + sent, max_tokens)
        start = time.monotonic()
        try:
            request = urllib.request.Request(f"{url}/v1/chat/completions", body, {"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=300) as reply:  # noqa: S310 - loopback
                ok = reply.status == 200 and bool(json.loads(reply.read())["choices"])
        except (urllib.error.URLError, OSError, ValueError, KeyError):
            ok = False
        results.append((start, time.monotonic() - start, ok))
        sent += 1


def replicas() -> str:
    """The model deployment's replicas by state, e.g. "RUNNING 1, STARTING 1"."""
    from ray import serve

    try:
        app = serve.status().applications.get(APP_NAME)
        states = [state.replica_states for name, state in (app.deployments.items() if app else []) if "LLMServer" in name]
        return ", ".join(f"{key} {value}" for key, value in sorted(states[0].items())) if states else "none"
    except Exception as error:  # noqa: BLE001 - status is best effort while Serve scales
        return f"status failed: {type(error).__name__}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="HF folder to serve (default: the committed tiny base)")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--target-ongoing", type=int, default=8)
    args = parser.parse_args()
    checkpoint = args.checkpoint or str(ROOT / "models" / "tiny-base-xs")

    overrides = ["serve.min_replicas=1", "serve.max_replicas=2", f"serve.target_ongoing_requests={args.target_ongoing}",
                 "serve.max_model_len=1024"]
    model_id = "mpi-ray-policy-free"
    with serving(checkpoint, overrides, Path(tempfile.mkdtemp()) / "serve.log") as url:
        print(f"{args.clients} clients for {args.seconds:.0f}s")
        results: list[tuple[float, float, bool]] = []
        begin = time.monotonic()
        deadline = begin + args.seconds
        threads = [threading.Thread(target=client, args=(url, model_id, i, deadline, args.max_tokens, results))
                   for i in range(args.clients)]
        for thread in threads:
            thread.start()
        timeline: list[tuple[float, str]] = []
        while any(thread.is_alive() for thread in threads):
            timeline.append((time.monotonic() - begin, replicas()))
            time.sleep(2)
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - begin
        timeline.append((elapsed, replicas()))

        latencies = sorted(latency for _, latency, ok in results if ok)
        errors = sum(not ok for _, _, ok in results)
        p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else float("nan")  # noqa: E731
        print(f"requests {len(results)}, errors {errors}, {len(latencies) / elapsed:.1f} answered/s over {elapsed:.0f}s")
        print(f"latency p50 {p(0.50):.2f}s, p99 {p(0.99):.2f}s, mean {statistics.mean(latencies) if latencies else float('nan'):.2f}s")
        changes = [(round(t), n) for i, (t, n) in enumerate(timeline) if i == 0 or n != timeline[i - 1][1]]
        print("model replicas (s since the load began: replicas by state): " + "; ".join(f"{t}s: {n}" for t, n in changes))
        return 0


if __name__ == "__main__":
    sys.exit(main())
