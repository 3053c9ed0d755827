"""`jobs/serve.py` started as a user starts it, joined to a local Ray on 127.0.0.1, for the benchmarks
that send it traffic; stopped with SIGTERM (its clean shutdown) when the block ends."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import mpi_ray.cluster  # noqa: E402,F401  (loopback Ray)
import ray  # noqa: E402
from two_node_cluster import free_port  # noqa: E402


@contextlib.contextmanager
def serving(checkpoint: str, overrides: list[str], log: Path, ready_timeout_s: float = 900) -> Iterator[str]:
    """Yields the endpoint's base URL once it answers; a local Ray is up for the block's duration."""
    context = ray.init(address="local", num_cpus=8, _node_ip_address="127.0.0.1", include_dashboard=False)
    port = free_port()
    # Without this process's VLLM_* settings (an in-process engine's, say): Serve runs with its own.
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("VLLM_")}, "RAY_ADDRESS": context.address_info["address"]}
    server = subprocess.Popen([sys.executable, "jobs/serve.py", "--checkpoint", checkpoint, "--port", str(port), *overrides],
                              cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        started = time.monotonic()
        while "serving " not in log.read_text():
            if server.poll() is not None or time.monotonic() - started > ready_timeout_s:
                raise RuntimeError("jobs/serve.py did not come up:\n" + log.read_text()[-3000:])
            time.sleep(2)
        print(f"serve up in {time.monotonic() - started:.0f}s ({checkpoint})", flush=True)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        ray.shutdown()
