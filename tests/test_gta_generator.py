"""The synthetic GTAPolicy generator: determinism, rule coverage, consistency of every record with the
rules, the four tips (rules 21-24), the override split, and the CLI."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from mpi_ray.data.gta_policy.__main__ import main
from mpi_ray.data.gta_policy.dataset import build_splits
from mpi_ray.data.gta_policy.generator import generate_split
from mpi_ray.data.gta_policy.policy_doc import OVERRIDE_HEADER, render_policy
from mpi_ray.data.gta_policy.rules import RULES, Profile, apply_override, branch_ids, override_rules, resolve
from mpi_ray.data.schema import SAMPLE_SCHEMA
from mpi_ray.data.shards import read_manifest, read_split

REPO = Path(__file__).resolve().parent.parent
BBOX = re.compile(r"\(\d+, \d+, \d+, \d+\)")


@pytest.fixture(scope="module")
def splits() -> dict[str, list[dict[str, Any]]]:
    return build_splits(generate_split("train", 160, seed=7), generate_split("test", 40, seed=7), "gta_policy")


def _meta(record: dict[str, Any]) -> dict[str, Any]:
    return json.loads(record["meta"])


def _truth(record: dict[str, Any]) -> dict[str, Any]:
    return json.loads(record["truth"])


def _by_case(splits: dict[str, list[dict[str, Any]]], case: str) -> list[dict[str, Any]]:
    found = [r for r in splits["train"] + splits["test"] if _meta(r)["case"] == case]
    assert found, f"no {case} instance generated"
    return found


def test_same_seed_same_records_other_seed_other_records() -> None:
    first = build_splits(generate_split("train", 12, seed=3), generate_split("test", 6, seed=3), "gta_policy")
    again = build_splits(generate_split("train", 12, seed=3), generate_split("test", 6, seed=3), "gta_policy")
    other = build_splits(generate_split("train", 12, seed=4), generate_split("test", 6, seed=4), "gta_policy")
    assert first == again
    assert [r["answer"] for r in first["train"]] != [r["answer"] for r in other["train"]]


def test_train_and_test_differ_for_one_seed(splits: dict[str, list[dict[str, Any]]]) -> None:
    assert [r["query"] for r in splits["train"][:40]] != [r["query"] for r in splits["test"]]


def test_every_rule_branch_is_covered_in_train_and_test(splits: dict[str, list[dict[str, Any]]]) -> None:
    for split in ("train", "test", "override"):
        seen = {_meta(r)["branch_id"] for r in splits[split]}
        assert set(branch_ids(RULES)) <= seen, split


def test_records_fit_the_schema_and_agree_with_the_rules(splits: dict[str, list[dict[str, Any]]]) -> None:
    policy = render_policy()
    for record in splits["train"] + splits["test"]:
        assert list(record) == SAMPLE_SCHEMA.names
        assert record["dataset"] == "gta_policy" and record["policy_text"] == policy
        truth, meta = _truth(record), _meta(record)
        gold = json.loads(record["answer"])
        assert list(gold) == ["name", "arguments"] and gold == truth["gold"]
        profile = Profile(**truth["profile"])
        resolution = resolve(meta["tool_type"], profile, truth["image_has_math"])
        assert gold["name"] == resolution.tool and meta["branch_id"] == resolution.branch_id
        # the query is the user turn without the policy, with the profile and the format instruction
        assert "### Tool Calling Rules ###" not in record["query"]
        assert f"credits: {profile.credits}\nage: {profile.age}" in record["query"]
        assert "you need to determine the appropriate tool to use at the current step" in record["query"]
        assert "<think> </think>" in record["query"] and "\\boxed{}" in record["query"]
        # history calls are versioned under the same profile
        for call in truth["history"]:
            math = call["name"] == "MathOCR"
            tool_type = "OCR" if math else call["name"].split("_v")[0]
            assert call["name"] == resolve(tool_type, profile, math).tool
            shown = {"name": call["name"], "arguments": call["arguments"]}  # truth JSON has sorted keys
            assert json.dumps(shown, ensure_ascii=False) in record["query"]
        assert record["cot"].startswith("<think>") and record["cot"].endswith("</think>")
        assert gold["name"] in record["cot"]
        if resolution.rule_id:
            assert f"Rule {resolution.rule_id[1:]} applies" in record["cot"]


def test_images_are_small_pngs_named_as_in_the_query(splits: dict[str, list[dict[str, Any]]]) -> None:
    for record in splits["test"]:
        assert len(record["images"]) == len(record["image_names"]) >= 1
        for data, name in zip(record["images"], record["image_names"]):
            image = Image.open(io.BytesIO(data))
            assert image.format == "PNG" and image.size == (224, 224)
            assert re.fullmatch(r"image/image_\d+\.jpg", name) and name in record["query"]


def test_tip_21_multi_image_describes_the_next_undescribed_image(splits: dict[str, list[dict[str, Any]]]) -> None:
    for record in _by_case(splits, "multi-image-describe"):
        truth = _truth(record)
        described = [call["arguments"]["image"] for call in truth["history"]]
        assert described == record["image_names"][: len(described)]
        assert truth["gold"]["arguments"] == {"image": record["image_names"][len(described)]}
        assert "R21" in _meta(record)["rule_ids"]
    for record in _by_case(splits, "multi-image-followup"):
        history = _truth(record)["history"]
        described = [c["arguments"]["image"] for c in history if c["name"].startswith("ImageDescription")]
        assert described == record["image_names"]


def test_tip_22_bbox_comes_from_textobbox_before_region_description(splits: dict[str, list[dict[str, Any]]]) -> None:
    for record in _by_case(splits, "region-after-bbox"):
        truth = _truth(record)
        assert truth["history"][-1]["name"] == "TextToBbox"
        bbox = truth["gold"]["arguments"]["bbox"]
        assert BBOX.fullmatch(bbox) and f"Returned: {bbox}, score" in record["query"]
        assert "R22" in _meta(record)["rule_ids"]
    for record in _by_case(splits, "bbox-before-region"):
        truth = _truth(record)
        assert truth["gold"]["name"] == "TextToBbox" and not truth["history"]
        assert "R22" in _meta(record)["rule_ids"]


def test_tip_23_image_arguments_are_exact_names_of_the_inputs(splits: dict[str, list[dict[str, Any]]]) -> None:
    with_image = [r for r in splits["train"] if "image" in _truth(r)["gold"]["arguments"]]
    assert with_image
    for record in with_image:
        assert _truth(record)["gold"]["arguments"]["image"] in record["image_names"]
        assert "R23" in _meta(record)["rule_ids"]


def test_tip_24_search_k_is_1_for_closed_and_4_for_open_questions(splits: dict[str, list[dict[str, Any]]]) -> None:
    for case, k in (("search-closed", 1), ("search-open", 4)):
        for record in _by_case(splits, case):
            assert _truth(record)["gold"]["arguments"]["k"] == k
            assert "R24" in _meta(record)["rule_ids"]


def test_every_tool_type_is_a_target(splits: dict[str, list[dict[str, Any]]]) -> None:
    names = {json.loads(r["answer"])["name"] for r in splits["train"]}
    bare = {name.split("_v")[0] for name in names}
    assert bare == {
        "Calculator", "OCR", "CountGivenObject", "ImageDescription", "GoogleSearch", "RegionAttributeDescription",
        "TextToBbox", "Plot", "MathOCR", "Solver", "DrawBox", "AddText", "TextToImage", "ImageStylization",
    }


def test_override_split_is_the_test_split_under_the_updated_rules(splits: dict[str, list[dict[str, Any]]]) -> None:
    overridden = apply_override(RULES, override_rules())
    assert len(splits["override"]) == len(splits["test"])
    changed = 0
    for record, original in zip(splits["override"], splits["test"]):
        meta, truth = _meta(record), _truth(record)
        assert record["policy_text"].startswith(OVERRIDE_HEADER)
        assert record["policy_text"].endswith(original["policy_text"])
        assert record["policy_text"].startswith(meta["override_block"])
        assert meta["source_sample_id"] == original["sample_id"] and record["query"] != "" and record["split"] == "override"
        expected = resolve(meta["tool_type"], Profile(**truth["profile"]), truth["image_has_math"], overridden).tool
        assert json.loads(record["answer"])["name"] == expected
        assert meta["override_changed"] == (record["answer"] != original["answer"])
        changed += meta["override_changed"]
    assert 0 < changed < len(splits["test"])


def test_cli_writes_shards_and_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--out", str(tmp_path), "--train", "30", "--test", "26", "--seed", "5"]) == 0
    manifest = read_manifest(tmp_path)
    assert manifest["counts"] == {"train": 30, "test": 26, "override": 26}
    assert all(manifest["coverage"][b]["train"] >= 1 and manifest["coverage"][b]["test"] >= 1 for b in branch_ids(RULES))
    assert sum(manifest["tool_distribution"]["train"].values()) == 30
    rows = read_split(tmp_path, "train")
    assert rows == build_splits(generate_split("train", 30, 5), generate_split("test", 26, 5), "gta_policy")["train"]
    assert "| R5a |" in capsys.readouterr().out


def test_cli_runs_as_a_module(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mpi_ray.data.gta_policy", "--out", str(tmp_path), "--train", "3", "--test", "2"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert read_manifest(tmp_path)["counts"] == {"train": 3, "test": 2, "override": 2}
