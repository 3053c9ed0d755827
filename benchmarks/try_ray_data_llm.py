"""Eval generation through Ray's own batch-inference path, `ray.data.llm`, beside ours.

    python benchmarks/try_ray_data_llm.py [--requests 32] [--max-tokens 32]

The same greedy requests (ClevrPolicy-T test prompts with their images, the tiny model) go once through
`ray.data.llm.build_processor(vLLMEngineProcessorConfig(...))` (one CPU replica, vLLM's async engine)
and once through the eval stage's own path (`mpi_ray.eval.inference`: Ray Data `map_batches` over
our engine actors, which can also swap checkpoints in place). Prints whether ray.data.llm ran with
this vLLM build, each path's wall time (engine start included), and how many greedy responses agree.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path
from typing import Any

import mpi_ray.cluster  # noqa: F401  (loopback Ray)
import ray
from PIL import Image

from mpi_ray.config.schema import RolloutConfig
from mpi_ray.data.clevr_policy.__main__ import main as generate_clevr
from mpi_ray.data.shards import read_split
from mpi_ray.eval.suites import PromptBuilder
from mpi_ray.model.loading import image_bounds
from mpi_ray.rollout.engine import RolloutEngine

REPO = Path(__file__).resolve().parent.parent


def _requests(out: Path, model: str, count: int) -> list[dict[str, Any]]:
    """The eval stage's own policy-free requests (chat text + PNG images) for `count` test scenes."""
    generate_clevr(["--out", str(out), "--depth", "2", "--variant", "T", "--policies", "1",
                    "--train-per-policy", "8", "--test", str(count), "--general", "4", "--image-size", "112"])
    build = PromptBuilder(model, 1792, 3136, 50176)
    rows = []
    for sample in read_split(out, "test")[:count]:
        prompt, images, _ = build(sample, with_policy=False)
        rows.append({"prompt": prompt, "images": images})
    return rows


def with_ray_data_llm(model: str, rows: list[dict[str, Any]], max_tokens: int) -> tuple[list[str], float]:
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    config = vLLMEngineProcessorConfig(
        model_source=model,
        # on CPU gpu_memory_utilization is the share of host memory (its default, 0.92, is refused here)
        engine_kwargs={"dtype": "float32", "enforce_eager": True, "max_model_len": 2048, "max_num_seqs": 16,
                       "gpu_memory_utilization": 0.05,
                       "limit_mm_per_prompt": {"image": 4, "video": 0},
                       "mm_processor_kwargs": image_bounds(3136, 50176)},
        placement_group_config={"bundles": [{"CPU": 1}]},  # one CPU replica: no GPU asked for
        concurrency=1, batch_size=16, runtime_env={"env_vars": {"VLLM_CPU_KVCACHE_SPACE": "1"}},
        chat_template_stage=False, tokenize_stage=False, detokenize_stage=False, prepare_multimodal_stage=False,
    )
    processor = build_processor(
        config,
        preprocess=lambda row: {"index": row["index"], "prompt": row["prompt"],
                                "multimodal_data": {"image": [Image.open(io.BytesIO(b)).convert("RGB") for b in row["images"]]},
                                "sampling_params": {"temperature": 0.0, "max_tokens": max_tokens}},
        postprocess=lambda row: {"index": row["index"], "text": row["generated_text"]},
    )
    start = time.perf_counter()
    out = processor(ray.data.from_items([{"index": i, **row} for i, row in enumerate(rows)])).take_all()
    return [r["text"] for r in sorted(out, key=lambda r: r["index"])], time.perf_counter() - start  # Ray Data does not keep order


def with_our_engine(model: str, rows: list[dict[str, Any]], max_tokens: int) -> tuple[list[str], float]:
    start = time.perf_counter()
    cfg = RolloutConfig(max_prompt_len=1792, max_response_len=max_tokens, max_num_seqs=16, temperature=1.0)
    engine = ray.remote(RolloutEngine).options(num_cpus=1).remote(model, cfg, 0, 4, "float32", image_bounds(3136, 50176))
    result = ray.get(engine.generate.remote(rows, 1, max_tokens, 0.0))
    ray.kill(engine)
    return [samples[0]["text"] for samples in result["samples"]], time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--model", default=str(REPO / "models/tiny-base-xs"))
    args = parser.parse_args()
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    with tempfile.TemporaryDirectory() as tmp:
        rows = _requests(Path(tmp) / "data", args.model, args.requests)
        ours, ours_s = with_our_engine(args.model, rows, args.max_tokens)
        print(f"[ours] {len(ours)} responses in {ours_s:.1f} s (engine start included)", flush=True)
        try:
            theirs, theirs_s = with_ray_data_llm(args.model, rows, args.max_tokens)
        except Exception as error:  # noqa: BLE001 - the question is whether it runs at all
            print(f"[ray.data.llm] FAILED: {type(error).__name__}: {str(error)[:2000]}")
            return
        agree = sum(a == b for a, b in zip(ours, theirs))
        print(f"[ray.data.llm] {len(theirs)} responses in {theirs_s:.1f} s (engine start included); "
              f"greedy responses identical to ours: {agree}/{len(ours)}")
    ray.shutdown()


if __name__ == "__main__":
    main()
