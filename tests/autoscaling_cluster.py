"""An autoscaling Ray cluster on 127.0.0.1 for tests: a head with no CPUs for work, and Ray's v1
autoscaler adding and removing worker nodes of the types a job asks for.

    python tests/autoscaling_cluster.py --port P --dashboard-port D --agent-port A --workdir DIR

Prints "READY <gcs address> <head's log dir>" once the head is up and runs until stdin closes or it
gets SIGTERM, then shuts the cluster down, worker nodes included.

The head is started the way `ray start --head --autoscaling-config=...` starts one, so the head itself
runs the autoscaler (ray/autoscaler/_private/monitor.py) in its own process, reading the config this
script writes. The config's provider is Ray's fake multi-node provider (FakeMultiNodeProvider: a
"node" is a full set of Ray processes on this machine, started and killed by the autoscaler), through
the subclass below. Why not Ray's own harness for this, ray.cluster_utils.AutoscalingCluster: it runs
`ray stop --force` (every Ray process of the user, other clusters included) and `ray start --head`,
which does not stay on loopback (see two_node_cluster.py); and the Ray 2.60 wheel lacks the
example.yaml it builds its config from. The head is started through ray.cluster_utils.Cluster, as in
two_node_cluster.py, with the environment `ray start --head` sets for the fake provider
(RAY_FAKE_CLUSTER=1, the fixed head node id the provider expects).

The subclass starts its nodes on 127.0.0.1 explicitly. The stock provider leaves a node's address to
Ray, which takes ray._private.services.get_node_ip_address(): the in-process node's address where there is
one (there is none in the autoscaler's process), else 127.0.0.1 only under
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (set here too) and otherwise the machine's routable address (here
192.0.2.2, where nothing of these clusters listens). It also appends what it does to
`<workdir>/provider_events.jsonl` (one JSON line per launch and termination: node id, type, address,
time, its processes' pids), the provider's own record for tests to read, and the list the harness
uses at exit to kill the processes of nodes the autoscaler had not terminated yet.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from two_node_cluster import REPO, _activated_env, free_port

TESTS = Path(__file__).resolve().parent

# Shrunk from cluster/aws.yaml: `ray.worker.gpu` ({"CPU": 96, "GPU": 8}; learners and rollout engines)
# becomes CPU-only, with the custom resources a job puts in resources.learner_resources /
# engine_resources standing in for the GPUs; `ray.worker.cpu` ({"CPU": 32}; Ray Data) becomes one CPU.
# Resources are logical: a node's processes share this machine's cores.
OBJECT_STORE = 96 * 1024 * 1024
WORKER_TYPES = {
    "ray.worker.gpu": {"resources": {"CPU": 2, "learner_node": 1, "engine_node": 1,
                                     "object_store_memory": OBJECT_STORE},
                       "node_config": {}, "min_workers": 0, "max_workers": 1},
    "ray.worker.cpu": {"resources": {"CPU": 1, "object_store_memory": OBJECT_STORE},
                       "node_config": {}, "min_workers": 0, "max_workers": 2},
}
# 15 s; cluster/aws.yaml keeps idle GPU nodes 10 minutes. A node counts as idle from its raylet's start,
# and here a node takes 5-30 s from then until its first task: at 6 s the autoscaler removed fresh nodes
# before their first task and launched new ones for the same tasks.
IDLE_TIMEOUT_MINUTES = 0.25
EVENTS = "provider_events.jsonl"


def autoscaling_config(gcs_address: str, events_file: Path) -> dict:
    """The autoscaler's config: the shape of Ray's fake_multi_node/example.yaml (the autoscaler reads it
    as written, with no defaults filled in, so every key is here)."""
    return {
        "cluster_name": "mpi-ray-loopback",
        "max_workers": sum(t["max_workers"] for t in WORKER_TYPES.values()),
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": IDLE_TIMEOUT_MINUTES,
        "provider": {
            "type": "external", "module": "autoscaling_cluster.LoopbackFakeMultiNodeProvider",
            "gcs_address": gcs_address, "events_file": str(events_file),
            "use_node_id_as_ip": True,  # many nodes share 127.0.0.1: the autoscaler tells them apart by node id
            "disable_node_updaters": True, "disable_launch_config_check": True,
        },
        "head_node_type": "ray.head.default",
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
            **WORKER_TYPES,
        },
        "auth": {}, "docker": {}, "initialization_commands": [], "setup_commands": [],
        "head_setup_commands": [], "worker_setup_commands": [], "head_start_ray_commands": [],
        "worker_start_ray_commands": [], "file_mounts": {}, "cluster_synced_files": [],
        "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
    }


def _provider_class():
    """Defined on first use: importing the provider imports Ray, which the harness must only import
    after it has set the environment Ray reads at import."""
    import ray
    from ray.autoscaler._private.fake_multi_node.node_provider import FakeMultiNodeProvider
    from ray.autoscaler.tags import (NODE_KIND_WORKER, STATUS_UP_TO_DATE, TAG_RAY_NODE_KIND, TAG_RAY_NODE_NAME,
                                     TAG_RAY_NODE_STATUS, TAG_RAY_USER_NODE_TYPE)

    class LoopbackFakeMultiNodeProvider(FakeMultiNodeProvider):
        """FakeMultiNodeProvider whose nodes listen on 127.0.0.1 and whose actions are logged."""

        def _create_node_with_resources_and_labels(self, node_config, tags, count, resources, labels):
            resources = dict(resources)
            node_type = tags[TAG_RAY_USER_NODE_TYPE]
            started = []

            class TrackedNode(ray._private.node.Node):
                def start_ray_processes(self):
                    started.append(self)
                    super().start_ray_processes()

            # Under the lock, as in the stock provider: nodes started side by side in one process pick the
            # same free ports (seen: a raylet dying on "bind: Address already in use").
            with self.lock:
                node_id = self._next_hex_node_id()
                params = ray._private.parameter.RayParams(
                    node_ip_address="127.0.0.1", gcs_address=self._gcs_address, redis_address=self._gcs_address,
                    min_worker_port=0, max_worker_port=0, node_manager_port=0, dashboard_agent_listen_port=None,
                    include_log_monitor=False,  # one log monitor per machine, as ray.cluster_utils.Cluster does
                    num_cpus=resources.pop("CPU", 0), num_gpus=resources.pop("GPU", 0),
                    object_store_memory=resources.pop("object_store_memory", None), resources=resources,
                    labels=labels,
                    env_vars={"RAY_OVERRIDE_NODE_ID_FOR_TESTING": node_id, "RAY_CLOUD_INSTANCE_ID": node_id,
                              "RAY_NODE_TYPE_NAME": node_type})
                try:
                    node = TrackedNode(params, head=False, shutdown_at_exit=False, spawn_reaper=False)
                except Exception:
                    # A node that did not register within Ray's 30 s (on a loaded machine its raylet can
                    # wait too long for its agents and abort): kill what it started, so that it cannot join
                    # later unknown to the provider. The autoscaler counts a failed launch and tries again.
                    for failed in started:
                        failed.kill_all_processes(check_alive=False, allow_graceful=False)
                    self._record("failed", node_id, node_type, None)
                    raise
                self._nodes[node_id] = {"node": node, "tags": {
                    TAG_RAY_NODE_KIND: NODE_KIND_WORKER, TAG_RAY_USER_NODE_TYPE: node_type,
                    TAG_RAY_NODE_NAME: node_id, TAG_RAY_NODE_STATUS: STATUS_UP_TO_DATE, **tags}}
                self._record("launch", node_id, node_type, node)

        def terminate_node(self, node_id):
            with self.lock:
                entry = self._nodes.get(node_id)
                super().terminate_node(node_id)
                if entry is not None:
                    self._record("terminate", node_id, entry["tags"][TAG_RAY_USER_NODE_TYPE], entry["node"])

        def _record(self, event: str, node_id: str, node_type: str, node) -> None:
            pids = [info.process.pid for infos in node.all_processes.values() for info in infos] if node else []
            line = {"event": event, "node_id": node_id, "node_type": node_type,
                    "ip": node.node_ip_address if node else None, "time": time.time(), "pids": pids}
            with open(self.provider_config["events_file"], "a") as f:
                f.write(json.dumps(line) + "\n")

    return LoopbackFakeMultiNodeProvider


def __getattr__(name: str):
    # The autoscaler loads the provider by its module path: `autoscaling_cluster.LoopbackFakeMultiNodeProvider`.
    if name == "LoopbackFakeMultiNodeProvider":
        return _provider_class()
    raise AttributeError(name)


def provider_events(events_file: Path) -> list[dict]:
    """The provider's log so far, oldest first."""
    if not events_file.exists():
        return []
    return [json.loads(line) for line in events_file.read_text().splitlines() if line.strip()]


