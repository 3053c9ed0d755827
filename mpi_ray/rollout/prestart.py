"""Engines started ahead: the RL stage's vLLM engines start while the stage before it trains.

A vLLM engine takes about 20 s to start here (imports, model load, memory profiling), and the RL stage
used to start two of them only once the stage before it had finished. That stage (CoT-SFT in the
default) trains on one learner thread, so a core sits idle beside it: with `rollout.prestart` the
engines start there, from the model that stage starts from (an earlier checkpoint of the same
architecture and tokenizer), and the RL stage installs its own start weights in them in place
(`RolloutEngine.load_start_weights`, the reload eval uses to swap checkpoints) instead of starting
new ones. After RL the same engines go on to the eval stage (`handed_on`), which swaps the run's
checkpoints into them in place instead of starting an engine of its own. Engines nobody claims are
killed when the pipeline ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ray

from mpi_ray.config.schema import PipelineConfig
from mpi_ray.model.loading import image_bounds
from mpi_ray.rollout.engine import engine_key
from mpi_ray.rollout.pool import engine_name, engine_options, launch_engine

NAME_PREFIX = "mpi-ray-rollout-ahead"


@dataclass
class StartedEngines:
    """Engine actors starting (or up) from `model_path`; `key` is its engine_key. `max_model_len` and
    `max_images`: the most one request may hold (prompt + response tokens, images)."""

    model_path: str
    key: str
    engines: list[Any]
    max_model_len: int = 0
    max_images: int = 0

    def serves(self, model_path: str) -> bool:
        """Whether these engines can take `model_path`'s weights in place."""
        return engine_key(model_path) == self.key

    def handed_on(self, model_path: str) -> StartedEngines | None:
        """These engines, for the next stage to swap checkpoints into (they hold `model_path`'s weights now),
        if every one is alive; otherwise they are released and None is returned."""
        if not self.engines:
            return None
        try:
            ray.get([engine.get_version.remote() for engine in self.engines], timeout=30)
        except Exception:  # noqa: BLE001 - one died (and RL replaced it): start afresh where needed
            self.release()
            return None
        handed = StartedEngines(model_path, self.key, self.engines, self.max_model_len, self.max_images)
        self.engines = []
        return handed

    def release(self) -> None:
        """Kill the engines (those a pool took over may be gone already)."""
        for engine in self.engines:
            try:
                ray.kill(engine)
            except Exception:  # noqa: BLE001 - already dead
                pass
        self.engines = []


def start_engines(cfg: PipelineConfig, model_path: str, max_images: int) -> StartedEngines:
    """Launch the RL pool's engines (the settings RolloutPool would use) without waiting for them."""
    res = cfg.resources
    engines = [launch_engine(engine_options(engine_name(NAME_PREFIX, index, 0), res), model_path, cfg.rollout,
                             cfg.run.seed + index, max_images, res.use_gpu,
                             image_bounds(cfg.model.min_pixels, cfg.model.max_pixels))
               for index in range(cfg.rollout.engines)]
    return StartedEngines(model_path, engine_key(model_path), engines,
                          cfg.rollout.max_prompt_len + cfg.rollout.max_response_len, max_images)
