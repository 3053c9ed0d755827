"""Pretrain the tiny Qwen2.5-VL into a base that can see and read (our stand-in for the Instruct model).

    python -m mpi_ray.model.base --out DIR [--size xs] [--image-size 112] [--vision-steps 10000] [--minutes 40] [--seed 0]
                                 [--extra-vision-steps N] [--vision-lr-scale 0] [--question-steps N]
                                 [--question-curriculum color,material,color+material,...]
                                 [--question-think direct|echo] [--question-policy-every 0]

Starts from `python -m mpi_ray.model.tiny`'s random init (or resumes DIR), first pretrains the vision
tower alone on dense attribute labels (`mpi_ray.model.vision_pretrain`, `--vision-steps`), then
trains the whole model for `--minutes` on the endless generated stream of `mpi_ray.model.base_data`
(perception questions and in-context policy following, disjoint from every run's data), then, with
`--extra-vision-steps`, tops up the tower alone again, and with `--question-steps` ends on direct
yes/no existence questions alone (the answer carries the loss there, not one token of a long
target), in the stages of `--question-curriculum` (one attribute at a time, then mixes). The
defaults are the committed base's recipe: the tower frozen under the language phase
(`--vision-lr-scale 0`: at 3x, 40 minutes wrecked a tower that read 96.9%; README, "The tiny local
model"). It writes a Hugging Face folder plus `base_manifest.json`: the exact command, seed, commit,
minutes, samples seen, the vision pretraining's and the perception probe's figures. One process, plain
PyTorch: it runs once, offline, and its output is what runs start from (`model.name_or_path`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import shlex
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from mpi_ray.data.encode import Encoder, decode_images, response_labels
from mpi_ray.data.prompts import conversation
from mpi_ray.data.streams import padded_batch
from mpi_ray.data.clevr_policy.ontology import ATTRIBUTES
from mpi_ray.model.base_data import BaseMix, answered, base_records, probe_records, target_of
from mpi_ray.model.loading import load_model
from mpi_ray.model.tiny import SIZES, build_tiny
from mpi_ray.model.vision_pretrain import pretrain_vision
from mpi_ray.train.losses import masked_lm_loss

MANIFEST = "base_manifest.json"
METRICS = "base_metrics.jsonl"  # one line per probe, both phases
STATE = "base_train_state.pt"  # optimizer + position, for --resume; not part of the artifact
QUESTION_POLICY_START = 100_000_000  # the question phase's policy batches: a stretch of the stream no phase reaches


def encode(encoder: Encoder, record: dict[str, Any]) -> dict[str, np.ndarray]:
    """Prompt (with the policy when the record has one) + target; loss on the target only."""
    target = target_of(record) + encoder.end_of_turn
    messages, blobs = conversation(record, with_policy=bool(record["policy_text"]), target=None)
    prompt = encoder.processor.apply_chat_template(messages, add_generation_prompt=True)
    row = encoder._process(record["sample_id"], prompt + target, decode_images(record["sample_id"], blobs))
    labels = response_labels(row["input_ids"], encoder.processor.tokenizer(target, add_special_tokens=False)["input_ids"])
    assert labels is not None, record["sample_id"]
    row["labels"] = labels
    return row


def collate(rows: list[dict[str, np.ndarray]], encoder: Encoder) -> dict[str, torch.Tensor]:
    columns = {key: [row[key] for row in rows] for key in rows[0]}
    return padded_batch(columns, encoder.processor.tokenizer.pad_token_id, encoder.visual.image)


@torch.no_grad()
def probe_accuracy(model: torch.nn.Module, encoder: Encoder, records: list[dict[str, Any]]) -> dict[str, float]:
    """Balanced yes/no existence questions: the model is right when "\\boxed{<gold>}" is likelier
    than the other answer. Overall and per number of conditions (1 = attribute, 2 = conjunction)."""
    model.eval()
    right: dict[int, list[bool]] = {1: [], 2: []}
    by_attribute: dict[str, list[bool]] = {}
    margins: list[tuple[float, bool]] = []  # (how much likelier "yes" is, gold is yes)
    for record in records:
        rows = []
        for answer in ("yes", "no"):
            rows.append(encode(encoder, answered(record, answer)))
        batch = collate(rows, encoder)
        labels = batch.pop("labels")
        logits = model(**batch).logits
        nll = torch.stack([masked_lm_loss(logits[i: i + 1], labels[i: i + 1])[0] for i in range(2)])
        predicted = ("yes", "no")[int(nll.argmin())]
        margins.append((float(nll[1] - nll[0]), record["answer"] == "yes"))
        right[record["meta"]["conditions"]].append(predicted == record["answer"])
        if record["meta"]["conditions"] == 1:
            by_attribute.setdefault(record["meta"]["attributes"][0], []).append(predicted == record["answer"])
    model.train()
    every = right[1] + right[2]
    return {"probe": 100 * sum(every) / len(every), "probe_auc": 100 * _auc(margins), "probe_single": 100 * float(np.mean(right[1])),
            "probe_conjunction": 100 * float(np.mean(right[2])),
            **{f"probe_{attribute}": 100 * float(np.mean(hits)) for attribute, hits in sorted(by_attribute.items())}}


def _auc(margins: list[tuple[float, bool]]) -> float:
    """How often a yes-question scores above a no-question: 0.5 for a model that does not look,
    whatever its bias towards one answer (plain accuracy then reads exactly 50%)."""
    yes = [m for m, gold in margins if gold]
    no = [m for m, gold in margins if not gold]
    pairs = [(a > b) + 0.5 * (a == b) for a in yes for b in no]
    return sum(pairs) / len(pairs) if pairs else 0.5


def optimizer_for(model: torch.nn.Module, lr: float, vision_lr_scale: float) -> torch.optim.Optimizer:
    """The tower gets its own rate (`vision_lr_scale` x lr): larger once helped it learn from the language
    loss's weak gradients; now it is pretrained on dense labels and kept frozen (0) so that it keeps them."""
    vision = [p for n, p in model.named_parameters() if ".visual." in f".{n}"]
    ids = {id(p) for p in vision}
    text = [p for p in model.parameters() if id(p) not in ids]
    return torch.optim.AdamW([{"params": text, "lr": lr}, {"params": vision, "lr": lr * vision_lr_scale}],
                             weight_decay=0.01, betas=(0.9, 0.98))


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def batches(encoder: Encoder, seed: int, image_size: int, mix: BaseMix, start: int, size: int) -> Iterator[tuple[int, list]]:
    records = base_records(seed, image_size, mix, start)
    number = start
    while True:
        rows = [encode(encoder, record) for record in itertools.islice(records, size)]
        number += size
        yield number, rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--size", default="xs", choices=sorted(SIZES))
    parser.add_argument("--image-size", type=int, default=112)  # 16 visual tokens: the only size where multi-object training moved
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--minutes", type=float, default=40.0, help="language phase time budget (this invocation; 0 skips it)")
    parser.add_argument("--total-minutes", type=float, default=None, help="the cosine schedule's length (default: --minutes)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--vision-lr-scale", type=float, default=0.0, help="the tower's lr over --lr (0: frozen)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--probe-every", type=int, default=500, help="steps")
    parser.add_argument("--probe-size", type=int, default=200)
    parser.add_argument("--policy-share", type=float, default=0.15)  # perception first: policy rows are 3x longer
    parser.add_argument("--max-depth", type=int, default=3)
    parser.add_argument("--vision-steps", type=int, default=10000, help="dense attribute pretraining of the vision tower (fresh runs)")
    parser.add_argument("--extra-vision-steps", type=int, default=0,
                        help="after the language phase, this many more dense-label steps for the tower (a fresh readout and stream)")
    parser.add_argument("--question-steps", type=int, default=0,
                        help="last, this many steps (in all invocations) of direct yes/no existence questions only; "
                             "with --question-curriculum, this many per stage")
    parser.add_argument("--question-curriculum", type=question_stages, default=question_stages(""),
                        help="the question phase's stages, comma-separated: each a +-joined set of attributes asked "
                             "one at a time, 'all' (the probe's mix) or 'pairs' (two-attribute conjunctions); "
                             "e.g. color,material,color+material,all")
    parser.add_argument("--question-think", choices=("direct", "echo"), default="direct",
                        help="the question phase's form: 'Answer with yes or no.' and the boxed answer, or the general "
                             "questions' form with a think that echoes the asked values (every attribute read in one mix)")
    parser.add_argument("--question-policy-every", type=int, default=0,
                        help="after every this many question steps, one step on a batch (--batch) of the language "
                             "phase's in-context policy samples, which the questions alone wear away (0: none)")
    parser.add_argument("--question-batch", type=int, default=32)
    parser.add_argument("--question-lr", type=float, default=1e-3)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    out = Path(args.out)
    if not (out / "config.json").exists():
        build_tiny(out, args.size, args.seed, max_pixels=args.image_size * args.image_size)
    state = torch.load(out / STATE, weights_only=False) if (out / STATE).exists() else None
    model = load_model(out).train()
    encoder = Encoder(str(out), max_pixels=args.image_size * args.image_size, max_seq_len=4096)
    optimizer = optimizer_for(model, args.lr, args.vision_lr_scale)
    position = {"step": 0, "seen": 0, "minutes": 0.0, "vision": None, "question_step": 0}  # where the base stands; saved with it
    if state:
        optimizer.load_state_dict(state["optimizer"])
        position.update({key: state.get(key, value) for key, value in position.items()})
    if position["vision"] is None and args.vision_steps > 0:
        position["vision"] = asdict(pretrain_vision(model, encoder.processor, args.image_size, args.vision_steps, seed=args.seed,
                                                    log=lambda line: print(line, flush=True)))
        save(out, args, model, optimizer, position, {"vision": position["vision"]})
    if args.minutes > 0:
        language_phase(out, args, model, encoder, optimizer, position)
    if args.extra_vision_steps > 0:
        # Measured on the default: the tower after 3,000 steps and the language phase barely tells a yellow
        # cylinder from a yellow sphere (61% through a trained readout); 7,000 more steps, 96% (docs/tiny-base-log.md).
        # Re-align the language model afterwards (a frozen-tower language phase): alone, a top-up broke
        # a decision the runs had read at 99%.
        extra = asdict(pretrain_vision(model, encoder.processor, args.image_size, args.extra_vision_steps, seed=args.seed,
                                       stream="clevr_vision_extra", log=lambda line: print(line, flush=True)))
        save(out, args, model, optimizer, position, {"vision_extra": extra})
    if args.question_steps > 0:
        question_phase(out, args, model, encoder, optimizer, position)


