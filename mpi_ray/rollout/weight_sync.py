"""Weight sync, learner rank 0 -> every rollout engine, through the object store; verified.

Learner side (`publish`): after an update rank 0 gathers the full weights under their HF names, puts
them into the object store once, and publishes the ObjectRef with the new version to the buffer,
together with its own log-probs of a fixed probe (an image, a question and a fixed response: the
response tokens depend on the vision tower as much as on the language model). Producer side (`RolloutPool.load_weights`
then `verify`): every engine loads the weights through vLLM's in-place reload (worker_ext.py), and
each engine's log-probs of the same probe must match the learner's within
`rollout.verify_sync_tol`, or the step fails. A sync that silently did not apply cannot pass.
(NCCL broadcast for GPU clusters is not implemented; the config refuses rollout.weight_sync=nccl.)
"""

from __future__ import annotations

import io
import time
from typing import Any

import ray
import torch
from PIL import Image, ImageDraw

from mpi_ray.rl.batch import POLICY_FREE, LearnerSample
from mpi_ray.rl.sequences import SequenceEncoder, response_logprobs


def _probe_image() -> bytes:
    """A fixed synthetic scene (three coloured blocks on grey), 112 x 112 px: 16 visual tokens on the
    tiny model, inside every configured pixel bound, so the sampler and the learner see the same."""
    image = Image.new("RGB", (112, 112), (128, 128, 128))
    draw = ImageDraw.Draw(image)
    for box, colour in (((10, 60, 40, 90), (200, 30, 30)), ((50, 20, 75, 45), (30, 60, 200)), ((80, 70, 104, 100), (220, 200, 40))):
        draw.rectangle(box, fill=colour)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# The probe: a prompt with an image and a fixed response. Its response tokens come after the visual
# tokens, so a sync that left any vision weight behind changes them as surely as a text weight.
PROBE_PROMPT = {"prompt": "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Which case of the policy applies "
                          "to this image?<|im_end|>\n<|im_start|>assistant\n", "images": [_probe_image()]}
PROBE_RESPONSE = "<think>Condition 1 holds.</think>\n\\boxed{Case 1}<|im_end|>"
PROBE = {"prompt": PROBE_PROMPT["prompt"] + PROBE_RESPONSE, "images": PROBE_PROMPT["images"]}  # what an engine scores


def probe_logprobs(model: torch.nn.Module, encoder: SequenceEncoder) -> list[float]:
    """The model's log-prob of each probe response token after the probe's prompt and image (the
    learner's own input path; vLLM's prompt_logprobs of PROBE end with the same tokens)."""
    response_ids = tuple(encoder.processor.tokenizer(PROBE_RESPONSE, add_special_tokens=False)["input_ids"])
    batch = encoder.batch([LearnerSample("probe", PROBE_PROMPT, response_ids, 0.0, POLICY_FREE, 0, None)])
    with torch.no_grad():
        logp, mask = response_logprobs(model, batch)
    return logp[0][mask[0]].tolist()


def publish(strategy: Any, buffer: Any, encoder: SequenceEncoder, version: int, rank: int) -> float:
    """Rank 0 hands the weights of `version` to the buffer; returns the seconds it took (collective)."""
    start = time.perf_counter()
    with strategy.gathered() as module:
        if rank == 0:
            named = [(name, tensor.detach().cpu().clone()) for name, tensor in module.state_dict().items()]
            probe = probe_logprobs(module, encoder)
            ray.get(buffer.publish_weights.remote(version, [ray.put(named)], probe))
    return time.perf_counter() - start


def verify(engines: list[Any], expected: list[float], tolerance: float) -> float:
    """Max |engine - learner| probe log-prob over the engines; raises if any engine is off."""
    worst = 0.0
    for index, scored in enumerate(ray.get([engine.prompt_logprobs.remote(PROBE) for engine in engines])):
        engine_logp = scored[-len(expected):]  # the response's tokens; the prompt's (and its image's) come first
        if len(scored) < len(expected):
            raise RuntimeError(f"weight sync check: engine {index} scored {len(scored)} probe tokens, "
                               f"the learner {len(expected)} response tokens")
        diff = max(abs(a - b) for a, b in zip(engine_logp, expected))
        if diff > tolerance:
            raise RuntimeError(f"weight sync check failed: engine {index}'s probe log-probs differ from the learner's "
                               f"by {diff:.4f} > rollout.verify_sync_tol={tolerance}: the new weights did not apply")
        worst = max(worst, diff)
    return worst
