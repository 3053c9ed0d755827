"""Ray's autoscaler adds worker nodes for a job and removes them once they are idle, on 127.0.0.1.

The cluster (tests/autoscaling_cluster.py) starts as a head with no CPUs for work, running Ray's v1
autoscaler with the fake multi-node provider and two worker types shrunk from cluster/aws.yaml:
`ray.worker.gpu` (CPU 2 with `learner_node` and `engine_node` standing in for the GPUs, at most 1) and
`ray.worker.cpu` (CPU 1, at most 2), idle timeout 6 s. The job is submitted through the head's job
server (`ray job submit`, token-authenticated like the rest of the suite) and asks for resources as the
pipeline's stages do: learner steps with `resources={"learner_node": 1}` (resources.learner_resources),
a rollout-engine actor with `{"engine_node": 1}` (resources.engine_resources) and plain CPU tasks (Ray
Data). Everything asserted comes from Ray itself: its node table through the state API (ray.util.state,
dead nodes included, with their start and end times and why they ended) and the provider's own record of
the nodes it launched and terminated. Nothing of Ray is mocked: the autoscaler starts and kills real
raylets. What it saw is printed (run with -s) as one `AUTOSCALING` line.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from autoscaling_cluster import (IDLE_TIMEOUT_MINUTES, WORKER_TYPES, AutoscalingCluster, live_nodes, peak_live,
                                 start_autoscaling_cluster)
from two_node_cluster import REPO

pytestmark = pytest.mark.slow

HEAD_ID = "f" * 51 + "00000"  # the head's node id under the fake provider (FAKE_HEAD_NODE_ID)
SHARDS = 4
STEPS = 2
PROMPTS = ["abc", "policy"]

JOB = f'''
"""Asks for resources as the pipeline's stages do, then prints what ran where as one RESULT line."""
import json, time

import ray

ray.init()
node_id = lambda: ray.get_runtime_context().get_node_id()


@ray.remote(num_cpus=1, resources={{"learner_node": 1}})  # a learner: trainer.scaling's resources_per_worker
class Learner:
    def step(self, step):
        time.sleep(0.5)
        return {{"step": step, "loss": 1.0 / (step + 1), "node": node_id()}}


@ray.remote(num_cpus=1, resources={{"engine_node": 1}})  # a rollout engine: pool.py's actor options
class Engine:
    def generate(self, prompt):
        return {{"text": prompt[::-1], "node": node_id()}}


@ray.remote(num_cpus=1)  # Ray Data's tasks ask for a CPU and nothing else
def shard(index):
    time.sleep(2)
    return {{"sum": sum(range(index * 100, (index + 1) * 100)), "node": node_id()}}


# The learner and the engine hold the gpu node's two CPUs for the whole job, as Ray Train's workers and
# the engines do for a stage: the data tasks need nodes of their own.
learner, engine = Learner.remote(), Engine.remote()
shards = [shard.remote(i) for i in range({SHARDS})]
generated = [engine.generate.remote(p) for p in {PROMPTS!r}]
steps = [learner.step.remote(s) for s in range({STEPS})]
print("RESULT " + json.dumps({{"shards": ray.get(shards), "generated": ray.get(generated), "steps": ray.get(steps)}}),
      flush=True)
