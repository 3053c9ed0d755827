"""Evaluate checkpoints: build the suites' requests, answer them with vLLM through Ray Data, score.

`evaluate_checkpoints` runs each checkpoint's suites (one batch inference for all of them) and writes
each one's responses (responses-<name>.jsonl) next to the summary it returns per checkpoint:

    {"path", "label", "dataset", "suites": {suite: {samples, accuracy, format[, tool, arg]}},
     "referral": {...}, "efficiency": {...}}
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mpi_ray.config.schema import PipelineConfig
from mpi_ray.eval import referral
from mpi_ray.eval.inference import run_requests
from mpi_ray.eval.scoring import constant_answer_accuracy, score_eval, summarize_by_suite
from mpi_ray.eval.suites import build_requests, model_context, suite_rows
from mpi_ray.rewards.combine import is_gta

if TYPE_CHECKING:
    from mpi_ray.rollout.prestart import StartedEngines

# The paper's efficiency figures (Qwen2.5-VL-7B, Fig. 6), shown beside ours.
PAPER_TOKEN_REDUCTION_PCT = 93.9
PAPER_PREFILL_REDUCTION_PCT = 85.7


def _max_images(rows: dict[str, list[dict[str, Any]]]) -> int:
    return max([1] + [len(s["policy_images"]) + len(s["images"]) for samples in rows.values() for s in samples])


def efficiency_summary(answers: list[dict[str, Any]]) -> dict[str, Any]:
    if not answers:
        return {}
    free_tokens = statistics.mean(a["prompt_tokens_free"] for a in answers)
    policy_tokens = statistics.mean(a["prompt_tokens_policy"] for a in answers)
    free_ms = 1000 * statistics.median(a["ttft_free_s"] for a in answers)
    policy_ms = 1000 * statistics.median(a["ttft_policy_s"] for a in answers)
    return {"samples": len(answers), "prompt_tokens_with_policy": policy_tokens, "prompt_tokens_without_policy": free_tokens,
            "token_reduction_pct": 100 * (1 - free_tokens / policy_tokens),
            "ttft_with_policy_ms": policy_ms, "ttft_without_policy_ms": free_ms,
            "prefill_reduction_pct": 100 * (1 - free_ms / policy_ms),
            "paper_token_reduction_pct": PAPER_TOKEN_REDUCTION_PCT, "paper_prefill_reduction_pct": PAPER_PREFILL_REDUCTION_PCT}


def referral_summary(cfg: PipelineConfig, responses: list[dict[str, Any]]) -> dict[str, Any]:
    """Programmatic referral where samples carry a gold path (ClevrPolicy) or fired rules (GTAPolicy);
    the LLM judge when eval.judge_url is set."""
    walked = [r for r in responses if r.get("gold_path")]
    summary: dict[str, Any] = {}
    if walked:
        paths = [referral.path_referral(r["text"], r["gold_path"]) for r in walked]
        taken = [referral.decisions(r["text"], r["gold_path"], r["scores"].get("accuracy", 0.0) >= 1.0) for r in walked]
        summary["programmatic"] = referral.summarize_paths(paths) | {"decisions": referral.summarize_decisions(taken)}
    rules = [referral.rule_referral(r["text"], r["rule_ids"]) for r in responses if r.get("rule_ids")]
    if rules:
        summary["rules"] = referral.summarize_rules(rules)
    if cfg.eval.judge_url:
        model = cfg.eval.judge_model or referral.judge_model_id(cfg.eval.judge_url)
        scores = [referral.ask_judge(cfg.eval.judge_url, model, r["policy_text"], r["text"])
                  for r in responses[: cfg.eval.judge_samples]]
        given = [s for s in scores if s is not None]
        summary["judge"] = {"model": model, "url": cfg.eval.judge_url, "asked": len(scores), "scored": len(given),
                            "mean_score": statistics.mean(given) if given else None}
    return summary


@dataclass
class Planned:
    """One checkpoint's part of an evaluation: its suites' rows and requests."""
    name: str
    label: str
    checkpoint: str
    suites: list[str]
    rows: dict[str, list[dict[str, Any]]]
    requests: list[dict[str, Any]]
    skipped: dict[str, str]


def plan_checkpoint(cfg: PipelineConfig, checkpoint: str, data_dir: str, suites: list[str], name: str, label: str) -> Planned:
    rows = suite_rows(data_dir, suites, cfg.eval.max_samples, cfg.eval.general_jsonl, cfg.eval.split)
    max_prompt_tokens = model_context(checkpoint) - cfg.eval.max_response_len
    requests, skipped = build_requests(checkpoint, rows, cfg.eval.efficiency_samples if "efficiency" in suites else None,
                                       max_prompt_tokens, cfg.model.min_pixels, cfg.model.max_pixels)
    if skipped:
        print(f"[eval] {name}: skipped {len(skipped)} request(s) that cannot be served, e.g. "
              f"{next(iter(skipped))}: {next(iter(skipped.values()))}", flush=True)
    print(f"[eval] {name}: {label} <- {checkpoint}: " + ", ".join(f"{suite} {len(samples)}" for suite, samples in rows.items())
          + f" ({len(requests)} requests)", flush=True)
    return Planned(name, label, checkpoint, suites, rows, requests, skipped)


def summarize_checkpoint(cfg: PipelineConfig, planned: Planned, answers: dict[str, dict[str, Any]], out_dir: Path) -> dict[str, Any]:
    """Score one checkpoint's answers (keyed by its own request ids), write its responses, summarize."""
    responses = []
    for suite, samples in planned.rows.items():
        for sample in samples:
            answer = answers[f"{suite}/{sample['sample_id']}"]
            meta = json.loads(sample["meta"] or "{}")
            responses.append({
                "suite": suite, "sample_id": sample["sample_id"], "dataset": sample["dataset"], "answer": sample["answer"],
                "text": answer["text"], "response_tokens": answer["response_tokens"], "prompt_tokens": answer["prompt_tokens"],
                "finish_reason": answer["finish_reason"], "gold_path": meta.get("gold_path"),
                "rule_ids": meta.get("rule_ids"), "policy_text": sample["policy_text"],
                "scores": score_eval(sample["dataset"], answer["text"], sample["answer"], cfg.rl.reward),
            })
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / f"responses-{planned.name}.jsonl").open("w") as file:
        for response in responses:
            file.write(json.dumps({k: v for k, v in response.items() if k != "policy_text"}) + "\n")

    dataset = next((r["dataset"] for r in responses if r["suite"] != "forgetting"), "none")
    summary: dict[str, Any] = {"path": planned.checkpoint, "label": planned.label, "dataset": dataset,
                               "suites": summarize_by_suite(responses), "skipped": planned.skipped}
    summary["constant_answer"] = {suite: constant_answer_accuracy([sample["answer"] for sample in samples])
                                  for suite, samples in planned.rows.items()  # exact-match suites only
                                  if samples and not is_gta(samples[0]["dataset"])}
    if "referral" in planned.suites:
        summary["referral"] = referral_summary(cfg, [r for r in responses if r["suite"] == "policy_free"])
    if "efficiency" in planned.suites:
        summary["efficiency"] = efficiency_summary([a for rid, a in answers.items() if rid.startswith("efficiency/")])
    return summary