def language_phase(out: Path, args: argparse.Namespace, model: torch.nn.Module, encoder: Encoder,
                   optimizer: torch.optim.Optimizer, position: dict[str, Any]) -> None:
    """The whole model on the base mix for `--minutes` (cosine schedule over `--total-minutes`), probed
    and saved every `--probe-every` steps; `position` is updated in place."""
    step, spent = position["step"], position["minutes"]
    total_minutes = args.total_minutes or (spent + args.minutes)
    thinking = (1.0 - args.policy_share) * 0.7
    mix = BaseMix(perception_think=thinking, perception_direct=1.0 - args.policy_share - thinking,
                  policy=args.policy_share, max_depth=args.max_depth)
    probes = probe_records(args.probe_size, args.image_size)
    print(f"[base] {sum(p.numel() for p in model.parameters()):,} parameters, {args.image_size}px; "
          f"from step {step} ({position['seen']:,} samples, {spent:.1f} min)", flush=True)

    started, losses = time.monotonic(), []
    with (out / METRICS).open("a") as log:
        for seen, rows in batches(encoder, args.seed, args.image_size, mix, position["seen"], args.batch):
            minutes = spent + (time.monotonic() - started) / 60
            progress = min(1.0, minutes / total_minutes)
            for group, base_lr in zip(optimizer.param_groups, (args.lr, args.lr * args.vision_lr_scale)):
                group["lr"] = base_lr * min(1.0, (step + 1) / 200) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
            losses.append(train_step(model, optimizer, encoder, rows))
            step += 1
            done = minutes - spent >= args.minutes
            if step % args.probe_every == 0 or done:
                metrics = {"step": step, "seen": seen, "minutes": round(minutes, 2), "loss": round(float(np.mean(losses)), 4)}
                checkpoint(out, args, model, encoder, optimizer, position, probes, log, metrics,
                           f"{seen:,} samples | {minutes:.1f}/{total_minutes:.0f} min | {seen / max(1e-9, minutes * 60):.1f} samples/s")
                losses = []
            if done:
                break


