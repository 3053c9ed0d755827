"""ClevrPolicy end to end: a setting's policies, its splits, the shards and the manifest.

Splits: train (leaf-balanced scenes per policy, every leaf covered; a --cot-fraction of them carry a
CoT target), test (leaf-balanced, unseen scenes), override (the test scenes asked under a new tree
with the same policy name), general (policy-free CLEVR questions, to measure forgetting).

Random streams are keyed by (seed, purpose, depth, policy index) and never by the variant, so -T
and -M with one seed share trees, names and scenes and differ only in how values are shown.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from mpi_ray.data.clevr_policy.cot import attribute_summary
from mpi_ray.data.clevr_policy.general import GENERAL_DATASET, asked_values, echo_think, sample_general_question
from mpi_ray.data.clevr_policy.policy_doc import Policy, build_policy_document, sample_image_examples, sample_policy_name
from mpi_ray.data.clevr_policy.records import OVERRIDE_QUESTION, POLICY_QUESTION, general_record, policy_record
from mpi_ray.data.clevr_policy.sampling import Instance, sample_instances
from mpi_ray.data.clevr_policy.scene import kinds_of, sample_scene
from mpi_ray.data.clevr_policy.tree import DecisionTree, evaluate, sample_tree, tree_to_dict
from mpi_ray.data.shards import MANIFEST, write_manifest, write_shards

SPLITS = ("train", "val", "test", "override", "general")
VARIANTS = ("T", "M")


@dataclass(frozen=True)
class GeneratorConfig:
    depth: int
    variant: str  # "T" (text policy) | "M" (some values shown as pictures)
    policies: int = 10
    train_per_policy: int = 64  # >= the leaves of a depth-6 tree (40), so every leaf is covered
    test: int = 200  # test instances over all policies; override reuses these scenes
    val: int = 0  # held-out instances for choosing hyper-parameters (eval.split=val), never the test scenes
    general: int = 100  # policy-free attribute questions
    # Policy-free questions with a CoT in the train split, for CoT-SFT to replay the base's perception
    # task (fresh scenes, never the general split's); 0 is the paper's setting.
    general_replay: int = 0
    general_think: str = "summary"  # the replay rows' think: what the image holds, or "echo" (the asked values)
    cot_fraction: float = 0.125  # paper: ~2,500 CoT of 20,000 training pairs
    image_width: int = 128
    image_height: int = 128
    crop_size: int = 0  # -M pictures, square; 0 = half the smaller image side, at least 64
    image_value_fraction: float = 0.5  # -M: share of conditions shown as pictures (at least one)
    natural_draws_per_sample: int = 20  # prior draws per wanted sample before leaf-targeted filling
    seed: int = 0

    @property
    def dataset(self) -> str:
        return f"clevr_policy-{self.variant}-N{self.depth}"

    @property
    def picture_size(self) -> int:
        # Below 64 px a small metal object's highlight and a small sphere's outline blur away.
        return self.crop_size or max(64, min(self.image_width, self.image_height) // 2)

    def validate(self) -> None:
        """Raise ValueError naming the setting and what it may be."""
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        positive = {"depth": self.depth, "policies": self.policies, "train_per_policy": self.train_per_policy}
        for key, value in positive.items():
            if value < 1:
                raise ValueError(f"{key} must be >= 1, got {value}")
        for key, value in {"test": self.test, "val": self.val, "general": self.general,
                           "general_replay": self.general_replay}.items():
            if value < 0:
                raise ValueError(f"{key} must be >= 0, got {value}")
        if self.general_think not in ("summary", "echo"):
            raise ValueError(f"general_think must be 'summary' or 'echo', got {self.general_think!r}")
        if self.crop_size != 0 and self.crop_size < 32:
            raise ValueError(f"crop_size must be 0 (automatic) or >= 32, got {self.crop_size}")
        for key, fraction in {"cot_fraction": self.cot_fraction, "image_value_fraction": self.image_value_fraction}.items():
            if not 0.0 <= fraction <= 1.0:
                raise ValueError(f"{key} must be in [0, 1], got {fraction}")
        if min(self.image_width, self.image_height) < 32:
            raise ValueError(f"image size must be at least 32x32, got {self.image_width}x{self.image_height}")


@dataclass
class SplitTally:
    """What the manifest reports of a split, counted while its records stream to disk."""

    labels: Counter[str] = field(default_factory=Counter)
    labels_per_policy: dict[str, Counter[str]] = field(default_factory=dict)
    sampled_by: Counter[str] = field(default_factory=Counter)
    with_cot: int = 0
    count: int = 0

    def add(self, record: dict[str, Any], policy_id: str, sampled_by: str) -> None:
        self.count += 1
        self.labels[record["answer"]] += 1
        self.labels_per_policy.setdefault(policy_id, Counter())[record["answer"]] += 1
        self.sampled_by[sampled_by] += 1
        self.with_cot += record["cot"] is not None

    def summary(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "with_cot": self.with_cot,
            "distinct_answers": len(self.labels),
            "label_distribution": _sorted_labels(self.labels),
            "label_distribution_per_policy": {k: _sorted_labels(v) for k, v in sorted(self.labels_per_policy.items())},
            "sampled_by": dict(sorted(self.sampled_by.items())),
        }


def _sorted_labels(labels: Counter[str]) -> dict[str, int]:
    """'Case 2' before 'Case 10'; plain strings (general answers) after, alphabetically."""
    def key(label: str) -> tuple[int, str]:
        number = label.removeprefix("Case ")
        return (int(number), "") if number.isdigit() else (1 << 30, label)
    return {label: labels[label] for label in sorted(labels, key=key)}


def stream_rng(config: GeneratorConfig, purpose: str, index: int = 0) -> random.Random:
    """An independent, reproducible random stream (str seeds hash with SHA-512: stable across runs)."""
    return random.Random(f"clevr_policy:{config.seed}:{purpose}:N{config.depth}:{index}")


# --- policies ---


def make_policies(config: GeneratorConfig) -> list[Policy]:
    """The setting's policies: random trees with unique names; -M picks pictured conditions."""
    rng = stream_rng(config, "policies")
    taken: set[str] = set()
    policies = []
    for index in range(config.policies):
        tree = sample_tree(rng, config.depth)
        name = sample_policy_name(rng, config.depth, taken)
        taken.add(name)
        policy_id = f"{config.dataset}-p{index:02d}"
        policies.append(_policy(config, policy_id, tree, name, stream_rng(config, "pictures", index)))
    return policies


