"""Weight sync, learner rank 0 -> every rollout engine, through the object store; verified.

Learner side (`publish`): after an update rank 0 gathers the full weights under their HF names, puts
them into the object store once, and publishes the ObjectRef with the new version to the buffer,
together with its own log-probs of a fixed probe sequence. Producer side (`RolloutPool.load_weights`
then `verify`): every engine loads the weights through vLLM's in-place reload (worker_ext.py), and
each engine's log-probs of the same probe must match the learner's within
`rollout.verify_sync_tol`, or the step fails. A sync that silently did not apply cannot pass.
(NCCL broadcast for GPU clusters is not implemented; the config refuses rollout.weight_sync=nccl.)
"""

from __future__ import annotations

import time
from typing import Any

import ray
import torch

from mpi_ray.train.losses import token_logprobs

PROBE = {
    "prompt": "<|im_start|>user\nWhich case of the policy applies to this image?<|im_end|>\n"
              "<|im_start|>assistant\n<think>Condition 1 holds.</think>\n\\boxed{Case 1}<|im_end|>",
    "images": [],
}


def probe_logprobs(model: torch.nn.Module, tokenizer: Any) -> list[float]:
    """The model's log-prob of every probe token after the first (what vLLM's prompt_logprobs gives)."""
    ids = torch.tensor([tokenizer(PROBE["prompt"])["input_ids"]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    logp, _ = token_logprobs(logits, ids)
    return logp[0].tolist()


def publish(strategy: Any, buffer: Any, tokenizer: Any, version: int, rank: int) -> float:
    """Rank 0 hands the weights of `version` to the buffer; returns the seconds it took (collective)."""
    start = time.perf_counter()
    with strategy.gathered() as module:
        if rank == 0:
            named = [(name, tensor.detach().cpu().clone()) for name, tensor in module.state_dict().items()]
            probe = probe_logprobs(module, tokenizer)
            ray.get(buffer.publish_weights.remote(version, [ray.put(named)], probe))
    return time.perf_counter() - start


def verify(engines: list[Any], expected: list[float], tolerance: float) -> float:
    """Max |engine - learner| probe log-prob over the engines; raises if any engine is off."""
    worst = 0.0
    for index, engine_logp in enumerate(ray.get([engine.prompt_logprobs.remote(PROBE) for engine in engines])):
        if len(engine_logp) != len(expected):
            raise RuntimeError(f"weight sync check: engine {index} scored {len(engine_logp)} probe tokens, "
                               f"the learner {len(expected)}")
        diff = max(abs(a - b) for a, b in zip(engine_logp, expected))
        if diff > tolerance:
            raise RuntimeError(f"weight sync check failed: engine {index}'s probe log-probs differ from the learner's "
                               f"by {diff:.4f} > rollout.verify_sync_tol={tolerance}: the new weights did not apply")
        worst = max(worst, diff)
    return worst