def evaluate_checkpoints(cfg: PipelineConfig, plan: list[tuple[str, str, str, list[str]]], data_dir: str,
                         out_dir: Path, handed: StartedEngines | None = None) -> tuple[dict[str, dict[str, Any]], float]:
    """Each (name, label, checkpoint, suites) of `plan` evaluated, every request answered in one batch
    inference (one engine start-up for checkpoints of one architecture; none where `handed`, the RL
    stage's engines, can take them). Returns the summaries by name and the seconds the engines took to start."""
    planned = [plan_checkpoint(cfg, checkpoint, data_dir, suites, name, label) for name, label, checkpoint, suites in plan]
    requests = [{**request, "request_id": f"{index}:{request['request_id']}", "checkpoint": index}
                for index, part in enumerate(planned) for request in part.requests]
    max_images = max(_max_images(part.rows) for part in planned)
    print(f"[eval] {len(requests)} requests over {len(planned)} checkpoint(s)", flush=True)
    answers, startup_s = run_requests(cfg, [part.checkpoint for part in planned], requests, max_images, handed)
    print(f"[eval] engine start-up {startup_s:.1f}s", flush=True)
    summaries = {}
    for index, part in enumerate(planned):
        prefix = f"{index}:"
        own = {rid[len(prefix):]: answer for rid, answer in answers.items() if rid.startswith(prefix)}
        summaries[part.name] = summarize_checkpoint(cfg, part, own, out_dir)
    return summaries, startup_s


def evaluate_checkpoint(cfg: PipelineConfig, checkpoint: str, data_dir: str, suites: list[str], out_dir: Path,
                        name: str, label: str) -> dict[str, Any]:
    return evaluate_checkpoints(cfg, [(name, label, checkpoint, suites)], data_dir, out_dir)[0][name]
