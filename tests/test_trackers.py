"""TensorBoard mirrors the stages' metrics: read back from the event files it writes."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from PIL import Image

from mpi_ray.trackers import publish_stage


def _events(folder: Path) -> list:
    """Every Event in a folder's TFRecord files (length, crc, payload, crc per record)."""
    from tensorboardX.proto import event_pb2

    events = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset: offset + 8])
            payload = data[offset + 12: offset + 12 + length]
            offset += 12 + length + 4
            event = event_pb2.Event()
            event.ParseFromString(payload)
            events.append(event)
    return events


def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    found: dict[str, list[tuple[int, float]]] = {}
    for event in _events(folder):
        for value in event.summary.value:
            if value.HasField("simple_value"):
                found.setdefault(value.tag, []).append((event.step, round(value.simple_value, 4)))
    return found


def test_stage_metrics_land_in_tensorboard_once_per_step(tmp_path: Path) -> None:
    (tmp_path / "cpt").mkdir()
    (tmp_path / "cpt" / "metrics.jsonl").write_text("".join(
        json.dumps({"stage": "cpt", "micro_step": step, "epoch": 0, "loss": 3.0 - step, "lr": 1e-3, "time": 5.0,
                    "tokens_per_s": None}) + "\n" for step in (1, 2)))
    (tmp_path / "rl").mkdir()
    (tmp_path / "rl" / "metrics.jsonl").write_text(json.dumps(
        {"step": 1, "time": 9.0, "policy_free/reward": 0.25, "policy_aware/reward": 0.5, "kl_mean": 0.01}) + "\n")
    assert publish_stage(tmp_path, "cpt", ["jsonl"]) is None  # tensorboard off: nothing written
    cpt = _scalars(publish_stage(tmp_path, "cpt", ["jsonl", "tensorboard"]))
    assert cpt == {"cpt/loss": [(1, 2.0), (2, 1.0)], "cpt/lr": [(1, 0.001), (2, 0.001)]}
    publish_stage(tmp_path, "cpt", ["jsonl", "tensorboard"])  # a re-run replaces, never duplicates
    assert _scalars(tmp_path / "tensorboard" / "cpt")["cpt/loss"] == [(1, 2.0), (2, 1.0)]
    rl = _scalars(publish_stage(tmp_path, "rl", ["jsonl", "tensorboard"]))
    assert rl["rl/policy_free/reward"] == [(1, 0.25)] and rl["rl/policy_aware/reward"] == [(1, 0.5)]


def test_eval_table_report_and_plots_land_in_tensorboard(tmp_path: Path) -> None:
    (tmp_path / "eval").mkdir()
    (tmp_path / "plots").mkdir()
    results = {"checkpoints": {
        "model": {"suites": {"in_context": {"samples": 4, "accuracy": 25.0}}},
        "rl": {"suites": {"policy_free": {"samples": 4, "accuracy": 75.0}}},
    }}
    (tmp_path / "eval" / "results.json").write_text(json.dumps(results))
    (tmp_path / "report.md").write_text("| Method | Acc |\n")
    Image.new("RGB", (8, 6), "red").save(tmp_path / "plots" / "rl_rewards.png")
    folder = publish_stage(tmp_path, "eval", ["jsonl", "tensorboard"])
    scalars = _scalars(folder)
    assert scalars["eval/in_context/accuracy"] == [(0, 25.0)] and scalars["eval/policy_free/accuracy"] == [(1, 75.0)]
    tags = {value.tag for event in _events(folder) for value in event.summary.value}
    assert "plots/rl_rewards" in tags and any(tag.startswith("eval/report") for tag in tags)
