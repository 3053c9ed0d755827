"""Weight sync, learners -> every rollout engine, on vLLM's weight-transfer protocol; verified.

Learner side (`WeightPublisher`): after an update the learners gather the full weights under their HF
names and send them through the trainer engine of `rollout.weight_sync` (weight_transfer.py): into the
object store for the producer to install (object_store), or straight into the engines (nccl, ipc).
Rank 0 publishes the new version to the buffer together with its own log-probs of a fixed probe (an
image, a question and a fixed response: the response tokens depend on the vision tower as much as on
the language model). Producer side (`RolloutPool.take_weights`, then `verify`): each engine's
log-probs of the same probe must match the learner's within `rollout.verify_sync_tol`, or the step
fails. A sync that silently did not apply cannot pass.
"""

from __future__ import annotations

import io
import socket
import time
from typing import Any

import ray
import torch
from PIL import Image, ImageDraw

from mpi_ray.config.schema import RolloutConfig
from mpi_ray.rl.batch import POLICY_FREE, LearnerSample
from mpi_ray.rl.sequences import SequenceEncoder, response_logprobs
from mpi_ray.rollout.weight_transfer import BufferClient, EnginePoolClient, StateDictSource, trainer_engine


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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


class WeightPublisher:
    """The learners' end of the sync, one per RL stage on every rank: `publish(version)` after each update."""

    def __init__(self, rollout: RolloutConfig, strategy: Any, buffer: Any, encoder: SequenceEncoder, rank: int):
        self.rollout, self.strategy, self.buffer, self.encoder, self.rank = rollout, strategy, buffer, encoder, rank
        self.deferred = rollout.weight_sync == "object_store"  # the buffer delivers it; else straight to the engines
        self.engine: Any = None
        self.client: Any = None

    def _connect(self, module: torch.nn.Module) -> None:
        """The trainer engine, at the first publish (nccl: the engines' transfer group meets here)."""
        extra: dict[str, Any] = {"chunk_mb": self.rollout.weight_sync_chunk_mb}
        if self.deferred:
            self.client = BufferClient(self.buffer)
        else:
            engines = ray.get(self.buffer.wait_for_engines.remote())
            self.client = EnginePoolClient(engines, self.rollout.tensor_parallel, self.rollout.colocate)
            extra.update(master_address=ray.util.get_node_ip_address(), master_port=_free_port(),
                         world_size=1 + len(engines) * self.rollout.tensor_parallel)
        self.engine = trainer_engine(self.rollout.weight_sync, self.rank, self.client, StateDictSource(module), **extra)

    def publish(self, version: int) -> float:
        """Every rank: the weights of `version` go out and rank 0 publishes them; returns the seconds (collective)."""
        start = time.perf_counter()
        with self.strategy.gathered() as module:
            if self.engine is None:
                self._connect(module)
            probe = probe_logprobs(module, self.encoder) if self.rank == 0 else []
            self.client.version, self.client.probe = version, probe
            self.engine.send_weights()  # object_store: its client publishes version, update and probe
            if self.rank == 0 and not self.deferred:
                ray.get(self.buffer.publish_weights.remote(version, None, probe))
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
