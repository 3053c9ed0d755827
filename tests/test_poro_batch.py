"""The PolicyRollout (PoRo) contract: pooled 2G advantages, every response trained on the
policy-free prompt, sampler log-probs of policy-aware samples never kept, and the invariant that
the policy text the policy-aware samples were drawn with changes nothing on the learner side."""

from __future__ import annotations

import pytest
import torch

from mpi_ray.rl.batch import (
    POLICY_AWARE,
    POLICY_FREE,
    LearnerSample,
    Rollout,
    RolloutGroup,
    build_learner_batch,
    group_by_prompt,
    make_rollout,
    pooled_advantages,
)
from mpi_ray.rl.objectives import policy_loss

POLICY_FREE_PROMPTS = {"p0": "<image> Which case applies?", "p1": "<image> Which case now?"}
POLICY_TEXTS = {"A": "Policy A: if a red cube is present the response is Case 3 ...", "B": "Policy B: totally different text"}


def approx(value: float) -> pytest.approx:
    return pytest.approx(value, abs=1e-6)


def fake_sampler_logprobs(prompt: str, response_ids: tuple[int, ...]) -> list[float]:
    """A stand-in engine: its log-probs depend on the full prompt, policy text included."""
    return [-0.01 * ((len(prompt) + 7 * token) % 50) - 0.1 for token in response_ids]


# Scripted responses: (prompt_id, group) -> [(response_ids, reward)], G = 2 per path.
RESPONSES = {
    ("p0", POLICY_FREE): [((5, 6, 7), 0.0), ((5, 8), 0.0)],
    ("p0", POLICY_AWARE): [((5, 6, 9, 2), 1.0), ((4,), 0.0)],
    ("p1", POLICY_FREE): [((1, 2), 1.0), ((3,), 0.1)],
    ("p1", POLICY_AWARE): [((1, 2, 3), 1.0), ((2, 2), 1.0)],
}


def sample_rollouts(policy_text: str, weight_version: int = 3) -> list[Rollout]:
    """What the rollout code does: policy-free samples from (Q, I), policy-aware from (Q, I, P)."""
    rollouts = []
    for (prompt_id, group), responses in RESPONSES.items():
        prompt = POLICY_FREE_PROMPTS[prompt_id]
        sampled_from = prompt if group == POLICY_FREE else f"{policy_text}\n{prompt}"
        for response_ids, reward in responses:
            logprobs = fake_sampler_logprobs(sampled_from, response_ids)
            rollouts.append(make_rollout(prompt_id, group, response_ids, logprobs, reward, weight_version))
    return rollouts


def learner_batch(policy_text: str) -> list[LearnerSample[str]]:
    return build_learner_batch(group_by_prompt(sample_rollouts(policy_text)), POLICY_FREE_PROMPTS, uses_poro=True)


# ---- pooled advantages -----------------------------------------------------------------------


def test_pooled_2g_advantages_against_plain_g() -> None:
    # p0 pooled: [0, 0, 1, 0] -> mean 0.25, unbiased std 0.5 -> [-0.5, -0.5, 1.5, -0.5]
    # p0 plain (policy-free only): [0, 0] -> all equal -> [0, 0]: no signal without PoRo
    # p1 pooled: [1, 0.1, 1, 1] -> mean 0.775; deviations .225 -.675 .225 .225;
    #   var = (3 * 0.050625 + 0.455625) / 3 = 0.2025 -> std 0.45 -> [0.5, -1.5, 0.5, 0.5]
    # p1 plain: [1, 0.1] -> mean 0.55, std sqrt(2 * 0.2025) = 0.636396 -> [+-0.707107]
    rollouts = sample_rollouts(POLICY_TEXTS["A"])
    pooled = pooled_advantages(group_by_prompt(rollouts), eps=0.0)
    plain = pooled_advantages(group_by_prompt(r for r in rollouts if r.group == POLICY_FREE), eps=0.0)
    assert [list(a) for a in pooled] == [
        [approx(-0.5), approx(-0.5), approx(1.5), approx(-0.5)],
        [approx(0.5), approx(-1.5), approx(0.5), approx(0.5)],
    ]
    assert [list(a) for a in plain] == [[0.0, 0.0], [approx(2**-0.5), approx(-(2**-0.5))]]


