"""report.md and its plots from a run's evaluation results and training metrics.

    <run>/report.md                 the stage-by-stage table in the paper's layout, efficiency,
                                    override, referral, forgetting, and the plots below
    <run>/plots/training_loss.png   CPT / SFT loss per micro-step
    <run>/plots/rl_rewards.png      RL reward and accuracy per rollout group (policy-free vs policy-aware)
    <run>/plots/branching_errors.png  where the reasoning leaves the gold path (ClevrPolicy)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from mpi_ray.rewards.combine import is_gta  # noqa: E402

_DECISIONS_LISTED = 15  # the conditions of a depth-4 tree; a deeper tree's report lists its shallowest 15


def _metrics(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _suite(summary: dict[str, Any], suite: str, key: str = "accuracy") -> float | None:
    return summary.get("suites", {}).get(suite, {}).get(key)


def stage_table(results: dict[str, Any]) -> list[str]:
    """Rows in the paper's order (Table 2/3 layout): the base model with the policy in context, then each
    trained checkpoint without it; override and referral where the checkpoint was evaluated on them."""
    gta = is_gta(results["dataset"])
    scores = ["Tool Acc", "Arg Score", "Overall"] if gta else ["Acc"]
    header = ["Method", *scores, "Override", "Referral rules exact" if gta else "Referral path exact", "Samples"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, summary in results["checkpoints"].items():
        suite = "in_context" if name == "model" else "policy_free"
        values = [_suite(summary, suite, "tool"), _suite(summary, suite, "arg"), _suite(summary, suite)] if gta \
            else [_suite(summary, suite)]
        ref = summary.get("referral", {})
        path = ref.get("rules", {}).get("rules_exact") if gta else ref.get("programmatic", {}).get("path_exact")
        cells = [summary["label"], *map(_pct, values), _pct(_suite(summary, "override")),
                 _pct(None if path is None else 100 * path), str(summary["suites"].get(suite, {}).get("samples", 0))]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _plot_training(run: Path, out: Path) -> Path | None:
    curves = {stage: _metrics(run / stage / "metrics.jsonl") for stage in ("cpt", "sft")}
    curves = {stage: rows for stage, rows in curves.items() if rows}
    if not curves:
        return None
    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.5), squeeze=False)
    for axis, (stage, rows) in zip(axes[0], curves.items()):
        axis.plot([r["micro_step"] for r in rows], [r["loss"] for r in rows])
        axis.set(title=f"{stage.upper()} loss", xlabel="micro-step", ylabel="loss")
    fig.tight_layout()
    path = out / "training_loss.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


_GROUPS = (("policy_free", "policy-free (Q, I)"), ("policy_aware", "policy-aware (Q, I, P)"))


def _plot_rl(run: Path, out: Path) -> Path | None:
    rows = _metrics(run / "rl" / "metrics.jsonl")
    if not rows:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
    for axis, key in zip(axes, ("reward", "accuracy")):
        for group, label in _GROUPS:
            points = [(r["step"], r[f"{group}/{key}"]) for r in rows if f"{group}/{key}" in r]
            if points:
                axis.plot(*zip(*points), marker="o", label=label)
        axis.set(title=f"RL {key} per rollout group", xlabel="step", ylabel=f"mean {key}")
    rescued = [(r["step"], r["poro/rescued"]) for r in rows if "poro/rescued" in r]
    if rescued:
        axes[1].plot(*zip(*rescued), linestyle="--", color="gray", label="share of prompts only the policy-aware group answers")
    for axis in axes:
        axis.legend(fontsize=7)
    fig.tight_layout()
    path = out / "rl_rewards.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _mean(rows: list[dict[str, Any]], key: str) -> float:
    return sum(r[key] for r in rows) / len(rows)


def rl_group_summary(run: Path) -> dict[str, Any] | None:
    """PoRo's two rollout groups from a run's RL metrics: mean sample accuracy of each early (the first
    quarter of the steps) and over every step, and the per-prompt shares of `poro/*`; None without PoRo."""
    rows = [r for r in _metrics(run / "rl" / "metrics.jsonl") if "policy_aware/accuracy" in r and "policy_free/accuracy" in r]
    if not rows:
        return None
    early = rows[:max(1, len(rows) // 4)]
    summary = {"steps": len(rows),
               "early": f"step {early[0]['step']}" if len(early) == 1 else f"steps {early[0]['step']}-{early[-1]['step']}",
               "free_early": _mean(early, "policy_free/accuracy"), "aware_early": _mean(early, "policy_aware/accuracy"),
               "free_all": _mean(rows, "policy_free/accuracy"), "aware_all": _mean(rows, "policy_aware/accuracy")}
    if all("poro/rescued" in r for r in rows):
        summary.update(free_unsolved=_mean(rows, "poro/free_unsolved"), rescued=_mean(rows, "poro/rescued"))
    return summary


def _rl_groups(run: Path) -> list[str]:
    """The groups side by side, and whether PoRo's premise holds: the policy-aware group answers
    better than the policy-free one early in RL."""
    groups = rl_group_summary(run)
    if groups is None:
        return []
    free, aware, steps = groups["free_early"], groups["aware_early"], groups["early"]
    lines = ["## RL: the two rollout groups (PolicyRollout)", "",
             "| mean sample accuracy | policy-free (Q, I) | policy-aware (Q, I, P) |", "|---|---|---|",
             f"| early ({steps}) | {free:.2f} | {aware:.2f} |",
             f"| all {groups['steps']} steps | {groups['free_all']:.2f} | {groups['aware_all']:.2f} |", "",
             f"- PoRo's premise, the policy-aware group above the policy-free one early in RL: "
             f"**{'holds' if aware > free else 'does not hold'}** ({aware:.2f} vs {free:.2f}, {steps})"]
    if "rescued" in groups:
        lines.append(f"- Prompts whose policy-free samples were all wrong: {100 * groups['free_unsolved']:.1f}% a step; "
                     f"answered by a policy-aware sample (the signal PoRo adds to plain GRPO's): "
                     f"{100 * groups['rescued']:.1f}% of all prompts")
    return lines + [""]


def _plot_branching(final: dict[str, Any], out: Path) -> Path | None:
    errors = final.get("referral", {}).get("programmatic", {}).get("branching_errors_by_depth")
    if not errors:
        return None
    fig, axis = plt.subplots(figsize=(5, 3.5))
    axis.bar([int(depth) + 1 for depth in errors], list(errors.values()))
    axis.set(title="Where the reasoning leaves the gold path", xlabel="condition depth", ylabel="responses")
    fig.tight_layout()
    path = out / "branching_errors.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _efficiency(eff: dict[str, Any]) -> list[str]:
    if not eff:
        return []
    return ["## Efficiency (the policy out of the prompt)", "",
            "| | with policy | without | reduction | paper (7B) |", "|---|---|---|---|---|",
            f"| prompt tokens | {eff['prompt_tokens_with_policy']:.0f} | {eff['prompt_tokens_without_policy']:.0f} | "
            f"{eff['token_reduction_pct']:.1f}% | up to {eff['paper_token_reduction_pct']}% |",
            f"| time to first token (ms, median) | {eff['ttft_with_policy_ms']:.1f} | {eff['ttft_without_policy_ms']:.1f} | "
            f"{eff['prefill_reduction_pct']:.1f}% | up to {eff['paper_prefill_reduction_pct']}% |", "",
            f"Measured on {eff['samples']} test prompts, one at a time with nothing cached, on this run's hardware.", ""]


def _referral(final: dict[str, Any]) -> list[str]:
    ref = final.get("referral", {})
    if not ref:
        return []
    lines = ["## Policy Referral (final model, policy-free prompts)", ""]
    prog = ref.get("programmatic")
    if prog:
        lines += [f"- Reasoning visits exactly the gold conditions: {100 * prog['path_exact']:.1f}% of {prog['samples']} responses",
                  f"- Gold conditions visited (recall): {100 * prog['condition_recall']:.1f}%; visited conditions on the "
                  f"gold path (precision): {100 * prog['condition_precision']:.1f}%",
                  f"- First divergence by depth (0 = the root condition): {prog['branching_errors_by_depth']}"]
        if prog.get("decisions"):
            lines.append("- Gold branch taken at each condition reached on the gold path (right / reached): " + ", ".join(
                f"{condition} {c['right']}/{c['reached']} ({100 * c['right'] / c['reached']:.0f}%)"
                for condition, c in list(prog["decisions"].items())[:_DECISIONS_LISTED]))
    rules = ref.get("rules")
    if rules:
        lines += [f"- Reasoning cites exactly the rules that apply: {100 * rules['rules_exact']:.1f}% of {rules['samples']} responses",
                  f"- Applicable rules cited (recall): {100 * rules['rule_recall']:.1f}%; cited rules that apply "
                  f"(precision): {100 * rules['rule_precision']:.1f}%"]
    judge = ref.get("judge")
    if judge:
        lines.append(f"- LLM judge ({judge['model']} at {judge['url']}): mean {_pct(judge['mean_score'])} / 10 over "
                     f"{judge['scored']} of {judge['asked']} responses")
    return lines + [""]


def _forgetting(results: dict[str, Any]) -> list[str]:
    before = results["checkpoints"].get("model", {}).get("suites", {}).get("forgetting")
    after = results["checkpoints"][results["final"]].get("suites", {}).get("forgetting")
    if not after:
        return []
    floor = results["checkpoints"][results["final"]].get("constant_answer", {}).get("forgetting")
    lines = ["## Forgetting (general questions outside MPI)", "",
             f"- Accuracy before MPI (base model): {_pct(before and before.get('accuracy'))}; after: "
             f"{_pct(after.get('accuracy'))} ({after['samples']} questions, {results.get('forgetting_benchmark')})"]
    if floor is not None:
        lines.append(f"- One constant answer per kind of question (yes/no, a count, other) scores {_pct(floor)}: "
                     "accuracy at that level reads nothing of the image")
    return lines + [""]


def _floor_note(final: dict[str, Any]) -> list[str]:
    """Under the stage table: what a constant answer scores on the same scenes (the 25% of a balanced 4-case task)."""
    floor = final.get("constant_answer", {}).get("policy_free")
    if floor is None:
        return []
    return [f"One constant answer per kind of question scores {_pct(floor)} on these scenes (the floor: a model at it "
            "reads nothing of the image).", ""]


def _skipped(results: dict[str, Any]) -> list[str]:
    """Requests left out because they cannot be served (too long for the model, a refused image)."""
    lines = []
    for name, checkpoint in results["checkpoints"].items():
        skipped = checkpoint.get("skipped") or {}
        if skipped:
            first, reason = next(iter(skipped.items()))
            lines.append(f"- {checkpoint['label']}: {len(skipped)} request(s) skipped as unservable (e.g. {first}: {reason})")
    return ["Skipped (not scored, not counted in the figures above):", "", *lines, ""] if lines else []


def _split_note(results: dict[str, Any]) -> list[str]:
    """A report scored on the validation split says so above its table: those are not test figures."""
    if results.get("split", "test") == "test":
        return []
    return [f"**Scored on the {results['split']} split** (eval.split={results['split']}: for choosing hyper-parameters; "
            "not test figures).", ""]


def write_report(run: Path, results: dict[str, Any]) -> Path:
    plots = run / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    final = results["checkpoints"][results["final"]]
    images = [p for p in (_plot_training(run, plots), _plot_rl(run, plots), _plot_branching(final, plots)) if p]
    in_context = _suite(final, "in_context")
    lines = [f"# TriMPI report: {results['run']}", "",
             f"Dataset {results['dataset']}; greedy decoding, at most {results['max_response_len']} response tokens; "
             "accuracy in %. The base model is shown with the policy in context (the in-context baseline); "
             "every trained checkpoint without it (the MPI setting).", "", *_split_note(results), *stage_table(results), ""]
    lines += _floor_note(final)
    if in_context is not None:
        lines += [f"The final model with the policy put back in context (paper Table 4): {_pct(in_context)}.", ""]
    lines += _skipped(results)
    lines += [*_efficiency(final.get("efficiency", {})), *_referral(final), *_forgetting(results), *_rl_groups(run)]
    if images:
        lines += ["## Plots", "", *[f"![{p.stem}](plots/{p.name})" for p in images], ""]
    path = run / "report.md"
    path.write_text("\n".join(lines))
    return path


def report_tables(report: Path) -> list[str]:
    """The table rows of a written report.md (the stage table and the efficiency table)."""
    return [line for line in report.read_text().splitlines() if line.startswith("|")]


def headline(results: dict[str, Any]) -> str:
    return "\n".join(stage_table(results))
