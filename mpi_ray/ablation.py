"""The seeded ablation of the paper's Table 2 on one config: which rows, how they share checkpoints,
and the mean +- std report.

Every row is a node of one tree; a node adds one stage to its parent's model, so rows that share a
prefix share its checkpoints (one VM-CPT feeds four RL rows):

    base (model, data)                                 In-Context (no MPI): the policy in the prompt
    |-- sft target=direct                              Direct SFT
    |-- sft target=cot                                 CoT SFT
    '-- cpt                                            (VM-CPT alone: not a row)
        '-- sft target=cot                             VM-CPT + CoT SFT
            |-- rl grpo / poro-grpo / dapo / poro-dapo TriMPI w/ GRPO, PoRo-GRPO, DAPO, PoRo-DAPO

The base node (model and data) is shared by every seed; a seed is `run.seed` (which rows each learner
rank gets, RL sampling), so all seeds answer the same task. With one learner the SFT data order is the
same for every seed (train/plan.py reads a rank's rows in shard order): seeds then differ in RL only.
A node's run directory starts with copies of its parent's stage markers, so the pipeline (the same
`run_stages` as jobs/trimpi.py) skips what the parent did and reads the parent's outputs.

    <out>/base/                     model + data
    <out>/seed<k>/<node>/           one node's run directory
    <out>/eval/                     responses-<seed>-<row>.jsonl of the one batch inference
    <out>/results.json, report.md, ablation.png
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mpi_ray.config.loader import load_config
from mpi_ray.config.schema import PipelineConfig
from mpi_ray.pipeline import StageContext, run_stages, with_prerequisites
from mpi_ray.run_dir import RunDir


@dataclass(frozen=True)
class Node:
    name: str
    parent: str | None
    stage: str | None  # the stage this node adds (None: the base's model + data)
    overrides: tuple[str, ...] = ()
    label: str | None = None  # its row of the table; None: a shared step that is not a row
    paper_t: float | None = None  # the paper's ClevrPolicy-T accuracy (7B, N=6, Table 2), where recovered


DAPO = ("rl.kl_coef=0",)  # DAPO has no reference KL (the config refuses one)
NODES = (
    Node("base", None, None, (), "In-Context (no MPI)", 13.15),
    Node("direct_sft", "base", "sft", ("sft.target=direct",), "Direct SFT", 15.15),
    Node("cot_sft", "base", "sft", ("sft.target=cot",), "CoT SFT", 17.80),
    Node("cpt", "base", "cpt"),
    Node("cpt_cot_sft", "cpt", "sft", ("sft.target=cot",), "VM-CPT + CoT SFT", 22.75),
    Node("grpo", "cpt_cot_sft", "rl", ("rl.algorithm=grpo",), "TriMPI w/ GRPO (no PoRo)", 55.90),
    Node("poro_grpo", "cpt_cot_sft", "rl", ("rl.algorithm=poro-grpo",), "TriMPI w/ PoRo-GRPO", 65.85),
    Node("dapo", "cpt_cot_sft", "rl", ("rl.algorithm=dapo", *DAPO), "TriMPI w/ DAPO (no PoRo)", None),
    Node("poro_dapo", "cpt_cot_sft", "rl", ("rl.algorithm=poro-dapo", *DAPO), "TriMPI w/ PoRo-DAPO", 77.80),
)
BY_NAME = {node.name: node for node in NODES}
ROWS = tuple(node.name for node in NODES if node.label)


def needed(rows: list[str]) -> list[Node]:
    """The nodes the asked rows need (each row and its ancestors), in tree order."""
    unknown = [row for row in rows if row not in ROWS]
    if unknown:
        raise ValueError(f"unknown ablation row(s) {unknown}; rows: {', '.join(ROWS)}")
    names: set[str] = set()
    for row in rows:
        node: Node | None = BY_NAME[row]
        while node is not None:
            names.add(node.name)
            node = BY_NAME[node.parent] if node.parent else None
    return [node for node in NODES if node.name in names]


def node_dir(out: Path, node: Node, seed: int) -> Path:
    return out / "base" if node.parent is None else out / f"seed{seed}" / node.name


def node_config(config: str, overrides: list[str], out: Path, node: Node, seed: int) -> PipelineConfig:
    chain = []  # every override on the way from the base to this node, the node's own last
    walk: Node | None = node
    while walk is not None:
        chain = list(walk.overrides) + chain
        walk = BY_NAME[walk.parent] if walk.parent else None
    return load_config(config, [*overrides, *chain, f"run.seed={seed}", f"run.dir={node_dir(out, node, seed)}",
                                f"run.name=ablation-seed{seed}-{node.name}"])


def train_node(cfg: PipelineConfig, node: Node, parent_dir: Path | None, log=print) -> str:
    """Run the node's stage on top of its parent's markers; the node's model path."""
    run = RunDir.create(cfg)
    if parent_dir is not None:
        for marker in (parent_dir / "stages").glob("*.json"):
            if not run.marker(marker.stem).exists():
                shutil.copyfile(marker, run.marker(marker.stem))
    stages = with_prerequisites(run, [node.stage] if node.stage else ["model", "data"])
    ctx = StageContext(cfg, run)
    run_stages(ctx, stages, log=log)
    return ctx.current_model()


