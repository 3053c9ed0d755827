"""Configs load; every kind of bad input is rejected up front with the key and what is allowed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mpi_ray.config import ConfigError, load_config

from conftest import REPO

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_shipped_config_loads(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.run.stages


def test_paper_scale_hyperparameters_match_table_5() -> None:
    clevr = load_config(REPO / "configs/clevr_policy_t_7b.yaml")
    gta = load_config(REPO / "configs/gta_policy_7b.yaml")
    assert clevr.model.name_or_path == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert (clevr.cpt.optim.lr, clevr.sft.optim.lr, clevr.rl.optim.lr) == (1e-5, 1e-4, 1e-6)
    assert clevr.sft.lora.enabled and clevr.sft.lora.rank == 8 and not clevr.cpt.lora.enabled
    assert (clevr.cpt.epochs, clevr.sft.epochs, clevr.rl.epochs) == (5, 5, 2)
    assert (gta.cpt.epochs, gta.sft.epochs, gta.rl.epochs) == (5, 10, 50)
    assert (clevr.cpt.batch_size_per_worker * clevr.cpt.workers) == 16 * 8
    assert (gta.cpt.batch_size_per_worker * gta.cpt.workers) == 8 * 8
    assert (clevr.rl.clip_low, clevr.rl.clip_high, clevr.rl.kl_coef) == (0.2, 0.3, 0.01)
    assert (clevr.rl.rollout_batch, gta.rl.rollout_batch) == (384, 256)
    assert clevr.rl.update_batch == 4 * 8


def test_dapo_override_of_paper_config_is_valid() -> None:
    cfg = load_config(
        REPO / "configs/clevr_policy_t_7b.yaml",
        ["rl.algorithm=poro-dapo", "rl.clip_high=0.28", "rl.kl_coef=0", "rl.dynamic_sampling=true"],
    )
    assert cfg.rl.is_dapo and cfg.rl.uses_poro and cfg.rl.clip_high == 0.28


@pytest.mark.parametrize("algorithm, loss_agg, overlong", [
    ("grpo", "seq-mean-token-mean", False), ("poro-grpo", "seq-mean-token-mean", False),
    ("dapo", "token-mean", True), ("poro-dapo", "token-mean", True),
])
def test_the_algorithm_implies_loss_aggregation_and_overlong_shaping(algorithm: str, loss_agg: str, overlong: bool) -> None:
    cfg = load_config(None, [f"rl.algorithm={algorithm}", "rl.kl_coef=0"])
    assert (cfg.rl.loss_agg, cfg.rl.overlong.enabled) == (loss_agg, overlong)


def test_an_explicit_loss_aggregation_or_overlong_setting_wins_over_the_algorithm() -> None:
    cfg = load_config(None, ["rl.algorithm=poro-dapo", "rl.kl_coef=0", "rl.loss_agg=seq-mean-token-mean",
                             "rl.overlong.enabled=false"])
    assert (cfg.rl.loss_agg, cfg.rl.overlong.enabled) == ("seq-mean-token-mean", False)
    grpo = load_config(None, ["rl.algorithm=grpo", "rl.overlong.enabled=true", "rl.overlong.buffer=32"])
    assert grpo.rl.overlong.enabled and grpo.rl.overlong.buffer == 32


def test_overrides_parse_yaml_scalars() -> None:
    cfg = load_config(None, ["rl.optim.lr=3e-6", "rollout.max_staleness=1", "eval.judge_url=null", "run.stages=[model]"])
    assert cfg.rl.optim.lr == 3e-6 and cfg.rollout.max_staleness == 1 and cfg.run.stages == ["model"]


@pytest.mark.parametrize(
    "overrides, must_mention",
    [
        (["rl.foo=1"], ["rl.foo", "allowed keys", "group_size"]),
        (["cpt.optim.bogus=1"], ["cpt.optim.bogus", "lr"]),
        (["rl.group_size=1"], ["rl.group_size", "greater than or equal to 2"]),
        (["rl.group_size=many"], ["rl.group_size", "integer"]),
        (["rl.algorithm=ppo"], ["rl.algorithm", "'grpo'", "'poro-dapo'"]),
        (["learner.strategy=fsdp"], ["learner.strategy", "'ddp'", "'deepspeed'"]),
        (["rl.algorithm=dapo"], ["rl.kl_coef", "DAPO has no reference KL"]),
        (["rl.algorithm=poro-dapo", "rl.kl_coef=0.01"], ["rl.kl_coef"]),
        (["rollout.engines=12"], ["rollout.engines=12", "resources.cluster_cpus=8"]),
        (["resources.use_gpu=true", "resources.gpus_per_learner=1", "resources.gpus_per_engine=1"], ["GPUs", "cluster_gpus=0"]),
        (["learner.precision=bf16"], ["learner.precision=bf16", "use_gpu"]),
        (["rl.clip_low=0.3", "rl.clip_high=0.2"], ["rl.clip_high"]),
        (["rl.dynamic_sampling=true"], ["rl.dynamic_sampling", "dapo"]),
        (["run.stages=[model, train]"], ["run.stages.1", "'cpt'"]),
        (["rl=3"], ["rl", "a valid dictionary"]),
        # issue 18: values that validated before and then misbehaved
        (["rollout.engines=true"], ["rollout.engines", "boolean"]),
        (["rl.epochs=.inf"], ["rl.epochs", "finite"]),
        (["rl.reward.accuracy_weight=.nan"], ["rl.reward.accuracy_weight", "finite"]),
        (["rl.reward.format_pattern=("], ["rl.reward.format_pattern", "regular expression"]),
        (["cpt.optim.betas=[2, -1]"], ["cpt.optim.betas", "[0, 1)"]),
        (["resources.engine_resources={rollout_node: -1}"], ["resources.engine_resources", ">= 0"]),
        (["rl.algorithm=dapo", "rl.kl_coef=0", "rl.overlong.buffer=300"], ["rl.overlong.buffer=300", "max_response_len=256"]),
        (["run.dir="], ["run.dir", "at least 1 character"]),
        (["run.trackers=[tensorboard]"], ["run.trackers", "must include jsonl"]),
        (["rollout.weight_sync=nccl"], ["rollout.weight_sync=nccl", "use_gpu", "object_store on CPU"]),
        (["rollout.weight_sync=gloo"], ["rollout.weight_sync", "'object_store'", "'ipc'"]),
        (["rollout.engine_core_in_process=false"], ["weight_sync=object_store", "engine_core_in_process=true"]),
        (["resources.use_gpu=true", "resources.cluster_gpus=4", "resources.gpus_per_learner=1", "resources.gpus_per_engine=1",
          "rollout.weight_sync=ipc", "rollout.max_staleness=1"], ["weight_sync=ipc", "max_staleness=0"]),
        (["rollout.colocate=true"], ["rollout.colocate=true", "no sleep mode", "rollout.prestart"]),
        (["resources.use_gpu=true", "resources.cluster_gpus=4", "resources.gpus_per_learner=1", "resources.gpus_per_engine=1",
          "rollout.tensor_parallel=2"], ["rollout.prestart starts single-device engines", "set rollout.prestart=false"]),
        (["resources.use_gpu=true", "resources.cluster_gpus=4", "resources.gpus_per_learner=1", "resources.gpus_per_engine=0.5",
          "rollout.colocate=true", "rollout.max_staleness=1"], ["max_staleness=0", "gpus_per_learner=1.0 + gpus_per_engine=0.5"]),
        # every cross-field problem at once
        (["rl.algorithm=dapo", "rl.clip_low=0.3", "rl.clip_high=0.2"], ["rl.kl_coef", "rl.clip_high"]),
    ],
)
def test_bad_inputs_name_the_key_and_what_is_allowed(overrides: list[str], must_mention: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(REPO / "configs/default.yaml", overrides)
    message = str(info.value)
    for text in must_mention:
        assert text in message, message


def test_every_stage_is_a_module_and_runs_in_the_schemas_order() -> None:
    from importlib.util import find_spec

    from mpi_ray.config.schema import STAGES
    from mpi_ray.pipeline import ordered

    assert all(find_spec(f"mpi_ray.stages.{stage}") for stage in STAGES)
    assert ordered(["serve", "rl", "model", "rl"]) == ["model", "rl", "serve"]


def test_bad_files_and_override_syntax(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("rl: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listy)
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, ["rl.group_size"])
    twice = tmp_path / "twice.yaml"
    twice.write_text("rl: {max_steps: 2}\ncpt: {epochs: 1}\nrl: {group_size: 3}\n")
    with pytest.raises(ConfigError, match="'rl' appears twice"):
        load_config(twice)
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)
    binary = tmp_path / "weights.bin"
    binary.write_bytes(bytes(range(256)))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(binary)


def test_entry_point_rejects_bad_config_before_any_ray_work(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "jobs/trimpi.py", f"run.dir={tmp_path / 'run'}", "rl.group_size=1"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "rl.group_size" in result.stderr
    assert "Ray" not in result.stdout  # no cluster was started or joined


def test_a_config_extends_another_and_states_only_what_differs(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text("run: {name: base, stages: [model, data]}\nrl: {max_steps: 8, group_size: 4}\n")
    (tmp_path / "variant.yaml").write_text("extends: base.yaml\nrun: {name: variant}\nrl: {max_steps: 2}\n")
    cfg = load_config(tmp_path / "variant.yaml", ["rl.group_size=3"])
    assert (cfg.run.name, cfg.run.stages, cfg.rl.max_steps, cfg.rl.group_size) == ("variant", ["model", "data"], 2, 3)
    (tmp_path / "loop.yaml").write_text("extends: loop.yaml\n")
    with pytest.raises(ConfigError, match="extends itself"):
        load_config(tmp_path / "loop.yaml")
    (tmp_path / "orphan.yaml").write_text("extends: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "orphan.yaml")
