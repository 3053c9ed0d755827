"""The run directory: resolved config, stage markers, per-stage outputs and metrics.

    <run.dir>/config.yaml            the resolved config of the last invocation
    <run.dir>/model/                 the tiny base model (when model.name_or_path is null)
    <run.dir>/data/                  dataset shards + manifest (when data.dir is null)
    <run.dir>/<stage>/               a stage's work: checkpoints, metrics.jsonl, hf/ (its HF export)
    <run.dir>/ray_train/<stage>/     Ray Train's checkpoints of a learner stage
    <run.dir>/stages/<stage>.json    marker of a completed stage, with its outputs
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mpi_ray.config.loader import dump_config
from mpi_ray.config.schema import PipelineConfig


@dataclass(frozen=True)
class RunDir:
    root: Path

    @classmethod
    def at(cls, cfg: PipelineConfig) -> "RunDir":
        """The run directory of `cfg`, read-only: nothing is created or written (a dry run)."""
        return cls(Path(cfg.run.dir).expanduser().resolve())

    @classmethod
    def create(cls, cfg: PipelineConfig) -> "RunDir":
        run = cls.at(cfg)
        (run.root / "stages").mkdir(parents=True, exist_ok=True)
        (run.root / "config.yaml").write_text(dump_config(cfg))
        return run

    def stage_dir(self, stage: str) -> Path:
        return self.root / stage

    def marker(self, stage: str) -> Path:
        return self.root / "stages" / f"{stage}.json"

    def completed(self, stage: str) -> dict[str, Any] | None:
        path = self.marker(stage)
        return json.loads(path.read_text()) if path.exists() else None

    def mark_done(self, stage: str, outputs: dict[str, Any], seconds: float) -> None:
        body = {"stage": stage, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "seconds": round(seconds, 1), "outputs": outputs}
        self.marker(stage).write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")

    def clear_from(self, stages: list[str]) -> None:
        """Forget these stages: markers, work folders and Ray Train checkpoints (a redo starts fresh)."""
        for stage in stages:
            self.marker(stage).unlink(missing_ok=True)
            shutil.rmtree(self.stage_dir(stage), ignore_errors=True)
            shutil.rmtree(self.root / "ray_train" / stage, ignore_errors=True)
