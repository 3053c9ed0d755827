"""Experiment trackers: the run's metrics where users look for them, offline.

`jsonl` is what the stages write themselves (`<run.dir>/<stage>/metrics.jsonl`, `eval/results.json`)
and is always on. `tensorboard` mirrors them after each stage into `<run.dir>/tensorboard/<stage>/`
(TensorBoard event files, written with tensorboardX): VM-CPT and SFT losses per micro-step, every RL
metric per step (rewards, accuracy and length per group type, KL, clip fraction, throughput), the
eval table per checkpoint and suite, and the report's plots as images. A re-run stage replaces its
folder, so a resumed run shows each step once. `tensorboard --logdir <run.dir>/tensorboard`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Iterator

TRACKED_STAGES = ("cpt", "sft", "rl", "eval")


def publish_stage(run_root: Path, stage: str, trackers: list[str]) -> Path | None:
    """Mirror a finished stage's metrics into every tracker beyond jsonl; the TensorBoard folder."""
    if "tensorboard" not in trackers or stage not in TRACKED_STAGES:
        return None
    from tensorboardX import SummaryWriter  # a Ray Train dependency; imported only when asked for

    out = run_root / "tensorboard" / stage
    shutil.rmtree(out, ignore_errors=True)
    writer = SummaryWriter(logdir=str(out), flush_secs=3600)
    try:
        for tag, value, step in _scalars(run_root, stage):
            writer.add_scalar(tag, value, step)
        if stage == "eval":
            _eval_extras(run_root, writer)
    finally:
        writer.close()
    return out


def _scalars(run_root: Path, stage: str) -> Iterator[tuple[str, float, int]]:
    if stage == "eval":
        yield from _eval_scalars(run_root)
        return
    step_key = "step" if stage == "rl" else "micro_step"
    for row in _jsonl(run_root / stage / "metrics.jsonl"):
        for key, value in row.items():
            if key not in (step_key, "time", "stage", "epoch") and isinstance(value, (int, float)) and not isinstance(value, bool):
                yield f"{stage}/{key}", float(value), int(row[step_key])


def _eval_scalars(run_root: Path) -> Iterator[tuple[str, float, int]]:
    results = run_root / "eval" / "results.json"
    if not results.exists():
        return
    for position, checkpoint in enumerate(json.loads(results.read_text())["checkpoints"].values()):
        for suite, scores in checkpoint["suites"].items():
            for metric, value in scores.items():
                if isinstance(value, (int, float)):
                    yield f"eval/{suite}/{metric}", float(value), position  # x: the checkpoints in pipeline order


def _eval_extras(run_root: Path, writer: Any) -> None:
    """The report's stage table as text and its plots as images."""
    import numpy as np
    from PIL import Image

    report = run_root / "report.md"
    if report.exists():
        writer.add_text("eval/report", report.read_text(), 0)
    for plot in sorted((run_root / "plots").glob("*.png")):
        with Image.open(plot) as image:
            writer.add_image(f"plots/{plot.stem}", np.asarray(image.convert("RGB")), 0, dataformats="HWC")


def _jsonl(path: Path) -> Iterator[dict[str, Any]]:
    if not path.exists():
        return
    for line in path.read_text().splitlines():
        if line.strip():
            yield json.loads(line)
