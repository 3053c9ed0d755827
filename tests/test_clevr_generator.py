"""ClevrPolicy shards end to end: schema, gold answers, leaf coverage, CoT targets, override and
general splits, the manifest, determinism, config errors and the CLI."""

from __future__ import annotations

import io
import json
import random
import re
import sys
import types
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from mpi_ray.data.clevr_policy.__main__ import main, parse_image_size
from mpi_ray.data.clevr_policy.generator import GeneratorConfig, generate, make_override_policy, make_policies
from mpi_ray.data.clevr_policy.records import OVERRIDE_QUESTION, POLICY_QUESTION
from mpi_ray.data.clevr_policy.scene import kinds_of
from mpi_ray.data.clevr_policy.tree import Condition, evaluate, pattern_holds
from mpi_ray.data.formats import FORMAT_INSTRUCTION, policy_segments
from mpi_ray.data.schema import POLICY_IMAGE_MARK
from mpi_ray.data.shards import read_manifest, read_split

SMALL = dict(depth=4, policies=3, train_per_policy=20, test=12, val=6, general=8, seed=5)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = {}
    for variant in ("T", "M"):
        out[variant] = tmp_path_factory.mktemp(f"clevr_{variant}")
        generate(GeneratorConfig(variant=variant, **SMALL), out[variant])
    return out


def load(directory: Path) -> dict[str, list[dict]]:
    return {split: read_split(directory, split) for split in ("train", "test", "override", "general")}


@pytest.mark.parametrize("variant", ["T", "M"])
def test_records_carry_gold_answers_and_cover_every_leaf(datasets: dict[str, Path], variant: str) -> None:
    config = GeneratorConfig(variant=variant, **SMALL)
    policies = {policy.name: policy for policy in make_policies(config)}
    splits = load(datasets[variant])
    assert [len(splits[s]) for s in ("train", "test", "override", "general")] == [60, 12, 12, 8]
    ids = [r["sample_id"] for rows in splits.values() for r in rows]
    assert len(ids) == len(set(ids))
    for split in ("train", "test"):
        for record in splits[split]:
            policy = policies[record["policy_name"]]
            scene = json.loads(record["truth"])
            meta = json.loads(record["meta"])
            decision = evaluate(policy.tree, kinds_of(scene))
            assert record["answer"] == decision.answer
            assert meta["gold_path"] == [{"condition": s.node_id, "holds": s.holds} for s in decision.steps]
            assert meta["policy_id"] == policy.policy_id and meta["depth"] == 4
            assert record["dataset"] == f"clevr_policy-{variant}-N4" and record["split"] == split
            assert record["policy_text"] == policy.document.text
            assert record["query"] == POLICY_QUESTION.format(name=policy.name) + "\n" + FORMAT_INSTRUCTION
            assert record["image_names"] == [f"image/{record['sample_id']}.png"]
            assert Image.open(io.BytesIO(record["images"][0])).size == (128, 128)
            assert record["policy_text"].count(POLICY_IMAGE_MARK) == len(record["policy_images"])
            assert (len(record["policy_images"]) > 0) == (variant == "M")
    # Every leaf of every policy appears in training; labels are balanced (20 over 16 leaves).
    for policy in policies.values():
        labels = Counter(r["answer"] for r in splits["train"] if r["policy_name"] == policy.name)
        assert set(labels) == {f"Case {leaf.case}" for leaf in policy.tree.leaves()}
        assert max(labels.values()) - min(labels.values()) <= 1


def test_cot_targets_follow_the_gold_path(datasets: dict[str, Path]) -> None:
    train = read_split(datasets["M"], "train")
    with_cot = [r for r in train if r["cot"] is not None]
    assert len(with_cot) == 3 * round(0.125 * 20)
    for record in with_cot:
        cot = record["cot"]
        assert cot.startswith("<think>") and cot.endswith("</think>") and "\\boxed" not in cot
        visited = [step["condition"] for step in json.loads(record["meta"])["gold_path"]]
        recalled = re.findall(r"^Condition ([\d.]+) (?:checks|shows)", cot.removeprefix("<think>"), flags=re.M)
        assert recalled == visited
        assert cot.endswith(f"So the response is {record['answer']}.</think>")
    assert all(r["cot"] is None for r in read_split(datasets["M"], "test"))