def test_group_by_prompt_pools_both_paths_in_order() -> None:
    groups = group_by_prompt(sample_rollouts(POLICY_TEXTS["A"]))
    assert [g.prompt_id for g in groups] == ["p0", "p1"]
    assert [[r.group for r in g.rollouts] for g in groups] == [[POLICY_FREE] * 2 + [POLICY_AWARE] * 2] * 2
    assert groups[0].rewards == [0.0, 0.0, 1.0, 0.0]


# ---- the PoRo invariant ----------------------------------------------------------------------


def test_every_response_is_trained_on_the_policy_free_prompt() -> None:
    batch = learner_batch(POLICY_TEXTS["A"])
    assert len(batch) == 8
    for sample in batch:
        assert sample.prompt == POLICY_FREE_PROMPTS[sample.prompt_id]
        assert POLICY_TEXTS["A"] not in sample.prompt


def test_behavior_log_probs_only_for_policy_free_samples() -> None:
    batch = learner_batch(POLICY_TEXTS["A"])
    for sample in batch:
        if sample.group == POLICY_AWARE:
            assert sample.behavior_logp is None
        else:
            expected = fake_sampler_logprobs(POLICY_FREE_PROMPTS[sample.prompt_id], sample.response_ids)
            assert sample.behavior_logp == pytest.approx(expected)


def fake_learner_logp(prompt: str, response_ids: tuple[int, ...], shift: float) -> list[float]:
    """A stand-in learner forward pass: log-probs of the response given the prompt it is handed."""
    return [-0.02 * ((len(prompt) + 3 * token) % 40) - shift for token in response_ids]


def loss_of(batch: list[LearnerSample[str]]) -> float:
    """The learner's view: logp / old / ref from its own forward on sample.prompt; IS from behavior_logp."""
    width = max(len(s.response_ids) for s in batch)

    def padded(rows: list[list[float]]) -> torch.Tensor:
        return torch.tensor([row + [0.0] * (width - len(row)) for row in rows])

    logp = padded([fake_learner_logp(s.prompt, s.response_ids, 0.0) for s in batch])
    old = padded([fake_learner_logp(s.prompt, s.response_ids, 0.05) for s in batch])
    ref = padded([fake_learner_logp(s.prompt, s.response_ids, 0.1) for s in batch])
    behavior = padded([list(s.behavior_logp or [0.0] * len(s.response_ids)) for s in batch])
    mask = padded([[1.0] * len(s.response_ids) for s in batch])
    loss, _ = policy_loss(
        logp, old, torch.tensor([s.advantage for s in batch]), mask, 0.2, 0.3, "seq-mean-token-mean",
        ref_logp=ref, kl_coef=0.01, behavior_logp=behavior, is_cap=2.0,
        behavior_mask=torch.tensor([s.behavior_logp is not None for s in batch]),
    )
    return loss.item()


def test_changing_the_policy_text_changes_nothing_in_the_loss() -> None:
    # Same response tokens, drawn once under policy A and once under policy B: the engine's
    # policy-aware log-probs differ, yet every learner-side input and the loss are identical.
    rollouts_a, rollouts_b = sample_rollouts(POLICY_TEXTS["A"]), sample_rollouts(POLICY_TEXTS["B"])
    engine_a = [fake_sampler_logprobs(f"{POLICY_TEXTS['A']}\n{POLICY_FREE_PROMPTS['p0']}", (5, 6, 9, 2))]
    engine_b = [fake_sampler_logprobs(f"{POLICY_TEXTS['B']}\n{POLICY_FREE_PROMPTS['p0']}", (5, 6, 9, 2))]
    assert engine_a != engine_b  # the sampler did see different policies
    assert rollouts_a == rollouts_b

    batch_a, batch_b = learner_batch(POLICY_TEXTS["A"]), learner_batch(POLICY_TEXTS["B"])
    assert batch_a == batch_b  # prompt used, tokens, advantages, behavior log-probs, versions
    assert loss_of(batch_a) == loss_of(batch_b)


