"""Where the tiny model's perception fails: seeing, or answering the question asked?

    python benchmarks/bench_question_conditioning.py [--model DIR] [--steps 400] [--threads 2]

Trains copies of one model (default: a fresh random-init xs) on balanced yes/no questions "Is there a
<color> object?" about generated 112 px scenes, loss on the answer token only, and prints held-out
accuracy every 50 steps for each setting, side by side in one process:

- one question (always "red"): the answer is a fixed function of the image;
- eight questions (every color): the answer depends on which color the question names;
- eight questions, the color also repeated as the prompt's last token (next to the answer).

Measured on 2026-12-01 with this script's scratch predecessor (the same questions, loss, optimizer
and batch; xs, 2 threads; the variants named): one question 96% in 300 steps; eight
questions 52-64% after 600 steps, also with the vision tower pretrained and frozen
(`mpi_ray.model.vision_pretrain`, which itself reads every color's existence from the same tokens),
with the question before the image, and with the s size (4 layers); eight questions with the color
as the last prompt token, tower pretrained and frozen: 77% at step 250 (it started to learn). The tower sees; what the small language
model does not learn quickly is to condition its reading on a word of the question.
"""

from __future__ import annotations

import argparse
import copy
import random
import tempfile
import time
from pathlib import Path

import torch

from mpi_ray.data.clevr_policy.ontology import COLORS
from mpi_ray.data.clevr_policy.render import render_scene
from mpi_ray.data.clevr_policy.scene import sample_scene
from mpi_ray.model.loading import load_model
from mpi_ray.model.tiny import build_tiny
from mpi_ray.stages.model import resolve_base
from transformers import AutoProcessor

SIDE = 112


def questions(rng: random.Random, colors: tuple[str, ...], count: int, echo: bool, tokenizer) -> tuple[list, list, list]:
    """Balanced: half the scenes have an object of the asked color, half none."""
    texts, images, answers = [], [], []
    for _ in range(count):
        color, yes = rng.choice(colors), rng.random() < 0.5
        scene = sample_scene(rng, SIDE, SIDE)
        while any(obj["color"] == color for obj in scene["objects"]) != yes:
            scene = sample_scene(rng, SIDE, SIDE)
        content = [{"type": "image"}, {"type": "text", "text": f"Is there a {color} object? Answer yes or no."}]
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                               add_generation_prompt=True)
        texts.append(prompt + (f" {color}" if echo else ""))
        images.append(render_scene(scene))
        answers.append(yes)
    return texts, images, answers


def train(model: torch.nn.Module, processor, colors: tuple[str, ...], echo: bool, steps: int, label: str) -> None:
    tokenizer = processor.tokenizer
    tokenizer.padding_side = "left"
    yes_id, no_id = tokenizer.encode("yes")[0], tokenizer.encode("no")[0]
    rng, held_out_rng = random.Random(0), random.Random(1)
    held_out = [questions(held_out_rng, colors, 64, echo, tokenizer) for _ in range(3)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)

    def yes_no_logits(texts: list[str], images: list) -> torch.Tensor:
        batch = processor(text=texts, images=images, return_tensors="pt", padding=True)
        return model(**batch).logits[:, -1, [yes_id, no_id]]

    started = time.monotonic()
    for step in range(1, steps + 1):
        texts, images, answers = questions(rng, colors, 32, echo, tokenizer)
        target = torch.tensor([0 if yes else 1 for yes in answers])
        loss = torch.nn.functional.cross_entropy(yes_no_logits(texts, images), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 50 == 0:
            with torch.no_grad():
                right = [((logits[:, 0] > logits[:, 1]) == torch.tensor(a)).float().mean()
                         for t, i, a in held_out for logits in [yes_no_logits(t, i)]]
            print(f"{label:<34} step {step:>4} | loss {loss.item():.3f} | held-out {100 * float(torch.stack(right).mean()):.1f}% "
                  f"| {time.monotonic() - started:.0f}s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="a local model folder (default: a fresh random-init xs)")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    path = resolve_base(args.model) if args.model else build_tiny(Path(tempfile.mkdtemp()) / "init", "xs", 0,
                                                                   max_pixels=SIDE * SIDE)
    processor = AutoProcessor.from_pretrained(path)
    initial = load_model(path).train()
    settings = [("one question (red)", ("red",), False), ("eight questions", COLORS, False),
                ("eight questions, color last", COLORS, True)]
    for label, colors, echo in settings:
        torch.manual_seed(0)
        train(copy.deepcopy(initial), processor, colors, echo, args.steps, label)


if __name__ == "__main__":
    main()
