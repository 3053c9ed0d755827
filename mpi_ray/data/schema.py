"""The one sample schema every dataset writes and every stage reads (a versioned pyarrow schema).

A sample is one (policy, images, query) instance with its targets and the structured truth the
answer was computed from. Policy images sit inside the policy text at POLICY_IMAGE_MARK, in order.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

SCHEMA_VERSION = "1"
# The i-th occurrence of this mark in `policy_text` is where `policy_images[i]` is shown.
POLICY_IMAGE_MARK = "<policy_image>"

SAMPLE_SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("dataset", pa.string(), nullable=False),  # e.g. "clevr_policy-T-N6", "gta_policy"
        pa.field("split", pa.string(), nullable=False),  # train | val | test | override | general
        pa.field("policy_name", pa.string(), nullable=False),
        pa.field("policy_text", pa.string(), nullable=False),
        pa.field("policy_images", pa.list_(pa.binary()), nullable=False),  # PNG bytes
        pa.field("images", pa.list_(pa.binary()), nullable=False),  # PNG bytes, input images I
        pa.field("image_names", pa.list_(pa.string()), nullable=False),  # e.g. "image/image_1.jpg"
        pa.field("query", pa.string(), nullable=False),  # the user turn without the policy
        pa.field("cot", pa.string(), nullable=True),  # "<think>...</think>" or null
        pa.field("answer", pa.string(), nullable=False),  # what goes inside \boxed{}
        pa.field("truth", pa.string(), nullable=False),  # JSON: scene graph / profile + gold call
        pa.field("meta", pa.string(), nullable=False),  # JSON: gold path, rule ids, ...
    ],
    metadata={"mpi_ray.schema_version": SCHEMA_VERSION},
)

REQUIRED_TEXT_FIELDS = ("sample_id", "dataset", "split", "policy_name", "policy_text", "query", "answer")


def make_sample(**fields: Any) -> dict[str, Any]:
    """Build one record with defaults for the optional parts; JSON-encodes dict truth/meta."""
    record: dict[str, Any] = {
        "policy_images": [],
        "images": [],
        "image_names": [],
        "cot": None,
        "truth": "{}",
        "meta": "{}",
    }
    record.update(fields)
    for key in ("truth", "meta"):
        if not isinstance(record[key], str):
            record[key] = json.dumps(record[key], sort_keys=True)
    missing = [name for name in SAMPLE_SCHEMA.names if name not in record]
    if missing:
        raise ValueError(f"sample is missing fields {missing}")
    return {name: record[name] for name in SAMPLE_SCHEMA.names}


def to_table(records: list[dict[str, Any]]) -> pa.Table:
    """Records -> an Arrow table in the sample schema (rejects anything that does not fit)."""
    return pa.Table.from_pylist(records, schema=SAMPLE_SCHEMA)


def check_schema(schema: pa.Schema) -> None:
    """Raise if a table was written with another schema version or other fields."""
    version = (schema.metadata or {}).get(b"mpi_ray.schema_version", b"?").decode()
    if version != SCHEMA_VERSION:
        raise ValueError(f"sample schema version {version!r}, expected {SCHEMA_VERSION!r}")
    if schema.names != SAMPLE_SCHEMA.names:
        raise ValueError(f"sample fields {schema.names} differ from {SAMPLE_SCHEMA.names}")
