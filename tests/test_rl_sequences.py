"""The PoRo invariant on the learner's real inputs: every response, policy-aware ones included, is
scored after the policy-free prompt (Q, I); the policy text cannot reach the loss."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from PIL import Image

from mpi_ray.rl.batch import POLICY_AWARE, POLICY_FREE, build_learner_batch, group_by_prompt, make_rollout
from mpi_ray.rl.objectives import policy_loss


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (56, 56), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


FREE_PROMPT = {"prompt": "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Which case?<|im_end|>\n"
                         "<|im_start|>assistant\n", "images": [_png()]}


def _loss_for_policy_text(model_dir: Path, policy_text: str) -> tuple[dict, torch.Tensor]:
    """What the learner computes when the policy-aware samples were drawn with `policy_text` in context."""
    from mpi_ray.model.loading import load_model
    from mpi_ray.rl.sequences import SequenceEncoder, response_logprobs

    aware_prompt = {"prompt": FREE_PROMPT["prompt"].replace("Which case?", policy_text + " Which case?"), "images": []}
    responses = [[11, 12, 13, 2], [14, 15, 2], [16, 17, 18, 19, 2], [20, 2]]
    rollouts = [make_rollout("p1", POLICY_FREE, responses[0], [-1.0] * 4, 1.0, 0),
                make_rollout("p1", POLICY_FREE, responses[1], [-1.0] * 3, 0.0, 0),
                make_rollout("p1", POLICY_AWARE, responses[2], [-0.5] * 5, 1.0, 0),  # sampler log-probs dropped
                make_rollout("p1", POLICY_AWARE, responses[3], [-0.5] * 2, 1.0, 0)]
    assert aware_prompt["prompt"] != FREE_PROMPT["prompt"]  # the policy text exists only on the sampler side
    samples = build_learner_batch(group_by_prompt(rollouts), {"p1": FREE_PROMPT}, uses_poro=True)
    assert [s.behavior_logp is None for s in samples] == [False, False, True, True]
    encoder = SequenceEncoder(str(model_dir))
    batch = encoder.batch(samples)
    torch.manual_seed(0)
    logp, mask = response_logprobs(load_model(model_dir).eval(), batch)
    advantages = torch.tensor([s.advantage for s in samples])
    loss, _ = policy_loss(logp, logp.detach(), advantages, mask, 0.2, 0.3, "seq-mean-token-mean")
    return batch, loss


def test_policy_aware_responses_are_scored_on_the_policy_free_prompt(tiny_model_dir: Path) -> None:
    from mpi_ray.model.loading import load_processor

    batch_a, loss_a = _loss_for_policy_text(tiny_model_dir, "Policy A: Condition 1 checks for a cube.")
    batch_b, loss_b = _loss_for_policy_text(tiny_model_dir, "A completely different policy text.")
    for key in batch_a:
        assert torch.equal(batch_a[key], batch_b[key])
    assert torch.equal(loss_a, loss_b)
    tokenizer = load_processor(tiny_model_dir).tokenizer
    prompt_part = (batch_a["labels"] == -100) & batch_a["attention_mask"].bool()
    free_ids, aware_ids = batch_a["input_ids"][0][prompt_part[0]], batch_a["input_ids"][2][prompt_part[2]]
    assert torch.equal(free_ids, aware_ids)  # same prompt tokens in front of a policy-aware response
    assert "Condition" not in tokenizer.decode(batch_a["input_ids"][2])
    # image tokens are marked for M-RoPE in every row: 56x56 -> one 2x2-merged patch grid of 4 tokens
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
