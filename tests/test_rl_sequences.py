"""The PoRo invariant on the learner's real inputs: the rollout producer samples the policy-aware
responses from (Q, I, P), yet every response, policy-aware ones included, is scored after the
policy-free prompt (Q, I); the policy text cannot reach the loss."""

from __future__ import annotations

import math

import io
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from mpi_ray.rl.batch import (POLICY_AWARE, POLICY_FREE, LearnerSample, build_learner_batch, group_by_prompt,
                              make_rollout)
from mpi_ray.rl.objectives import policy_loss

from conftest import small_clevr


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (56, 56), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


FREE_PROMPT = {"prompt": "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Which case?<|im_end|>\n"
                         "<|im_start|>assistant\n", "images": [_png()]}
OTHER_POLICY = "Condition 1: if there is a cube, the response is Case 7. Otherwise, the response is Case 8."


@pytest.fixture(scope="module")
def clevr_sample(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from mpi_ray.data.shards import read_split

    out = tmp_path_factory.mktemp("clevr_poro") / "data"
    return read_split(small_clevr(out, variant="T", train_per_policy=4, test=1, general=0, cot_fraction=0.5, seed=3),
                      "train")[0]


class ScoringPool:
    """Stands in for the vLLM pool: every prompt gets the same responses, with the log-probs the model
    gives them after that prompt, so a policy-aware sample's log-probs depend on the policy text."""

    version = 0

    def __init__(self, model_dir: Path, model: torch.nn.Module, responses: list[str]):
        from mpi_ray.model.loading import load_processor
        from mpi_ray.rl.sequences import SequenceEncoder

        self.encoder, self.model = SequenceEncoder(str(model_dir)), model
        tokenizer = load_processor(model_dir).tokenizer
        self.responses = [(tokenizer(text, add_special_tokens=False)["input_ids"], text) for text in responses]
        self.logprobs: list[list[list[float]]] = []  # per request of the last call, per response

    def generate(self, requests: list[dict[str, Any]], n: int, kill_engine: int | None = None) -> list[list[dict]]:
        from mpi_ray.rl.sequences import response_logprobs

        self.logprobs, out = [], []
        for request in requests:
            self.encoder.forget_prompts()  # every request is its own prompt
            samples = [LearnerSample(prompt_id="request", prompt=request, response_ids=tuple(ids), advantage=0.0,
                                     group=POLICY_FREE, weight_version=0, behavior_logp=None) for ids, _ in self.responses[:n]]
            with torch.no_grad():
                logp, mask = response_logprobs(self.model, self.encoder.batch(samples))
            logprobs = [logp[row][mask[row]].tolist() for row in range(len(samples))]
            self.logprobs.append(logprobs)
            out.append([{"token_ids": ids, "logprobs": lp, "text": text, "finish_reason": "stop",
                         "prompt_images": len(request["images"])}
                        for (ids, text), lp in zip(self.responses, logprobs)])
        return out


def _learner_side(model_dir: Path, model: torch.nn.Module, pool: ScoringPool, sample: dict[str, Any],
                  monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One PoRo sampling round of the real producer on `sample`, then what the RL learner computes from it."""
    from mpi_ray.config import load_config
    from mpi_ray.data.streams import EncodeBatch, StreamSpec
    from mpi_ray.rewards.tasks import _score
    from mpi_ray.rollout import producer
    from mpi_ray.rl.sequences import SequenceEncoder, per_token, response_logprobs

    cfg = load_config(None, ["rl.algorithm=poro-grpo", "rl.group_size=2"])
    monkeypatch.setattr(producer, "score_in_tasks", lambda items, reward, chunks: _score(items, reward))  # no Ray tasks
    row = EncodeBatch(StreamSpec("rl", str(model_dir))).encode(sample)  # the RL stream's row: both prompts
    job = producer.RolloutJob(model_path=str(model_dir), cfg=cfg.model_dump(mode="json"), prompts=None, total_steps=1,
                              max_images=len(row["policy_images"]))
    sampler = producer.RolloutProducer.__ray_actor_class__(job, buffer=None)  # the actor's class, run in-process
    sampler.pool = pool
    sampled = sampler._round([row], None)
    # What the learner does with the step (rl_loop): pair, encode, score, and the off-policy loss with
    # the sampler log-probs as behavior weights, so a policy-aware sampler log-prob would show in it.
    samples = build_learner_batch(sampled.groups, sampled.prompts, cfg.rl.uses_poro)
    assert [s.group for s in samples] == [POLICY_FREE] * 2 + [POLICY_AWARE] * 2
    batch = SequenceEncoder(str(model_dir)).batch(samples)
    logp, mask = response_logprobs(model, batch)
    behavior, has_behavior = per_token([s.behavior_logp for s in samples], mask)
    advantages = torch.tensor([s.advantage for s in samples])
    assert advantages.abs().sum() > 0  # the loss depends on every row's log-probs
    loss, _ = policy_loss(logp, logp.detach(), advantages, mask, 0.2, 0.3, "seq-mean-token-mean",
                          behavior_logp=behavior, is_cap=2.0, behavior_mask=has_behavior)
    return batch, loss


def test_policy_aware_responses_are_scored_on_the_policy_free_prompt(tiny_model_dir: Path, clevr_sample: dict,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from mpi_ray.model.loading import load_model, load_processor

    model = load_model(tiny_model_dir).eval()
    right = f"<think>I follow the policy.</think> \\boxed{{{clevr_sample['answer']}}}"
    pool = ScoringPool(tiny_model_dir, model, [right, "\\boxed{Case 99}"])
    batch_a, loss_a = _learner_side(tiny_model_dir, model, pool, clevr_sample, monkeypatch)
    free_a, aware_a = pool.logprobs  # requests: the policy-free prompt, then the policy-aware one
    other = {**clevr_sample, "policy_text": OTHER_POLICY}
    batch_b, loss_b = _learner_side(tiny_model_dir, model, pool, other, monkeypatch)
    free_b, aware_b = pool.logprobs

    # The policy text did reach the sampler: the same policy-aware responses, other log-probs.
    assert free_a == free_b and aware_a != aware_b
    # ... and nothing the learner computes.
    assert batch_a.keys() == batch_b.keys()
    for key in batch_a:
        assert torch.equal(batch_a[key], batch_b[key]), key
    assert torch.equal(loss_a, loss_b)
    tokenizer = load_processor(tiny_model_dir).tokenizer
    prompt_part = (batch_a["labels"] == -100) & batch_a["attention_mask"].bool()
    free_ids, aware_ids = batch_a["input_ids"][0][prompt_part[0]], batch_a["input_ids"][2][prompt_part[2]]
    assert torch.equal(free_ids, aware_ids)  # same prompt tokens in front of a policy-aware response
    assert "Condition 1" in clevr_sample["policy_text"] and "Condition" not in tokenizer.decode(batch_a["input_ids"][2])
    # image tokens are marked for M-RoPE in every row: each row's one image, 2x2-merged patches
    assert batch_a["mm_token_type_ids"].sum(dim=1).tolist() == [int(batch_a["image_grid_thw"][0].prod()) // 4] * 4


def test_a_sampled_image_placeholder_is_refused_with_a_clear_error(tiny_model_dir: Path) -> None:
    from mpi_ray.model.loading import visual_tokens
    from mpi_ray.rl.sequences import SequenceEncoder

    image_id = visual_tokens(tiny_model_dir).image
    samples = build_learner_batch(group_by_prompt([make_rollout("p", POLICY_FREE, [11, image_id], None, 1.0, 0),
                                                   make_rollout("p", POLICY_FREE, [12], None, 0.0, 0)]),
                                  {"p": FREE_PROMPT}, uses_poro=False)
    with pytest.raises(ValueError, match="image/video placeholder"):
        SequenceEncoder(str(tiny_model_dir)).batch(samples)


def test_learner_log_probs_use_the_sampling_temperature() -> None:
    """A hand computation: log softmax(logits / T) at the label of each response position."""
    from types import SimpleNamespace

    from mpi_ray.rl.sequences import response_logprobs

    logits = torch.tensor([[[2.0, 0.0, -1.0], [0.5, 1.5, 0.0], [0.0, 0.0, 3.0]]])

    class FixedLogits(torch.nn.Module):  # pure logic: the model is only a source of logits
        def forward(self, **_: torch.Tensor) -> SimpleNamespace:
            return SimpleNamespace(logits=logits)

    batch = {"input_ids": torch.tensor([[0, 1, 2]]), "labels": torch.tensor([[-100, 1, 2]])}
    for temperature in (1.0, 0.7):
        logp, mask = response_logprobs(FixedLogits(), batch, temperature)
        by_hand = [math.log(math.exp(0.0 / temperature) / sum(math.exp(v / temperature) for v in (2.0, 0.0, -1.0))),
                   math.log(math.exp(0.0 / temperature) / sum(math.exp(v / temperature) for v in (0.5, 1.5, 0.0)))]
        assert mask.tolist() == [[True, True]]
        assert logp[0].tolist() == pytest.approx(by_hand, rel=1e-6)


@pytest.mark.parametrize("micro_batch", [4, 2])
def test_an_update_without_the_old_log_prob_pass_trains_the_same_weights(tiny_model_dir: Path, micro_batch: int,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """One optimizer step over the step's samples: the loss forward's detached log-probs are the old ones,
    so skipping the separate pass must leave the same weights as making it (forced here). Micro-batches
    of 2 with update batch 4 accumulate over two forwards: still one optimizer step, still skipped."""
    import copy

    from mpi_ray.config import load_config
    from mpi_ray.model.loading import load_model
    from mpi_ray.rl.sequences import SequenceEncoder
    from mpi_ray.train import rl_loop
    from mpi_ray.train.strategy import make_strategy

    cfg = load_config(None, ["rl.algorithm=grpo", "rl.group_size=2", "rl.update_batch=4", "resources.learner_workers=1",
                             f"rl.micro_batch_per_worker={micro_batch}", "rl.kl_coef=0.05", "rl.optim.lr=1e-2"])
    samples = [LearnerSample("p", FREE_PROMPT, (100 + i, 200 + i, 300 + i), advantage, POLICY_FREE, 0, None)
               for i, advantage in enumerate((1.0, -1.0, 0.5, -0.5))]
    grad_accum = 4 // micro_batch
    reference = load_model(str(tiny_model_dir)).eval().requires_grad_(False)
    weights = {}
    for force_pass in (False, True):
        torch.manual_seed(0)
        model = copy.deepcopy(reference).train().requires_grad_(True)
        strategy = make_strategy(model, cfg.learner, cfg.rl.optim, lambda _: 1.0, grad_accum, micro_batch)
        forwards = []
        model.register_forward_hook(lambda *_: forwards.append(1))
        if force_pass:  # as if an optimizer step fell inside the update: the pass must be made
            monkeypatch.setattr(type(strategy), "steps_to_update", property(lambda self: 0))
        rl_loop._update(strategy, reference, SequenceEncoder(str(tiny_model_dir)), samples, False, cfg, grad_accum, 1)
        monkeypatch.undo()
        # the separate pass is one more forward per micro-batch
        assert len(forwards) == 4 // micro_batch * (2 if force_pass else 1)
        weights[force_pass] = [p.detach().clone() for p in model.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(weights[False], reference.parameters()))  # it trained
    for skipped, made in zip(weights[False], weights[True]):
        torch.testing.assert_close(skipped, made, rtol=1e-5, atol=1e-6)
