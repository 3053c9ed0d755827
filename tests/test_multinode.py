"""Two Ray nodes on one machine (a head and a second node, both on 127.0.0.1, each with its own raylet,
resources and object store; tests/two_node_cluster.py), and the pipeline submitted to them with
`ray job submit --working-dir .` as on a real cluster.

The head alone offers the custom resource `learner_node`, the second node alone `rollout_node`; the
job asks learners for the first and rollout engines for the second (resources.learner_resources /
engine_resources), so Ray can only place the Ray Train workers on the head and the vLLM engines on the
second node. The job completing is the proof that both roles ran, each on its own node.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, free_port

pytestmark = pytest.mark.slow

RAY = str(Path(sys.executable).with_name("ray"))
# Clients keep 127.0.0.1 too (else Ray swaps it for the machine's routable address, where nothing
# listens; see mpi_ray/cluster.py); token auth is off on this loopback-only cluster.
LOOPBACK_ENV = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled", "RAY_ADDRESS": ""}


def _wait_ready(cluster: subprocess.Popen, log: Path, timeout_s: float = 300) -> str:
    """The GCS address the harness prints once both nodes are up."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and cluster.poll() is None:
        ready = [line for line in log.read_text().splitlines() if line.startswith("READY ")]
        if ready:
            return ready[0].split()[1]
        time.sleep(1)
    raise AssertionError(f"the two-node cluster did not start:\n{log.read_text()[-4000:]}")


def _nodes(address: str) -> list[dict]:
    probe = ("import json, ray; ray.init(address=%r, log_to_driver=False); print(json.dumps([{'ip': n['NodeManagerAddress'], "
             "'resources': n['Resources']} for n in ray.nodes() if n['Alive']]))") % address
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, env=LOOPBACK_ENV)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_pipeline_job_places_learners_and_rollout_engines_on_two_nodes(tmp_path: Path) -> None:
    gcs_port = free_port()
    dashboard_port = free_port(above=gcs_port)
    agent_port = free_port(above=dashboard_port)
    cluster = subprocess.Popen(
        [sys.executable, "tests/two_node_cluster.py", "--port", str(gcs_port), "--dashboard-port", str(dashboard_port),
         "--agent-port", str(agent_port),
         "--head-cpus", "5", "--head-resources", '{"learner_node": 2}', "--node-cpus", "4",
         "--node-resources", '{"rollout_node": 2}'],
        cwd=REPO, env=LOOPBACK_ENV, stdin=subprocess.PIPE, stdout=(tmp_path / "cluster.log").open("w"),
        stderr=subprocess.STDOUT)
    try:
        alive = _nodes(_wait_ready(cluster, tmp_path / "cluster.log"))
        assert len(alive) == 2 and {n["ip"] for n in alive} == {"127.0.0.1"}
        assert sorted(k for n in alive for k in n["resources"] if k.endswith("_node")) == ["learner_node", "rollout_node"]

        overrides = [
            f"run.dir={tmp_path / 'run'}", "model.tiny.size=xs", "data.clevr.depth=2", "data.clevr.policies=2",
            "data.clevr.train_per_policy=8", "data.clevr.test=4", "data.clevr.cot_fraction=0.25",
            "rl.algorithm=poro-grpo", "rl.max_steps=2", "rl.rollout_batch=2", "rl.group_size=2", "rl.update_batch=8",
            "rl.micro_batch_per_worker=2", "rollout.engines=2", "rollout.max_response_len=16",
            "rollout.max_prompt_len=2048", "rl.max_seq_len=2048", "resources.learner_workers=2",
            "resources.learner_resources={learner_node: 1}", "resources.engine_resources={rollout_node: 1}",
        ]
        job = subprocess.run(
            [RAY, "job", "submit", "--address", f"http://127.0.0.1:{dashboard_port}", "--working-dir", ".", "--",
             sys.executable, "jobs/trimpi.py", "--stages", "model,data,rl", *overrides],  # the venv's python
            cwd=REPO, capture_output=True, text=True, timeout=1500, env=LOOPBACK_ENV)
        assert job.returncode == 0, (job.stdout + job.stderr)[-6000:]
        assert "joined Ray cluster at" in job.stdout
        marker = json.loads((tmp_path / "run" / "stages" / "rl.json").read_text())
        assert marker["outputs"]["rl_steps"] == 2
        assert len((tmp_path / "run" / "rl" / "metrics.jsonl").read_text().splitlines()) == 2
    finally:
        cluster.stdin.close()  # the harness shuts both nodes down
        try:
            cluster.wait(timeout=120)
        except subprocess.TimeoutExpired:
            cluster.kill()
