"""A two-node Ray cluster on 127.0.0.1 for tests and drills: a head (with the dashboard and job server)
and a second node, each a full set of Ray processes with its own raylet, resources and object store.

    python tests/two_node_cluster.py --port P --dashboard-port D --agent-port A --head-resources JSON --node-resources JSON

Prints "READY <gcs address>" once both nodes are up and runs until stdin closes or it gets SIGTERM,
then shuts both nodes down. Lines on stdin drive node faults (benchmarks/fault_drills.py): `kill-node`
kills the second node's processes at once (no graceful drain), `add-node` adds a fresh node with the
second node's resources, as an autoscaler replacing a lost node would; each answers `DONE <command>`.

It uses Ray's own multi-node harness (ray.cluster_utils.Cluster) because `ray start --address` refuses
127.0.0.1: it either declares multi-node mode off or swaps loopback for the machine's routable
address, where these nodes do not listen. Token authentication follows the environment (the test
session sets RAY_AUTH_MODE=token and the token). `start_cluster` runs this script from another process.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass
class TwoNodeCluster:
    """A running harness, seen from the process that started it."""

    process: subprocess.Popen
    address: str  # GCS address: ray.init(address=...) and RAY_ADDRESS of subprocess jobs
    dashboard: str  # job server: ray job submit --address
    log: Path

    def command(self, command: str, timeout_s: float = 300) -> None:
        """Send `kill-node` or `add-node` and wait until the harness has done it."""
        done = self.log.read_text().count(f"DONE {command}\n") + 1
        self.process.stdin.write(f"{command}\n".encode())
        self.process.stdin.flush()
        deadline = time.monotonic() + timeout_s
        while self.log.read_text().count(f"DONE {command}\n") < done:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"the cluster harness did not finish {command}:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.5)

    def stop(self) -> None:
        self.process.stdin.close()  # the harness shuts both nodes down
        try:
            self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_cluster(log: Path, head_cpus: int, head_resources: str, node_cpus: int, node_resources: str,
                  timeout_s: float = 300) -> TwoNodeCluster:
    """Start the harness in a subprocess; return once both nodes are up."""
    gcs_port = free_port()
    dashboard_port = free_port(above=gcs_port)
    agent_port = free_port(above=dashboard_port)
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--port", str(gcs_port), "--dashboard-port", str(dashboard_port),
         "--agent-port", str(agent_port), "--head-cpus", str(head_cpus), "--head-resources", head_resources,
         "--node-cpus", str(node_cpus), "--node-resources", node_resources],
        cwd=REPO, env=_activated_env(), stdin=subprocess.PIPE, stdout=log.open("w"),
        stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        ready = [line for line in log.read_text().splitlines() if line.startswith("READY ")]
        if ready:
            return TwoNodeCluster(process, ready[0].split()[1], f"http://127.0.0.1:{dashboard_port}", log)
        time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"the two-node Ray cluster did not start:\n{log.read_text()[-4000:]}")


def _activated_env() -> dict[str, str]:
    """This environment as after `source .venv/bin/activate` (what the README asks of a head): a job's
    `python` is then the venv's, whoever started pytest."""
    venv_bin = Path(sys.executable).parent
    return {**os.environ, "RAY_ADDRESS": "", "VIRTUAL_ENV": str(venv_bin.parent),
            "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}"}


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


def main() -> None:
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # loopback stays loopback (read at import)
    from ray.cluster_utils import Cluster

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dashboard-port", type=int, required=True)
    parser.add_argument("--agent-port", type=int, required=True)  # not the default 52365: another local cluster may hold it
    parser.add_argument("--head-cpus", type=int, default=4)
    parser.add_argument("--node-cpus", type=int, default=4)
    parser.add_argument("--head-resources", default="{}")
    parser.add_argument("--node-resources", default="{}")
    args = parser.parse_args()
    loopback = {"node_ip_address": "127.0.0.1", "object_store_memory": 512 * 1024 * 1024}
    cluster = Cluster(initialize_head=True, head_node_args={
        **loopback, "gcs_server_port": args.port, "num_cpus": args.head_cpus, "resources": json.loads(args.head_resources),
        "include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": args.dashboard_port,
        "dashboard_agent_listen_port": args.agent_port})
    node_args = {**loopback, "num_cpus": args.node_cpus, "resources": json.loads(args.node_resources)}
    node = cluster.add_node(**node_args)
    cluster.wait_for_nodes()
    print(f"READY {cluster.address}", flush=True)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        for line in sys.stdin:  # until the starter closes our stdin
            command = line.strip()
            if command == "kill-node":
                cluster.remove_node(node, allow_graceful=False)
            elif command == "add-node":
                node = cluster.add_node(**node_args)
                cluster.wait_for_nodes()
            print(f"DONE {command}", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        cluster.shutdown()


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    main()
