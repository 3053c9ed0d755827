"""cluster/: the launcher YAMLs pass Ray's own validation, the KubeRay manifests are well formed, and
both fit the paper-scale configs they run. Offline and fast: nothing starts Ray or contacts a cloud."""

from __future__ import annotations

import copy
import math
import re
import shlex
import tomllib
from pathlib import Path, PurePosixPath

import pytest
import yaml

from mpi_ray.config.loader import load_config
from mpi_ray.config.schema import PipelineConfig

REPO = Path(__file__).resolve().parent.parent
CLUSTER = REPO / "cluster"
KUBERAY = CLUSTER / "kuberay"
LAUNCHERS = ["aws.yaml", "gcp.yaml"]
PAPER_CONFIGS = sorted(path.name for path in (REPO / "configs").glob("*_7b.yaml"))
GPU = "nvidia.com/gpu"
# Ray Serve's own models still use pydantic-v1 style Field extras; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince20")


def _ray_pin() -> str:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = [m.group(1) for dep in deps if (m := re.fullmatch(r"ray(?:\[[^\]]*\])?==([\w.]+)", dep.replace(" ", "")))]
    assert len(pins) == 1, f"pyproject.toml must pin ray exactly once, found {pins}"
    return pins[0]


RAY = _ray_pin()
RAY_IMAGE = f"rayproject/ray:{RAY}-py311-gpu"


def _yaml(path: Path) -> dict:
    loaded = yaml.safe_load(path.read_text())
    assert isinstance(loaded, dict), f"{path} must hold one mapping"
    return loaded


def _dockerfile() -> dict[str, str]:
    """FROM and WORKDIR of the project image the KubeRay manifests run."""
    found = {}
    for line in (CLUSTER / "docker" / "Dockerfile").read_text().splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2 and parts[0] in ("FROM", "WORKDIR"):
            found[parts[0]] = parts[1].strip()
    return found


def _demand(cfg: PipelineConfig) -> tuple[float, float]:
    """GPUs and CPUs held by the learners and rollout engines together, counted as the config's own check does."""
    res, rollout = cfg.resources, cfg.rollout
    learners = max(stage.workers or res.learner_workers for stage in (cfg.cpt, cfg.sft, cfg.rl))
    gpus = rollout.engines * res.gpus_per_engine * rollout.tensor_parallel + learners * res.gpus_per_learner
    cpus = rollout.engines * res.cpus_per_engine + learners * res.cpus_per_learner
    return max(gpus, res.cluster_gpus), cpus


def _assert_fits(cfg: PipelineConfig, *, node_gpus: float, node_cpus: float, max_nodes: int, where: str) -> None:
    gpus, cpus = _demand(cfg)
    nodes = math.ceil(gpus / node_gpus)
    assert nodes <= max_nodes, f"{where}: {cfg.run.name} needs {gpus} GPUs = {nodes} nodes of {node_gpus}, max is {max_nodes}"
    # Ray packs learners and engines onto the GPU nodes, so those nodes must also hold their CPUs.
    assert nodes * node_cpus >= cpus, f"{where}: {cfg.run.name} needs {cpus} CPUs beside its GPUs, {nodes} nodes give {nodes * node_cpus}"


def _under(path: str, mount: str) -> bool:
    return PurePosixPath(path).is_relative_to(PurePosixPath(mount))


def test_paper_configs_exist():
    assert PAPER_CONFIGS, "configs/*_7b.yaml: the configs the clusters are sized for"
    for name in PAPER_CONFIGS:
        assert load_config(REPO / "configs" / name).resources.use_gpu


# ---------------------------------------------------------------- cluster launcher (ray up)


@pytest.fixture(params=LAUNCHERS)
def launcher(request) -> tuple[str, dict]:
    return request.param, _yaml(CLUSTER / request.param)


def test_launcher_passes_ray_validation(launcher):
    from ray.autoscaler._private.util import prepare_config, validate_config

    name, raw = launcher
    validate_config(copy.deepcopy(raw))  # complete on its own, against ray-schema.json
    # What `ray up` does before it talks to the cloud: merge the provider's defaults, then validate.
    prepared = prepare_config(copy.deepcopy(raw))
    validate_config(prepared)
    for key in ("available_node_types", "head_node_type", "docker", "setup_commands", "file_mounts", "idle_timeout_minutes"):
        if key == "available_node_types":
            assert set(prepared[key]) == set(raw[key]), f"{name}: defaults added node types"
        else:
            assert prepared[key] == raw[key], f"{name}: {key} was replaced by the provider's defaults"
    assert prepared["available_node_types"][raw["head_node_type"]]["max_workers"] == 0