def test_override_uses_test_scenes_under_a_new_tree_with_the_same_name(datasets: dict[str, Path]) -> None:
    config = GeneratorConfig(variant="T", **SMALL)
    policies = make_policies(config)
    overrides = {p.policy_id: make_override_policy(config, p, i) for i, p in enumerate(policies)}
    splits = load(datasets["T"])
    tests = {r["sample_id"]: r for r in splits["test"]}
    changed = 0
    for record in splits["override"]:
        meta = json.loads(record["meta"])
        original = tests[meta["test_sample_id"]]
        new_policy = overrides[meta["original_policy_id"]]
        assert record["images"] == original["images"] and record["truth"] == original["truth"]
        assert record["policy_name"] == original["policy_name"] == new_policy.name
        assert record["policy_text"] == new_policy.document.text != original["policy_text"]
        assert record["query"].startswith(OVERRIDE_QUESTION.format(name=new_policy.name))
        assert record["answer"] == evaluate(new_policy.tree, kinds_of(json.loads(record["truth"]))).answer
        changed += record["answer"] != original["answer"]
    assert changed > 0


def test_general_questions_are_answered_from_the_scene(datasets: dict[str, Path]) -> None:
    for record in read_split(datasets["T"], "general"):
        assert (record["policy_name"], record["policy_text"], record["dataset"]) == ("", "", "clevr_general")
        meta = json.loads(record["meta"])
        objects = kinds_of(json.loads(record["truth"]))
        pattern = tuple(Condition(a, v) for a, v in meta["filter"].items())
        if meta["question_type"] == "count":
            assert record["answer"] == str(sum(pattern_holds(pattern, [obj]) for obj in objects))
        else:
            assert record["answer"] == ("yes" if pattern_holds(pattern, objects) else "no")
        assert record["query"] == meta["question"] + "\n" + FORMAT_INSTRUCTION


def test_general_replay_rows_can_echo_the_asked_values(tmp_path: Path) -> None:
    """`data.clevr.general_think=echo`: the replay's think repeats the question's asked words, as asked."""
    out = tmp_path / "echo"
    generate(GeneratorConfig(variant="T", **{**SMALL, "general_replay": 8, "general_think": "echo"}), out)
    replay = [r for r in read_split(out, "train") if r["dataset"] == "clevr_general"]
    for record in replay:
        phrase = json.loads(record["meta"])["question"].removeprefix("Is there a ").removeprefix("How many ")
        words = [w for w in phrase.removesuffix(" are there?").rstrip("?").split() if w not in ("object", "objects")]
        assert record["cot"] == "<think>" + "".join(f" {word}" for word in words) + f" {record['answer']}</think>"
    assert {json.loads(r["meta"])["question_type"] for r in replay} == {"count", "exist"}
    with pytest.raises(ValueError, match="general_think"):
        GeneratorConfig(variant="T", **{**SMALL, "general_think": "caption"}).validate()


