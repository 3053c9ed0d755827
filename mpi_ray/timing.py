"""Where a run's time went: per stage, wall time split into work and start-up/waiting.

Work is read from what each stage logged, not guessed:
- VM-CPT, CoT-SFT: the compute each step measured (`step_s` in metrics.jsonl: batch padding, forward,
  backward, optimizer); the rest of the stage (Ray Train's worker group, model loads, Ray Data's
  first stream, waits for a batch, checkpoint saves, the export) is start-up and waiting. Logs
  without `step_s` (written before 2026-12-06) fall back to RL's rule;
- RL: its steps times the median gap between step timestamps (a step is generation and the update,
  in two actors); the rest is the vLLM engines, the worker group, the first stream and the export;
- eval: everything but the seconds until the batch inference's engines were ready;
- model, data, export: all work (a build, a generator, a copy).
Written to <run>/timing.json and appended to report.md by jobs/trimpi.py at the end of a run.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from mpi_ray.config.schema import STAGES

STEPPED = ("cpt", "sft", "rl")
MEASURED = ("cpt", "sft")  # their steps log their own compute (train/loop.py)


def _stepped_work(metrics: Path, measured: bool) -> float | None:
    """`measured`: a learner stage whose rows carry their steps' compute (RL's `step_s` is the update alone)."""
    if not metrics.exists():
        return None
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    if measured and rows and all("step_s" in row for row in rows):
        return sum(row["step_s"] for row in rows)
    times = sorted(row["time"] for row in rows if row.get("time") is not None)
    if len(times) < 2:
        return None
    # steps x the median step, not the span: a resumed stage's log holds the steps of an earlier
    # invocation too, with the gap between the two in it
    return len(times) * statistics.median(b - a for a, b in zip(times, times[1:]))


def stage_times(run: Path) -> list[dict[str, Any]]:
    """One row per completed stage of the run, in pipeline order: wall, work, start-up/waiting seconds."""
    rows = []
    for stage in STAGES:
        marker = run / "stages" / f"{stage}.json"
        if not marker.exists():
            continue
        wall = float(json.loads(marker.read_text())["seconds"])
        work: float | None = wall
        if stage in STEPPED:
            work = _stepped_work(run / stage / "metrics.jsonl", measured=stage in MEASURED)
        elif stage == "eval":
            results = run / "eval" / "results.json"
            startup = json.loads(results.read_text()).get("engine_startup_s") if results.exists() else None
            work = None if startup is None else wall - startup
        if work is not None:
            work = min(work, wall)
        rows.append({"stage": stage, "wall_s": wall, "work_s": work, "startup_s": None if work is None else wall - work})
    return rows


def timing_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The report's table: per stage and in all."""
    lines = ["## Where the time went", "",
             "| stage | wall (s) | steps / generation (s) | start-up and waiting (s) | start-up share |",
             "| --- | --- | --- | --- | --- |"]
    for row in rows:
        if row["work_s"] is None:
            lines.append(f"| {row['stage']} | {row['wall_s']:.1f} | - | - | - |")
            continue
        share = 100 * row["startup_s"] / row["wall_s"] if row["wall_s"] else 0.0
        lines.append(f"| {row['stage']} | {row['wall_s']:.1f} | {row['work_s']:.1f} | {row['startup_s']:.1f} | {share:.0f}% |")
    known = [row for row in rows if row["work_s"] is not None]
    wall = sum(row["wall_s"] for row in known)
    startup = sum(row["startup_s"] for row in known)
    if wall:
        lines.append(f"| all | {wall:.1f} | {wall - startup:.1f} | {startup:.1f} | {100 * startup / wall:.1f}% |")
    return lines + [""]


def write_timing(run: Path) -> list[str]:
    """timing.json and the table appended to report.md (when the run has one); the table's lines."""
    rows = stage_times(run)
    (run / "timing.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = timing_lines(rows)
    report = run / "report.md"
    if report.exists():
        text = report.read_text()
        text = text.split("\n## Where the time went")[0].rstrip("\n")  # a re-run replaces its own section
        report.write_text(text + "\n\n" + "\n".join(lines))
    return lines
