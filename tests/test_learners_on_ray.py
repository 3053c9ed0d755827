"""Learners on the session's Ray cluster: 2 workers (DDP, and DeepSpeed ZeRO-2 with a worker that dies
mid-run) lower the loss; the dead worker is replaced and training resumes with the same data order,
losses and weights as the uninterrupted DDP run; the export loads in transformers. (Exports generating in vLLM: the RL and eval stages of tests/test_pipeline.py.)"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mpi_ray.config import load_config
from mpi_ray.train.metrics_log import read_data_order

from conftest import REPO, small_clevr

pytestmark = pytest.mark.slow

OVERRIDES = ["cpt.max_steps=6", "cpt.batch_size_per_worker=2", "cpt.checkpoint_every=3", "cpt.max_seq_len=4096",
             "cpt.optim.lr=1e-3", "cpt.optim.warmup_ratio=0", "cpt.workers=2"]


@pytest.fixture(scope="module")
def clevr_cot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("clevr_cot") / "data"
    return small_clevr(out, variant="T", train_per_policy=16, test=4, general=0, cot_fraction=1.0, seed=5)


def _train(tmp: Path, model: Path, data: Path, strategy: str, fail_at: int | None = None) -> Path:
    from mpi_ray.train.trainer import run_learner_stage

    cfg = load_config(REPO / "configs/default.yaml", OVERRIDES + [f"learner.strategy={strategy}"])
    out = tmp / "cpt"
    result = run_learner_stage(cfg, "cpt", str(model), str(data), out, fail_at_micro_step=fail_at)
    assert result["micro_steps"] == 6 and result["skipped_samples"] == 0
    return out


def _losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def _data_order(out: Path, rank: int) -> dict[int, list[str]]:
    return read_data_order(out / f"data_order_rank{rank}.jsonl", "micro_step")


@pytest.fixture(scope="module")
def straight_run(ray_local, tmp_path_factory, tiny_model_dir: Path, clevr_cot_dir: Path) -> Path:
    return _train(tmp_path_factory.mktemp("straight"), tiny_model_dir, clevr_cot_dir, "ddp")


def _alive_train_controllers() -> list:
    from ray.util.state import list_actors

    return list_actors(filters=[("class_name", "=", "TrainController"), ("state", "=", "ALIVE")])


def test_ddp_lowers_the_loss_and_exports_an_hf_folder(straight_run: Path, clevr_cot_dir: Path) -> None:
    # The finished stage's controller is gone (trainer.fit): it does not linger, polling, beside later stages
    deadline = time.monotonic() + 60
    while _alive_train_controllers() and time.monotonic() < deadline:
        time.sleep(1)
    assert not _alive_train_controllers()
    losses = _losses(straight_run)
    assert len(losses) == 6 and losses[-1] < losses[0] - 0.3, losses
    from mpi_ray.train.plan import eligible_ids, make_plan

    # Each rank trains on its planned rows, not in the stream's shard order but through the seeded buffer
    plan = make_plan(eligible_ids(str(clevr_cot_dir), "train", needs_cot=True, policy_rows_only=True), 2, 2, 1, 0, 6)
    for rank in (0, 1):
        read = [i for step in sorted(_data_order(straight_run, rank)) for i in _data_order(straight_run, rank)[step]]
        assert set(read) <= set(plan.assignments[0][rank]) and len(set(read)) == len(read) == 12
        assert read != plan.assignments[0][rank][:12]
    from mpi_ray.model.loading import load

    loaded = load(straight_run / "hf")
    ids = loaded.processor.tokenizer("Condition 1", return_tensors="pt")["input_ids"]
    assert loaded.model.generate(input_ids=ids, max_new_tokens=4, do_sample=False).shape[1] > ids.shape[1]


def test_deepspeed_zero2_resumes_a_dead_worker_without_repeating_or_skipping_data(
        ray_local, tmp_path: Path, tiny_model_dir: Path, clevr_cot_dir: Path, straight_run: Path) -> None:
    """DeepSpeed ZeRO-2 with a worker killed in micro-step 4: Ray Train restarts the group, it restores
    the step-3 checkpoint and ends where the uninterrupted DDP run ends (fp32 ZeRO-2 runs the same AdamW
    arithmetic as DDP on the same data plan): same data order, same losses, same weights."""
    out = _train(tmp_path, tiny_model_dir, clevr_cot_dir, "deepspeed", fail_at=3)
    assert (out / "simulated_worker_death").read_text().startswith("rank 1 died in micro-step 4")
    logged = [json.loads(line)["micro_step"] for line in (out / "data_order_rank0.jsonl").read_text().splitlines()]
    assert [step for step in logged if step <= 3] == [1, 2, 3] and logged[-3:] == [4, 5, 6]  # resumed, not restarted
    steps = [json.loads(line)["micro_step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]  # the redone step 4 is logged once
    losses = _losses(out)
    assert losses[-1] < losses[0] - 0.3, losses
    assert losses == pytest.approx(_losses(straight_run), rel=1e-3)
    for rank in (0, 1):
        assert _data_order(out, rank) == _data_order(straight_run, rank)
    resumed = load_file(out / "hf" / "model.safetensors")
    straight = load_file(straight_run / "hf" / "model.safetensors")
    assert resumed.keys() == straight.keys()
    for name in straight:
        assert torch.allclose(resumed[name], straight[name], atol=1e-4), name


def test_a_learners_data_tasks_find_the_encoder_warmed_ahead(ray_local, tiny_model_dir: Path, tmp_path: Path) -> None:
    """data.warm_encode_workers: an encoding task (the encoding pool's runtime env) that a Ray Train
    worker's Ray Data stream runs lands on a process that loaded this exact encoder ahead (a spec
    nothing else uses), i.e. Ray reused the warmed process. The learner and the task are kept on the
    driver's node, where the warm-up runs (the session cluster has two)."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from mpi_ray.data.streams import StreamSpec
    from mpi_ray.data.warm import WarmEncoders

    spec = StreamSpec(stage="cpt", model_path=str(tiny_model_dir), max_seq_len=4321)
    warm = WarmEncoders(spec, 1)
    try:
        assert len(warm.pids()) == 1

        def loop(config: dict) -> None:
            import os

            import ray.data
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            from mpi_ray.data.streams import ENCODE_POOL_ENV, _encoder

            def probe(batch: dict) -> dict:
                hits = _encoder.cache_info().hits
                _encoder(config["spec"])
                return {"pid": [os.getpid()], "warm": [_encoder.cache_info().hits > hits]}

            here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
            rows = ray.data.range(1, override_num_blocks=1).map_batches(
                probe, batch_size=None, runtime_env={"env_vars": ENCODE_POOL_ENV}, scheduling_strategy=here).take_all()
            Path(config["out"]).write_text(json.dumps([[int(r["pid"]), bool(r["warm"])] for r in rows]))

        out = tmp_path / "probe.json"
        TorchTrainer(loop, train_loop_config={"spec": spec, "out": str(out)}, scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1, "learner_node": 1}),
                     run_config=RunConfig(name="warm-probe", storage_path=str(tmp_path))).fit()
        assert json.loads(out.read_text()) == [[warm.pids()[0], True]]
    finally:
        warm.release()