'''


@pytest.fixture
def cluster(tmp_path: Path):
    started = time.monotonic()
    cluster = start_autoscaling_cluster(tmp_path / "cluster")
    cluster.start_s = time.monotonic() - started
    try:
        yield cluster
    finally:
        cluster.stop()


def _nodes(cluster: AutoscalingCluster) -> list:
    from ray.util.state import list_nodes

    return list_nodes(address=cluster.dashboard, detail=True, limit=1000, raise_on_missing_output=False)


def _wait(what: str, check, timeout_s: float, cluster: AutoscalingCluster):
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}; provider events:\n"
                                 f"{json.dumps(cluster.events(), indent=1)}")
        time.sleep(1)


@pytest.mark.timeout(600)
def test_autoscaler_adds_nodes_for_a_job_and_removes_them_when_idle(cluster: AutoscalingCluster, tmp_path: Path):
    from ray.job_submission import JobSubmissionClient

    # Before the job: the head alone, with no CPU for work; the provider has launched nothing.
    before = _wait("the head in Ray's node table", lambda: _nodes(cluster), 60, cluster)
    assert [(n.node_id, n.state, n.is_head_node, n.node_ip) for n in before] == [(HEAD_ID, "ALIVE", True, "127.0.0.1")]
    assert before[0].resources_total.get("CPU", 0) == 0
    assert cluster.events() == []

    job_file = tmp_path / "job.py"
    job_file.write_text(JOB)
    submission_id = f"autoscaling-{time.time_ns()}"
    submitted_at = time.time()
    job = subprocess.run(
        [str(Path(sys.executable).with_name("ray")), "job", "submit", "--address", cluster.dashboard,
         "--submission-id", submission_id, "--", "python", str(job_file)],
        cwd=REPO, capture_output=True, text=True, timeout=400)
    output = job.stdout + job.stderr
    assert job.returncode == 0, output[-6000:]
    info = JobSubmissionClient(cluster.dashboard).get_job_info(submission_id)
    assert info.status == "SUCCEEDED" and info.end_time, info
    ended_at = info.end_time / 1000

    # The job's results, and where they ran.
    result = json.loads(next(line for line in output.splitlines() if line.startswith("RESULT "))[len("RESULT "):])
    assert [s["sum"] for s in result["shards"]] == [sum(range(i * 100, (i + 1) * 100)) for i in range(SHARDS)]
    assert [g["text"] for g in result["generated"]] == [p[::-1] for p in PROMPTS]
    assert [(s["step"], s["loss"]) for s in result["steps"]] == [(i, 1.0 / (i + 1)) for i in range(STEPS)]

    # The autoscaler launched nodes of both types for it, on loopback, and they joined the cluster.
    launches = [e for e in cluster.events() if e["event"] == "launch"]
    launched_types = Counter(e["node_type"] for e in launches)
    assert set(launched_types) == set(WORKER_TYPES), launches
    peak = peak_live(cluster.events())
    assert all(peak[t] <= spec["max_workers"] for t, spec in WORKER_TYPES.items()), peak
    assert all(e["ip"] == "127.0.0.1" for e in launches), launches
    type_of = {e["node_id"]: e["node_type"] for e in launches}
    gpu_nodes = {n for n, t in type_of.items() if t == "ray.worker.gpu"}
    cpu_nodes = {n for n, t in type_of.items() if t == "ray.worker.cpu"}
    assert {s["node"] for s in result["steps"]} <= gpu_nodes  # the learner and the engine where learner_node /
    assert {g["node"] for g in result["generated"]} <= gpu_nodes  # engine_node are: the gpu type alone
    assert {s["node"] for s in result["shards"]} <= cpu_nodes  # no CPU left for them on the gpu node, none on the head

    # Once idle the autoscaler terminated every node it had added: Ray's table shows them dead, ended by
    # the autoscaler, the head alone alive; the provider has no worker node left.
    def scaled_down():
        nodes = _nodes(cluster)
        alive = [n for n in nodes if n.state == "ALIVE"]
        return nodes if not live_nodes(cluster.events()) and [n.node_id for n in alive] == [HEAD_ID] else None

    after = _wait("the added nodes to be terminated", scaled_down, 180, cluster)
    scaled_down_seen = time.time()
    failed = {e["node_id"] for e in cluster.events() if e["event"] == "failed"}  # killed before it joined
    added = {n.node_id: n for n in after if n.node_id != HEAD_ID and n.node_id not in failed}
    assert set(added) == set(type_of), (sorted(added), type_of)
    for node in added.values():
        assert node.node_ip == "127.0.0.1"
        assert node.state == "DEAD" and "Terminated by autoscaler" in (node.state_message or ""), node
        spec = WORKER_TYPES[type_of[node.node_id]]["resources"]
        assert {k: v for k, v in node.resources_total.items() if k in spec and k != "object_store_memory"} == {
            k: v for k, v in spec.items() if k != "object_store_memory"}
    terminations = {e["node_id"]: e for e in cluster.events() if e["event"] == "terminate"}
    assert set(terminations) == set(type_of)

    # The figures: seconds from the submission to each node joining, from the job's end to its removal.
    up = {n: added[n].start_time_ms / 1000 - submitted_at for n in added}
    down = {n: added[n].end_time_ms / 1000 - ended_at for n in added}
    figures = {
        "head_start_s": round(cluster.start_s, 1),
        "launched": dict(launched_types),
        "peak_nodes": peak,
        "job_s": round(ended_at - submitted_at, 1),
        "scale_up_s": {f"{type_of[n]}:{n[-5:]}": round(s, 1) for n, s in sorted(up.items())},
        "scale_down_s": {f"{type_of[n]}:{n[-5:]}": round(s, 1) for n, s in sorted(down.items())},
        "idle_timeout_s": IDLE_TIMEOUT_MINUTES * 60,
        "shards_on": dict(Counter(s["node"][-5:] for s in result["shards"])),
        "failed_launches": [e["node_type"] for e in cluster.events() if e["event"] == "failed"],
        "back_to_head_only_s": round(scaled_down_seen - ended_at, 1),
    }
    (tmp_path / "figures.json").write_text(json.dumps(figures, indent=1))
    print("AUTOSCALING " + json.dumps(figures))
    assert all(s > 0 for s in up.values()), figures  # every added node joined after the submission