def peak_live(events: list[dict]) -> dict[str, int]:
    """The most worker nodes of each type the provider had at once."""
    live: dict[str, str] = {}
    peak: dict[str, int] = {}
    for event in events:
        if event["event"] == "launch":
            live[event["node_id"]] = event["node_type"]
            peak[event["node_type"]] = max(peak.get(event["node_type"], 0),
                                           sum(t == event["node_type"] for t in live.values()))
        elif event["event"] == "terminate":
            live.pop(event["node_id"], None)
    return peak


def live_nodes(events: list[dict]) -> dict[str, dict]:
    """The provider's worker nodes not terminated yet (node id -> launch record): its non_terminated_nodes
    less the head."""
    live: dict[str, dict] = {}
    for event in events:
        if event["event"] == "launch":
            live[event["node_id"]] = event
        elif event["event"] == "terminate":
            live.pop(event["node_id"], None)
    return live


@dataclass
class AutoscalingCluster:
    """A running harness, seen from the process that started it."""

    process: subprocess.Popen
    address: str  # GCS address
    dashboard: str  # job server and state API: ray job submit --address, ray.util.state.list_nodes(address=)
    events_file: Path
    logs: Path  # the head's Ray logs: monitor.log is the autoscaler's
    log: Path

    def events(self) -> list[dict]:
        return provider_events(self.events_file)

    def autoscaler_log(self) -> str:
        return "".join(path.read_text() for path in sorted(self.logs.glob("monitor*.log")))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()  # the harness shuts the cluster down
            try:
                self.process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.process.kill()  # its head's processes go with it (Ray ties them to it), not the
                self.process.wait()  # autoscaler's nodes: kill those here
                _kill_leftover_nodes(self.events_file)