def test_launcher_node_groups(launcher):
    name, raw = launcher
    types = raw["available_node_types"]
    head = types[raw["head_node_type"]]
    assert head["resources"].get("GPU") == 0, f"{name}: the head node must advertise GPU: 0"
    workers = {key: spec for key, spec in types.items() if key != raw["head_node_type"]}
    gpu_groups = {key: spec for key, spec in workers.items() if spec["resources"].get("GPU", 0) > 0}
    cpu_groups = {key: spec for key, spec in workers.items() if spec["resources"].get("GPU", 0) == 0}
    assert len(gpu_groups) == 1, f"{name}: one GPU worker group for learners and rollout engines, got {sorted(gpu_groups)}"
    assert cpu_groups and all(spec["resources"].get("CPU", 0) > 0 for spec in cpu_groups.values()), f"{name}: a CPU group for Ray Data"
    for key, spec in workers.items():
        assert spec.get("min_workers", 0) == 0, f"{name}: {key} must scale to zero"
        assert spec.get("max_workers", 0) >= 1, f"{name}: {key} can never start a node"
    assert raw["max_workers"] >= sum(spec["max_workers"] for spec in workers.values())
    assert raw.get("idle_timeout_minutes", 0) > 0, f"{name}: idle nodes must be released"
    (gpu,) = gpu_groups.values()
    for config in PAPER_CONFIGS:
        cfg = load_config(REPO / "configs" / config)
        _assert_fits(cfg, node_gpus=gpu["resources"]["GPU"], node_cpus=gpu["resources"]["CPU"],
                     max_nodes=gpu["max_workers"], where=name)


def test_launcher_image_install_and_storage(launcher):
    name, raw = launcher
    text = (CLUSTER / name).read_text()
    assert raw["docker"]["image"] == RAY_IMAGE, f"{name}: Ray in the image must match pyproject's ray=={RAY}"
    assert "127.0.0.1" not in text and "localhost" not in text, f"{name}: a cloud cluster binds no loopback address"
    assert any("--dashboard-host=0.0.0.0" in cmd for cmd in raw["head_start_ray_commands"])
    # The checkout is shipped (without .venv / runs, via .gitignore) and installed with CUDA vLLM.
    assert "." in raw["file_mounts"].values() and ".gitignore" in raw["rsync_filter"]
    setup = " ".join(raw["setup_commands"])
    assert "--frozen" in setup and "--extra gpu" in setup
    # run.dir of every paper config is on the volume shared by every node's container.
    mounts = [opt.split()[1].split(":")[1] for opt in raw["docker"]["run_options"] if opt.startswith("-v ")]
    for config in PAPER_CONFIGS:
        run_dir = load_config(REPO / "configs" / config).run.dir
        assert any(_under(run_dir, mount) for mount in mounts), f"{name}: run.dir {run_dir} is on no shared mount {mounts}"


# ---------------------------------------------------------------- KubeRay manifests


def _cpu(quantity) -> float:
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def _groups(cluster_spec: dict) -> list[tuple[str, dict]]:
    """(name, group) for the head group and every worker group."""
    return [("head", cluster_spec["headGroupSpec"])] + [(g["groupName"], g) for g in cluster_spec["workerGroupSpecs"]]


def _gpus(group: dict) -> int:
    return sum(int(c["resources"]["limits"].get(GPU, 0)) for c in group["template"]["spec"]["containers"])


def _mounts(group: dict) -> list[tuple[str, dict]]:
    """(mountPath, volume) for every volume mounted in the group's containers."""
    pod = group["template"]["spec"]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    return [(m["mountPath"], volumes[m["name"]]) for c in pod["containers"] for m in c.get("volumeMounts", [])]


def _check_cluster_spec(spec: dict, where: str) -> None:
    assert spec["rayVersion"] == RAY, f"{where}: rayVersion must match pyproject's ray=={RAY}"
    assert spec["enableInTreeAutoscaling"] is True
    names = [name for name, _ in _groups(spec)]
    assert len(names) == len(set(names)), f"{where}: duplicate group names {names}"
    for name, group in _groups(spec):
        params = group["rayStartParams"]
        assert all(isinstance(v, str) for v in params.values()), f"{where}/{name}: rayStartParams values must be strings"
        pod = group["template"]["spec"]
        assert pod["containers"], f"{where}/{name}: no containers"
        volumes = {v["name"] for v in pod.get("volumes", [])}
        for c in pod["containers"]:
            assert c.get("image"), f"{where}/{name}/{c.get('name')}: no image"
            res = c.get("resources", {})
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(res.get(kind, {})), f"{where}/{name}/{c['name']}: resources.{kind} needs cpu and memory"
            if GPU in res.get("requests", {}):
                assert res["requests"][GPU] == res["limits"].get(GPU), f"{where}/{name}: GPU requests must equal limits"
            missing = {m["name"] for m in c.get("volumeMounts", [])} - volumes
            assert not missing, f"{where}/{name}: volumeMounts without a volume: {missing}"
        if name == "head":
            assert _gpus(group) == 0, f"{where}: the head pod takes no GPU"
        else:
            assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], (
                f"{where}/{name}: need minReplicas <= replicas <= maxReplicas")
    assert any(_gpus(group) > 0 for _, group in _groups(spec)[1:]), f"{where}: no worker group with {GPU} limits"


