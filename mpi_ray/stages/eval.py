"""Stage `eval`: the evaluation suites on the final model and the comparison checkpoints, then the report.

The base model is evaluated with the policy in context (the in-context baseline) and on the general
questions (forgetting "before"); each earlier trained checkpoint in eval.compare without the policy,
with override and referral (its row of the table); the final model on every suite in eval.suites.
Results: <run>/eval/results.json, <run>/report.md.
"""

from __future__ import annotations

import json
from typing import Any

from mpi_ray.eval.report import headline, write_report
from mpi_ray.eval.runner import evaluate_checkpoints
from mpi_ray.pipeline import TRAINED_STAGES, StageContext

BASE_SUITES = ("in_context", "forgetting")  # the base model: the in-context baseline, forgetting "before"
COMPARE_SUITES = ("policy_free", "override", "referral")  # each earlier checkpoint: its row of the table


def stage_label(stage: str, ran: set[str], ctx: StageContext) -> str:
    """The paper's row name for a checkpoint of this run."""
    cfg = ctx.cfg
    cpt = "VM-CPT + " if "cpt" in ran else ""
    sft = "CoT SFT" if cfg.sft.target == "cot" else "Direct SFT"
    if stage == "model":
        return "In-Context (no MPI)"
    if stage == "cpt":
        return "VM-CPT"
    if stage == "sft":
        return cpt + sft
    algorithm = {"grpo": "GRPO", "dapo": "DAPO", "poro-grpo": "PoRo-GRPO", "poro-dapo": "PoRo-DAPO"}[cfg.rl.algorithm]
    return f"TriMPI w/ {algorithm}" if "cpt" in ran else f"{sft} + {algorithm}"


def checkpoints(ctx: StageContext) -> list[tuple[str, str, list[str]]]:
    """(stage, model path, suites) to evaluate, in pipeline order; the newest model last, with every suite."""
    done = {stage: ctx.run.completed(stage) for stage in ("model", *TRAINED_STAGES)}
    made = {stage: marker["outputs"]["model"] for stage, marker in done.items() if marker}
    final_model = ctx.current_model()
    final = next((stage for stage in reversed(list(made)) if made[stage] == final_model), "model")
    suites = list(ctx.cfg.eval.suites)
    plan = []
    for stage, path in made.items():
        if stage == final or stage not in ctx.cfg.eval.compare:
            continue
        wanted = [s for s in suites if s in (BASE_SUITES if stage == "model" else COMPARE_SUITES)]
        plan.append((stage, path, wanted))
    return plan + [(final, final_model, suites)]


def describe(ctx: StageContext) -> str:
    return (f"suites {', '.join(ctx.cfg.eval.suites)} on the final model (+ {', '.join(ctx.cfg.eval.compare)} for the "
            f"table), {engines_line(ctx)} -> {ctx.run.root / 'report.md'}")


def engines_line(ctx: StageContext) -> str:
    handed = ctx.ahead.get("eval")
    if handed is not None:
        return f"the RL stage's {len(handed.engines)} vLLM engine(s), handed on (a fresh pool where they cannot take a checkpoint)"
    return f"vLLM x {ctx.cfg.eval.engines} via Ray Data"


def run(ctx: StageContext) -> dict[str, Any]:
    out = ctx.run.stage_dir("eval")
    plan = checkpoints(ctx)
    ran = {stage for stage in TRAINED_STAGES if ctx.run.completed(stage)}
    data_dir = ctx.outputs["data"]
    handed = ctx.ahead.pop("eval", None)  # the RL stage's engines, holding its final weights
    try:
        summaries, engine_startup_s = evaluate_checkpoints(
            ctx.cfg, [(stage, stage_label(stage, ran, ctx), path, suites) for stage, path, suites in plan], data_dir, out, handed)
    finally:
        if handed is not None:
            handed.release()
    final = plan[-1][0]
    results = {
        "run": ctx.cfg.run.name, "dataset": summaries[final]["dataset"], "final": final, "checkpoints": summaries,
        "max_response_len": ctx.cfg.eval.max_response_len, "split": ctx.cfg.eval.split,
        "forgetting_benchmark": ctx.cfg.eval.general_jsonl or "the data's general split",
        "engine_startup_s": round(engine_startup_s, 1),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    report = write_report(ctx.run.root, results)
    print(f"[eval] report: {report}\n{headline(results)}", flush=True)
    return {"report": str(report), "results": str(out / "results.json")}

