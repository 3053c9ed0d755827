"""The entry point and the local Ray cluster: loopback only, dry run, --from-stage. (The stages themselves,
chaining, skipping and resuming after the driver dies: tests/test_pipeline.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO


def _trimpi(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "jobs/trimpi.py", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


LOOPBACK_SCRIPT = r"""
import json, os, sys
os.environ.pop("RAY_ADDRESS", None)
from mpi_ray.cluster import connect  # sets RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before Ray is imported
from mpi_ray.config import load_config
import psutil, ray

print(connect(load_config(None, ["resources.cluster_cpus=2", "rollout.engines=1", "resources.learner_workers=1"])))
assert ray.get(ray.remote(lambda x: x * x).remote(7)) == 49
def listening_sockets(proc):
    try:  # a short-lived child (a worker starting or leaving) may be gone by now
        return [(proc.name(), conn.laddr.ip, conn.laddr.port) for conn in proc.net_connections("inet")
                if conn.status == psutil.CONN_LISTEN]
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []

listening = sorted({sock for proc in psutil.Process().children(recursive=True) for sock in listening_sockets(proc)})
nodes = [node["NodeManagerAddress"] for node in ray.nodes() if node["Alive"]]
print("RESULT " + json.dumps({"listening": listening, "nodes": nodes}))
ray.shutdown()
"""


def test_local_ray_listens_on_loopback_only() -> None:
    """mpi_ray.cluster.connect without RAY_ADDRESS starts Ray whose every server listens on 127.0.0.1."""
    result = subprocess.run([sys.executable, "-c", LOOPBACK_SCRIPT], cwd=REPO, capture_output=True, text=True,
                            timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert result.returncode == 0 and lines, result.stderr[-3000:]
    body = json.loads(lines[0][len("RESULT "):])
    assert "started a local Ray cluster on 127.0.0.1" in result.stdout
    assert body["nodes"] == ["127.0.0.1"]
    servers = {name for name, _, _ in body["listening"]}
    assert {"gcs_server", "raylet"} <= servers, body["listening"]  # the check saw Ray's own servers
    assert all(ip in ("127.0.0.1", "::ffff:127.0.0.1") for _, ip, _ in body["listening"]), body["listening"]


def test_dry_run_prints_plan_and_resolved_config_and_changes_nothing(tmp_path: Path) -> None:
    from mpi_ray.config import load_config
    from mpi_ray.run_dir import RunDir

    run = RunDir.create(load_config(None, [f"run.dir={tmp_path}"]))  # a live run: model, data and cpt done
    for stage in ("model", "data", "cpt"):
        run.mark_done(stage, {"x": stage}, seconds=1.0)
        run.stage_dir(stage).mkdir()
    (tmp_path / "config.yaml").write_text("the live run's config\n")
    before = sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*"))

    result = _trimpi("--dry-run", f"run.dir={tmp_path}", "rl.group_size=6", "--stages", "model,cpt,rl,eval",
                     "--from-stage", "cpt")
    assert result.returncode == 0, result.stderr
    assert "model   done (skip)" in result.stdout
    assert "cpt     to run           VM-CPT" in result.stdout  # --from-stage: redone
    assert "rl      to run           poro-grpo" in result.stdout
    assert "eval    to run           suites policy_free" in result.stdout
    assert "group_size: 6" in result.stdout
    assert (tmp_path / "config.yaml").read_text() == "the live run's config\n"
    assert sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*")) == before  # no marker or folder gone


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


def test_later_stages_build_missing_model_and_data_first(tmp_path: Path) -> None:
    from mpi_ray.config import load_config
    from mpi_ray.pipeline import with_prerequisites
    from mpi_ray.run_dir import RunDir

    run = RunDir.create(load_config(None, [f"run.dir={tmp_path}"]))
    assert with_prerequisites(run, ["sft", "cpt"]) == ["model", "data", "cpt", "sft"]
    assert with_prerequisites(run, ["data"]) == ["data"]  # data alone needs no model
    run.mark_done("model", {"model": "m"}, seconds=1.0)
    assert with_prerequisites(run, ["rl"]) == ["data", "rl"]  # a completed stage is not redone


def test_a_base_model_inside_a_jobs_uploaded_working_dir_is_kept_in_the_run_dir(tmp_path: Path) -> None:
    """`ray job submit --working-dir .` runs the job in a copy Ray may delete; a re-submitted job
    skips the model stage and reads its recorded path, so that path must be the run's own."""
    import shutil

    from mpi_ray.config import load_config
    from mpi_ray.pipeline import StageContext
    from mpi_ray.run_dir import RunDir
    from mpi_ray.stages import model as model_stage

    uploaded = tmp_path / "session" / "runtime_resources" / "working_dir_files" / "_ray_pkg_1" / "models" / "base"
    shutil.copytree(REPO / "models" / "tiny-base-xs", uploaded)
    cfg = load_config(None, [f"run.dir={tmp_path / 'run'}", f"model.name_or_path={uploaded}"])
    outputs = model_stage.run(StageContext(cfg, RunDir.create(cfg)))
    kept = tmp_path / "run" / "model"
    assert outputs == {"model": str(kept)} and (kept / "config.json").read_bytes() == (uploaded / "config.json").read_bytes()
    shutil.rmtree(tmp_path / "session")  # Ray's cache of the upload is gone; the run's copy is not
    assert (kept / "model.safetensors").exists()
    # A checkout the job runs from directly (make run) is used in place.
    cfg = load_config(REPO / "configs" / "default.yaml", [f"run.dir={tmp_path / 'run2'}"])
    assert model_stage.run(StageContext(cfg, RunDir.create(cfg))) == {"model": str(REPO / "models" / "tiny-base-xs")}


