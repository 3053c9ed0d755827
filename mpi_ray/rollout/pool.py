"""The rollout pool: N vLLM engine actors behind one call, with weight sync and restarts.

`generate` spreads prompts over the engines and gathers the samples in prompt order. An engine that
dies is replaced by a fresh actor that first loads the latest weights (so it never samples with the
start-of-RL weights by accident; Ray's own actor restart would do exactly that), then its prompts are
re-issued. Every result is checked to carry the version the pool expects.

Placement: one actor per engine with `resources.cpus_per_engine` / `gpus_per_engine`; with
`rollout.tensor_parallel` > 1 each engine gets a placement group of one GPU bundle per shard and vLLM
starts its tensor-parallel workers inside it (Ray executor).
"""

from __future__ import annotations

import time
from typing import Any

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from mpi_ray.cluster import engine_actor_options
from mpi_ray.config.schema import ResourcesConfig, RolloutConfig
from mpi_ray.rollout.engine import RolloutActor
from mpi_ray.rollout.weight_sync import verify


def engine_options(name: str, resources: ResourcesConfig) -> dict[str, Any]:
    """Ray options of one engine actor of one GPU at most (tensor parallelism: see RolloutPool._start)."""
    return {"name": name, "num_cpus": resources.cpus_per_engine, "max_restarts": 0,
            "resources": dict(resources.engine_resources), **engine_actor_options(resources.use_gpu),
            **({"num_gpus": resources.gpus_per_engine} if resources.use_gpu else {})}


def launch_engine(options: dict[str, Any], model_path: str, rollout: RolloutConfig, seed: int, max_images: int,
                  use_gpu: bool, pixel_bounds: dict[str, int] | None) -> Any:
    """One engine actor, starting (not waited for)."""
    return RolloutActor.options(**options).remote(model_path, rollout, seed, max_images, "bfloat16" if use_gpu else "float32",
                                                  pixel_bounds)


def engine_name(prefix: str, index: int, restarts: int) -> str:
    return f"{prefix}-{index}.{restarts}"