def summarize(accuracy: dict[str, dict[int, float]], forgetting: dict[str, dict[int, float]], seeds: list[int],
              minutes: float, samples: dict[str, int] | None = None) -> dict[str, Any]:
    """Per row: the per-seed accuracies, their mean and (sample) std, forgetting, the paper's figure,
    and the test scenes each accuracy is measured on."""
    rows = []
    for name in ROWS:
        if name not in accuracy:
            continue
        node = BY_NAME[name]
        values = [accuracy[name][seed] for seed in seeds if seed in accuracy[name]]
        kept = [forgetting.get(name, {}).get(seed) for seed in seeds]
        kept = [value for value in kept if value is not None]
        rows.append({"row": name, "label": node.label, "per_seed": values, "mean": statistics.mean(values),
                     "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                     "forgetting": statistics.mean(kept) if kept else None, "paper_t": node.paper_t,
                     "samples": (samples or {}).get(name)})
    return {"seeds": seeds, "minutes": round(minutes, 1), "rows": rows}


# The paper's reading of Table 2 (its section 5.1), as pairs (lower row, higher row).
PAPER_ORDERING = (("base", "cot_sft", "MPI beats the policy in context"),
                  ("direct_sft", "cot_sft", "CoT SFT beats Direct SFT"),
                  ("cot_sft", "cpt_cot_sft", "VM-CPT helps SFT"),
                  ("cpt_cot_sft", "poro_grpo", "RL adds to VM-CPT + CoT SFT"),
                  ("grpo", "poro_grpo", "PoRo beats plain GRPO"),
                  ("dapo", "poro_dapo", "PoRo beats plain DAPO"))


def ordering_lines(results: dict[str, Any]) -> list[str]:
    """Each of the paper's orderings as measured: holds, reversed, or not separated from the noise (the
    seeds' spread, or the test set's own: one standard error of a difference of two accuracies)."""
    rows = {row["row"]: row for row in results["rows"]}
    lines = []
    for low, high, claim in PAPER_ORDERING:
        if low not in rows or high not in rows:
            continue
        a, b = rows[low], rows[high]
        gap = b["mean"] - a["mean"]
        noise = max(a["std"], b["std"], _difference_se(a, b))
        verdict = ("not separated (gap within the noise)" if abs(gap) <= noise
                   else "holds" if gap > 0 else "reversed")
        lines.append(f"- {claim}: {a['label']} {a['mean']:.1f} vs {b['label']} {b['mean']:.1f} "
                     f"({gap:+.1f} points): **{verdict}**")
    return lines


def _difference_se(a: dict[str, Any], b: dict[str, Any]) -> float:
    """Points of one standard error of mean(b) - mean(a) from the test scenes alone (binomial)."""
    if not a.get("samples") or not b.get("samples"):
        return 0.0
    pa, pb = a["mean"] / 100, b["mean"] / 100
    return 100 * math.sqrt(pa * (1 - pa) / a["samples"] + pb * (1 - pb) / b["samples"])


