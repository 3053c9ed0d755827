"""Convert the real GTA benchmark (its `dataset.json` and `image/` folder) into GTAPolicy tasks.

Every gold assistant tool call becomes one single-turn task: the earlier calls and what the tools
returned are its history, the call is its target. A profile is sampled per task so that the target's
rule branches are visited in turn, and the records re-name every call to its version under that
profile. The split is by query (all steps of a query land in one split), so no test query leaks.
A query whose image is missing or unreadable, or that calls a tool GTAPolicy does not know, is skipped
and counted in the returned stats.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

from PIL.Image import DecompressionBombError

from mpi_ray.data.gta_policy.generator import PAPER_TEST, PAPER_TRAIN, BranchCycle, sample_profile
from mpi_ray.data.gta_policy.images import reencode_png
from mpi_ray.data.gta_policy.instances import Step, Task
from mpi_ray.data.gta_policy.rules import Profile
from mpi_ray.data.gta_policy.tools import TOOLS_BY_NAME

DATASET_FILE = "dataset.json"
DEFAULT_TEST_FRACTION = PAPER_TEST / (PAPER_TRAIN + PAPER_TEST)


class SkipQuery(Exception):
    """This query cannot become tasks; the message is the reason counted in the stats."""


def _text(content: Any) -> str:
    """A tool's returned value as text (GTA stores str, or dicts/lists of typed parts)."""
    return content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)


def _arguments(raw: Any) -> dict[str, Any]:
    arguments = json.loads(raw) if isinstance(raw, str) else raw
    if not isinstance(arguments, dict):
        raise SkipQuery("arguments are not an object")
    return arguments


def _step(function: dict[str, Any]) -> Step:
    name = function.get("name")
    if name not in TOOLS_BY_NAME:
        raise SkipQuery(f"unknown tool {name!r}")
    # MathOCR is what rule 7 gives for OCR on an image with math, so the rules re-derive it.
    if name == "MathOCR":
        return Step("OCR", _arguments(function.get("arguments", {})), image_has_math=True)
    return Step(name, _arguments(function.get("arguments", {})))


def _images(root: Path, item: dict[str, Any]) -> tuple[tuple[bytes, ...], tuple[str, ...]]:
    names, data = [], []
    for entry in item.get("files", []):
        if entry.get("type", "image") != "image":
            continue
        path = root / entry["path"]
        try:
            data.append(reencode_png(path.read_bytes()))
        except (OSError, ValueError, DecompressionBombError) as error:  # missing, unreadable, or absurdly large
            raise SkipQuery(f"unreadable image: {type(error).__name__}") from error
        names.append(entry["path"])
    if not names:
        raise SkipQuery("no image")
    return tuple(data), tuple(names)


def query_tasks(root: Path, query_id: str, item: dict[str, Any]) -> list[Task]:
    """One task per gold tool call of one GTA query."""
    images, names = _images(root, item)
    query = next((m["content"] for m in item["dialogs"] if m.get("role") == "user"), None)
    if not isinstance(query, str):
        raise SkipQuery("no user query")
    done: list[Step] = []  # earlier calls; results are filled in as tool messages arrive
    results: list[str] = []
    tasks = []
    for message in item["dialogs"]:
        if message.get("role") == "tool":
            results.append(_text(message.get("content", "")))
            continue
        if message.get("role") != "assistant" or not message.get("tool_calls"):
            continue
        for call in message["tool_calls"]:
            target = _step(call.get("function", {}))
            history = tuple(replace(s, result=results[i] if i < len(results) else "") for i, s in enumerate(done))
            reason = message.get("thought")  # GTA's own annotation of why this call, when it has one
            if not (isinstance(reason, str) and reason.strip()):
                reason = f"The next step of the request needs {call['function']['name']}."
            tasks.append(Task("gta", images, names, query, history, target, reason,
                              source={"gta_query_id": query_id, "gta_step": len(done) + 1}))
            done.append(target)
    if not tasks:
        raise SkipQuery("no tool call")
    return tasks


def _target_key(step: Step) -> str:
    return "MathOCR" if step.image_has_math else step.tool_type


def load_gta(
    directory: str | Path, seed: int = 0, test_fraction: float = DEFAULT_TEST_FRACTION
) -> tuple[list[tuple[Task, Profile]], list[tuple[Task, Profile]], dict[str, Any]]:
    """(train pairs, test pairs, stats) from a GTA release folder."""
    root = Path(directory)
    raw = json.loads((root / DATASET_FILE).read_text(encoding="utf-8"))
    items = raw.items() if isinstance(raw, dict) else enumerate(raw)
    rng = random.Random(f"gta_policy/gta/{seed}")
    per_query: list[list[Task]] = []
    skipped: Counter[str] = Counter()
    for query_id, item in items:
        try:
            per_query.append(query_tasks(root, str(query_id), item))
        except SkipQuery as reason:
            skipped[str(reason)] += 1
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError):
            skipped["malformed query"] += 1
    rng.shuffle(per_query)
    test_count = round(len(per_query) * test_fraction)
    cycle = BranchCycle(rng)
    pairs = [[(task, sample_profile(cycle.next(_target_key(task.target)), rng)) for task in tasks] for tasks in per_query]
    test = [pair for group in pairs[:test_count] for pair in group]
    train = [pair for group in pairs[test_count:] for pair in group]
    stats = {"queries": len(per_query), "skipped_queries": dict(skipped), "test_queries": test_count}
    return train, test, stats