# ---- what the data structures refuse ---------------------------------------------------------


def test_policy_aware_rollout_refuses_sampler_log_probs() -> None:
    with pytest.raises(ValueError, match="policy-aware"):
        Rollout("p0", POLICY_AWARE, (1, 2), 1.0, 0, sampler_logp=(-0.1, -0.2))
    kept = make_rollout("p0", POLICY_AWARE, [1, 2], [-0.1, -0.2], 1.0, 0)
    assert kept.sampler_logp is None
    assert make_rollout("p0", POLICY_FREE, [1, 2], [-0.1, -0.2], 1.0, 0).sampler_logp == (-0.1, -0.2)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"group": "policy_other"}, "group must be"),
        ({"sampler_logp": (-0.1,)}, "1 sampler log-probs for 2 tokens"),
        ({"reward": float("nan")}, "not finite"),
    ],
)
def test_rollout_validation(kwargs: dict, message: str) -> None:
    fields = {"prompt_id": "p0", "group": POLICY_FREE, "response_ids": (1, 2), "reward": 1.0, "weight_version": 0}
    with pytest.raises(ValueError, match=message):
        Rollout(**{**fields, **kwargs})


def test_group_refuses_rollouts_of_another_prompt() -> None:
    with pytest.raises(ValueError, match="other prompts"):
        RolloutGroup("p0", (make_rollout("p1", POLICY_FREE, [1], None, 0.0, 0),))


def test_composition_is_checked() -> None:
    rollouts = sample_rollouts(POLICY_TEXTS["A"])
    groups = group_by_prompt(rollouts)
    with pytest.raises(ValueError, match="without PoRo"):
        build_learner_batch(groups, POLICY_FREE_PROMPTS, uses_poro=False)
    free_only = group_by_prompt(r for r in rollouts if r.group == POLICY_FREE)
    with pytest.raises(ValueError, match="as many policy-aware"):
        build_learner_batch(free_only, POLICY_FREE_PROMPTS, uses_poro=True)
    aware_only = group_by_prompt(r for r in rollouts if r.group == POLICY_AWARE)
    with pytest.raises(ValueError, match="no policy-free"):
        build_learner_batch(aware_only, POLICY_FREE_PROMPTS, uses_poro=True)
    with pytest.raises(KeyError, match="p1"):
        build_learner_batch(groups, {"p0": "only one prompt"}, uses_poro=True)


def test_plain_grpo_batch() -> None:
    free_only = group_by_prompt(r for r in sample_rollouts(POLICY_TEXTS["A"]) if r.group == POLICY_FREE)
    batch = build_learner_batch(free_only, POLICY_FREE_PROMPTS, uses_poro=False)
    assert [s.advantage for s in batch][:2] == [0.0, 0.0]
    assert all(s.group == POLICY_FREE and s.behavior_logp is not None for s in batch)


def test_poro_stats_count_the_prompts_only_the_policy_aware_group_answers() -> None:
    from mpi_ray.rollout.producer import _group_stats

    def record(prompt: str, group: str, accuracy: float) -> dict:
        return {"prompt": prompt, "group": group, "accuracy": accuracy, "reward": accuracy, "format": 1.0,
                "length": 10, "truncated": False, "prompt_images": 1}

    records = [record("solved", POLICY_FREE, 0.0), record("solved", POLICY_FREE, 1.0), record("solved", POLICY_AWARE, 0.0),
               record("rescued", POLICY_FREE, 0.0), record("rescued", POLICY_AWARE, 0.0), record("rescued", POLICY_AWARE, 1.0),
               record("lost", POLICY_FREE, 0.0), record("lost", POLICY_AWARE, 0.0),
               record("both", POLICY_FREE, 1.0), record("both", POLICY_AWARE, 1.0)]
    stats = _group_stats(records)
    assert stats["poro/free_unsolved"] == 0.5 and stats["poro/rescued"] == 0.25
    assert stats["policy_free/accuracy"] == 0.4 and stats["policy_aware/accuracy"] == 0.4
    assert "poro/rescued" not in _group_stats([r for r in records if r["group"] == POLICY_FREE])  # plain GRPO
