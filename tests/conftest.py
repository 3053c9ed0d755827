"""Shared fixtures: the tiny model built once per session, one loopback Ray cluster for the whole
session (two nodes, so placement across nodes is real), offline env.

Every slow test shares that cluster: in-process tests connect to it (`ray_local`), subprocess jobs join
it through RAY_ADDRESS or are submitted to its job server. Starting Ray once instead of once per job
is most of what keeps the suite inside CI's budget.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from two_node_cluster import REPO, TwoNodeCluster, free_port, start_cluster  # noqa: F401 - REPO, free_port: for tests

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "1")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # keep local Ray on loopback (see mpi_ray/cluster.py)
# Token authentication on, as users get it (Ray 2.59+ turns it on for local clusters): the session
# cluster, every driver, job and `ray job submit` of the suite carry this session's token.
os.environ["RAY_AUTH_MODE"] = "token"
os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)

# The bound on one hostile input in the hang guards (catastrophic regex backtracking, 9**9**9, deep
# nesting): those take minutes when they go wrong and milliseconds when right. Seconds, not a
# performance figure: CI machines run 2-3x slower on some days (a 0.5 s bound failed at 0.79 s).
HANG_GUARD_S = 5.0


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The xs tiny Qwen2.5-VL (about 0.8M parameters), built once for the whole session."""
    from mpi_ray.model.tiny import build_tiny

    return build_tiny(tmp_path_factory.mktemp("tiny") / "xs", size="xs", seed=0)


# The head alone offers `learner_node`, the second node alone `rollout_node`: a job that asks learners
# for the first and engines for the second (resources.learner_resources / engine_resources) can only
# place them on different nodes. Jobs that ask for neither may land on either.
HEAD = {"cpus": 5, "resources": '{"learner_node": 4}'}
NODE = {"cpus": 4, "resources": '{"rollout_node": 4}'}


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoNodeCluster]:
    """Two Ray nodes on 127.0.0.1 for the whole session; RAY_ADDRESS points every job at it."""
    log = tmp_path_factory.mktemp("ray_cluster") / "cluster.log"
    cluster = start_cluster(log, HEAD["cpus"], HEAD["resources"], NODE["cpus"], NODE["resources"])
    try:
        os.environ["RAY_ADDRESS"] = cluster.address
        yield cluster
    finally:
        os.environ.pop("RAY_ADDRESS", None)
        cluster.stop()


@pytest.fixture(scope="session")
def ray_local(ray_cluster: TwoNodeCluster):
    """This pytest process as a driver of the session cluster."""
    import ray

    if not ray.is_initialized():
        ray.init(address=ray_cluster.address, log_to_driver=False)
    yield ray
    ray.shutdown()


# GTAPolicy through every stage, short (tests/test_gta_pipeline.py checks the run, tests/test_serve.py
# serves its export): the committed tiny base, configs/gta_policy_tiny.yaml, a few steps of each stage.
GTA_STAGES = "model,data,cpt,sft,rl,eval,export"
GTA_OVERRIDES = [
    "data.gta.train=16", "data.gta.test=4",
    "cpt.batch_size_per_worker=2", "cpt.max_steps=2", "cpt.checkpoint_every=2",
    "sft.batch_size_per_worker=2", "sft.max_steps=2", "sft.epochs=1",
    "rl.max_steps=2", "rl.rollout_batch=2", "rl.group_size=2", "rl.update_batch=8", "rl.micro_batch_per_worker=2",
    "rollout.engines=1", "rollout.max_response_len=32", "resources.learner_workers=1",
    "eval.max_samples=4", "eval.max_response_len=32", "eval.efficiency_samples=2", "eval.efficiency_repeats=1",
]


@pytest.fixture(scope="session")
def gta_run(ray_cluster: TwoNodeCluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The short GTAPolicy run, once a session, on the session cluster."""
    run_dir = tmp_path_factory.mktemp("gta") / "run"
    job = subprocess.run([sys.executable, "jobs/trimpi.py", "--config", "configs/gta_policy_tiny.yaml", "--stages",
                          GTA_STAGES, f"run.dir={run_dir}", *GTA_OVERRIDES],
                         cwd=REPO, capture_output=True, text=True, timeout=1200)
    (run_dir.parent / "job.log").write_text(job.stdout + job.stderr)
    assert job.returncode == 0, (job.stdout + job.stderr)[-6000:]
    return run_dir


def small_clevr(out: Path, *, variant: str, train_per_policy: int, test: int, general: int, cot_fraction: float,
                seed: int) -> Path:
    """A small depth-2 ClevrPolicy set of 2 policies and 112-pixel images, through the dataset CLI."""
    from mpi_ray.data.clevr_policy.__main__ import main

    argv = ["--depth", "2", "--variant", variant, "--out", str(out), "--policies", "2",
            "--train-per-policy", str(train_per_policy), "--test", str(test), "--general", str(general),
            "--cot-fraction", str(cot_fraction), "--image-size", "112", "--seed", str(seed)]
    assert main(argv) == 0
    return out