def test_general_replay_rows_reach_cot_sft_only(tmp_path: Path, datasets: dict[str, Path]) -> None:
    from mpi_ray.train.plan import eligible_ids
    from mpi_ray.train.rl_trainer import rl_prompt_ids

    out = tmp_path / "replay"
    generate(GeneratorConfig(variant="T", **{**SMALL, "general_replay": 6}), out)
    train = read_split(out, "train")
    replay = [r for r in train if r["dataset"] == "clevr_general"]
    assert len(train) == 66 and len(replay) == 6 and all(r["split"] == "train" for r in replay)
    for record in replay:
        objects = kinds_of(json.loads(record["truth"]))
        assert record["cot"].startswith("<think>The shapes in the image are ") and record["cot"].endswith("</think>")
        assert all(obj["color"] in record["cot"] for obj in objects)  # the CoT names what the image holds
    general_images = {r["images"][0] for r in read_split(out, "general")}
    assert not general_images & {r["images"][0] for r in replay}  # fresh scenes, never the forgetting suite's
    assert read_split(out, "train")[:60] == read_split(datasets["T"], "train")  # the policy rows are unchanged
    replay_ids = {r["sample_id"] for r in replay}
    assert replay_ids <= set(eligible_ids(str(out), "train", needs_cot=True))  # CoT-SFT
    assert not replay_ids & set(eligible_ids(str(out), "train", needs_cot=True, policy_rows_only=True))  # VM-CPT
    assert not replay_ids & set(rl_prompt_ids(str(out), "all"))  # RL


def test_m_policy_segments_interleave_text_and_pictures(datasets: dict[str, Path]) -> None:
    record = read_split(datasets["M"], "train")[0]
    segments = policy_segments(record["policy_text"], record["policy_images"])
    assert [data for kind, data in segments if kind == "image"] == record["policy_images"]
    assert "".join(str(data) if kind == "text" else POLICY_IMAGE_MARK for kind, data in segments) == record["policy_text"]


def test_t_and_m_share_trees_and_scenes(datasets: dict[str, Path]) -> None:
    text, mixed = read_split(datasets["T"], "train"), read_split(datasets["M"], "train")
    assert [r["images"] for r in text] == [r["images"] for r in mixed]
    assert [r["answer"] for r in text] == [r["answer"] for r in mixed]


def test_manifest_reports_counts_labels_and_lengths(datasets: dict[str, Path]) -> None:
    manifest = read_manifest(datasets["T"])
    train = read_split(datasets["T"], "train")
    assert manifest["counts"] == {"train": 60, "val": 6, "test": 12, "override": 12, "general": 8}
    assert manifest["splits"]["train"]["label_distribution"] == dict(Counter(r["answer"] for r in train))
    assert manifest["splits"]["train"]["with_cot"] == sum(r["cot"] is not None for r in train)
    assert manifest["policy_length_unit"].startswith("characters")
    assert [p["policy_length"] for p in manifest["policies"]] == [len(p.document.text) for p in make_policies(GeneratorConfig(variant="T", **SMALL))]
    assert all(p["leaves"] == 16 for p in manifest["policies"])


def test_the_validation_split_is_held_out_like_test_and_leaves_every_other_split_unchanged(
        tmp_path: Path, datasets: dict[str, Path]) -> None:
    val, test = read_split(datasets["T"], "val"), read_split(datasets["T"], "test")
    assert len(val) == 6 and all(r["split"] == "val" and r["cot"] is None for r in val)
    assert {r["policy_name"] for r in val} == {r["policy_name"] for r in test}  # every policy, like test
    scenes = {bytes(r["images"][0]) for r in read_split(datasets["T"], "train") + test}
    assert not {bytes(r["images"][0]) for r in val} & scenes
    generate(GeneratorConfig(variant="T", **{**SMALL, "val": 0}), tmp_path)  # its own stream: the rest is unchanged
    for split in ("train", "test", "override", "general"):
        assert read_split(tmp_path, split) == read_split(datasets["T"], split), split
    assert not list(tmp_path.glob("val-*.parquet"))


def test_same_seed_same_bytes(tmp_path: Path, datasets: dict[str, Path]) -> None:
    generate(GeneratorConfig(variant="T", **SMALL), tmp_path)
    names = sorted(p.name for p in datasets["T"].iterdir())
    assert names == sorted(p.name for p in tmp_path.iterdir())
    for name in names:
        assert (tmp_path / name).read_bytes() == (datasets["T"] / name).read_bytes(), name


