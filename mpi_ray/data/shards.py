"""Parquet shards in the sample schema, plus the dataset manifest beside them."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

import pyarrow.parquet as pq

from mpi_ray.data.schema import SCHEMA_VERSION, check_schema, to_table

MANIFEST = "manifest.json"


def write_shards(records: Iterable[dict[str, Any]], out_dir: str | Path, split: str, shard_size: int = 512) -> list[str]:
    """Write records as `<split>-NNNNN.parquet` files of at most `shard_size` rows; returns the file names."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        name = f"{split}-{len(names):05d}.parquet"
        pq.write_table(to_table(batch), out / name, compression="zstd")
        names.append(name)
        batch.clear()

    for record in records:
        batch.append(record)
        if len(batch) >= shard_size:
            flush()
    if batch:
        flush()
    return names


def shard_paths(data_dir: str | Path, split: str) -> list[str]:
    """The shard files of one split, sorted; raises if there are none."""
    paths = sorted(str(p) for p in Path(data_dir).glob(f"{split}-*.parquet"))
    if not paths:
        raise FileNotFoundError(f"no '{split}' shards in {data_dir}")
    return paths


def read_split(data_dir: str | Path, split: str) -> list[dict[str, Any]]:
    """Read a whole split into memory (small sets, tests and eval only; stages stream with Ray Data)."""
    rows: list[dict[str, Any]] = []
    for path in shard_paths(data_dir, split):
        table = pq.read_table(path)
        check_schema(table.schema)
        rows.extend(table.to_pylist())
    return rows


def label_distribution(records: Iterable[dict[str, Any]]) -> dict[str, int]:
    return dict(sorted(Counter(r["answer"] for r in records).items()))


def write_manifest(out_dir: str | Path, manifest: dict[str, Any]) -> Path:
    path = Path(out_dir) / MANIFEST
    body = {"schema_version": SCHEMA_VERSION, **manifest}
    path.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
    return path


def read_manifest(data_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(data_dir) / MANIFEST).read_text())
