"""Shared fixtures: the tiny model built once per session, a loopback Ray cluster, offline env."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "1")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # keep local Ray on loopback (see mpi_ray/cluster.py)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The xs tiny Qwen2.5-VL (about 0.8M parameters), built once for the whole session."""
    from mpi_ray.model.tiny import build_tiny

    return build_tiny(tmp_path_factory.mktemp("tiny") / "xs", size="xs", seed=0)


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray cluster bound to loopback, shut down at the end of the session."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=8, _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False)
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
