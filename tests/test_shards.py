"""Shards are read as they were written or not at all: page checksums, schema version, the file named."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mpi_ray.data.schema import SAMPLE_SCHEMA
from mpi_ray.data.shards import ShardError, read_shard, read_split, verified_paths, write_shards

from conftest import small_clevr


@pytest.fixture(scope="module")
def shard(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = small_clevr(tmp_path_factory.mktemp("clevr") / "data", variant="T", train_per_policy=4, test=2, general=2,
                       cot_fraction=0.5, seed=1)
    return Path(sorted(data.glob("train-*.parquet"))[0])


def _rewrite_uncompressed(rows: list[dict], path: Path) -> None:
    pq.write_table(pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA), path, compression="none", write_page_checksum=True)


def test_a_flipped_byte_in_a_policy_text_is_caught_and_the_file_named(shard: Path, tmp_path: Path) -> None:
    rows = pq.read_table(shard).to_pylist()
    bad = tmp_path / "train-00000.parquet"
    _rewrite_uncompressed(rows, bad)
    raw = bytearray(bad.read_bytes())
    where = raw.find(b"visual assistant")
    raw[where + 3] ^= 0x01  # "visual" -> "vistal": plain Parquet would read the changed text back silently
    bad.write_bytes(bytes(raw))
    assert "vistal" in pq.read_table(bad, page_checksum_verification=False).column("policy_text")[0].as_py()
    with pytest.raises(ShardError, match=f"shard {bad} cannot be read.*(checksum|CRC)"):
        read_shard(bad)
    with pytest.raises(ShardError, match=str(bad)):
        verified_paths([str(bad)])  # what every Ray Data stream calls before reading
    with pytest.raises(ShardError, match=str(bad)):
        read_split(tmp_path, "train")


def test_a_wrong_schema_version_or_a_truncated_file_is_named(shard: Path, tmp_path: Path) -> None:
    table = pq.read_table(shard)
    old = tmp_path / "old.parquet"
    pq.write_table(table.replace_schema_metadata({"mpi_ray.schema_version": "0"}), old)
    with pytest.raises(ShardError, match=f"shard {old} .*schema version '0'"):
        verified_paths([str(old)])
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(ShardError, match=str(cut)):
        read_shard(cut)


def test_written_shards_carry_page_checksums(tmp_path: Path, shard: Path) -> None:
    names = write_shards(pq.read_table(shard).to_pylist(), tmp_path, "train")
    assert verified_paths([str(tmp_path / names[0])]) and read_shard(tmp_path / names[0], columns=["sample_id"]).num_rows
