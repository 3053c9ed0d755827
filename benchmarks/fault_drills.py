"""Fault drills: kill one part of a running TriMPI job and see whether the job finishes, from where, with
which rows, and at what cost in time.

    python benchmarks/fault_drills.py [--out runs/fault_drills] [--drills uninterrupted,engine,...]

A two-node loopback Ray cluster (tests/two_node_cluster.py: learners on the head, vLLM engines on the
second node) runs the same small job (`jobs/trimpi.py`, stages model, data, VM-CPT 12 steps with a
checkpoint every 4, PoRo-GRPO 6 steps with a checkpoint every 2, 2 engines, 2 RL learners) once per
drill, each in its own run directory on the same dataset:

  uninterrupted  no fault: the reference for rows and time
  engine         rollout engine 0 killed while it samples RL step 3 (drill.kill_engine_at_rl_step)
  learner        the CPT learner worker dies in step 7 (drill.kill_cpt_learner_after_step); Ray Train restarts it
  driver-cpt     the driver's process group SIGKILLed once CPT logged step 6, then the same command re-submitted
                 through `ray job submit`
  driver-rl      the same at RL step 3
  node-rl        the second node (both engines) killed at RL step 3; a replacement node joins 20 s later,
                 as an autoscaler would bring one; a job that fails is re-submitted once

Per drill: did the job finish, after how many invocations, the step it resumed from, steps done twice
(progress lines beyond the plan), whether the rows each step trained on (CPT: data_order_rank*.jsonl,
the last record of each step; RL: data_order.jsonl) match the uninterrupted run's (rows repeated /
skipped), wall time and time lost against the uninterrupted run. Written to <out>/fault_drills.{md,json}.
Nothing else should run on the machine meanwhile (about 30 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from mpi_ray.train.metrics_log import read_data_order  # noqa: E402
from two_node_cluster import TwoNodeCluster, start_cluster  # noqa: E402

HEAD_CPUS, HEAD_RESOURCES = 5, '{"learner_node": 4}'  # learners ask for learner_node, engines for rollout_node
NODE_CPUS, NODE_RESOURCES = 4, '{"rollout_node": 4}'
STAGES = "model,data,cpt,rl"
CPT_STEPS, RL_STEPS = 12, 6
JOB = [
    f"cpt.max_steps={CPT_STEPS}", "cpt.checkpoint_every=4", "cpt.batch_size_per_worker=4",
    f"rl.max_steps={RL_STEPS}", "rl.checkpoint_every=2", "rl.rollout_batch=4", "rl.group_size=4",
    "rl.update_batch=32", "rl.micro_batch_per_worker=4", "rollout.max_response_len=64",
    "resources.learner_resources={learner_node: 1}", "resources.engine_resources={rollout_node: 1}",
]
INVOCATION_TIMEOUT_S = 1200
NODE_DOWN_S = 20


@dataclass(frozen=True)
class Drill:
    name: str
    what: str
    overrides: tuple[str, ...] = ()
    fault: str = "none"  # none | driver | node
    stage: str = ""  # where an outside fault strikes
    at_step: int = 0


DRILLS = [
    Drill("uninterrupted", "no fault"),
    Drill("engine", "rollout engine 0 killed while sampling RL step 3", ("drill.kill_engine_at_rl_step=3",)),
    Drill("learner", "CPT learner worker killed in step 7 (checkpoint at 4)", ("drill.kill_cpt_learner_after_step=6",)),
    Drill("driver-cpt", "driver killed (SIGKILL) at CPT step 6, re-submitted", fault="driver", stage="cpt", at_step=6),
    Drill("driver-rl", "driver killed (SIGKILL) at RL step 3, re-submitted", fault="driver", stage="rl", at_step=3),
    Drill("node-rl", f"second node (both engines) killed at RL step 3, a new node {NODE_DOWN_S} s later",
          fault="node", stage="rl", at_step=3),
]


@dataclass
class Outcome:
    drill: str
    what: str
    finished: bool = False
    invocations: int = 0
    exit_codes: list[int] = field(default_factory=list)
    resumed_from: dict[str, list[int]] = field(default_factory=dict)
    steps_redone: dict[str, int] = field(default_factory=dict)
    engine_restarts: int = 0
    rows: dict[str, dict[str, int | bool]] = field(default_factory=dict)  # stage -> same_order, repeated, skipped
    wall_s: float = 0.0
    time_lost_s: float | None = None


def logged_step(run_dir: Path, stage: str) -> int:
    """The newest step in the stage's metrics log (0 before the first)."""
    path = run_dir / stage / "metrics.jsonl"
    key = "micro_step" if stage == "cpt" else "step"
    try:
        lines = path.read_text().splitlines()
        return max((json.loads(line)[key] for line in lines if line.strip()), default=0)
    except (OSError, ValueError):
        return 0


