"""Ray Data streams on a local cluster: per-stage rows, determinism, bad records skipped and counted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from mpi_ray.data.schema import SAMPLE_SCHEMA
from mpi_ray.data.shards import read_split
from mpi_ray.model.loading import visual_tokens
from conftest import small_clevr
from mpi_ray.data.streams import EncodeBatch, SampleErrors, StreamSpec, deterministic_context, padded_batch, stage_dataset

# A stream's first Ray Data task imports torch + transformers (~12 s): those tests are slow.


@pytest.fixture(scope="module")
def clevr_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("clevr") / "data"
    return small_clevr(out, variant="M", train_per_policy=8, test=6, general=4, cot_fraction=0.5, seed=3)


def _rows(ds) -> list[dict]:
    return list(ds.iter_rows())


@pytest.mark.slow
def test_stage_streams_yield_what_each_consumer_needs(ray_local, clevr_dir: Path, tiny_model_dir: Path) -> None:
    deterministic_context()
    model = str(tiny_model_dir)
    train = read_split(clevr_dir, "train")
    with_cot = [s["sample_id"] for s in train if s["cot"]]

    cpt = _rows(stage_dataset(str(clevr_dir), "train", StreamSpec("cpt", model, max_seq_len=8192)))
    assert [r["sample_id"] for r in cpt] == with_cot  # CPT: the CoT set, policy included
    again = _rows(stage_dataset(str(clevr_dir), "train", StreamSpec("cpt", model, max_seq_len=8192), concurrency=2, batch_size=3))
    assert [r["sample_id"] for r in again] == with_cot  # same records, same order, other parallelism
    for a, b in zip(cpt, again):
        assert np.array_equal(a["input_ids"], b["input_ids"]) and np.array_equal(a["labels"], b["labels"])
        assert np.array_equal(a["pixel_values"], b["pixel_values"])

    image_id = visual_tokens(model).image
    batch = padded_batch({k: [r[k] for r in cpt[:2]] for k in cpt[0]}, pad_id=0, image_token_id=image_id)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    # M-RoPE needs the image positions marked: exactly the image tokens, one row per sample
    assert torch.equal(batch["mm_token_type_ids"].bool(), batch["input_ids"] == image_id)
    assert int(batch["mm_token_type_ids"].sum()) == int((batch["image_grid_thw"].prod(1) // 4).sum())
    assert batch["pixel_values"].shape[1] == 1176 and batch["image_grid_thw"].shape[1] == 3




def test_rl_rows_hold_the_policy_free_and_the_policy_aware_prompt(clevr_dir: Path, tiny_model_dir: Path) -> None:
    encode = EncodeBatch(StreamSpec("rl", str(tiny_model_dir)))
    samples = read_split(clevr_dir, "train")
    for sample in samples[:3]:
        row = encode.encode(sample)
        assert "Condition 1" not in row["prompt"] and "Condition 1" in row["policy_prompt"]
        assert row["images"] == sample["images"]
        # -M: the policy's example crops, then the query image, each where its <|image_pad|> stands
        assert row["policy_images"] == sample["policy_images"] + sample["images"] and len(sample["policy_images"]) >= 1
        assert row["prompt"].count("<|image_pad|>") == 1
        assert row["policy_prompt"].count("<|image_pad|>") == len(row["policy_images"])
        assert row["answer"] == sample["answer"] and row["answer"].startswith("Case ")


def _png(width: int, height: int) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 90, 90)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_every_per_row_failure_takes_the_one_skip_path(clevr_dir: Path, tiny_model_dir: Path) -> None:
    """Issue 18: these rows used to raise TypeError/ValueError/KeyError naming no sample, or (an
    over-long RL prompt, an image of 1x600) pass the stream and fail vLLM's whole generate() batch."""

    class Recorder:  # stands in for the SampleErrors actor's handle: pure bookkeeping
        def __init__(self) -> None:
            self.errors: list[tuple[str, str]] = []
            self.record = self

        def remote(self, stage: str, sample_id: str, reason: str) -> tuple[str, str]:
            self.errors.append((sample_id, reason))
            return sample_id, reason

    good = read_split(clevr_dir, "train")[:1]
    hostile = {
        "null-images": {"images": None},
        "null-policy-images": {"policy_images": None},
        "marks-mismatch": {"policy_images": []},  # -M text keeps its marks, the pictures are gone
        "thin-image": {"images": [_png(1, 600)]},
        "huge-image": {"images": [_png(5000, 4000)]},
        "long-prompt": {"policy_text": good[0]["policy_text"] + " red cube" * 3000},
        "no-answer": {"answer": None},
        "unknown-dataset": {"dataset": "mystery_policy"},  # used to pass and raise mid-RL, in the reward
        "gta-gold-not-a-call": {"dataset": "gta_policy", "answer": "use the calculator"},
    }
    rows = [{**good[0], **change, "sample_id": name} for name, change in hostile.items()] + good
    recorder = Recorder()
    import ray as ray_module

    original_get, ray_module.get = ray_module.get, lambda value: value  # the recorder answers at once
    try:
        encode = EncodeBatch(StreamSpec("rl", str(tiny_model_dir), max_seq_len=2048), recorder)
        out = encode(pa.Table.from_pylist(rows))
    finally:
        ray_module.get = original_get
    assert out["sample_id"] == [good[0]["sample_id"]]
    reasons = dict(recorder.errors)
    assert set(reasons) == set(hostile)
    assert "NoneType" in reasons["null-images"]
    assert "over 16,777,216 pixels" in reasons["huge-image"]
    assert "aspect ratio" in reasons["thin-image"]
    assert "exceed max_seq_len 2048" in reasons["long-prompt"]
    assert "image marks" in reasons["marks-mismatch"]
    assert "answer" in reasons["no-answer"]
    assert "no reward for dataset 'mystery_policy'" in reasons["unknown-dataset"]
    assert "not a tool call" in reasons["gta-gold-not-a-call"]


def _write_bad_shard(clevr_dir: Path, out: Path) -> list[str]:
    """A copy of the train split where one image is garbage and one query is missing."""
    rows = read_split(clevr_dir, "train")
    rows[1]["images"] = [b"\x89PNG garbage"]
    rows[2]["query"] = None
    loose = pa.schema([f.with_nullable(True) for f in SAMPLE_SCHEMA], metadata=SAMPLE_SCHEMA.metadata)
    out.mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=loose), out / "train-00000.parquet")
    return [rows[1]["sample_id"], rows[2]["sample_id"]]


@pytest.mark.slow
def test_bad_records_are_skipped_and_counted_or_fail_fast(ray_local, clevr_dir: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    bad_ids = _write_bad_shard(clevr_dir, tmp_path / "bad")
    errors = SampleErrors.remote()
    spec = StreamSpec("sft", str(tiny_model_dir), target="direct")
    rows = _rows(stage_dataset(str(tmp_path / "bad"), "train", spec, errors))
    report = ray_local.get(errors.report.remote())
    assert sorted(e["sample_id"] for e in report) == sorted(bad_ids)
    assert {e["reason"] for e in report} == {"image 0 does not decode (UnidentifiedImageError)", "field 'query' is missing"}
    assert len(rows) == len(read_split(clevr_dir, "train")) - 2

    failing = StreamSpec("sft", str(tiny_model_dir), target="direct", on_bad_sample="fail")
    with pytest.raises(Exception, match=bad_ids[0]):
        _rows(stage_dataset(str(tmp_path / "bad"), "train", failing))
