"""Stage `export`: the final policy-free model as a self-contained Hugging Face folder with a model card.

    <run>/export/<serve.model_id>/   weights, config, processor (loads in transformers and vLLM),
                                     README.md (what was internalized, how to serve, the scores),
                                     mpi_ray_export.json (source checkpoint, stages, data, config)
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from mpi_ray.config.loader import dump_config
from mpi_ray.data.shards import read_manifest
from mpi_ray.eval.report import report_tables
from mpi_ray.pipeline import TRAINED_STAGES, StageContext


def describe(ctx: StageContext) -> str:
    return f"final model + model card -> {ctx.run.stage_dir('export') / ctx.cfg.serve.model_id}"


def _card(ctx: StageContext, source: str, stages: list[str], manifest: dict[str, Any]) -> str:
    report = ctx.run.root / "report.md"
    scores = ""
    if report.exists():
        scores = "\n## Scores (from the run's report)\n\n" + "\n".join(report_tables(report)) + "\n"
    names = ", ".join(policy["name"] for policy in manifest.get("policies", [])) or "see the dataset manifest"
    return f"""# {ctx.cfg.serve.model_id}

A vision-language model with its policies internalized by TriMPI (mpi-ray): it follows the policies
without them in the prompt. Ask it the policy question with the image only.

- Base model: {ctx.cfg.model.name_or_path or f"tiny local Qwen2.5-VL ({ctx.cfg.model.tiny.size})"}
- Stages: {" -> ".join(stages)} ({ctx.cfg.rl.algorithm if "rl" in stages else "no RL"})
- Dataset: {ctx.cfg.data.dataset}; policies: {names}
- Source checkpoint: {source}

Serve it: `python jobs/serve.py --checkpoint {ctx.run.stage_dir("export") / ctx.cfg.serve.model_id}`
(OpenAI-compatible /v1/chat/completions on 127.0.0.1:8000).
{scores}"""


def run(ctx: StageContext) -> dict[str, Any]:
    source = Path(ctx.current_model())
    if not (source / "config.json").is_file():
        raise FileNotFoundError(f"the newest model {source} is not a local HF folder; nothing to export")
    out = ctx.run.stage_dir("export") / ctx.cfg.serve.model_id
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(source, out)
    stages = [stage for stage in TRAINED_STAGES if ctx.run.completed(stage)]
    manifest = read_manifest(ctx.outputs["data"]) if "data" in ctx.outputs else {}
    (out / "README.md").write_text(_card(ctx, str(source), stages, manifest))
    (out / "mpi_ray_export.json").write_text(json.dumps({
        "source": str(source), "stages": stages, "data": ctx.outputs.get("data"),
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "config": dump_config(ctx.cfg)}, indent=2) + "\n")
    return {"model": str(out), "export": str(out), "from_model": str(source)}
