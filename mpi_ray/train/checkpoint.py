"""Learner checkpoints through Ray Train (CPT, SFT and RL loops alike).

A checkpoint holds the strategy's state (weights, optimizer, scheduler), each rank's RNG state and
the loop's position (`train_state.json`, written by rank 0). Ray Train keeps them under
`<run.dir>/ray_train/<stage>` and, when a run of the same name starts again (a worker-group restart,
or the whole job re-run after the driver died), hands the newest one to `restore`.
"""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import ray.train
import torch

TRAIN_STATE = "train_state.json"


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def restore(strategy: Any, rank: int) -> dict[str, Any] | None:
    """Load the newest checkpoint of this run into `strategy`; its loop position, or None on a fresh start."""
    checkpoint = ray.train.get_checkpoint()
    if not checkpoint:
        return None
    with checkpoint.as_directory() as directory:
        path = Path(directory)
        strategy.load(path)
        _set_rng_state(torch.load(path / f"rng_rank{rank}.pt", weights_only=False))
        return json.loads((path / TRAIN_STATE).read_text())


def save(strategy: Any, rank: int, position: dict[str, Any], metrics: dict[str, Any]) -> None:
    """Collective: every rank writes its part, and Ray Train registers the checkpoint with `metrics`."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory)
        strategy.save(path, rank)
        torch.save(_rng_state(), path / f"rng_rank{rank}.pt")
        if rank == 0:
            (path / TRAIN_STATE).write_text(json.dumps(position))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))