def test_a_plain_actors_data_tasks_find_the_encoder_warmed_ahead(ray_local, tiny_model_dir: Path) -> None:
    """The same for the RL producer's stream (a plain actor on the driver's node; `WarmEncoders(...,
    ray_train=False)`, started beside the stage before RL)."""
    import os

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from mpi_ray.data.streams import ENCODE_POOL_ENV, StreamSpec, _encoder
    from mpi_ray.data.warm import WarmEncoders

    spec = StreamSpec(stage="rl", model_path=str(tiny_model_dir), max_seq_len=4322)

    @ray.remote(num_cpus=1)
    def probe() -> tuple[int, bool]:
        hits = _encoder.cache_info().hits
        _encoder(spec)
        return os.getpid(), _encoder.cache_info().hits > hits

    @ray.remote(num_cpus=0)
    class Producer:
        def encode(self) -> tuple[int, bool]:
            here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
            return ray.get(probe.options(runtime_env={"env_vars": ENCODE_POOL_ENV}, scheduling_strategy=here).remote())

    warm = WarmEncoders(spec, 1, ray_train=False)
    try:
        warmed = warm.pids()
        producer = Producer.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            ray.get_runtime_context().get_node_id(), soft=False)).remote()
        assert ray.get(producer.encode.remote()) == (warmed[0], True)
    finally:
        warm.release()
