"""Does a base's vision tower tell a yellow cylinder from another yellow object? (the default's condition 1.1)

    python benchmarks/bench_tower_conjunction.py [--models models/tiny-base-xs,DIR] [--steps 800] [--threads 2]

For each model, side by side in one process: its tower (trained) plus a fresh linear readout, max over
the merged visual tokens, learns "is one of the yellow objects a cylinder?" on balanced scenes that
all hold a yellow object (so colour alone says nothing); held-out accuracy every 100 steps. Then, from
a fresh copy of the same model, the whole model learns the same fixed question through the language
model ("Is there a yellow cylinder? Answer yes or no.", the answer token's loss only): what CoT-SFT
must learn for that condition, with all of the signal on it. Figures: docs/tiny-base-log.md, "A tower that reads the conjunction".
"""

from __future__ import annotations

import argparse
import random
import time

import torch
from transformers import AutoProcessor

from mpi_ray.data.clevr_policy.render import render_scene
from mpi_ray.data.clevr_policy.scene import sample_scene
from mpi_ray.model.loading import load_model
from mpi_ray.model.vision_pretrain import tower_tokens
from mpi_ray.stages.model import resolve_base

SIDE, COLOR, SHAPE = 112, "yellow", "cylinder"


def scenes(rng: random.Random, count: int) -> tuple[list, torch.Tensor]:
    """Scenes with a yellow object, half of them with a yellow cylinder."""
    drawn, answers = [], []
    for _ in range(count):
        yes = rng.random() < 0.5
        while True:
            scene = sample_scene(rng, SIDE, SIDE)
            yellow = [obj for obj in scene["objects"] if obj["color"] == COLOR]
            if yellow and any(obj["shape"] == SHAPE for obj in yellow) == yes:
                break
        drawn.append(render_scene(scene))
        answers.append(yes)
    return drawn, torch.tensor(answers, dtype=torch.float)


def readout_run(path: str, processor, steps: int) -> None:
    visual = load_model(path).train().model.visual
    readout = torch.nn.Linear(visual.merger.mlp[-1].out_features, 1)
    optimizer = torch.optim.AdamW([*visual.parameters(), *readout.parameters()], lr=2e-3)

    def score(images: list) -> torch.Tensor:
        inputs = processor.image_processor(images=images, return_tensors="pt")
        tokens = tower_tokens(visual, {"pixel_values": inputs["pixel_values"], "grid_thw": inputs["image_grid_thw"]})
        return readout(tokens).view(len(images), -1).amax(1)

    run(f"{path}: tower + readout", score, optimizer, steps)


def language_run(path: str, processor, steps: int) -> None:
    model = load_model(path).train()
    tokenizer = processor.tokenizer
    yes_id, no_id = tokenizer.encode("yes")[0], tokenizer.encode("no")[0]
    content = [{"type": "image"}, {"type": "text", "text": f"Is there a {COLOR} {SHAPE}? Answer yes or no."}]
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)

    def score(images: list) -> torch.Tensor:
        batch = processor(text=[prompt] * len(images), images=images, return_tensors="pt")
        logits = model(**batch).logits[:, -1]
        return logits[:, yes_id] - logits[:, no_id]

    run(f"{path}: whole model, the question", score, optimizer, steps, warmup=100)


def run(label: str, score, optimizer: torch.optim.Optimizer, steps: int, warmup: int = 1) -> None:
    rng, held_out_rng = random.Random(0), random.Random(1)
    held_out = [scenes(held_out_rng, 64) for _ in range(3)]
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    started = time.monotonic()
    for step in range(1, steps + 1):
        for group, lr in zip(optimizer.param_groups, base_lrs):
            group["lr"] = lr * min(1.0, step / warmup)
        images, answers = scenes(rng, 32)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(score(images), answers)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 100 == 0:
            with torch.no_grad():
                right = torch.cat([((score(images) > 0).float() == answers).float() for images, answers in held_out])
            print(f"{label:<60} step {step:>4} | loss {loss.item():.3f} | held-out {100 * float(right.mean()):.1f}% "
                  f"| {time.monotonic() - started:.0f}s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="models/tiny-base-xs", help="comma-separated local model folders")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name in args.models.split(","):
        path = str(resolve_base(name))
        processor = AutoProcessor.from_pretrained(path)
        torch.manual_seed(0)
        readout_run(path, processor, args.steps)
        torch.manual_seed(0)
        language_run(path, processor, args.steps)


if __name__ == "__main__":
    main()
