"""What the RL learner feeds its model: (policy-free prompt, response) sequences and their log-probs.

Every response, policy-free or policy-aware, is scored after the POLICY-FREE prompt (Q, I) of its
prompt id (PoRo, paper Eq. 3): the prompt comes from `LearnerSample.prompt`, which
`mpi_ray.rl.batch.build_learner_batch` fills with the policy-free prompt only. The prompt is
processed exactly as the sampler saw it (same chat text, same images, same pixel bounds), so the
learner's log-probs and vLLM's agree up to numerics.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from mpi_ray.data.encode import IGNORE
from mpi_ray.data.streams import padded_batch
from mpi_ray.model.loading import load_processor, visual_tokens
from mpi_ray.rl.batch import LearnerSample
from mpi_ray.train.losses import token_logprobs


@dataclass
class SequenceEncoder:
    """Encodes learner samples into padded model inputs; a prompt shared by 2G responses is processed once."""

    model_path: str
    min_pixels: int | None = None
    max_pixels: int | None = None

    def __post_init__(self) -> None:
        self.processor = load_processor(self.model_path, self.min_pixels, self.max_pixels)
        self.pad_id = self.processor.tokenizer.pad_token_id
        visual = visual_tokens(self.model_path)
        self.image_token_id, self.visual_ids = visual.image, list(visual.masked)
        self._prompts: dict[str, dict[str, np.ndarray]] = {}

    def _prompt(self, prompt_id: str, prompt: dict[str, Any]) -> dict[str, np.ndarray]:
        if prompt_id not in self._prompts:
            images = [Image.open(io.BytesIO(blob)).convert("RGB") for blob in prompt["images"]]
            out = self.processor(text=[prompt["prompt"]], images=images or None, return_tensors="np")
            grid = out.get("image_grid_thw")
            pixels = out.get("pixel_values")
            self._prompts[prompt_id] = {
                "input_ids": out["input_ids"][0].astype(np.int64),
                "pixel_values": np.zeros((0, 0), np.float32) if pixels is None else pixels.astype(np.float32),
                "image_grid_thw": np.zeros((0, 3), np.int64) if grid is None else grid.astype(np.int64),
            }
        return self._prompts[prompt_id]

    def forget_prompts(self) -> None:
        self._prompts.clear()

    def batch(self, samples: Sequence[LearnerSample]) -> dict[str, torch.Tensor]:
        """Padded inputs with labels on the response tokens only."""
        rows: dict[str, list[np.ndarray]] = {"input_ids": [], "labels": [], "pixel_values": [], "image_grid_thw": []}
        for sample in samples:
            prompt = self._prompt(sample.prompt_id, sample.prompt)
            response = np.asarray(sample.response_ids, dtype=np.int64)
            if np.isin(response, self.visual_ids).any():
                raise ValueError(f"prompt {sample.prompt_id}: a response holds an image/video placeholder token; "
                                 "the rollout engine must never sample one (see RolloutEngine.no_visual_tokens)")
            rows["input_ids"].append(np.concatenate([prompt["input_ids"], response]))
            rows["labels"].append(np.concatenate([np.full(len(prompt["input_ids"]), IGNORE, np.int64), response]))
            rows["pixel_values"].append(prompt["pixel_values"])
            rows["image_grid_thw"].append(prompt["image_grid_thw"])
        return padded_batch(rows, self.pad_id, self.image_token_id)


def response_logprobs(model: torch.nn.Module, batch: dict[str, torch.Tensor],
                      temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of each response token ([batch, tokens-1], shifted) and the mask of response tokens,
    under the distribution the engines sample from (logits / rollout.temperature), so the PPO ratio,
    the KL and the importance weights compare like with like (the engines report processed logprobs)."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs).logits
    return token_logprobs(logits / temperature, batch["labels"])


def per_token(values: Sequence[Sequence[float] | None], mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-response values (e.g. sampler log-probs) laid out on the mask's response positions.

    Returns the [batch, tokens-1] tensor and a [batch] mask of the rows that had values."""
    out = torch.zeros(mask.shape, dtype=torch.float32)
    present = torch.zeros(mask.shape[0], dtype=torch.bool)
    for row, row_values in enumerate(values):
        if row_values is None:
            continue
        out[row, mask[row]] = torch.tensor(row_values, dtype=torch.float32)
        present[row] = True
    return out, present