def _image_and_workdir(groups: list[tuple[str, dict]], working_dir: str, where: str) -> None:
    """One image for every pod; a local:// working_dir is the checkout the project image holds."""
    images = {c["image"] for _, g in groups for c in g["template"]["spec"]["containers"]}
    assert len(images) == 1, f"{where}: every pod must run the same image (same Ray, Python, code), got {images}"
    docker = _dockerfile()
    assert docker["FROM"] == RAY_IMAGE
    if working_dir.startswith("local://"):
        assert working_dir.removeprefix("local://") == docker["WORKDIR"], f"{where}: {working_dir} is not the image's checkout"


@pytest.fixture(scope="module")
def storage_claims() -> dict[str, dict]:
    docs = [doc for doc in yaml.safe_load_all((KUBERAY / "storage.yaml").read_text()) if doc]
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == "PersistentVolumeClaim"}


def _check_claims(groups: list[tuple[str, dict]], claims: dict[str, dict], where: str) -> None:
    for name, group in groups:
        for volume in group["template"]["spec"].get("volumes", []):
            if "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                assert claim in claims, f"{where}/{name}: claim {claim} is not in cluster/kuberay/storage.yaml"
                assert "ReadWriteMany" in claims[claim]["spec"]["accessModes"], f"{claim}: every pod mounts it"


def _check_metadata(doc: dict, kind: str) -> None:
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == kind
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"]) and len(doc["metadata"]["name"]) <= 63


def test_rayjob(storage_claims):
    from ray.runtime_env import RuntimeEnv

    from mpi_ray.cluster import QUIET_ENV

    job = _yaml(KUBERAY / "rayjob.yaml")
    _check_metadata(job, "RayJob")
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    _check_cluster_spec(spec["rayClusterSpec"], "rayjob")
    groups = _groups(spec["rayClusterSpec"])
    _check_claims(groups, storage_claims, "rayjob")

    # The entrypoint runs the pipeline job on a config in configs/ that loads (and so validates).
    argv = shlex.split(spec["entrypoint"])
    assert argv[:2] == ["python", "jobs/trimpi.py"] and (REPO / argv[1]).is_file()
    assert argv[2] == "--config" and argv[3].startswith("configs/")
    cfg = load_config(REPO / argv[3], argv[4:])
    assert cfg.resources.use_gpu

    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert runtime_env.get("working_dir"), "the entrypoint's relative paths need a working_dir"
    RuntimeEnv(**runtime_env)  # Ray accepts it
    # jobs/trimpi.py sets these for its workers; Ray refuses a job runtime env that repeats them.
    driver_keys = set(QUIET_ENV) | {"VLLM_CPU_KVCACHE_SPACE", "DS_ACCELERATOR"}
    assert not driver_keys & set(runtime_env.get("env_vars", {}))
    _image_and_workdir(groups, runtime_env["working_dir"], "rayjob")

    gpu_groups = [g for _, g in groups[1:] if _gpus(g) > 0]
    assert len(gpu_groups) == 1
    (gpu,) = gpu_groups
    cpus = _cpu(gpu["rayStartParams"].get("num-cpus") or gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"])
    _assert_fits(cfg, node_gpus=_gpus(gpu), node_cpus=cpus, max_nodes=gpu["maxReplicas"], where="rayjob")

    # run.dir must be one file system for the driver (head) and every worker pod.
    for name, group in groups:
        shared = [path for path, vol in _mounts(group) if "persistentVolumeClaim" in vol and _under(cfg.run.dir, path)]
        assert shared, f"rayjob/{name}: run.dir {cfg.run.dir} is not on a shared volume"


def test_rayservice(storage_claims):
    from ray.serve.schema import ServeDeploySchema

    service = _yaml(KUBERAY / "rayservice.yaml")
    _check_metadata(service, "RayService")
    spec = service["spec"]
    _check_cluster_spec(spec["rayClusterConfig"], "rayservice")
    groups = _groups(spec["rayClusterConfig"])
    _check_claims(groups, storage_claims, "rayservice")

    # Ray Serve's own schema for `serve deploy` (validation only: the import path is not imported).
    serve = ServeDeploySchema.model_validate(yaml.safe_load(spec["serveConfigV2"]))
    assert serve.http_options.host == "0.0.0.0"
    (app,) = serve.applications
    assert app.import_path == "mpi_ray.serve.app:build_app" and app.route_prefix == "/"
    # build_app's arguments: checkpoint, config, and any other key as a section.key override.
    args = dict(app.args)
    checkpoint, config = args.pop("checkpoint"), args.pop("config")
    cfg = load_config(REPO / config, [f"{key}={value}" for key, value in args.items()])
    assert cfg.serve.use_gpu
    _image_and_workdir(groups, app.runtime_env.get("working_dir", ""), "rayservice")

    gpu_groups = [(name, g) for name, g in groups[1:] if _gpus(g) > 0]
    assert len(gpu_groups) == 1
    ((name, gpu),) = gpu_groups
    # One replica per GPU (7B in bf16, no tensor parallelism): the group must hold serve.max_replicas.
    assert gpu["maxReplicas"] * _gpus(gpu) >= cfg.serve.max_replicas
    assert any(_under(checkpoint, path) for path, vol in _mounts(gpu) if "persistentVolumeClaim" in vol), (
        f"rayservice/{name}: checkpoint {checkpoint} is not on a mounted volume")
