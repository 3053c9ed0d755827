"""Can the base follow a policy in context? PoRo's policy-aware group needs it.

    python benchmarks/bench_base_in_context.py [--base models/tiny-base-xs] [--count 48] [--depth 2]

Greedy generation (transformers, CPU) on held-out in-context policy samples of the base's own kind:
a random depth-`depth` policy in the prompt (base names and trees, never a run's), the scene, the
answer its tree gives. Prints the accuracy against the floor (one constant case), how often the
reasoning says "Yes" at the root condition against how often the root holds and how often it decides
the root right, and the cases answered.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import time
from collections import Counter

import torch

from mpi_ray.data.encode import Encoder
from mpi_ray.model.base_data import BaseMix, base_records
from mpi_ray.model.loading import load_model
from mpi_ray.stages.model import resolve_base

HELD_OUT_START = 300_000_000  # a stretch of the base stream no build reaches (cf. base.QUESTION_POLICY_START)
_ROOT = re.compile(r"Condition 1 checks[^.]*\. (Yes|No)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="models/tiny-base-xs")
    parser.add_argument("--count", type=int, default=48)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=112)
    args = parser.parse_args()
    torch.set_num_threads(2)
    base = resolve_base(args.base)
    encoder, model = Encoder(base, 3136, args.image_size ** 2), load_model(base).eval()
    mix = BaseMix(perception_think=0.0, perception_direct=0.0, policy=1.0, min_depth=args.depth, max_depth=args.depth,
                  pictured_fraction=0.0)
    records = list(itertools.islice(base_records(0, args.image_size, mix, start=HELD_OUT_START), args.count))
    answered, right, root_yes, root_holds, root_right, started = Counter(), 0, 0, 0, 0, time.perf_counter()
    for record in records:
        prompt = encoder.prompt(record, with_policy=True)
        batch = encoder.processor(text=[prompt["prompt"]], images=prompt["images"] or None, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=256, do_sample=False)
        text = encoder.processor.tokenizer.decode(out[0, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        answer = (re.findall(r"\\boxed\{(.*?)\}", text) or ["(none)"])[-1]
        answered[answer] += 1
        right += answer == record["answer"]
        root, holds = _ROOT.search(text), json.loads(record["meta"])["gold_path"][0]["holds"]
        root_yes += bool(root and root.group(1) == "Yes")
        root_holds += holds
        root_right += bool(root and (root.group(1) == "Yes") == holds)
    floor = max(Counter(r["answer"] for r in records).values())
    count = len(records)
    print(f"base {base}: {count} held-out depth-{args.depth} policies in context, {time.perf_counter() - started:.0f} s")
    print(f"accuracy {100 * right / count:.1f}% (floor, one constant case: {100 * floor / count:.1f}%)")
    print(f"root condition: the reasoning says Yes {root_yes}/{count}, it holds {root_holds}/{count}, "
          f"decided right {root_right}/{count}")
    print(f"cases answered: {dict(answered.most_common())}")


if __name__ == "__main__":
    main()
