"""Tokenize one sample for a stage and build its loss mask (the visual mask lives here).

- CPT (VM-CPT, paper Eq. 2): the policy-aware conversation with its CoT target; labels are every
  token except visual ones (the input images' and the policy images' <|image_pad|> tokens).
- SFT: the policy-free conversation; labels are the response only (target + <|im_end|>).
- prompt: the text + images a sampler (vLLM) or evaluator needs, with or without the policy.

A sequence longer than the stage's max length is rejected, never truncated: cutting through an
image's tokens is what gives "image features and image tokens do not match".
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from mpi_ray.data.prompts import conversation, cot_target, direct_target
from mpi_ray.model.loading import VisualTokens, load_processor, visual_tokens

IGNORE = -100


class BadSample(ValueError):
    """A sample that cannot be used; carries its id so it can be counted or reported."""

    def __init__(self, sample_id: str, reason: str):
        super().__init__(f"sample {sample_id}: {reason}")
        self.sample_id = sample_id
        self.reason = reason


# Checked from the header, before the pixels are decoded: a 9,000 x 9,000 PNG of 1 MB decodes to
# 600 MiB. 16 M pixels is 4,096 x 4,096, far above what any processor here resizes to.
MAX_IMAGE_PIXELS = 4096 * 4096


def decode_images(sample_id: str, blobs: list[bytes] | None) -> list[Image.Image]:
    if blobs is None:
        raise BadSample(sample_id, "images are missing (null)")
    images = []
    for index, blob in enumerate(blobs):
        try:
            image = Image.open(io.BytesIO(blob))
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise BadSample(sample_id, f"image {index} is {width}x{height}, over {MAX_IMAGE_PIXELS:,} pixels")
            image.load()
        except BadSample:
            raise
        except Exception as exc:  # any undecodable bytes: the sample is bad, not the run
            raise BadSample(sample_id, f"image {index} does not decode ({type(exc).__name__})") from None
        images.append(image.convert("RGB"))
    return images


def visual_mask_labels(input_ids: np.ndarray, visual: VisualTokens) -> np.ndarray:
    """VM-CPT labels: every token is a target except the visual ones."""
    labels = input_ids.astype(np.int64).copy()
    labels[np.isin(input_ids, visual.masked)] = IGNORE
    return labels


def response_labels(input_ids: np.ndarray, response_ids: list[int]) -> np.ndarray | None:
    """SFT labels: only the trailing response tokens; None if the sequence does not end with them."""
    n = len(response_ids)
    if n == 0 or n > len(input_ids) or list(input_ids[-n:]) != response_ids:
        return None
    labels = np.full(len(input_ids), IGNORE, dtype=np.int64)
    labels[-n:] = input_ids[-n:]
    return labels


@dataclass
class Encoder:
    """Holds the processor once (per Ray Data actor) and encodes samples for one stage."""

    model_path: str
    min_pixels: int | None = None
    max_pixels: int | None = None
    max_seq_len: int = 2048

    def __post_init__(self) -> None:
        self.processor = load_processor(self.model_path, self.min_pixels, self.max_pixels)
        self.visual = visual_tokens(self.model_path)
        self.end_of_turn = "<|im_end|>"

    def prompt(self, sample: dict[str, Any], with_policy: bool) -> dict[str, Any]:
        """Generation prompt text and decoded images, in placeholder order."""
        messages, blobs = conversation(sample, with_policy, target=None)
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        return {"prompt": text, "images": decode_images(sample["sample_id"], blobs)}

    def _process(self, sample_id: str, text: str, images: list[Image.Image]) -> dict[str, np.ndarray]:
        try:
            out = self.processor(text=[text], images=images or None, return_tensors="np")
        except ValueError as exc:  # e.g. an image of 1 x 600 pixels: "absolute aspect ratio must be smaller than 200"
            raise BadSample(sample_id, f"the processor refuses it: {exc}") from None
        input_ids = out["input_ids"][0].astype(np.int64)
        if len(input_ids) > self.max_seq_len:
            raise BadSample(sample_id, f"{len(input_ids)} tokens exceed max_seq_len {self.max_seq_len}")
        pixels = out.get("pixel_values")
        grid = out.get("image_grid_thw")
        return {
            "input_ids": input_ids,
            "pixel_values": np.zeros((0, 0), np.float32) if pixels is None else pixels.astype(np.float32),
            "image_grid_thw": np.zeros((0, 3), np.int64) if grid is None else grid.astype(np.int64),
        }

    def checked_prompt(self, sample: dict[str, Any], with_policy: bool) -> dict[str, Any]:
        """`prompt` plus its exact token count (text and image tokens), after the processor has taken
        it within max_seq_len: a prompt vLLM would refuse fails here, as one bad sample, not later as
        a failed generate() batch."""
        prompt = self.prompt(sample, with_policy)
        prompt["tokens"] = len(self._process(sample["sample_id"], prompt["prompt"], prompt["images"])["input_ids"])
        return prompt

    def cpt(self, sample: dict[str, Any]) -> dict[str, np.ndarray]:
        messages, blobs = conversation(sample, with_policy=True, target=cot_target(sample))
        text = self.processor.apply_chat_template(messages, add_generation_prompt=False)
        row = self._process(sample["sample_id"], text, decode_images(sample["sample_id"], blobs))
        row["labels"] = visual_mask_labels(row["input_ids"], self.visual)
        return row

    def sft(self, sample: dict[str, Any], target: str) -> dict[str, np.ndarray]:
        response = cot_target(sample) if target == "cot" else direct_target(sample)
        prompt = self.prompt(sample, with_policy=False)
        row = self._process(sample["sample_id"], prompt["prompt"] + response + self.end_of_turn, prompt["images"])
        response_ids = self.processor.tokenizer(response + self.end_of_turn, add_special_tokens=False)["input_ids"]
        labels = response_labels(row["input_ids"], response_ids)
        if labels is None:
            raise BadSample(sample["sample_id"], "response tokens do not align with the full sequence")
        row["labels"] = labels
        return row
