"""The entry point and the local Ray cluster: dry run, the model stage, stage chaining and --from-stage."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO


def _trimpi(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "jobs/trimpi.py", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def test_local_ray_runs_a_task_on_loopback(ray_local) -> None:
    @ray_local.remote
    def square(x: int) -> int:
        return x * x

    assert ray_local.get([square.remote(i) for i in range(4)]) == [0, 1, 4, 9]
    nodes = [node for node in ray_local.nodes() if node["Alive"]]
    assert nodes and all(node["NodeManagerAddress"] == "127.0.0.1" for node in nodes)


def test_dry_run_prints_plan_and_resolved_config(tmp_path: Path) -> None:
    result = _trimpi("--dry-run", f"run.dir={tmp_path}", "rl.group_size=6", "--stages", "model,cpt,rl,eval")
    assert result.returncode == 0, result.stderr
    assert "model   to run" in result.stdout
    assert "cpt     to run           VM-CPT" in result.stdout
    assert "rl      to run           poro-grpo" in result.stdout
    assert "eval    to run           suites policy_free" in result.stdout
    assert "group_size: 6" in result.stdout
    assert (tmp_path / "config.yaml").exists()


@pytest.mark.slow
def test_model_stage_builds_tiny_model_through_ray_and_resumes(tmp_path: Path) -> None:
    args = (f"run.dir={tmp_path}", "model.tiny.size=xs", "--stages", "model")
    first = _trimpi(*args)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "started a local Ray cluster on 127.0.0.1" in first.stdout
    marker = json.loads((tmp_path / "stages" / "model.json").read_text())
    assert Path(marker["outputs"]["model"], "model.safetensors").exists()
    second = _trimpi(*args)
    assert second.returncode == 0 and "already done, skipping" in second.stdout


@pytest.mark.slow
def test_cpt_then_sft_builds_missing_inputs_and_chains_checkpoints(tmp_path: Path) -> None:
    small = ["model.tiny.size=xs", "data.clevr.depth=2", "data.clevr.policies=2", "data.clevr.train_per_policy=16",
             "data.clevr.test=4", "data.clevr.general=0", "data.clevr.cot_fraction=1.0", "data.clevr.image_size=112",
             "cpt.max_steps=2", "sft.max_steps=2", "cpt.max_seq_len=4096"]
    result = _trimpi(f"run.dir={tmp_path}", "--stages", "cpt,sft", *small, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    stages = {name: json.loads((tmp_path / "stages" / f"{name}.json").read_text())["outputs"]
              for name in ("model", "data", "cpt", "sft")}  # model and data were built on demand
    assert stages["cpt"]["from_model"] == stages["model"]["model"]
    assert stages["sft"]["from_model"] == stages["cpt"]["model"] == str(tmp_path / "cpt" / "hf")
    assert Path(stages["sft"]["model"], "model.safetensors").exists()
    assert len((tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()) == 2


def test_from_stage_forgets_markers_work_and_train_checkpoints(tmp_path: Path) -> None:
    from mpi_ray.config import load_config
    from mpi_ray.run_dir import RunDir

    run = RunDir.create(load_config(None, [f"run.dir={tmp_path}"]))
    for stage in ("data", "cpt"):
        run.mark_done(stage, {"x": stage}, seconds=1.0)
        (run.stage_dir(stage) / "hf").mkdir(parents=True)
        (tmp_path / "ray_train" / stage).mkdir(parents=True)
    run.clear_from(["cpt"])
    assert run.completed("data") and (tmp_path / "data" / "hf").exists() and (tmp_path / "ray_train" / "data").exists()
    assert not run.completed("cpt") and not (tmp_path / "cpt").exists() and not (tmp_path / "ray_train" / "cpt").exists()


SMALL_DATA = ["model.tiny.size=xs", "data.clevr.depth=2", "data.clevr.policies=2", "data.clevr.train_per_policy=8",
              "data.clevr.test=2", "data.clevr.general=0"]
INTERRUPTED = {
    # stage: (overrides, what the resumed run prints, the step key of its metrics, the last step)
    "cpt": (["data.clevr.cot_fraction=1.0", "cpt.max_steps=8", "cpt.checkpoint_every=2", "cpt.batch_size_per_worker=1",
             "cpt.max_seq_len=4096"], "[cpt] rank 0 resumed at micro-step", "micro_step", 8),
    "rl": (["data.clevr.cot_fraction=0.25", "rl.max_steps=3", "rl.checkpoint_every=1", "rl.rollout_batch=2",
            "rl.group_size=2", "rl.update_batch=8", "rl.micro_batch_per_worker=2", "rollout.engines=1",
            "rollout.max_response_len=16", "rollout.max_prompt_len=2048", "rl.max_seq_len=2048"],
           "[rl] resumed at step ", "step", 3),
}


def _registered_checkpoint(run_storage: Path) -> bool:
    """Ray Train has recorded a checkpoint of this run (not merely started writing one)."""
    snapshot = run_storage / "checkpoint_manager_snapshot.json"
    try:
        return json.loads(snapshot.read_text()).get("latest_checkpoint_result") is not None
    except (OSError, ValueError):
        return False


@pytest.mark.slow
@pytest.mark.parametrize("stage", sorted(INTERRUPTED))
def test_rerun_after_the_driver_dies_resumes_the_interrupted_stage(tmp_path: Path, stage: str) -> None:
    """The job (driver and its local Ray) is killed once the stage has a checkpoint; the same command
    again skips the done stages and the stage resumes from that checkpoint (Ray Train restores the run
    of the same name in run.dir)."""
    import os
    import signal
    import time

    overrides, resumed, step_key, last_step = INTERRUPTED[stage]
    args = ["jobs/trimpi.py", "--stages", f"model,data,{stage}", f"run.dir={tmp_path}", *SMALL_DATA, *overrides]
    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen([sys.executable, *args], cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 600
    while not _registered_checkpoint(tmp_path / "ray_train" / stage) and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert first.poll() is None, f"the first run ended before its first checkpoint:\n{(tmp_path / 'first.log').read_text()[-3000:]}"
    os.killpg(first.pid, signal.SIGKILL)  # the whole job, as when a head node or a submitter dies
    first.wait()
    log.close()
    assert not (tmp_path / "stages" / f"{stage}.json").exists()

    second = _trimpi(*args[1:], timeout=900)
    assert second.returncode == 0, (second.stdout + second.stderr)[-4000:]
    assert "[model] already done, skipping" in second.stdout and "[data] already done, skipping" in second.stdout
    assert resumed in second.stdout + second.stderr
    steps = [json.loads(line)[step_key] for line in (tmp_path / stage / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == last_step
    if stage == "rl":  # the log keeps the steps before the checkpoint and redoes the rest, once each
        assert steps == list(range(1, last_step + 1))