class RolloutPool:
    def __init__(self, model_path: str, rollout: RolloutConfig, resources: ResourcesConfig, seed: int,
                 max_images: int, name_prefix: str = "mpi-ray-rollout", pixel_bounds: dict[str, int] | None = None,
                 started: list[Any] | None = None):
        """`started`: engines launched ahead (rollout.prestart, `mpi_ray.rollout.prestart`) from another
        checkpoint of the same architecture, with these same settings; they take `model_path`'s weights here."""
        self.model_path, self.rollout, self.resources, self.pixel_bounds = model_path, rollout, resources, pixel_bounds
        self.seed, self.max_images, self.name_prefix = seed, max_images, name_prefix
        self.version = 0
        self.update_info: dict[str, Any] | None = None  # the object-store update of `version` (None: the start weights)
        self.restarts = 0
        self.placement_groups: list[Any] = [None] * rollout.engines
        self.adopted = set(started or [])  # their launcher kills (or hands on) them
        if started:
            self.engines = list(started)
            ray.get([engine.load_start_weights.remote(model_path) for engine in self.engines])
        else:
            self.engines = [self._start(index) for index in range(rollout.engines)]
        ray.get([engine.get_version.remote() for engine in self.engines])  # wait until every engine is up

    def _start(self, index: int) -> Any:
        res, rollout = self.resources, self.rollout
        # The name carries the restart count: a killed actor's name is not free at once.
        options = engine_options(engine_name(self.name_prefix, index, self.restarts), res)
        if res.use_gpu and rollout.tensor_parallel > 1:
            if self.placement_groups[index] is None:
                bundles = [{"GPU": 1, "CPU": res.cpus_per_engine, **res.engine_resources}] * rollout.tensor_parallel
                self.placement_groups[index] = placement_group(bundles, strategy="PACK")
                ray.get(self.placement_groups[index].ready())
            options["num_gpus"] = 0
            options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                self.placement_groups[index], placement_group_capture_child_tasks=True)
        engine = launch_engine(options, self.model_path, rollout, self.seed + index, self.max_images, res.use_gpu,
                               self.pixel_bounds)
        if self.update_info is not None:
            engine.apply_weight_update.remote(self.update_info, self.version)  # queued before any generate
        return engine

    def _replace(self, index: int, error: Exception) -> None:
        if self.rollout.weight_sync != "object_store":
            # a new engine cannot join the running nccl/ipc transfer group, and would sample stale weights
            raise RuntimeError(f"rollout engine {index} died ({type(error).__name__}); with rollout.weight_sync="
                               f"{self.rollout.weight_sync} it cannot be replaced mid-stage: resume the run") from error
        self.restarts += 1
        print(f"[rollout] engine {index} died ({type(error).__name__}); starting a replacement with weights "
              f"v{self.version} and re-issuing its prompts", flush=True)
        try:
            ray.kill(self.engines[index])
        except Exception:  # noqa: BLE001 - it is already gone
            pass
        self.engines[index] = self._start(index)

    def take_weights(self, update_info: dict[str, Any] | None, version: int, probe: list[float] | None) -> tuple[float, float | None]:
        """Every engine holds the weights of `version`: an object-store update is installed here; with None the
        learners sent them straight in (nccl, ipc) and each engine's version must say so. Then, with `probe`
        (the learner's probe log-probs) and rollout.verify_sync, proves it. Returns (seconds, max probe diff)."""
        start = time.perf_counter()
        self.version = version
        if update_info is None:
            held = ray.get([engine.get_version.remote() for engine in self.engines])
            if any(v != version for v in held):
                raise RuntimeError(f"the learners published weights v{version}, the engines hold {held}")
        else:
            self.update_info = update_info
            if self.rollout.colocate:
                self.wake_up(["weights"])  # the update writes into them
            loads = [engine.apply_weight_update.remote(update_info, version) for engine in self.engines]
            for index, load in enumerate(loads):
                try:
                    ray.get(load)
                except ray.exceptions.RayActorError as error:
                    self._replace(index, error)
        seconds = time.perf_counter() - start
        if probe is None or not self.rollout.verify_sync:
            return seconds, None
        return seconds, verify(self.engines, probe, self.rollout.verify_sync_tol)

    def sleep(self) -> None:
        """rollout.colocate: every engine frees its GPU memory for the learners' update."""
        ray.get([engine.sleep.remote() for engine in self.engines])

    def wake_up(self, tags: list[str] | None = None) -> None:
        ray.get([engine.wake_up.remote(tags) for engine in self.engines])

    def generate(self, prompts: list[dict[str, Any]], n: int, kill_engine: int | None = None) -> list[list[dict[str, Any]]]:
        """n samples for each prompt, in prompt order. `kill_engine` (drill): that engine dies mid-call."""
        chunks = [list(range(len(prompts)))[i:: len(self.engines)] for i in range(len(self.engines))]
        pending = {index: self.engines[index].generate.remote([prompts[j] for j in chunk], n)
                   for index, chunk in enumerate(chunks) if chunk}
        if kill_engine is not None:
            ray.kill(self.engines[kill_engine], no_restart=True)
        samples: list[list[dict[str, Any]] | None] = [None] * len(prompts)
        attempts = 0
        while pending:
            index, ref = pending.popitem()
            try:
                result = ray.get(ref)
            except ray.exceptions.RayActorError as error:
                attempts += 1
                if attempts > self.rollout.max_engine_restarts:
                    raise RuntimeError(f"rollout engines died {attempts} times in one call "
                                       f"(rollout.max_engine_restarts={self.rollout.max_engine_restarts})") from error
                self._replace(index, error)
                pending[index] = self.engines[index].generate.remote([prompts[j] for j in chunks[index]], n)
                continue
            if result["version"] != self.version:
                raise RuntimeError(f"engine {index} sampled with weights v{result['version']}, the pool holds v{self.version}")
            for j, prompt_samples in zip(chunks[index], result["samples"]):
                samples[j] = prompt_samples
        missing = [j for j, s in enumerate(samples) if s is None]
        if missing:
            raise RuntimeError(f"the rollout engines returned no samples for prompts {missing[:5]}")
        return samples  # type: ignore[return-value]

    def shutdown(self) -> None:
        for engine in self.engines:
            if engine not in self.adopted:  # handles compare by actor id
                ray.kill(engine)
        for group in self.placement_groups:
            if group is not None:
                remove_placement_group(group)