def question_stages(spec: str) -> list[tuple[tuple[str, ...], int | None]]:
    """`--question-curriculum` as (attributes asked, conditions per question) per stage; empty: one
    stage, the probe's mix (every attribute, one or two conditions); 'pairs': two-attribute
    conjunctions only."""
    stages: list[tuple[tuple[str, ...], int | None]] = []
    for stage in [part.strip() for part in spec.split(",") if part.strip()] or ["all"]:
        if stage == "pairs":
            stages.append((tuple(ATTRIBUTES), 2))
            continue
        asked = list(ATTRIBUTES) if stage == "all" else stage.split("+")
        unknown = sorted(set(asked) - set(ATTRIBUTES))
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown attribute(s) {unknown} in stage {stage!r} (known: {', '.join(ATTRIBUTES)}, all)")
        stages.append((tuple(a for a in ATTRIBUTES if a in asked), None if stage == "all" else 1))
    return stages


def stage_name(attributes: tuple[str, ...], width: int | None) -> str:
    return "all" if width is None else "pairs" if width == 2 else "+".join(attributes)


def question_phase(out: Path, args: argparse.Namespace, model: torch.nn.Module, encoder: Encoder,
                   optimizer: torch.optim.Optimizer, position: dict[str, Any]) -> None:
    """`--question-steps` steps of direct yes/no existence questions only (per stage of
    `--question-curriculum`), batches of `--question-batch`, lr `--question-lr` after a 200-step warm-up.
    In the mixed stream the answer is one token of a long target; here it carries the loss. Why stages:
    asked about every attribute at once the base read none of them in 3,000 steps, while one attribute
    alone is read in 500-800 (colour, material), and two learned alone stay read when mixed after
    (`benchmarks/bench_question_every_attribute.py`). With `--question-think echo` the questions are the
    general questions' own (counts too), answered through an echo think, "<think> small cyan yes</think>":
    every attribute is read in one mix that way (probe 77% after 3,000 steps, from 50), but alone it wears
    away the language phase's policy following (in context 0%); `--question-policy-every K` keeps it with a
    batch of policy samples after every K question steps (the committed base: K=3, probe 69.5%). It
    continues the stream's sample numbers."""
    stages = args.question_curriculum
    total = args.question_steps * len(stages)
    echo = args.question_think == "echo"
    probes = probe_records(args.probe_size, args.image_size, echo=echo)
    first, seen, started, losses, policy_losses = position["question_step"], position["seen"], time.monotonic(), [], []
    step = first
    with (out / METRICS).open("a") as log:
        while step < total:
            stage = step // args.question_steps
            attributes, width = stages[stage]
            stage_end = (stage + 1) * args.question_steps
            mix = BaseMix(perception_think=float(echo), perception_direct=float(not echo), policy=0.0,
                          max_depth=args.max_depth, think="echo" if echo else "summary",
                          existence_attributes=attributes, existence_width=width)
            stream = batches(encoder, args.seed, args.image_size, mix, seen, args.question_batch)
            for seen, rows in itertools.islice(stream, stage_end - step):
                step += 1
                for group, scale in zip(optimizer.param_groups, (1.0, args.vision_lr_scale)):
                    group["lr"] = args.question_lr * scale * min(1.0, step / 200)
                losses.append(train_step(model, optimizer, encoder, rows))
                if args.question_policy_every and step % args.question_policy_every == 0:
                    policy_losses.append(train_step(model, optimizer, encoder, policy_batch(encoder, args, step // args.question_policy_every)))
                if step % args.probe_every == 0 or step == stage_end:
                    elapsed = time.monotonic() - started
                    metrics = {"question_step": step, "question_stage": stage_name(attributes, width),
                               "seen": seen, "question_minutes": round(elapsed / 60, 2), "loss": round(float(np.mean(losses)), 4)}
                    if policy_losses:
                        metrics["policy_loss"] = round(float(np.mean(policy_losses)), 4)
                    eta = elapsed / (step - first) * (total - step) / 60
                    checkpoint(out, args, model, encoder, optimizer, position, probes, log, metrics,
                               f"question step {step}/{total} ({metrics['question_stage']}) | ETA {eta:.1f} min"
                               + (f" | policy loss {metrics['policy_loss']:.3f}" if policy_losses else ""))
                    losses, policy_losses = [], []


def policy_batch(encoder: Encoder, args: argparse.Namespace, number: int) -> list:
    """The question phase's `number`-th batch of in-context policy samples (the language phase's kind),
    from its own stretch of the stream. A batch of one kind: mixed into the question batches, every
    batch padded to a policy's length (measured: 500 steps over 9.5 minutes at a quarter, 3.7 without)."""
    mix = BaseMix(perception_think=0.0, perception_direct=0.0, policy=1.0, max_depth=args.max_depth)
    _, rows = next(batches(encoder, args.seed, args.image_size, mix, QUESTION_POLICY_START + (number - 1) * args.batch, args.batch))
    return rows


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, encoder: Encoder, rows: list) -> float:
    batch = collate(rows, encoder)
    labels = batch.pop("labels")
    loss = masked_lm_loss(model(**batch).logits, labels)[0]
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return float(loss.detach())


def checkpoint(out: Path, args: argparse.Namespace, model: torch.nn.Module, encoder: Encoder, optimizer: torch.optim.Optimizer,
               position: dict[str, Any], probes: list, log: Any, metrics: dict[str, Any], progress: str) -> None:
    """Probe, print one line, append the metrics, save the base with its position (updated in place)."""
    metrics |= {k: round(v, 2) for k, v in probe_accuracy(model, encoder, probes).items()}
    print(f"[base] step {metrics.get('step', position['step'])} | {progress} | loss {metrics['loss']:.3f} | probe {metrics['probe']:.1f}% "
          f"AUC {metrics['probe_auc']:.1f} (single {metrics['probe_single']:.1f}, conjunction {metrics['probe_conjunction']:.1f}; "
          + ", ".join(f"{key[6:]} {value:.0f}" for key, value in metrics.items()
                      if key.startswith("probe_") and key[6:] in ATTRIBUTES) + ")", flush=True)
    log.write(json.dumps(metrics) + "\n")
    log.flush()
    position.update({key: metrics[key] for key in ("step", "seen", "minutes", "question_step") if key in metrics})
    save(out, args, model, optimizer, position, metrics)


def save(out: Path, args: argparse.Namespace, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
         position: dict[str, Any], metrics: dict[str, Any]) -> None:
    """The weights, the resume state (optimizer + position) and the manifest, together."""
    model.save_pretrained(out)
    torch.save({"optimizer": optimizer.state_dict(), **position}, out / STATE)
    write_manifest(out, args, metrics)


def write_manifest(out: Path, args: argparse.Namespace, metrics: dict[str, Any]) -> None:
    previous = json.loads((out / MANIFEST).read_text()) if (out / MANIFEST).exists() else {}
    commands = previous.get("commands", [])
    command = "python -m mpi_ray.model.base " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if not commands or commands[-1] != command:
        commands.append(command)
    # Figures of earlier phases and invocations (the vision pretraining, a top-up) stay; newer ones replace theirs.
    manifest = {**previous, "commands": commands, "seed": args.seed, "size": args.size, "image_size": args.image_size,
                "commit": git_commit(), "data": "mpi_ray.model.base_data (clevr_base, disjoint from run data)",
                "final": {**previous.get("final", {}), **metrics}}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main()
