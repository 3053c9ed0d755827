"""Weight sync, old path against new, side by side on one engine per model size.

    python benchmarks/bench_weight_sync.py [--sizes xs,s,m,l] [--repeats 3] [--chunk-mb 256]

- old: what RL did until 2026-12-03: the learner clones its state dict and puts it into the object store
  as one object; the engine resolves it, `torch.save`s it to bytes and sends the bytes through
  `collective_rpc` to its worker, which `torch.load`s them and reloads in place.
- new: vLLM's weight-transfer protocol with the object-store backend (mpi_ray/rollout/weight_transfer.py):
  the learner packs the weights into flat chunks put once each; the worker reads each chunk in place
  from shared memory and loads it through vLLM's layerwise reload.

Per size and path: the learner's seconds (clone/pack and put) and the engine's seconds (install), the
median over `--repeats` syncs; and the engine process's largest memory growth during a sync (sampled
every 10 ms): private (USS, what this engine alone holds: its copies) and resident (RSS, which also
counts the pages of the shared object store it reads, one copy per node whatever the engines). Each engine is a real vLLM engine in a Ray actor on the tiny
Qwen2.5-VL of that size (`l`: about 100M parameters, the tiny recipe with wider and deeper dims).
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import mpi_ray.cluster  # noqa: F401  (loopback Ray)
import psutil
import ray
import torch
from mpi_ray.config.schema import RolloutConfig
from mpi_ray.model.loading import load_model
from mpi_ray.model.tiny import build_tiny
from mpi_ray.rollout.engine import RolloutEngine
from mpi_ray.rollout.weight_transfer import StateDictSource, trainer_engine


def _old_worker_load(worker: Any, payload: bytes) -> int:
    """The old worker extension's method, as it was: bytes in, torch.load, in-place reload."""
    named = torch.load(io.BytesIO(payload), weights_only=True)
    worker.reload_weights(weights_iterator=iter(named))
    return len(named)


class PeakMemory:
    """The process's peak memory above where it stood at entry, sampled every 10 ms: private (USS: what
    this engine alone holds) and resident (RSS: also counts the shared object-store pages it touched)."""

    def __enter__(self) -> "PeakMemory":
        self.process = psutil.Process()
        info = self.process.memory_full_info()
        self.base_uss = self.peak_uss = info.uss
        self.base_rss = self.peak_rss = info.rss
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _take(self) -> None:
        info = self.process.memory_full_info()
        self.peak_uss, self.peak_rss = max(self.peak_uss, info.uss), max(self.peak_rss, info.rss)

    def _sample(self) -> None:
        while self.running:
            self._take()
            time.sleep(0.01)

    def __exit__(self, *_: Any) -> None:
        self.running = False
        self.thread.join()
        self._take()

    @property
    def extra_mb(self) -> tuple[float, float]:
        return (self.peak_uss - self.base_uss) / 2**20, (self.peak_rss - self.base_rss) / 2**20


class BenchEngine(RolloutEngine):
    def old_sync(self, wrapped: list[Any], version: int) -> tuple[float, float, float]:
        with PeakMemory() as memory:
            start = time.perf_counter()
            named = ray.get(wrapped[0])
            buffer = io.BytesIO()
            torch.save(named, buffer)
            self.llm.collective_rpc(_old_worker_load, args=(buffer.getvalue(),))
            del named, buffer
            self._drop_caches()
            self.version = version
            seconds = time.perf_counter() - start
        return (seconds, *memory.extra_mb)

    def new_sync(self, update_info: dict[str, Any], version: int) -> tuple[float, float, float]:
        with PeakMemory() as memory:
            start = time.perf_counter()
            self.apply_weight_update(update_info, version)
            seconds = time.perf_counter() - start
        return (seconds, *memory.extra_mb)


def learner_old(model: torch.nn.Module) -> tuple[list[Any], float]:
    start = time.perf_counter()
    named = [(name, tensor.detach().cpu().clone()) for name, tensor in model.state_dict().items()]
    wrapped = [ray.put(named)]
    return wrapped, time.perf_counter() - start


class Captured:
    """A client that keeps the update info (the buffer's role in RL), so the engine can take it after."""

    def init_weight_transfer_engine(self, init_info: dict[str, Any]) -> None:
        return None

    def start_weight_update(self) -> None:
        return None

    def update_weights(self, update_info: dict[str, Any]) -> None:
        self.update_info = update_info

    def finish_weight_update(self, weight_version: str | None = None) -> None:
        return None


def learner_new(model: torch.nn.Module, chunk_mb: int) -> tuple[dict[str, Any], float]:
    """The RL learner's own trainer engine (pack, put), its client capturing the update."""
    client = Captured()
    start = time.perf_counter()
    trainer_engine("object_store", 0, client, StateDictSource(model), chunk_mb=chunk_mb).send_weights()
    return client.update_info, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="xs,s,m,l")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk-mb", type=int, default=256)
    args = parser.parse_args()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    cfg = RolloutConfig(max_prompt_len=256, max_response_len=16, max_num_seqs=4)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes.split(","):
            path = build_tiny(Path(tmp) / size, size=size, seed=0)
            model = load_model(path).eval()
            params = sum(p.numel() for p in model.parameters())
            engine = ray.remote(BenchEngine).options(num_cpus=1).remote(str(path), cfg, 0, 4, "float32", None)
            ray.get(engine.get_version.remote())
            version = 0
            measured: dict[str, list[tuple[float, ...]]] = {"old": [], "new": []}
            for _ in range(args.repeats):
                for kind in ("old", "new"):
                    version += 1
                    if kind == "old":
                        payload, learner_s = learner_old(model)
                        engine_s, uss_mb, rss_mb = ray.get(engine.old_sync.remote(payload, version))
                    else:
                        payload, learner_s = learner_new(model, args.chunk_mb)
                        engine_s, uss_mb, rss_mb = ray.get(engine.new_sync.remote(payload, version))
                    del payload
                    measured[kind].append((learner_s, engine_s, uss_mb, rss_mb))
            ray.kill(engine)
            # seconds: the median sync; memory: the largest growth over the syncs (the first one maps the pages)
            median = {kind: [statistics.median(v[0] for v in values), statistics.median(v[1] for v in values),
                             max(v[2] for v in values), max(v[3] for v in values)] for kind, values in measured.items()}
            rows.append((size, params, median))
            print(f"[{size}] {params / 1e6:.1f}M parameters: old {median['old']}, new {median['new']}", flush=True)
    print("\n| size | parameters | MB (fp32) | old: learner s | old: engine s | old: engine +MB private / resident "
          "| new: learner s | new: engine s | new: engine +MB private / resident | old/new seconds |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for size, params, m in rows:
        old_total, new_total = m["old"][0] + m["old"][1], m["new"][0] + m["new"][1]
        print(f"| {size} | {params / 1e6:.1f}M | {params * 4 / 2**20:.0f} | {m['old'][0]:.3f} | {m['old'][1]:.3f} | "
              f"{m['old'][2]:.0f} / {m['old'][3]:.0f} | {m['new'][0]:.3f} | {m['new'][1]:.3f} | "
              f"{m['new'][2]:.0f} / {m['new'][3]:.0f} | {old_total / max(new_total, 1e-9):.2f} |")
    ray.shutdown()


if __name__ == "__main__":
    main()
