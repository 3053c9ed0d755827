"""Ray's autoscaler adds worker nodes for a job and removes them once they are idle, on 127.0.0.1.

The cluster (tests/autoscaling_cluster.py) starts as a head with no CPUs for work that runs Ray's v1
autoscaler with the fake multi-node provider and two worker types shrunk from cluster/aws.yaml:
`ray.worker.gpu` (CPU 2, with `learner_node` and `engine_node` standing in for the GPUs; at most 1) and
`ray.worker.cpu` (CPU 1; at most 2), idle timeout 15 s. The job is submitted to the head's job server
with `ray job submit` (token-authenticated like the rest of the suite; the driver runs on the head) and
asks for resources as the pipeline's stages do: a learner actor with `resources={"learner_node": 1}`
(resources.learner_resources), a rollout-engine actor with `{"engine_node": 1}`
(resources.engine_resources), then plain CPU tasks (Ray Data). What is asserted comes from Ray itself:
its node table through the state API (ray.util.state, dead nodes included, with start and end times),
the autoscaler's log (why it terminated each node) and the provider's own record of the nodes it
launched and terminated. Nothing of Ray is mocked: the autoscaler starts and kills real raylets. The
figures are printed as one `AUTOSCALING {...}` line and kept in figures.json beside the test's files.
"""

from __future__ import annotations

import json
import re
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
    def ready(self):
        return node_id()

    def step(self, step):
        time.sleep(0.5)
        return {{"step": step, "loss": 1.0 / (step + 1), "node": node_id()}}


@ray.remote(num_cpus=1, resources={{"engine_node": 1}})  # a rollout engine: pool.py's actor options
class Engine:
    def ready(self):
        return node_id()

    def generate(self, prompt):
        return {{"text": prompt[::-1], "node": node_id()}}


@ray.remote(num_cpus=1)  # Ray Data's tasks ask for a CPU and nothing else
def shard(index):
    time.sleep(2)
    return {{"sum": sum(range(index * 100, (index + 1) * 100)), "node": node_id()}}


# The learner and the engine hold the gpu node's two CPUs for the whole job, as Ray Train's workers and
# the engines do for a stage; once they are placed, the data tasks can only run on nodes of their own.
learner, engine = Learner.remote(), Engine.remote()
ray.get([learner.ready.remote(), engine.ready.remote()])
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
    """Ray's node table, dead nodes included, through the head's state API."""
    from ray.util.state import list_nodes

    return list_nodes(address=cluster.dashboard, detail=True, limit=1000, raise_on_missing_output=False)


def _wait(what: str, check, timeout_s: float, cluster: AutoscalingCluster):
    deadline = time.monotonic() + timeout_s
    error = None
    while True:
        try:
            value = check()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - the state API while the dashboard starts on a loaded machine
            error = e
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what} (last error: {error!r}); "
                                 f"provider events:\n{json.dumps(cluster.events(), indent=1)}")
        time.sleep(1)


@pytest.mark.timeout(600)
def test_autoscaler_adds_nodes_for_a_job_and_removes_them_when_idle(cluster: AutoscalingCluster, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture):
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
    peak = peak_live(cluster.events())  # may pass max_workers for a moment: the autoscaler then removes the extra
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
    autoscaler_log = cluster.autoscaler_log()
    failed = {e["node_id"] for e in cluster.events() if e["event"] == "failed"}  # killed before it joined
    added = {n.node_id: n for n in after if n.node_id != HEAD_ID and n.node_id not in failed}
    assert set(added) == set(type_of), (sorted(added), type_of)
    for node in added.values():
        assert node.node_ip == "127.0.0.1"
        assert node.state == "DEAD", node
        spec = WORKER_TYPES[type_of[node.node_id]]["resources"]
        assert {k: v for k, v in node.resources_total.items() if k in spec and k != "object_store_memory"} == {
            k: v for k, v in spec.items() if k != "object_store_memory"}
    terminations = {e["node_id"]: e for e in cluster.events() if e["event"] == "terminate"}
    assert set(terminations) == set(type_of)
    # Why, in the autoscaler's words: "idle" past idle_timeout_minutes (or "max_workers_per_type" for one it
    # launched too many of while an earlier launch was still starting)
    reasons = dict(re.findall(r"Terminating the node with id (\w+) and ip \S+ \((\w+)\)", autoscaler_log))
    assert set(reasons) == set(type_of), (reasons, type_of)
    assert {type_of[n] for n, why in reasons.items() if why == "idle"} == set(WORKER_TYPES), reasons

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
        "removed_because": dict(Counter(reasons.values())),
        # Ray's word on each: "Terminated by autoscaler" when the autoscaler drained it first, "received
        # SIGTERM" when it went straight to the provider's kill
        "ended_as": dict(Counter(n.state_message for n in added.values())),
        "failed_launches": [e["node_type"] for e in cluster.events() if e["event"] == "failed"],
        "back_to_head_only_s": round(scaled_down_seen - ended_at, 1),
    }
    (tmp_path / "figures.json").write_text(json.dumps(figures, indent=1))
    with capsys.disabled():  # shown without -s
        print("\nAUTOSCALING " + json.dumps(figures))
    assert all(s > 0 for s in up.values()), figures  # every added node joined after the submission
