"""Batch inference for evaluation: Ray Data streams the requests through a pool of vLLM engine actors.

One pass answers the requests of several checkpoints of the same architecture (a run's base, SFT and
RL models): each engine starts once, from the first, and swaps the next checkpoint's weights in place
(the reload path of RL's weight sync) when its requests arrive, instead of paying a vLLM start-up per
checkpoint. Requests go in checkpoint order, so an engine swaps at most once per checkpoint.

A request is {request_id, checkpoint (index into the pass's checkpoints), mode, prompt, images,
policy_prompt, policy_images}:
- mode "generate": a greedy completion of `prompt` (text, response tokens, prompt tokens);
- mode "prefill": prompt tokens and time to the first token of the policy-free prompt and of the
  policy-aware one, alternately, `repeats` times each, each with nothing cached (efficiency suite).
The engine is the rollout engine (same vLLM set-up, same image handling as RL sampling). After an RL
stage of the same run the pass runs on RL's own engines, handed on with the final weights in them
(`StartedEngines.handed_on`): no engine starts at all, the driver feeds each engine its share of the
batches through the same EnginePredictor logic.
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import ray

from mpi_ray.cluster import engine_actor_options
from mpi_ray.config.schema import PipelineConfig, RolloutConfig
from mpi_ray.model.loading import image_bounds
from mpi_ray.rollout.engine import RolloutEngine, engine_key

if TYPE_CHECKING:
    from mpi_ray.rollout.prestart import StartedEngines

BATCH = 32  # requests an engine answers in one vLLM call
REQUEST_FIELDS = ("request_id", "checkpoint", "mode", "prompt", "images", "policy_prompt", "policy_images")
# Every answered batch has this schema (null where a mode has no value), so all blocks agree.
ANSWER_SCHEMA = pa.schema([
    ("request_id", pa.string()), ("text", pa.string()), ("response_tokens", pa.int64()), ("prompt_tokens", pa.int64()),
    ("finish_reason", pa.string()), ("prompt_tokens_free", pa.int64()), ("prompt_tokens_policy", pa.int64()),
    ("ttft_free_s", pa.float64()), ("ttft_policy_s", pa.float64()), ("engine_ready_at", pa.float64()),
])


class RemoteEngine:
    """A rollout engine actor called as a RolloutEngine in this process is (the engines RL handed on)."""

    def __init__(self, actor: Any):
        self.actor = actor
        self.version = ray.get(actor.get_version.remote())

    def generate(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return ray.get(self.actor.generate.remote(*args, **kwargs))

    def prefill_seconds(self, prompt: dict[str, Any]) -> tuple[int, float]:
        return ray.get(self.actor.prefill_seconds.remote(prompt))

    def load_checkpoint(self, model_path: str, version: int) -> int:
        self.version = ray.get(self.actor.load_checkpoint.remote(model_path, version))
        return self.version


class EnginePredictor:
    """One vLLM engine per Ray Data actor, started from the first of `checkpoints`; `__call__` answers a
    batch of requests. `on_engine` builds one on an engine that is up already (RL's, handed on)."""

    def __init__(self, checkpoints: list[str], rollout: dict[str, Any], seed: int, max_images: int, dtype: str, repeats: int,
                 pixel_bounds: dict[str, int]):
        config = RolloutConfig.model_validate(rollout)
        engine = RolloutEngine(checkpoints[0], config, seed, max_images, dtype, pixel_bounds)
        self._serve(checkpoints, engine, 0, config.max_response_len, repeats)

    @classmethod
    def on_engine(cls, engine: RemoteEngine, checkpoints: list[str], max_tokens: int, repeats: int) -> EnginePredictor:
        """On a running engine that holds none of `checkpoints` yet: the first batch swaps one in."""
        predictor = cls.__new__(cls)
        predictor._serve(checkpoints, engine, None, max_tokens, repeats)
        return predictor

    def _serve(self, checkpoints: list[str], engine: Any, loaded: int | None, max_tokens: int, repeats: int) -> None:
        self.checkpoints, self.engine, self.loaded = checkpoints, engine, loaded
        self.repeats, self.max_tokens = repeats, max_tokens
        self.ready_at = time.time()  # the pass's start-up ends here (the report's time split)

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        parts = []
        for checkpoint in sorted({row["checkpoint"] for row in rows}):
            if checkpoint != self.loaded:
                self.engine.load_checkpoint(self.checkpoints[checkpoint], self.engine.version + 1)
                self.loaded = checkpoint
            parts.append(self._answer([row for row in rows if row["checkpoint"] == checkpoint]))
        return pa.concat_tables(parts)

    def _answer(self, rows: list[dict[str, Any]]) -> pa.Table:
        """Requests of the loaded checkpoint."""
        results = {row["request_id"]: {"request_id": row["request_id"], "engine_ready_at": self.ready_at} for row in rows}
        generate = [row for row in rows if row["mode"] == "generate"]
        if generate:
            out = self.engine.generate([{"prompt": r["prompt"], "images": r["images"]} for r in generate], n=1,
                                       max_tokens=self.max_tokens, temperature=0.0)
            for row, samples, prompt_tokens in zip(generate, out["samples"], out["prompt_tokens"]):
                sample = samples[0]
                results[row["request_id"]].update(text=sample["text"], response_tokens=len(sample["token_ids"]),
                                                  prompt_tokens=prompt_tokens, finish_reason=sample["finish_reason"])
        for row in (r for r in rows if r["mode"] == "prefill"):
            results[row["request_id"]].update(self._prefill(row))
        return pa.Table.from_pylist(list(results.values()), schema=ANSWER_SCHEMA)

    def _prefill(self, row: dict[str, Any]) -> dict[str, Any]:
        free = {"prompt": row["prompt"], "images": row["images"]}
        aware = {"prompt": row["policy_prompt"], "images": row["policy_images"]}
        times: dict[str, list[float]] = {"free": [], "policy": []}
        tokens: dict[str, int] = {}
        for _ in range(self.repeats):  # alternate, so drift in machine load hits both alike
            for name, prompt in (("free", free), ("policy", aware)):
                tokens[name], seconds = self.engine.prefill_seconds(prompt)
                times[name].append(seconds)
        return {"prompt_tokens_free": tokens["free"], "prompt_tokens_policy": tokens["policy"],
                "ttft_free_s": statistics.median(times["free"]), "ttft_policy_s": statistics.median(times["policy"])}


def engine_passes(checkpoints: list[str]) -> list[list[int]]:
    """Indices of the checkpoints one engine pool can answer in one pass, in first-seen order."""
    passes: dict[str, list[int]] = {}
    for index, path in enumerate(checkpoints):
        key = engine_key(path) if Path(path, "config.json").exists() else path  # a hub id: its own pass
        passes.setdefault(key, []).append(index)
    return list(passes.values())


def run_requests(cfg: PipelineConfig, checkpoints: list[str], requests: list[dict[str, Any]],
                 max_images: int, handed: StartedEngines | None = None) -> tuple[dict[str, dict[str, Any]], float]:
    """Every request (its "checkpoint" indexes `checkpoints`) answered by `eval.engines` vLLM actors,
    one start-up per pass of same-architecture checkpoints, or by the `handed` engines (RL's) where they
    can take a pass. Returns the answers by request_id and the seconds spent before the first engine of
    each pass was ready (start-up, summed over passes)."""
    answers: dict[str, dict[str, Any]] = {}
    startup_s = 0.0
    for indices in engine_passes(checkpoints):
        wanted = [r for r in requests if r["checkpoint"] in indices]
        if not wanted:
            continue
        renumbered = [{**r, "checkpoint": indices.index(r["checkpoint"])} for r in wanted]
        passed = [checkpoints[i] for i in indices]
        start = time.time()
        unfit = None if handed is None else _unfit(cfg, handed, passed[0], renumbered, max_images)
        if handed is not None and unfit is None:
            print(f"[eval] on the RL stage's {len(handed.engines)} engine(s), checkpoints swapped in place: no engine start",
                  flush=True)
            answered = _pass_on_engines(cfg, handed, passed, renumbered)
            handed = None  # one pass: its checkpoints' weights are in the engines now
        else:
            if unfit:
                print(f"[eval] the RL stage's engines cannot take {passed[0]}'s requests ({unfit}): a pool of its own", flush=True)
            answered = _one_pass(cfg, passed, renumbered, max_images)
        startup_s += min(a["engine_ready_at"] for a in answered.values()) - start
        answers.update(answered)
    return answers, startup_s


def _unfit(cfg: PipelineConfig, handed: StartedEngines, checkpoint: str, requests: list[dict[str, Any]],
           max_images: int) -> str | None:
    """Why the handed engines cannot answer this pass; None if they can (the same architecture, every
    request within their context and images)."""
    longest = max(r["tokens"] for r in requests)
    if not handed.engines:
        return "none left"
    if not handed.serves(checkpoint):
        return "another architecture or tokenizer"
    if max_images > handed.max_images:
        return f"{max_images} images in a request, the engines take {handed.max_images}"
    if longest + cfg.eval.max_response_len > handed.max_model_len:
        return (f"{longest} prompt tokens + eval.max_response_len {cfg.eval.max_response_len} exceed the engines' "
                f"{handed.max_model_len}")
    return None


def _ordered_blocks(requests: list[dict[str, Any]]) -> list[pa.Table]:
    """The requests in checkpoint order (stable: each suite keeps its order), in blocks of one batch each, so
    every engine gets work and swaps at most once per checkpoint."""
    ordered = sorted(requests, key=lambda r: r["checkpoint"])
    table = pa.Table.from_pylist([{key: r.get(key) for key in REQUEST_FIELDS} for r in ordered])
    return [table.slice(start, BATCH) for start in range(0, table.num_rows, BATCH)]


def _pass_on_engines(cfg: PipelineConfig, handed: StartedEngines, checkpoints: list[str],
                     requests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The pass on engines that are up: engine i answers blocks i, i+n, ... (in checkpoint order), all engines at once."""
    blocks = _ordered_blocks(requests)
    predictors = [EnginePredictor.on_engine(RemoteEngine(actor), checkpoints, cfg.eval.max_response_len,
                                            cfg.eval.efficiency_repeats) for actor in handed.engines]

    def answer(index: int) -> list[pa.Table]:
        return [predictors[index](block) for block in blocks[index::len(predictors)]]

    with ThreadPoolExecutor(len(predictors)) as threads:
        tables = [table for share in threads.map(answer, range(len(predictors))) for table in share]
    return {row["request_id"]: row for table in tables for row in table.to_pylist()}


def _one_pass(cfg: PipelineConfig, checkpoints: list[str], requests: list[dict[str, Any]],
              max_images: int) -> dict[str, dict[str, Any]]:
    # The engine's context fits the longest prompt, counted exactly when the requests were built.
    longest = max(r["tokens"] for r in requests)
    rollout = cfg.rollout.model_copy(update={"max_response_len": cfg.eval.max_response_len,
                                             "max_prompt_len": max(cfg.rollout.max_prompt_len, longest)})
    blocks = _ordered_blocks(requests)
    res = cfg.resources
    answered = ray.data.from_arrow(blocks).map_batches(
        EnginePredictor,
        fn_constructor_kwargs={"checkpoints": checkpoints, "rollout": rollout.model_dump(mode="json"), "seed": cfg.run.seed,
                               "max_images": max_images, "dtype": "bfloat16" if res.use_gpu else "float32",
                               "repeats": cfg.eval.efficiency_repeats,
                               "pixel_bounds": image_bounds(cfg.model.min_pixels, cfg.model.max_pixels)},
        batch_size=BATCH, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=cfg.eval.engines),
        num_cpus=res.cpus_per_engine, num_gpus=res.gpus_per_engine if res.use_gpu else 0, resources=dict(res.engine_resources),
        **engine_actor_options(res.use_gpu),
    )
    return {row["request_id"]: row for row in answered.iter_rows()}
