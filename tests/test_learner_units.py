"""Learner pieces without Ray: the masked loss by hand, the data plan, the schedule, LoRA merge."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from mpi_ray.config.schema import LoraConfig
from mpi_ray.train.losses import IGNORE, masked_lm_loss
from mpi_ray.train.lora import apply_lora, merged
from mpi_ray.train.plan import make_plan, stream_chunks
from mpi_ray.train.schedule import lr_lambda


def test_masked_loss_matches_hand_computation() -> None:
    # Vocabulary of 2; logits favour token 0 with log-softmax values below.
    logits = torch.tensor([[[2.0, 0.0], [0.0, 2.0], [1.0, 1.0], [0.0, 0.0]],
                           [[0.0, 0.0], [3.0, 0.0], [0.0, 0.0], [0.0, 0.0]]])
    # Position t predicts label t+1. Row 0 learns labels 1 (at t=0) and 0 (at t=2); the visual token at t=1
    # is masked. Row 1 learns only label 1 (at t=1).
    labels = torch.tensor([[IGNORE, 1, IGNORE, 0], [IGNORE, IGNORE, 1, IGNORE]])
    nll = lambda logit_row, target: -torch.log_softmax(torch.tensor(logit_row), 0)[target].item()  # noqa: E731
    row0 = (nll([2.0, 0.0], 1) + nll([1.0, 1.0], 0)) / 2  # (2.1269 + 0.6931) / 2
    row1 = nll([3.0, 0.0], 1) / 1  # 3.0486
    loss, tokens = masked_lm_loss(logits, labels)
    assert tokens == 3
    assert loss.item() == pytest.approx((row0 + row1) / 2, rel=1e-6)


def test_masked_loss_ignores_rows_without_targets() -> None:
    logits = torch.zeros(2, 3, 4)
    labels = torch.tensor([[IGNORE, 1, 2], [IGNORE, IGNORE, IGNORE]])
    loss, tokens = masked_lm_loss(logits, labels)
    assert tokens == 2 and loss.item() == pytest.approx(math.log(4))


def test_plan_is_equal_per_rank_deterministic_and_covers_each_epoch() -> None:
    ids = [f"s{i:02d}" for i in range(23)]
    plan = make_plan(ids, world=2, micro_batch=3, epochs=2, seed=7, max_micro_steps=None)
    again = make_plan(ids, world=2, micro_batch=3, epochs=2, seed=7, max_micro_steps=None)
    assert plan == again
    assert plan.micro_steps_per_epoch == 3 and plan.total_micro_steps == 6 and plan.epochs == 2
    for ranks in plan.assignments:
        assert [len(r) for r in ranks] == [9, 9]
        assert not set(ranks[0]) & set(ranks[1])  # no row twice in an epoch
        for rank_ids in ranks:
            assert rank_ids == sorted(rank_ids)  # shard order within a rank
    assert plan.assignments[0] != plan.assignments[1]  # a new deal every epoch
    bounded = make_plan(ids, 2, 3, 2, seed=7, max_micro_steps=4)
    assert bounded.total_micro_steps == 4
    # only the rows the steps consume: 3 steps of 3 in the first epoch, 1 in the second
    assert [[len(r) for r in ranks] for ranks in bounded.assignments] == [[9, 9], [3, 3]]
    for rank in (0, 1):  # the same deal, cut: the bounded epoch's rows are drawn from the full one's
        assert set(bounded.assignments[1][rank]) < set(plan.assignments[1][rank])
    with pytest.raises(ValueError, match="cannot give 4 workers"):
        make_plan(ids[:5], world=4, micro_batch=2, epochs=1, seed=0, max_micro_steps=None)


def test_rl_streams_only_the_prompts_its_steps_draw() -> None:
    from mpi_ray.train.rl_trainer import drawn_prompt_ids

    ids = [f"p{i:04d}" for i in range(1024)]
    drawn = drawn_prompt_ids(ids, 64, dynamic_sampling=False, seed=0)
    assert len(drawn) == 64 and drawn == sorted(drawn) and set(drawn) < set(ids)  # a subset, in shard order
    assert drawn == drawn_prompt_ids(ids, 64, dynamic_sampling=False, seed=0)  # the same on a re-run (resume)
    assert drawn != drawn_prompt_ids(ids, 64, dynamic_sampling=False, seed=1)
    assert drawn != ids[:64]  # drawn over the whole split, not its first rows (shards may be grouped by policy)
    # dynamic sampling draws as many prompts as its filter needs; a run past one pass needs them all
    assert drawn_prompt_ids(ids, 64, dynamic_sampling=True, seed=0) == ids
    assert drawn_prompt_ids(ids, 2048, dynamic_sampling=False, seed=0) == ids


def test_an_epoch_is_cut_into_streams_of_whole_batches_in_order() -> None:
    ids = [f"s{i:02d}" for i in range(23)]
    chunks = stream_chunks(ids, chunk_rows=5, micro_batch=3)  # 5 rows -> 6, two whole batches
    assert [len(c) for c in chunks] == [6, 6, 6, 5] and sum(chunks, []) == ids
    assert stream_chunks(ids, chunk_rows=512, micro_batch=4) == [ids]
    assert all(len(c) % 4 == 0 for c in stream_chunks(ids[:20], 1, 4))
    # a short first stream (the first batch waits for it), then full ones
    chunks = stream_chunks(ids, chunk_rows=9, micro_batch=3, first_rows=4)
    assert [len(c) for c in chunks] == [6, 9, 8] and sum(chunks, []) == ids
    assert stream_chunks([], chunk_rows=9, micro_batch=3) == []


def test_schedule_warms_up_then_decays() -> None:
    factor = lr_lambda(total_steps=100, warmup_ratio=0.1, schedule="cosine")
    assert factor(0) == pytest.approx(0.1) and factor(9) == pytest.approx(1.0)
    assert factor(10) == pytest.approx(1.0) and factor(100) == pytest.approx(0.1)
    assert lr_lambda(10, 0.0, "constant")(7) == 1.0


def test_lora_merge_gives_the_adapter_models_logits(tiny_model_dir: Path) -> None:
    from mpi_ray.model.loading import load_model

    model = apply_lora(load_model(tiny_model_dir).eval(), LoraConfig(enabled=True, rank=4, alpha=8, dropout=0.0))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and "language_model" in n for n in trainable)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)  # a trained adapter: B starts at zero
    ids = torch.randint(10, 500, (2, 12))
    with torch.no_grad():
        adapter_logits = model(input_ids=ids).logits
        plain = merged(model)
        merged_logits = plain(input_ids=ids).logits
    assert not any("lora_" in n for n, _ in plain.named_parameters())
    assert torch.allclose(adapter_logits, merged_logits, atol=1e-4)


def test_restore_picks_the_newest_checkpoint_every_rank_finished_uploading(tmp_path: Path) -> None:
    """A checkpoint Ray Train had not registered yet when the driver died is still used once every rank
    marked its upload done; one a rank never finished is passed over for an older complete one."""
    from mpi_ray.train.checkpoint import UPLOADED, newest_uploaded

    def folder(step: int, ranks: list[int]) -> Path:
        path = tmp_path / f"checkpoint_{step:09d}"
        path.mkdir()
        for rank in ranks:
            (path / UPLOADED.format(rank=rank)).touch()
        return path

    assert newest_uploaded(tmp_path, world=2) is None  # a fresh run: Ray Train's own pick (none)
    four = folder(4, [0, 1])
    folder(12, [0])  # rank 1 died before its upload returned
    assert newest_uploaded(tmp_path, world=2) == four
    eight = folder(8, [1, 0])
    assert newest_uploaded(tmp_path, world=2) == eight  # numeric order, not creation order
    (tmp_path / "checkpoint_manager_snapshot.json").write_text("{}")
    assert newest_uploaded(tmp_path, world=1) == tmp_path / "checkpoint_000000012"