def make_override_policy(config: GeneratorConfig, policy: Policy, index: int) -> Policy:
    """Policy Override: the same name, a new random tree never shown in training."""
    tree = sample_tree(stream_rng(config, "override", index), config.depth)
    return _policy(config, f"{policy.policy_id}-override", tree, policy.name, stream_rng(config, "override-pictures", index))


def _policy(config: GeneratorConfig, policy_id: str, tree: DecisionTree, name: str, picture_rng: random.Random) -> Policy:
    examples = sample_image_examples(picture_rng, tree, config.image_value_fraction) if config.variant == "M" else {}
    document = build_policy_document(tree, name, examples, config.picture_size)
    return Policy(policy_id=policy_id, tree=tree, document=document)


# --- splits: (record, policy id, how its scene was sampled), streamed to the shard writer ---

SplitRows = Iterator[tuple[dict[str, Any], str, str]]


def split_count(total: int, parts: int, index: int) -> int:
    return total // parts + (index < total % parts)


def interleave(per_policy: Sequence[Sequence[Instance]]) -> Iterator[tuple[int, int, Instance]]:
    """(policy index, position, instance), round-robin over policies, so every shard (and any
    prefix of a split) mixes them."""
    longest = max((len(items) for items in per_policy), default=0)
    for position in range(longest):
        for policy_index, items in enumerate(per_policy):
            if position < len(items):
                yield policy_index, position, items[position]