def test_a_driver_whose_working_dir_was_unpacked_afresh_goes_back_in(tmp_path: Path) -> None:
    """Seen in the pipeline test: Ray's runtime-env agent re-unpacked the job's working_dir under the
    running driver (rmtree + unzip to the same path), and the eval stage's first transformers import
    failed in os.getcwd(). run_stages re-enters the path before each stage."""
    import shutil

    from mpi_ray.pipeline import reenter

    unpacked, before = tmp_path / "_ray_pkg_1", os.getcwd()
    unpacked.mkdir()
    try:
        os.chdir(unpacked)
        shutil.rmtree(unpacked)
        unpacked.mkdir()  # the same path, a new directory
        (unpacked / "config.yaml").write_text("x")
        reenter(str(unpacked))
        assert os.getcwd() == str(unpacked) and Path("config.yaml").read_text() == "x"
        reenter("/nonexistent")  # a live working directory is left alone
        assert os.getcwd() == str(unpacked)
    finally:
        os.chdir(before)


def test_job_output_into_a_file_or_pipe_carries_no_colour_codes() -> None:
    """Ray colours its "[repeated Nx across cluster]" notes even into a file; a job's output is stripped."""
    script = "import sys; sys.path.insert(0, 'jobs'); import _bootstrap; print('\\x1b[32m [repeated 3x across cluster]\\x1b[0m')"
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.stdout == " [repeated 3x across cluster]\n"


def test_quieted_ray_loggers_stay_quiet_after_ray_trains_logging_config() -> None:
    """Ray Train's dictConfig resets the levels of loggers below `ray.train`; the workers' quieting (a
    filter) must survive it, or the 20-line autoscaling-request traceback comes back."""
    import logging
    import logging.config

    from mpi_ray import cluster

    cluster.quiet_local_worker()
    logging.config.dictConfig({"version": 1, "disable_existing_loggers": False, "loggers": {"ray.train": {"level": "INFO"}}})
    for name in cluster.QUIET_LOCAL_LOGGERS:
        seen: list[str] = []
        handler = logging.Handler()
        handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        try:
            logger.warning("transient, safe to ignore")
            logger.error("a real failure")
        finally:
            logger.removeHandler(handler)
        assert seen == ["a real failure"], name


def test_a_stage_started_ahead_runs_beside_the_one_before_and_is_released_if_unclaimed(
        tmp_path: Path, monkeypatch) -> None:
    """rollout.prestart's plumbing: `start_ahead` of the next stage to run is called as the stage before
    it starts (not earlier, and not for a stage already done), its result reaches that stage, and what
    no stage claimed is released when the run stops, also on a failure."""
    import types

    import pytest

    from mpi_ray import pipeline
    from mpi_ray.config import load_config
    from mpi_ray.pipeline import StageContext, run_stages
    from mpi_ray.run_dir import RunDir

    events: list[str] = []

    class Started:
        def __init__(self, name: str) -> None:
            self.name = name

        def release(self) -> None:
            events.append(f"release {self.name}")

    def module(name: str, fail: bool = False, ahead: bool = False) -> types.SimpleNamespace:
        def run(ctx: StageContext) -> dict:
            events.append(f"run {name} with {getattr(ctx.ahead.pop(name, None), 'name', None)}")
            if fail:
                raise RuntimeError(f"{name} failed")
            return {}

        def start_ahead(ctx: StageContext) -> Started:
            events.append(f"start {name} ahead")
            return Started(name)

        return types.SimpleNamespace(describe=lambda ctx: name, run=run, **({"start_ahead": start_ahead} if ahead else {}))

    cfg = load_config(REPO / "configs" / "default.yaml", [f"run.dir={tmp_path / 'run'}"])
    stages = {"sft": module("sft"), "rl": module("rl", ahead=True), "eval": module("eval")}
    monkeypatch.setattr(pipeline, "stage_module", lambda name: stages[name])
    monkeypatch.setattr(pipeline, "publish_stage", lambda *args: None)
    run_stages(StageContext(cfg, RunDir.create(cfg)), ["sft", "rl", "eval"], log=lambda line: None)
    assert events == ["start rl ahead", "run sft with None", "run rl with rl", "run eval with None"]

    events.clear()  # the stage before fails: the engines started ahead are released
    cfg = load_config(REPO / "configs" / "default.yaml", [f"run.dir={tmp_path / 'run2'}"])
    stages["sft"] = module("sft", fail=True)
    with pytest.raises(RuntimeError, match="sft failed"):
        run_stages(StageContext(cfg, RunDir.create(cfg)), ["sft", "rl", "eval"], log=lambda line: None)
    assert events == ["start rl ahead", "run sft with None", "release rl"]