def test_config_errors_name_the_setting(tmp_path: Path, datasets: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="train_per_policy"):
        generate(GeneratorConfig(depth=6, variant="T", policies=1, train_per_policy=10), tmp_path / "a")
    with pytest.raises(ValueError, match="variant"):
        generate(GeneratorConfig(depth=2, variant="X"), tmp_path / "b")
    with pytest.raises(ValueError, match="cot_fraction"):
        generate(GeneratorConfig(depth=2, variant="T", cot_fraction=1.5), tmp_path / "c")
    with pytest.raises(FileExistsError):
        generate(GeneratorConfig(variant="T", **SMALL), datasets["T"])


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_image_size("480x320") == (480, 320) and parse_image_size("96") == (96, 96)
    argv = ["--depth", "2", "--variant", "M", "--out", str(tmp_path), "--policies", "2", "--train-per-policy", "4",
            "--test", "4", "--general", "2", "--image-size", "96x64", "--seed", "3"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["counts"] == {"train": 8, "val": 0, "test": 4, "override": 4, "general": 2}
    record = read_split(tmp_path, "train")[0]
    assert Image.open(io.BytesIO(record["images"][0])).size == (96, 64)
    assert Image.open(io.BytesIO(record["policy_images"][0])).size == (64, 64)
    with pytest.raises(SystemExit):  # the folder holds a dataset now
        main(argv)
    assert main(argv + ["--overwrite"]) == 0


def test_policy_lengths_in_tokens_with_a_local_tokenizer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--tokenizer loads a local folder with AutoTokenizer (local files only) and counts policy tokens
    without special tokens. A stand-in module keeps this test free of the transformers import (~15 s)."""
    loaded: list[tuple[str, dict]] = []

    class WhitespaceTokenizer:
        def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
            assert add_special_tokens is False
            return {"input_ids": list(range(len(text.split())))}

    class AutoTokenizer:
        @staticmethod
        def from_pretrained(path: str, **kwargs: object) -> WhitespaceTokenizer:
            loaded.append((path, kwargs))
            return WhitespaceTokenizer()

    monkeypatch.setitem(sys.modules, "transformers", types.SimpleNamespace(AutoTokenizer=AutoTokenizer))
    config = GeneratorConfig(depth=2, variant="T", policies=2, train_per_policy=4, test=2, general=0)
    manifest = generate(config, tmp_path, tokenizer_dir="/models/tokenizer")
    assert loaded == [("/models/tokenizer", {"local_files_only": True})]
    assert manifest["policy_length_unit"] == "tokens" and manifest["tokenizer"] == "/models/tokenizer"
    texts = [p.document.text for p in make_policies(config)]
    assert [p["policy_length"] for p in manifest["policies"]] == [len(t.split()) for t in texts]


def test_default_depth6_set_covers_all_leaves(tmp_path: Path) -> None:
    manifest = generate(GeneratorConfig(depth=6, variant="T", policies=2, test=0, general=0), tmp_path)
    assert manifest["counts"]["train"] == 128 and manifest["splits"]["train"]["with_cot"] == 16
    for policy, labels in zip(manifest["policies"], manifest["splits"]["train"]["label_distribution_per_policy"].values()):
        assert policy["leaves"] == len(labels) == 40 and min(labels.values()) >= 1


def test_objects_that_do_not_fit_are_redrawn_for_the_same_leaf(monkeypatch: pytest.MonkeyPatch) -> None:
    from mpi_ray.data.clevr_policy import sampling

    calls: Counter[str] = Counter()
    real_place = sampling.place_objects

    def place_every_other_time(*args: Any, **kwargs: Any) -> Any:
        calls["place"] += 1
        return None if calls["place"] % 2 else real_place(*args, **kwargs)

    monkeypatch.setattr(sampling, "place_objects", place_every_other_time)
    policy = make_policies(GeneratorConfig(variant="T", **SMALL))[0]
    instances = sampling.sample_instances(random.Random(0), policy, 16, 128, 128)
    assert {f"Case {leaf.case}" for leaf in policy.tree.leaves()} == {i.decision.answer for i in instances}
    assert all(i.sampled_by == "targeted" for i in instances)