def report_lines(results: dict[str, Any], what: str) -> list[str]:
    seeds = results["seeds"]
    lines = [
        f"# Ablation: the paper's Table 2 rows on {what}",
        "",
        f"Seeds (`run.seed`) {', '.join(map(str, seeds))}; policy-free accuracy (%) on the test split, greedy; "
        f"the in-context row has the policy in the prompt. Forgetting: accuracy on the general questions. "
        f"{results['minutes']} minutes in all. The paper's column is Qwen2.5-VL-7B on ClevrPolicy-T N=6 (Table 2), "
        "a different scale and task depth: compare the ordering, not the values.",
        "",
        "| Method | accuracy, mean +- std | per seed | forgetting suite | paper (7B, T, N=6) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in results["rows"]:
        per_seed = ", ".join(f"{value:.1f}" for value in row["per_seed"])
        forgetting = "-" if row["forgetting"] is None else f"{row['forgetting']:.1f}"
        paper = "n/r" if row["paper_t"] is None else f"{row['paper_t']:.2f}"
        lines.append(f"| {row['label']} | {row['mean']:.1f} +- {row['std']:.1f} | {per_seed} | {forgetting} | {paper} |")
    ordering = ordering_lines(results)
    if ordering:
        lines += ["", f"The paper's orderings, measured ({len(seeds)} seed(s)); a gap counts when it exceeds both the "
                  "seeds' std and one standard error of the difference from the test scenes alone:", "", *ordering]
    return lines + rl_group_lines(results.get("rl_groups", [])) + ["", "![accuracy per row](ablation.png)", ""]


def rl_group_rows(out: Path, seeds: list[int]) -> list[dict[str, Any]]:
    """Per PoRo row, its two rollout groups early in RL over the seeds (eval/report.rl_group_summary)."""
    from mpi_ray.eval.report import rl_group_summary

    rows = []
    for node in NODES:
        if node.stage != "rl":
            continue
        found = [g for g in (rl_group_summary(node_dir(out, node, seed)) for seed in seeds) if g is not None]
        if not found:
            continue
        rescued = [g["rescued"] for g in found if "rescued" in g]
        rows.append({"label": node.label, "seeds": len(found), "early": found[0]["early"],
                     "free_early": statistics.mean(g["free_early"] for g in found),
                     "aware_early": statistics.mean(g["aware_early"] for g in found),
                     "aware_above": sum(g["aware_early"] > g["free_early"] for g in found),
                     "rescued": statistics.mean(rescued) if rescued else None})
    return rows


def rl_group_lines(groups: list[dict[str, Any]]) -> list[str]:
    if not groups:
        return []
    lines = ["", "PoRo's two rollout groups early in RL (mean sample accuracy over the seeds; PoRo's premise is the "
             "policy-aware group above the policy-free one):", "",
             "| row | early steps | policy-free (Q, I) | policy-aware (Q, I, P) | policy-aware above, seeds | "
             "prompts only the policy-aware group answers |", "| --- | --- | --- | --- | --- | --- |"]
    for g in groups:
        rescued = "-" if g["rescued"] is None else f"{100 * g['rescued']:.1f}%"
        lines.append(f"| {g['label']} | {g['early']} | {g['free_early']:.2f} | {g['aware_early']:.2f} | "
                     f"{g['aware_above']} of {g['seeds']} | {rescued} |")
    return lines


def plot(results: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"]
    fig, axis = plt.subplots(figsize=(9, 4))
    positions = range(len(rows))
    axis.bar([p - 0.2 for p in positions], [r["mean"] for r in rows], 0.4, yerr=[r["std"] for r in rows],
             capsize=3, label=f"ours (mean +- std, {len(results['seeds'])} seed(s))")
    axis.bar([p + 0.2 for p in positions], [r["paper_t"] or 0 for r in rows], 0.4, alpha=0.5, label="paper, 7B T N=6")
    axis.set_xticks(list(positions), [r["label"].replace(" (", "\n(").replace(" w/ ", "\nw/ ") for r in rows], fontsize=7)
    axis.set(ylabel="policy-free accuracy (%)", ylim=(0, 100), title="Table 2 rows")
    axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run_ablation(config: str, overrides: list[str], seeds: list[int], rows: list[str], out: Path, log=print) -> Path:
    """Train every needed node for every seed, evaluate all rows in one batch inference, write the report."""
    from mpi_ray.eval.runner import evaluate_checkpoints

    start = time.time()
    nodes = needed(rows)
    models: dict[tuple[str, int], str] = {}
    for seed in seeds:
        for node in nodes:
            if node.parent is None and (node.name, seeds[0]) in models:
                models[(node.name, seed)] = models[(node.name, seeds[0])]  # one base for every seed
                continue
            cfg = node_config(config, overrides, out, node, seed)
            parent = BY_NAME[node.parent] if node.parent else None
            log(f"[ablate] seed {seed}: {node.name} ({node.stage or 'model + data'}) -> {cfg.run.dir}")
            models[(node.name, seed)] = train_node(cfg, node, node_dir(out, parent, seed) if parent else None, log)

    base = BY_NAME["base"]
    eval_cfg = node_config(config, overrides, out, base, seeds[0])
    data_dir = RunDir(node_dir(out, base, seeds[0])).completed("data")["outputs"]["data"]
    plan = [("base", base.label, models[("base", seeds[0])], ["in_context", "forgetting"])]
    plan += [(f"seed{seed}-{name}", BY_NAME[name].label, models[(name, seed)], ["policy_free", "forgetting"])
             for seed in seeds for name in rows if name != "base"]
    summaries, _ = evaluate_checkpoints(eval_cfg, plan, data_dir, out / "eval")

    accuracy: dict[str, dict[int, float]] = {}
    forgetting: dict[str, dict[int, float]] = {}
    samples: dict[str, int] = {}
    for key, summary in summaries.items():
        name, seed_list = ("base", seeds) if key == "base" else (key.split("-", 1)[1], [int(key.split("-")[0][4:])])
        suite = "in_context" if name == "base" else "policy_free"
        for seed in seed_list:
            accuracy.setdefault(name, {})[seed] = summary["suites"][suite]["accuracy"]
            samples[name] = summary["suites"][suite]["samples"]
            if "forgetting" in summary["suites"]:
                forgetting.setdefault(name, {})[seed] = summary["suites"]["forgetting"]["accuracy"]
    results = summarize(accuracy, forgetting, seeds, (time.time() - start) / 60, samples)
    results["what"] = f"`{config}` {' '.join(overrides)}".strip()
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return write_report(out)


def write_report(out: Path) -> Path:
    """report.md and ablation.png from <out>/results.json."""
    results = json.loads((out / "results.json").read_text())
    results["rl_groups"] = rl_group_rows(out, results["seeds"]) or results.get("rl_groups", [])  # the node dirs, where kept
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, out / "ablation.png")
    report = out / "report.md"
    report.write_text("\n".join(report_lines(results, results.get("what", "the config"))))
    return report
