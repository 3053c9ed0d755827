"""Does the data path keep the learner fed? Encoding rows/s of one Ray Data actor vs the learner's rows/s.

    python benchmarks/bench_data_stream.py [--size s] [--rows 160] [--batch 8] [--stage sft|cpt]

Side by side in one run on the tiny model: (1) the Ray Data stream (decode, chat format, processor,
masks in one map_batches actor) drained end to end, with its start-up (the actor imports torch and
transformers) reported apart; (2) the steady-state encode rate of one such actor (the same Encoder,
timed in-process on the same samples); (3) a learner step (forward + backward + AdamW, 2 threads)
on the same collated batches. The data path keeps up while (2) / (3) stays above 1 per actor.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

import mpi_ray.cluster  # noqa: F401  (loopback Ray)
import ray
from mpi_ray.data.clevr_policy.__main__ import main as generate_clevr
from mpi_ray.data.shards import read_split
from mpi_ray.data.streams import EncodeBatch, StreamSpec, deterministic_context, padded_batch, stage_dataset
from mpi_ray.model.loading import load_model, visual_tokens
from mpi_ray.model.tiny import build_tiny


def stream(data_dir: str, spec: StreamSpec, batch: int) -> tuple[float, float, list[dict]]:
    """(end-to-end seconds, seconds to the first batch, the collated batches)."""
    ds = stage_dataset(data_dir, "train", spec, batch_size=batch)
    start = time.perf_counter()
    first_at, batches = None, []
    for rows_batch in ds.iter_batches(batch_size=batch, batch_format="numpy"):
        first_at = first_at or time.perf_counter()
        batches.append(padded_batch(rows_batch, pad_id=0, image_token_id=visual_tokens(spec.model_path).image))
    return time.perf_counter() - start, first_at - start, batches


def encode_rate(data_dir: str, spec: StreamSpec) -> float:
    """Steady-state rows/s of one encoding actor's work (processor loaded, not timed)."""
    encode = EncodeBatch(spec)
    samples = read_split(data_dir, "train")
    encode.encode(samples[0])
    start = time.perf_counter()
    for sample in samples:
        encode.encode(sample)
    return len(samples) / (time.perf_counter() - start)


def learner_rate(model_dir: str, batches: list[dict]) -> float:
    model = load_model(model_dir).train()
    optim = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model(**batches[0]).loss.backward()  # warm-up step, not timed
    optim.zero_grad()
    rows, start = 0, time.perf_counter()
    for batch in batches[1:]:
        model(**batch).loss.backward()
        optim.step()
        optim.zero_grad()
        rows += batch["input_ids"].shape[0]
    return rows / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="s", choices=["xs", "s", "m"])
    parser.add_argument("--rows", type=int, default=160, help="training rows (policies x per-policy)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--stage", default="sft", choices=["sft", "cpt"])
    args = parser.parse_args()
    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="bench_stream_"))
    model_dir = str(build_tiny(work / "model", args.size))
    per_policy = max(16, args.rows // 4)
    generate_clevr(["--depth", "4", "--variant", "T", "--out", str(work / "data"), "--policies", "4",
                    "--train-per-policy", str(per_policy), "--test", "8", "--general", "0",
                    "--cot-fraction", "1.0", "--image-size", "112"])
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    deterministic_context()
    spec = StreamSpec(args.stage, model_dir, target="cot", max_seq_len=8192)
    total_s, startup_s, batches = stream(str(work / "data"), spec, args.batch)
    ray.shutdown()
    data_rows_s = encode_rate(str(work / "data"), spec)
    learn_rows_s = learner_rate(model_dir, batches)
    rows = sum(b["input_ids"].shape[0] for b in batches)
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    padded = sum(b["attention_mask"].numel() for b in batches)
    print(f"stage {args.stage}, tiny-{args.size}, batch {args.batch}, {rows} rows")
    print(f"ray data stream, end to end : {rows / total_s:8.1f} rows/s  ({total_s:.1f} s, first batch after {startup_s:.1f} s)")
    print(f"one encoding actor, steady  : {data_rows_s:8.1f} rows/s")
    print(f"learner step                : {learn_rows_s:8.1f} rows/s  (forward+backward+AdamW, 2 threads)")
    print(f"ratio encode/learner: {data_rows_s / learn_rows_s:.1f}  (> 1: one actor keeps a learner fed)")
    print(f"padding overhead: {100 * (1 - tokens / padded):.1f}% of batch tokens are padding")


if __name__ == "__main__":
    main()