def start_autoscaling_cluster(workdir: Path, attempts: int = 3, timeout_s: float = 240) -> AutoscalingCluster:
    """Start the harness in a subprocess; return once the head is up. On a loaded 2-core machine a head
    can fail to start (its raylet aborts when its dashboard agent takes over 15 s to report its ports, and
    Ray gives a raylet 30 s to register): a failed harness takes its Ray processes with it, and the next
    attempt starts afresh on new ports."""
    errors = []
    for attempt in range(attempts):
        here = workdir / f"attempt{attempt}" if attempt else workdir
        here.mkdir(parents=True, exist_ok=True)
        try:
            return _start(here, timeout_s)
        except RuntimeError as error:
            errors.append(str(error))
    raise RuntimeError("\n\n".join(errors))


def _start(workdir: Path, timeout_s: float) -> AutoscalingCluster:
    gcs_port = free_port()
    dashboard_port = free_port(above=gcs_port)
    agent_port = free_port(above=dashboard_port)
    log = workdir / "harness.log"
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--port", str(gcs_port), "--dashboard-port",
         str(dashboard_port), "--agent-port", str(agent_port), "--workdir", str(workdir)],
        cwd=REPO, env=_activated_env(), stdin=subprocess.PIPE, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        ready = [line for line in log.read_text().splitlines() if line.startswith("READY ")]
        if ready:
            _, address, logs = ready[0].split()
            return AutoscalingCluster(process, address, f"http://127.0.0.1:{dashboard_port}", workdir / EVENTS,
                                      Path(logs), log)
        time.sleep(0.5)
    if process.poll() is None:
        process.stdin.close()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    raise RuntimeError(f"the autoscaling Ray cluster did not start:\n{log.read_text()[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dashboard-port", type=int, required=True)
    parser.add_argument("--agent-port", type=int, required=True)  # not 52365: another local cluster may hold it
    parser.add_argument("--workdir", type=Path, required=True)
    args = parser.parse_args()
    # Read by Ray at import, here and in the autoscaler process the head starts (it inherits them).
    os.environ.update({
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # loopback stays loopback
        "RAY_FAKE_CLUSTER": "1",  # FakeMultiNodeProvider refuses to start without it
        "RAY_enable_autoscaler_v2": "0",  # the v1 autoscaler (monitor.py)
        "AUTOSCALER_UPDATE_INTERVAL_S": "1",  # default 5 s between autoscaler rounds
        "PYTHONPATH": os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH", "")) if p),
    })
    from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID
    from ray.cluster_utils import Cluster

    gcs_address = f"127.0.0.1:{args.port}"
    events_file = args.workdir / EVENTS
    config_file = args.workdir / "autoscaling_config.json"  # the autoscaler reads it with yaml.safe_load
    config_file.write_text(json.dumps(autoscaling_config(gcs_address, events_file), indent=1))
    cluster = None
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        cluster = Cluster(initialize_head=True, head_node_args={
            "node_ip_address": "127.0.0.1", "gcs_server_port": args.port, "num_cpus": 0,
            "object_store_memory": OBJECT_STORE, "include_dashboard": True, "dashboard_host": "127.0.0.1",
            "dashboard_port": args.dashboard_port, "dashboard_agent_listen_port": args.agent_port,
            "autoscaling_config": str(config_file),
            # what `ray start --head` sets under RAY_FAKE_CLUSTER: the provider knows the head by this id
            "env_vars": {"RAY_OVERRIDE_NODE_ID_FOR_TESTING": FAKE_HEAD_NODE_ID}})
        print(f"READY {cluster.address} {cluster.head_node.get_logs_dir_path()}", flush=True)
        for _ in sys.stdin:  # until the starter closes our stdin
            pass
    except KeyboardInterrupt:
        pass
    finally:
        _kill_leftover_nodes(events_file)
        if cluster is not None:
            cluster.shutdown()


def _kill_leftover_nodes(events_file: Path) -> None:
    """Kill the processes of the worker nodes the autoscaler launched and has not terminated: they are
    the autoscaler's children, not the head's, and outlive it."""
    for node in live_nodes(provider_events(events_file)).values():
        for pid in node["pids"]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            print(f"killed {node['node_type']} {node['node_id'][-5:]} pid {pid}", flush=True)


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    main()