def sample_split(config: GeneratorConfig, policies: Sequence[Policy], split: str, counts: Sequence[int]) -> list[list[Instance]]:
    return [
        sample_instances(stream_rng(config, split, index), policy, count, config.image_width, config.image_height,
                         config.natural_draws_per_sample)
        for index, (policy, count) in enumerate(zip(policies, counts))
    ]


def _sample_id(config: GeneratorConfig, split: str, number: int) -> str:
    return f"{config.dataset}-{split}-{number:06d}"


def train_rows(config: GeneratorConfig, train: Sequence[Sequence[Instance]]) -> SplitRows:
    cot_picks = [set(_cot_positions(config, index, len(items))) for index, items in enumerate(train)]
    for number, (policy_index, position, instance) in enumerate(interleave(train)):
        question = POLICY_QUESTION.format(name=instance.policy.name)
        record = policy_record(config.dataset, config.variant, "train", _sample_id(config, "train", number), instance,
                               question, with_cot=position in cot_picks[policy_index])
        yield record, instance.policy.policy_id, instance.sampled_by


def _cot_positions(config: GeneratorConfig, policy_index: int, count: int) -> list[int]:
    """Which of a policy's training samples carry a CoT: round(fraction x count), at random."""
    return stream_rng(config, "cot", policy_index).sample(range(count), round(config.cot_fraction * count))


def test_rows(config: GeneratorConfig, test: Sequence[Instance], split: str = "test") -> SplitRows:
    """Held-out policy questions without a CoT: the test split, or the validation split alike."""
    for number, instance in enumerate(test):
        question = POLICY_QUESTION.format(name=instance.policy.name)
        record = policy_record(config.dataset, config.variant, split, _sample_id(config, split, number), instance,
                               question, with_cot=False)
        yield record, instance.policy.policy_id, instance.sampled_by


def override_rows(config: GeneratorConfig, test: Sequence[Instance], overrides: dict[str, Policy]) -> SplitRows:
    """Each test scene asked under its policy's override (same name, new tree)."""
    for number, instance in enumerate(test):
        policy = overrides[instance.policy.policy_id]
        overridden = Instance(policy, instance.scene, evaluate(policy.tree, kinds_of(instance.scene)), instance.sampled_by)
        question = OVERRIDE_QUESTION.format(name=policy.name)
        link = {"test_sample_id": _sample_id(config, "test", number), "original_policy_id": instance.policy.policy_id}
        record = policy_record(config.dataset, config.variant, "override", _sample_id(config, "override", number),
                               overridden, question, with_cot=False, extra_meta=link)
        yield record, policy.policy_id, "test_scene"


def general_rows(config: GeneratorConfig, split: str = "general") -> SplitRows:
    """Policy-free questions on fresh scenes: counts and yes/no existence, alternating. In the train
    split (the replay rows) each carries a CoT that names what the image holds, as the base learned."""
    count = config.general if split == "general" else config.general_replay
    rng = stream_rng(config, "general" if split == "general" else "general_replay")
    for number in range(count):
        scene = sample_scene(rng, config.image_width, config.image_height)
        kind = "count" if number % 2 == 0 else "exist"
        question = sample_general_question(rng, kinds_of(scene), kind, want_yes=number % 4 == 1)
        sample_id = f"{GENERAL_DATASET}-N{config.depth}-{split}-{number:06d}"
        record = general_record(sample_id, scene, question, split)
        if split == "train":
            if config.general_think == "echo":
                record["cot"] = echo_think(asked_values(question.conditions, plural=question.kind == "count"), question.answer)
            else:
                record["cot"] = f"<think>{attribute_summary(kinds_of(scene))}</think>"
        yield record, "", "natural"


def _tallied(rows: SplitRows, tally: SplitTally) -> Iterator[dict[str, Any]]:
    for record, policy_id, sampled_by in rows:
        tally.add(record, policy_id, sampled_by)
        yield record


# --- the whole dataset ---


def prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse to mix with an earlier run's shards; with `overwrite`, delete only those files."""
    stale = [path for split in SPLITS for path in out_dir.glob(f"{split}-*.parquet")]
    stale += [path for path in [out_dir / MANIFEST] if path.exists()]
    if stale and not overwrite:
        raise FileExistsError(f"{out_dir} already holds a dataset ({stale[0].name}, ...); pass overwrite to replace it")
    for path in stale:
        path.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)


def generate(
    config: GeneratorConfig, out_dir: str | Path, tokenizer_dir: str | None = None, shard_size: int = 512, overwrite: bool = False
) -> dict[str, Any]:
    """Write the train/test/override/general shards and the manifest; returns the manifest."""
    config.validate()
    out = Path(out_dir)
    policies = make_policies(config)
    for policy in policies:
        if config.train_per_policy < len(policy.tree.leaves()):
            raise ValueError(
                f"train_per_policy must be >= the leaves of every policy to cover them all "
                f"({policy.policy_id} has {len(policy.tree.leaves())}), got {config.train_per_policy}"
            )
    overrides = {policy.policy_id: make_override_policy(config, policy, index) for index, policy in enumerate(policies)}
    train = sample_split(config, policies, "train", [config.train_per_policy] * len(policies))
    test_counts = [split_count(config.test, len(policies), index) for index in range(len(policies))]
    test = [instance for _, _, instance in interleave(sample_split(config, policies, "test", test_counts))]
    val_counts = [split_count(config.val, len(policies), index) for index in range(len(policies))]
    val = [instance for _, _, instance in interleave(sample_split(config, policies, "val", val_counts))]
    prepare_out_dir(out, overwrite)

    tallies = {split: SplitTally() for split in SPLITS}
    sources = {
        "train": itertools.chain(train_rows(config, train), general_rows(config, "train")),
        "val": test_rows(config, val, "val"),
        "test": test_rows(config, test),
        "override": override_rows(config, test, overrides),
        "general": general_rows(config),
    }
    shards = {split: write_shards(_tallied(rows, tallies[split]), out, split, shard_size) for split, rows in sources.items()}

    length_unit, measure = policy_length_measure(tokenizer_dir)
    summaries = [policy_summary(policy, measure) for policy in policies]
    manifest = {
        "dataset": config.dataset,
        "generator": "mpi_ray.data.clevr_policy",
        "config": asdict(config),
        "counts": {split: tallies[split].count for split in SPLITS},
        "splits": {split: tallies[split].summary() for split in SPLITS},
        "shards": shards,
        "policy_length_unit": length_unit,
        "tokenizer": tokenizer_dir,
        "policies": summaries,
        "policy_length_stats": _length_stats(summaries),
        "override_policies": [policy_summary(policy, measure) for policy in overrides.values()],
    }
    write_manifest(out, manifest)
    return manifest


def policy_summary(policy: Policy, measure: Callable[[str], int]) -> dict[str, Any]:
    return {
        "policy_id": policy.policy_id,
        "name": policy.name,
        "leaves": len(policy.tree.leaves()),
        "conditions": len(policy.tree.decision_nodes()),
        "policy_images": len(policy.document.images),
        "policy_length": measure(policy.document.text),
        "tree": tree_to_dict(policy.tree.root),
    }


def _length_stats(summaries: Sequence[dict[str, Any]]) -> dict[str, float]:
    lengths = [summary["policy_length"] for summary in summaries]
    return {"min": min(lengths), "mean": round(sum(lengths) / len(lengths), 1), "max": max(lengths)}


def policy_length_measure(tokenizer_dir: str | None) -> tuple[str, Callable[[str], int]]:
    """Tokens of the policy text with the model's tokenizer (a local folder); else characters.

    Policy images are not counted: each is one POLICY_IMAGE_MARK in the text here, and the
    processor expands it to image tokens that depend on the picture size.
    """
    if tokenizer_dir is None:
        return "characters (no --tokenizer given)", len
    from transformers import AutoTokenizer  # heavy import, only when asked for

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    return "tokens", lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])
