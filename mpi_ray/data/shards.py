"""Parquet shards in the sample schema, plus the dataset manifest beside them.

Shards are written with a CRC32 per page and read back with it checked: a flipped byte in an
uncompressed shard would otherwise change a policy's text silently. Every read names the file.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import pyarrow.parquet as pq

from mpi_ray.data.schema import SCHEMA_VERSION, check_schema, to_table

MANIFEST = "manifest.json"


class ShardError(ValueError):
    """A shard that cannot be read as it was written (checksum, schema version, truncation), named."""


def write_shards(records: Iterable[dict[str, Any]], out_dir: str | Path, split: str, shard_size: int = 512) -> list[str]:
    """Write records as `<split>-NNNNN.parquet` files of at most `shard_size` rows; returns the file names."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        name = f"{split}-{len(names):05d}.parquet"
        pq.write_table(to_table(batch), out / name, compression="zstd", write_page_checksum=True)
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


def read_shard(path: str | Path, columns: list[str] | None = None) -> Any:
    """One shard (or some of its columns) as a pyarrow Table, page checksums and schema version checked."""
    try:
        table = pq.read_table(path, columns=columns, page_checksum_verification=True)
        check_schema(pq.read_schema(path) if columns else table.schema)
        return table
    except Exception as exc:  # pyarrow says OSError/ArrowInvalid without the file; the user needs the file
        raise ShardError(f"shard {path} cannot be read: {type(exc).__name__}: {exc}") from None


def verify_shard(path: str | Path) -> int:
    """Read every page of a shard with its checksum checked, one batch at a time; its row count."""
    try:
        file = pq.ParquetFile(path, page_checksum_verification=True)
        check_schema(file.schema_arrow)
        return sum(batch.num_rows for batch in file.iter_batches(batch_size=256))
    except Exception as exc:
        raise ShardError(f"shard {path} cannot be read: {type(exc).__name__}: {exc}") from None


@lru_cache(maxsize=4096)
def _verified(path: str, mtime_ns: int, size: int) -> int:
    return verify_shard(path)


def verified_paths(paths: list[str]) -> list[str]:
    """`paths`, each verified once per process while its file is unchanged (streams reopen shards
    every epoch and stage; Ray Data's reader itself does not check page checksums)."""
    for path in paths:
        stat = os.stat(path)
        _verified(path, stat.st_mtime_ns, stat.st_size)
    return paths


def read_split(data_dir: str | Path, split: str) -> list[dict[str, Any]]:
    """Read a whole split into memory (small sets, tests and eval only; stages stream with Ray Data)."""
    rows: list[dict[str, Any]] = []
    for path in shard_paths(data_dir, split):
        rows.extend(read_shard(path).to_pylist())
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
