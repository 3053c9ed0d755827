"""A two-node Ray cluster on 127.0.0.1 for tests: a head (with the dashboard and job server) and a second
node, each a full set of Ray processes with its own raylet, resources and object store.

    python tests/two_node_cluster.py --port P --dashboard-port D --agent-port A --head-resources JSON --node-resources JSON

Prints "READY <gcs address>" once both nodes are up and runs until stdin closes or it gets SIGTERM,
then shuts both nodes down. It uses Ray's own multi-node harness (ray.cluster_utils.Cluster) because
`ray start --address` refuses 127.0.0.1: it either declares multi-node mode off or swaps loopback for
the machine's routable address, where these nodes do not listen. Token authentication follows the
environment (the test session sets RAY_AUTH_MODE=token and the token).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # loopback stays loopback (read at import)

from ray.cluster_utils import Cluster  # noqa: E402


def main() -> None:
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
    cluster.add_node(**loopback, num_cpus=args.node_cpus, resources=json.loads(args.node_resources))
    cluster.wait_for_nodes()
    print(f"READY {cluster.address}", flush=True)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        sys.stdin.read()  # until the test closes our stdin
    except KeyboardInterrupt:
        pass
    finally:
        cluster.shutdown()


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    main()