def job_command(run_dir: Path, data_dir: Path, drill: Drill) -> list[str]:
    return ["jobs/trimpi.py", "--stages", STAGES, f"run.dir={run_dir}", f"data.dir={data_dir}", *JOB, *drill.overrides]


def run_direct(args: list[str], log_path: Path, cluster: TwoNodeCluster, strike=None) -> int:
    """`python jobs/trimpi.py ...` joined to the cluster; `strike()` is polled and, once it returns True,
    the fault has been dealt (it may kill this job: it gets the process). Returns the exit code."""
    with log_path.open("w") as log:
        job = subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, "RAY_ADDRESS": cluster.address}, start_new_session=True)
        deadline = time.monotonic() + INVOCATION_TIMEOUT_S
        while job.poll() is None and time.monotonic() < deadline:
            if strike is not None and strike(job):
                strike = None
            time.sleep(0.5)
        if job.poll() is None:  # hung: counted as not finished
            os.killpg(job.pid, signal.SIGKILL)
        return job.wait()


def run_submitted(args: list[str], log_path: Path, cluster: TwoNodeCluster) -> int:
    """The same command through the job server, as a user re-submits a failed job."""
    ray_cli = str(Path(sys.executable).with_name("ray"))
    with log_path.open("w") as log:
        try:
            return subprocess.run([ray_cli, "job", "submit", "--address", cluster.dashboard, "--working-dir", ".",
                                   "--", sys.executable, *args], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                  timeout=INVOCATION_TIMEOUT_S).returncode
        except subprocess.TimeoutExpired:
            return -9


def strike_for(drill: Drill, run_dir: Path, cluster: TwoNodeCluster):
    """The outside fault of a drill as a poll function (None for faults the job deals itself)."""
    if drill.fault == "none":
        return None

    def strike(job: subprocess.Popen) -> bool:
        if logged_step(run_dir, drill.stage) < drill.at_step:
            return False
        if drill.fault == "driver":
            os.killpg(job.pid, signal.SIGKILL)
        else:
            cluster.command("kill-node")
            time.sleep(NODE_DOWN_S)
            cluster.command("add-node")
        return True

    return strike


def run_drill(drill: Drill, out: Path, data_dir: Path, cluster: TwoNodeCluster) -> Outcome:
    run_dir = out / drill.name
    args = job_command(run_dir, data_dir, drill)
    outcome = Outcome(drill.name, drill.what)
    start = time.monotonic()
    print(f"[drill] {drill.name}: {drill.what}", flush=True)
    code = run_direct(args, out / f"{drill.name}.1.log", cluster, strike_for(drill, run_dir, cluster))
    outcome.exit_codes.append(code)
    if code != 0 and drill.fault != "none":  # a user re-submits the same command once
        outcome.exit_codes.append(run_submitted(args, out / f"{drill.name}.2.log", cluster))
    outcome.wall_s = round(time.monotonic() - start, 1)
    outcome.invocations = len(outcome.exit_codes)
    outcome.finished = outcome.exit_codes[-1] == 0 and (run_dir / "stages" / "rl.json").exists()
    logs = "".join((out / f"{drill.name}.{i}.log").read_text() for i in range(1, outcome.invocations + 1))
    for stage in ("cpt", "rl"):
        outcome.resumed_from[stage] = sorted({int(n) for n in re.findall(rf"\[{stage}\] (?:rank \d+ )?resumed at (?:micro-)?step (\d+)", logs)})
        planned = CPT_STEPS if stage == "cpt" else RL_STEPS
        outcome.steps_redone[stage] = max(0, len(re.findall(rf"\[{stage}\] step \d+/\d+ ", logs)) - planned)
    outcome.engine_restarts = len(re.findall(r"\[rollout\] engine \d+ died", logs))
    print(f"[drill] {drill.name}: finished {outcome.finished} after {outcome.invocations} invocation(s), "
          f"{outcome.wall_s:.0f} s", flush=True)
    return outcome


