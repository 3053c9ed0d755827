"""Learner checkpoints through Ray Train (CPT, SFT and RL loops alike).

A checkpoint holds the strategy's state (weights, optimizer, scheduler), each rank's RNG state and
the loop's position (`train_state.json`, written by rank 0). Ray Train keeps them under
`<run.dir>/ray_train/<stage>/checkpoint_<step>` and, when a run of the same name starts again (a
worker-group restart, or the whole job re-run after the driver died), hands the newest one it
registered to `restore`.

Ray Train registers a checkpoint a moment after the workers uploaded it (its controller polls them),
so a driver killed in that moment lost it: the fault drills saw a re-submitted VM-CPT start again from
step 0 with the step-4 checkpoint complete on disk. So each rank, once its upload has returned, drops
an `uploaded_rank<r>` mark into the checkpoint folder, and `restore` takes the newest folder that every
rank marked, registered or not (Ray Train's own pick when none is marked).
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
UPLOADED = "uploaded_rank{rank}"  # this rank's files are all in storage


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


def storage_dir(out_dir: str, stage: str) -> Path:
    """Where Ray Train keeps a stage's checkpoints: RunConfig(storage_path=<run.dir>/ray_train, name=stage)."""
    return Path(out_dir).parent / "ray_train" / stage


def restore(strategy: Any, rank: int, world: int, storage: Path) -> dict[str, Any] | None:
    """Load the newest complete checkpoint of this run into `strategy`; its loop position, or None on a
    fresh start. `storage`: the run's Ray Train folder (<run.dir>/ray_train/<stage>)."""
    registered, newest = ray.train.get_checkpoint(), newest_uploaded(storage, world)
    if newest and rank == 0 and (registered is None or Path(registered.path).name != newest.name):
        print(f"[checkpoint] {newest.name} was complete but not yet registered by Ray Train when the run "
              f"stopped; resuming from it", flush=True)
    checkpoint = ray.train.Checkpoint.from_directory(str(newest)) if newest else registered
    if not checkpoint:
        return None
    with checkpoint.as_directory() as directory:
        path = Path(directory)
        strategy.load(path)
        _set_rng_state(torch.load(path / f"rng_rank{rank}.pt", weights_only=False))
        return json.loads((path / TRAIN_STATE).read_text())


def newest_uploaded(storage: Path, world: int) -> Path | None:
    """The newest checkpoint folder every rank finished uploading (all `world` marks present)."""
    folders = sorted(storage.glob("checkpoint_*"), reverse=True)  # zero-padded steps: newest first
    return next((f for f in folders if all((f / UPLOADED.format(rank=r)).exists() for r in range(world))), None)


def save(strategy: Any, rank: int, step: int, position: dict[str, Any], metrics: dict[str, Any], storage: Path) -> None:
    """Collective: every rank writes its part, Ray Train uploads it to storage/checkpoint_<step> and
    registers it with `metrics`; then this rank marks its part uploaded."""
    name = f"checkpoint_{step:09d}"
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory)
        strategy.save(path, rank)
        torch.save(_rng_state(), path / f"rng_rank{rank}.pt")
        if rank == 0:
            (path / TRAIN_STATE).write_text(json.dumps(position))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory), checkpoint_dir_name=name)
    (storage / name / UPLOADED.format(rank=rank)).touch()  # report() returns once this rank's upload is done
