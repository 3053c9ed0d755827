"""Shared fixtures: the tiny model built once per session, one loopback Ray cluster for the whole
session (two nodes, so placement across nodes is real), offline env.

Every slow test shares that cluster: in-process tests connect to it (`ray_local`), subprocess jobs join
it through RAY_ADDRESS or are submitted to its job server. Starting Ray once instead of once per job
is most of what keeps the suite inside CI's budget.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "1")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # keep local Ray on loopback (see mpi_ray/cluster.py)
# Token authentication on, as users get it (Ray 2.59+ turns it on for local clusters): the session
# cluster, every driver, job and `ray job submit` of the suite carry this session's token.
os.environ["RAY_AUTH_MODE"] = "token"
os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The xs tiny Qwen2.5-VL (about 0.8M parameters), built once for the whole session."""
    from mpi_ray.model.tiny import build_tiny

    return build_tiny(tmp_path_factory.mktemp("tiny") / "xs", size="xs", seed=0)


@dataclass
class SessionCluster:
    address: str  # GCS address: ray.init(address=...) and RAY_ADDRESS of subprocess jobs
    dashboard: str  # job server: ray job submit --address
    log: Path


# The head alone offers `learner_node`, the second node alone `rollout_node`: a job that asks learners
# for the first and engines for the second (resources.learner_resources / engine_resources) can only
# place them on different nodes. Jobs that ask for neither may land on either.
HEAD = {"cpus": 5, "resources": '{"learner_node": 4}'}
NODE = {"cpus": 4, "resources": '{"rollout_node": 4}'}


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SessionCluster]:
    """Two Ray nodes on 127.0.0.1 for the whole session; RAY_ADDRESS points every job at it."""
    gcs_port = free_port()
    dashboard_port = free_port(above=gcs_port)
    agent_port = free_port(above=dashboard_port)
    log = tmp_path_factory.mktemp("ray_cluster") / "cluster.log"
    env = {**os.environ, "RAY_ADDRESS": ""}
    harness = subprocess.Popen(
        [sys.executable, "tests/two_node_cluster.py", "--port", str(gcs_port), "--dashboard-port", str(dashboard_port),
         "--agent-port", str(agent_port), "--head-cpus", str(HEAD["cpus"]), "--head-resources", HEAD["resources"],
         "--node-cpus", str(NODE["cpus"]), "--node-resources", NODE["resources"]],
        cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        address = _wait_ready(harness, log)
        os.environ["RAY_ADDRESS"] = address
        yield SessionCluster(address, f"http://127.0.0.1:{dashboard_port}", log)
    finally:
        os.environ.pop("RAY_ADDRESS", None)
        harness.stdin.close()  # the harness shuts both nodes down
        try:
            harness.wait(timeout=120)
        except subprocess.TimeoutExpired:
            harness.kill()


def _wait_ready(harness: subprocess.Popen, log: Path, timeout_s: float = 300) -> str:
    """The GCS address the harness prints once both nodes are up."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and harness.poll() is None:
        ready = [line for line in log.read_text().splitlines() if line.startswith("READY ")]
        if ready:
            return ready[0].split()[1]
        time.sleep(0.5)
    raise AssertionError(f"the two-node Ray cluster did not start:\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="session")
def ray_local(ray_cluster: SessionCluster):
    """This pytest process as a driver of the session cluster."""
    import ray

    if not ray.is_initialized():
        ray.init(address=ray_cluster.address, log_to_driver=False)
    yield ray
    ray.shutdown()


def small_clevr(out: Path, *, variant: str, train_per_policy: int, test: int, general: int, cot_fraction: float,
                seed: int) -> Path:
    """A small depth-2 ClevrPolicy set of 2 policies and 112-pixel images, through the dataset CLI."""
    from mpi_ray.data.clevr_policy.__main__ import main

    argv = ["--depth", "2", "--variant", variant, "--out", str(out), "--policies", "2",
            "--train-per-policy", str(train_per_policy), "--test", str(test), "--general", str(general),
            "--cot-fraction", str(cot_fraction), "--image-size", "112", "--seed", str(seed)]
    assert main(argv) == 0
    return out


def free_port(above: int = 0) -> int:
    """A free port below the kernel's ephemeral range, where Ray picks its own ports at random: a port
    the OS hands out could be taken by a Ray process before the server binds it."""
    for port in range(max(above + 1, 28000 + os.getpid() % 1000), 30000):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 28000-29999")