def trained_rows(run_dir: Path) -> dict[str, dict[str, list[str]]]:
    """Per stage, step -> the sample ids it trained on; for a step done twice, the last time counts."""
    cpt = {f"{path.stem[-1]}:{step}": ids for path in sorted((run_dir / "cpt").glob("data_order_rank*.jsonl"))
           for step, ids in read_data_order(path, "micro_step").items()}
    rl_log = run_dir / "rl" / "data_order.jsonl"
    rl = {str(step): ids for step, ids in read_data_order(rl_log, "step").items()} if rl_log.exists() else {}
    return {"cpt": cpt, "rl": rl}


def compare_rows(reference: dict[str, list[str]], drilled: dict[str, list[str]]) -> dict[str, int | bool]:
    expected = Counter(i for ids in reference.values() for i in ids)
    seen = Counter(i for ids in drilled.values() for i in ids)
    return {"same_order": reference == drilled, "repeated": sum((seen - expected).values()),
            "skipped": sum((expected - seen).values())}


def markdown(outcomes: list[Outcome]) -> str:
    lines = ["| Drill | Finished | Invocations | Resumed from (CPT / RL step) | Steps redone (CPT / RL) | "
             "Rows vs uninterrupted (CPT / RL) | Engine restarts | Wall | Time lost |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for o in outcomes:
        resumed = " / ".join(",".join(map(str, o.resumed_from[s])) or "-" for s in ("cpt", "rl"))
        rows = " / ".join(("same" if o.rows[s]["same_order"] else f"{o.rows[s]['repeated']} repeated, "
                           f"{o.rows[s]['skipped']} skipped") if s in o.rows else "n/a" for s in ("cpt", "rl"))
        lost = "-" if o.time_lost_s is None else f"{o.time_lost_s:+.0f} s"
        lines.append(f"| {o.drill}: {o.what} | {'yes' if o.finished else 'NO'} | {o.invocations} | {resumed} | "
                     f"{o.steps_redone['cpt']} / {o.steps_redone['rl']} | {rows} | {o.engine_restarts} | "
                     f"{o.wall_s:.0f} s | {lost} |")
    return "\n".join(lines) + "\n"


def prepare_data(out: Path) -> Path:
    data_dir = out / "data"
    if not (data_dir / "manifest.json").exists():
        subprocess.run([sys.executable, "-m", "mpi_ray.data.clevr_policy", "--depth", "2", "--variant", "T",
                        "--policies", "1", "--train-per-policy", "320", "--test", "8", "--general", "4",
                        "--cot-fraction", "0.5", "--image-size", "112", "--seed", "0", "--out", str(data_dir),
                        "--tokenizer", str(ROOT / "models" / "tiny-base-xs"), "--overwrite"], cwd=ROOT, check=True)
    return data_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/fault_drills")
    parser.add_argument("--drills", default=",".join(d.name for d in DRILLS))
    args = parser.parse_args(argv)
    chosen = [d for d in DRILLS if d.name in args.drills.split(",")]
    if not chosen or chosen[0].name != "uninterrupted":
        parser.error("the drills compare against `uninterrupted`: list it first")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    # Loopback stays loopback in every driver (Ray's multi-node mode would swap in the routable address)
    os.environ.update({"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "RAY_AUTH_MODE": "token",
                       "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"})
    data_dir = prepare_data(out)
    cluster = start_cluster(out / "cluster.log", HEAD_CPUS, HEAD_RESOURCES, NODE_CPUS, NODE_RESOURCES)
    outcomes = []
    try:
        for drill in chosen:
            outcomes.append(run_drill(drill, out, data_dir, cluster))
            time.sleep(5)  # the cluster frees the job's actors and placement groups
    finally:
        cluster.stop()
    reference = trained_rows(out / "uninterrupted")
    for outcome in outcomes:
        drilled = trained_rows(out / outcome.drill)
        outcome.rows = {stage: compare_rows(reference[stage], drilled[stage]) for stage in ("cpt", "rl")}
        if outcome.finished and outcomes[0].finished:
            outcome.time_lost_s = round(outcome.wall_s - outcomes[0].wall_s, 1)
    table = markdown(outcomes)
    (out / "fault_drills.md").write_text(table)
    (out / "fault_drills.json").write_text(json.dumps([asdict(o) for o in outcomes], indent=2) + "\n")
    print(table)
    return 0 if all(o.finished for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
