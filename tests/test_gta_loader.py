"""The real-GTA converter on a small fixture in the GTA release format (dataset.json + image/)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from mpi_ray.data.gta_policy.__main__ import main
from mpi_ray.data.gta_policy.gta_loader import load_gta
from mpi_ray.data.gta_policy.rules import Profile, resolve
from mpi_ray.data.shards import read_manifest, read_split


def call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "arguments": arguments}}


def item(files: list[str], query: str, steps: list[tuple[dict[str, Any], Any]], thought: str | None = None) -> dict[str, Any]:
    dialogs: list[dict[str, Any]] = [{"role": "user", "content": query}]
    for tool_call, result in steps:
        message: dict[str, Any] = {"role": "assistant", "tool_calls": [tool_call]}
        if thought:
            message["thought"] = thought
        dialogs.append(message)
        dialogs.append({"role": "tool", "name": tool_call["function"]["name"], "content": result})
    dialogs.append({"role": "assistant", "content": "final answer"})
    return {
        "tools": [{"name": tool_call["function"]["name"]} for tool_call, _ in steps],
        "files": [{"type": "image", "path": path} for path in files],
        "dialogs": dialogs,
        "gt_answer": {"whitelist": [["x"]], "blacklist": None},
    }


# query id -> the gold tool names in order (what each step's instance must predict, by type)
FIXTURE_STEPS = {
    "0": ["OCR", "Calculator"],
    "1": ["ImageDescription", "ImageDescription", "CountGivenObject"],
    "2": ["TextToBbox", "RegionAttributeDescription"],
    "3": ["MathOCR", "Solver"],
}


def write_fixture(root: Path) -> Path:
    (root / "image").mkdir(parents=True)
    for number, color in ((1, "white"), (2, "red"), (3, "blue"), (4, "green"), (5, "yellow")):
        Image.new("RGB", (64, 48), color).save(root / "image" / f"image_{number}.jpg", format="JPEG")
    dataset = {
        "0": item(["image/image_1.jpg"], "How much did I pay for two coffees?", [
            (call("OCR", image="image/image_1.jpg"), "(10, 10, 60, 20) Coffee 3.50"),
            (call("Calculator", expression="2 * 3.5"), "7.0"),
        ]),
        "1": item(["image/image_2.jpg", "image/image_3.jpg"], "How many apples are in the picture with the basket?", [
            (call("ImageDescription", image="image/image_2.jpg"), "A red wall."),
            (call("ImageDescription", image="image/image_3.jpg"), "A basket of apples."),
            (call("CountGivenObject", image="image/image_3.jpg", text="apple"), "4"),
        ]),
        "2": item(["image/image_4.jpg"], "What color is the car?", [
            (call("TextToBbox", image="image/image_4.jpg", text="car", top1=True), {"type": "text", "content": "(1, 2, 30, 40), score 0.9"}),
            (call("RegionAttributeDescription", image="image/image_4.jpg", bbox="(1, 2, 30, 40)", attribute="color"), "green"),
        ], thought="I need the car's bbox first."),
        "3": item(["image/image_5.jpg"], "Solve the equation.", [
            (call("MathOCR", image="image/image_5.jpg"), "x^{2} - 4 = 0"),
            (call("Solver", command="```python\nfrom sympy import *\ndef solution():\n    return str(solve(symbols('x')**2 - 4))\n```"), "[-2, 2]"),
        ]),
        "4": item(["image/image_404.jpg"], "Missing image.", [(call("OCR", image="image/image_404.jpg"), "")]),
        "5": item(["image/image_1.jpg"], "Unknown tool.", [(call("Teleport", image="image/image_1.jpg"), "")]),
    }
    (root / "dataset.json").write_text(json.dumps(dataset), encoding="utf-8")
    return root


@pytest.fixture()
def gta_dir(tmp_path: Path) -> Path:
    return write_fixture(tmp_path / "gta")


def test_every_gold_step_becomes_one_instance(gta_dir: Path) -> None:
    train, test, stats = load_gta(gta_dir, seed=0, test_fraction=0.25)
    assert stats["queries"] == 4 and stats["test_queries"] == 1
    assert stats["skipped_queries"] == {"unreadable image: FileNotFoundError": 1, "unknown tool 'Teleport'": 1}
    steps: dict[str, list[str]] = {}
    for task, _ in train + test:
        steps.setdefault(task.source["gta_query_id"], []).append(
            "MathOCR" if task.target.image_has_math else task.target.tool_type
        )
        assert len(task.history) == task.source["gta_step"] - 1
    assert steps == FIXTURE_STEPS
    test_queries = {task.source["gta_query_id"] for task, _ in test}
    assert len(test_queries) == 1 and not test_queries & {task.source["gta_query_id"] for task, _ in train}


def test_cli_converts_the_fixture(gta_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["--from-gta", str(gta_dir), "--out", str(out), "--seed", "1", "--test-fraction", "0.25"]) == 0
    manifest = read_manifest(out)
    assert manifest["source"] == "gta" and sum(manifest["counts"][s] for s in ("train", "test")) == 9
    assert manifest["counts"]["override"] == manifest["counts"]["test"]
    rows = read_split(out, "train") + read_split(out, "test")
    gold_arguments = {
        (q, i + 1): step["function"]["arguments"]
        for q, entry in json.loads((gta_dir / "dataset.json").read_text()).items()
        for i, step in enumerate(m["tool_calls"][0] for m in entry["dialogs"] if m.get("tool_calls"))
    }
    for row in rows:
        meta, truth = json.loads(row["meta"]), json.loads(row["truth"])
        gold = json.loads(row["answer"])
        # the arguments are GTA's own; the name is re-mapped to its version under the sampled profile
        assert gold["arguments"] == gold_arguments[(meta["gta_query_id"], meta["gta_step"])]
        math = gold["name"] == "MathOCR"
        assert gold["name"] == resolve(meta["tool_type"], Profile(**truth["profile"]), math).tool
        assert row["sample_id"].startswith("gta-") and row["dataset"] == "gta_policy"
        for data, name in zip(row["images"], row["image_names"]):
            assert Image.open(io.BytesIO(data)).format == "PNG" and name.startswith("image/image_")
        assert row["cot"].startswith("<think>") and gold["name"] in row["cot"]
    by_step = {(json.loads(r["meta"])["gta_query_id"], json.loads(r["meta"])["gta_step"]): r for r in rows}
    region = by_step[("2", 2)]
    assert "Returned: {\"type\": \"text\", \"content\": \"(1, 2, 30, 40), score 0.9\"}" in region["query"]
    assert "I need the car's bbox first." in region["cot"]
    assert json.loads(region["answer"])["name"].startswith("RegionAttributeDescription_v")
    assert json.loads(by_step[("3", 1)]["answer"])["name"] == "MathOCR"
    solver = by_step[("3", 2)]
    assert '{"name": "MathOCR", "arguments": {"image": "image/image_5.jpg"}}' in solver["query"]
    counted = by_step[("1", 3)]
    assert counted["image_names"] == ["image/image_2.jpg", "image/image_3.jpg"]
    assert "Returned: A basket of apples." in counted["query"]


def test_conversion_is_deterministic_for_a_seed(gta_dir: Path) -> None:
    first, again = load_gta(gta_dir, seed=3), load_gta(gta_dir, seed=3)
    assert first == again


def test_cli_rejects_a_folder_without_dataset_json(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["--from-gta", str(tmp_path), "--out", str(tmp_path / "out")])
