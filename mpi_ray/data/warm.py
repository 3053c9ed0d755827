"""Encoding workers warmed ahead: the first learner stage's and the RL stage's Ray Data tasks find torch,
transformers and the processor already loaded.

A learner's encoding tasks are submitted from its Ray Train worker, so they run in the encoding pool
(streams.ENCODE_POOL_ENV) of that worker's runtime env; a cold process there spends 9-17 s on imports
and the processor before it encodes a row (a VM-CPT stage's first 512-row stream took 23.5 s to its
first batch, 1.8 s of it encoding). Ray reuses an idle worker only for a task whose *serialized*
runtime env is the same string, and a Ray Train worker's tasks carry the compact JSON of an env
merged from a parent's (its controller's), not the form a task submitted from the driver gets. So the
warm tasks are submitted the same way: from an actor carrying Ray Train's env, with that env and the
pool's again (for the RL producer, a plain actor: from a plain actor). `tests/test_learners_on_ray.py`
checks that a Ray Train worker's encoding task, and a plain actor's, land on a warmed process, so a Ray
upgrade that changes this fails there.
"""

from __future__ import annotations

import os
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from mpi_ray.data.streams import ENCODE_POOL_ENV, StreamSpec, _encoder


def train_worker_env_vars() -> dict[str, str] | None:
    """The env vars Ray Train (v2) gives its controller and workers; None if this Ray lays it out otherwise."""
    try:
        from ray._common.constants import RAY_WARN_BLOCKING_GET_INSIDE_ASYNC_ENV_VAR
        from ray.train.v2._internal.constants import (DEFAULT_RAY_WARN_BLOCKING_GET_INSIDE_ASYNC_VALUE,
                                                      get_env_vars_to_propagate)
    except ImportError:
        return None
    env = get_env_vars_to_propagate()
    env.setdefault(RAY_WARN_BLOCKING_GET_INSIDE_ASYNC_ENV_VAR, DEFAULT_RAY_WARN_BLOCKING_GET_INSIDE_ASYNC_VALUE)
    return env


@ray.remote(num_cpus=1)
def _load_encoder(spec: StreamSpec) -> int:
    _encoder(spec)  # the imports and the processor, kept by the process (lru_cache)
    return os.getpid()


@ray.remote(num_cpus=0)
class _Submitter:
    """Submits from inside an actor, as a Ray Train worker or the RL producer submits its stream's tasks."""

    def warm(self, spec: StreamSpec, count: int, parent_env_vars: dict[str, str], node_id: str) -> list[int]:
        options = {"runtime_env": {"env_vars": {**parent_env_vars, **ENCODE_POOL_ENV}},
                   "scheduling_strategy": NodeAffinitySchedulingStrategy(node_id, soft=True)}
        return ray.get([_load_encoder.options(**options).remote(spec) for _ in range(count)])


class WarmEncoders:
    """`count` processes on the driver's node (where a local run's learners and the RL producer are)
    loading the encoder for `spec`, started now; `pids()` waits for them. `ray_train`: for a Ray Train
    worker's streams (the learners'); False: for a plain actor's (the RL producer's)."""

    def __init__(self, spec: StreamSpec, count: int, ray_train: bool = True):
        parent = train_worker_env_vars() if ray_train else {}
        self.submitter = self.loading = None
        if count and parent is not None:
            self.submitter = _Submitter.options(**({"runtime_env": {"env_vars": parent}} if parent else {})).remote()
            self.loading = self.submitter.warm.remote(spec, count, parent, ray.get_runtime_context().get_node_id())

    def pids(self) -> list[int]:
        return ray.get(self.loading) if self.loading is not None else []

    def release(self) -> None:
        """The warmed processes stay in Ray's worker pool for the stage's tasks; only the submitter goes."""
        if self.submitter is not None:
            ray.kill(self.submitter)
            self.submitter = None
