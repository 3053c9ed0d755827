"""What internalization saves at the paper's depth: prompt tokens and time to the first token with the
policy in the prompt and without it, on ClevrPolicy-T N=6 (a 2,400-token policy), through the offline
engine and through the Ray Serve endpoint.

    python benchmarks/bench_efficiency.py [--checkpoint DIR] [--depth 6] [--requests 50] [--skip-serve]

- Offline: one vLLM engine in this process (`RolloutEngine.prefill_seconds`, the eval stage's
  efficiency measurement): each prompt alone, prefix, encoder and multimodal caches emptied first,
  so every request pays its whole prefill (the paper's setting).
- Serve: `jobs/serve.py` joined to a local Ray on 127.0.0.1, as a user starts it; one client sends
  chat completions (the query image as a PNG data URL, max_tokens 1, greedy) one after the other,
  without and with the policy text; the client's time to its answer, which is the first token, and
  the prompt tokens the endpoint reports. vLLM's prefix cache is on there, as it is for users: from
  the second request on, the policy's tokens (the same text before every image) come from the cache.

Printed per path: prompt tokens and time to first token, median and p90 over the requests, and the
reductions beside the paper's (93.9% fewer prompt tokens, 85.7% less prefill time, 7B, N=6).
The model's weights do not matter for these figures (default: the committed tiny base).
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import mpi_ray.cluster  # noqa: E402,F401  (loopback Ray)
from mpi_ray.config import load_config  # noqa: E402
from mpi_ray.data.clevr_policy.__main__ import main as generate_clevr  # noqa: E402
from mpi_ray.data.prompts import user_turn  # noqa: E402
from mpi_ray.data.shards import read_split  # noqa: E402
from mpi_ray.eval.suites import PromptBuilder  # noqa: E402

PAPER = {"tokens": 93.9, "ttft": 85.7}  # % less with the policy internalized (paper, 7B, N=6)
MODEL_ID = "mpi-ray-policy-free"


def quantiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]


def test_samples(depth: int, count: int, work: Path) -> list[dict[str, Any]]:
    data = work / "data"
    generate_clevr(["--depth", str(depth), "--variant", "T", "--out", str(data), "--policies", "1",
                    "--train-per-policy", str(2 ** depth), "--test", str(count), "--general", "0", "--image-size", "112",
                    "--seed", "0"])
    return read_split(data, "test")[:count]


def offline(checkpoint: str, samples: list[dict[str, Any]]) -> dict[bool, list[tuple[int, float]]]:
    from mpi_ray.model.loading import image_bounds
    from mpi_ray.rollout.engine import RolloutEngine

    cfg = load_config(ROOT / "configs/default.yaml", ["rollout.max_prompt_len=4096", "rollout.max_response_len=16"])
    build = PromptBuilder(checkpoint, cfg.rollout.max_prompt_len, cfg.model.min_pixels, cfg.model.max_pixels)
    engine = RolloutEngine(checkpoint, cfg.rollout, seed=0, max_images=4,
                           pixel_bounds=image_bounds(cfg.model.min_pixels, cfg.model.max_pixels))  # as eval's engines
    measured: dict[bool, list[tuple[int, float]]] = {False: [], True: []}
    for sample in samples:
        for with_policy in (False, True):
            prompt, images, _ = build(sample, with_policy)
            measured[with_policy].append(engine.prefill_seconds({"prompt": prompt, "images": images}))
    return measured


def openai_content(sample: dict[str, Any], with_policy: bool) -> list[dict[str, Any]]:
    """The prompt builder's user turn as OpenAI content parts: images as PNG data URLs, in place."""
    message, images = user_turn(sample, with_policy)
    pictures = iter(images)
    return [{"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(next(pictures)).decode()}}
            if part["type"] == "image" else part for part in message["content"]]


def ask(url: str, content: list[dict[str, Any]]) -> tuple[int, float]:
    body = json.dumps({"model": MODEL_ID, "max_tokens": 1, "temperature": 0.0,
                       "messages": [{"role": "user", "content": content}]}).encode()
    request = urllib.request.Request(f"{url}/v1/chat/completions", body, {"Content-Type": "application/json"})
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=300) as reply:  # noqa: S310 - loopback
        answer = json.loads(reply.read())
    return int(answer["usage"]["prompt_tokens"]), time.perf_counter() - start


def served(checkpoint: str, samples: list[dict[str, Any]], work: Path) -> dict[bool, list[tuple[int, float]]]:
    from serve_process import serving

    with serving(checkpoint, [f"serve.model_id={MODEL_ID}", "serve.max_model_len=4096"], work / "serve.log") as url:
        ask(url, openai_content(samples[0], False))  # the first request pays one-off set-up
        measured: dict[bool, list[tuple[int, float]]] = {False: [], True: []}
        for with_policy in (False, True):
            for sample in samples:
                measured[with_policy].append(ask(url, openai_content(sample, with_policy)))
        return measured


def report(label: str, measured: dict[bool, list[tuple[int, float]]]) -> None:
    print(f"{label} ({len(measured[False])} requests each):")
    rows = {}
    for with_policy, name in ((True, "with the policy"), (False, "policy-free (MPI)")):
        tokens, seconds = quantiles([t for t, _ in measured[with_policy]]), quantiles([s for _, s in measured[with_policy]])
        rows[with_policy] = (tokens, seconds)
        print(f"  {name:<18} prompt tokens median {tokens[0]:6.0f} p90 {tokens[1]:6.0f};"
              f"  time to first token median {1000 * seconds[0]:7.1f} ms p90 {1000 * seconds[1]:7.1f} ms")
    cut = lambda i, q: 100 * (1 - rows[False][i][q] / rows[True][i][q])  # noqa: E731
    print(f"  reduction: prompt tokens {cut(0, 0):.1f}% (paper {PAPER['tokens']}%), time to first token "
          f"median {cut(1, 0):.1f}% / p90 {cut(1, 1):.1f}% (paper {PAPER['ttft']}% prefill)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(ROOT / "models" / "tiny-base-xs"))
    parser.add_argument("--depth", type=int, default=6, help="the policy tree's depth N")
    parser.add_argument("--requests", type=int, default=50, help="test scenes, each asked with and without the policy")
    parser.add_argument("--skip-serve", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_efficiency_"))
    samples = test_samples(args.depth, args.requests, work)
    print(f"ClevrPolicy-T N={args.depth}, policy {len(samples[0]['policy_text'])} characters; {args.checkpoint}")
    report("offline engine, caches emptied before each request", offline(args.checkpoint, samples))
    if not args.skip_serve:
        report("Ray Serve endpoint, one client, prefix cache on", served(args.checkpoint, samples, work))
    return 0


if __name__ == "__main__":
    sys.exit(main())
