"""The learner stages' metrics.jsonl (one row per step), kept under one rule by the CPT/SFT and RL loops."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TextIO


def open_metrics_log(path: Path, step_key: str, resumed_at: int | None) -> TextIO:
    """`path` open for appending step rows. A fresh start (`resumed_at` None) empties it. A run resumed
    from the checkpoint of step k (a worker-group restart inside one fit, or a re-run of the stage)
    keeps only the rows with `step_key` <= k: it redoes the later steps, so no step is logged twice."""
    kept = []
    if resumed_at is not None and path.exists():
        kept = [line for line in path.read_text().splitlines() if json.loads(line)[step_key] <= resumed_at]
    log = path.open("w")
    log.writelines(line + "\n" for line in kept)
    log.flush()
    return log


def read_data_order(path: Path, step_key: str) -> dict[int, list[str]]:
    """A data-order log (`data_order*.jsonl`: the sample ids each step trained on) as step -> ids. A step
    redone after a restart appears twice in an appended log; its last record is what was trained on."""
    order: dict[int, list[str]] = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        order[record[step_key]] = record["ids"]
    return order
