"""The tiny local Qwen2.5-VL: deterministic bytes, one loading path, image + text generation."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from PIL import Image

from mpi_ray.model.loading import load, visual_tokens
from mpi_ray.model.tiny import build_tiny


def _digest(folder: Path) -> dict[str, str]:
    names = ["model.safetensors", "tokenizer.json", "config.json", "processor_config.json", "chat_template.jinja"]
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in names}


def test_same_seed_same_bytes_other_seed_other_weights(tiny_model_dir: Path, tmp_path: Path) -> None:
    again = build_tiny(tmp_path / "again", size="xs", seed=0)
    other = build_tiny(tmp_path / "other", size="xs", seed=1)
    assert _digest(again) == _digest(tiny_model_dir)
    assert _digest(other)["model.safetensors"] != _digest(tiny_model_dir)["model.safetensors"]
    assert _digest(other)["tokenizer.json"] == _digest(tiny_model_dir)["tokenizer.json"]


def _parameters(size: str) -> int:
    """A size's parameter count from its config alone: the model built on the meta device, no weights."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    from mpi_ray.model.tiny import SIZES, build_config, train_tokenizer

    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration(build_config(SIZES[size], train_tokenizer(SIZES[size].vocab)))
    return sum(p.numel() for p in model.parameters())


def test_sizes_are_ordered_and_xs_is_about_a_million_parameters(tiny_model_dir: Path) -> None:
    import json

    xs, s, m = (_parameters(size) for size in ("xs", "s", "m"))
    assert xs < s < m, (xs, s, m)
    assert 0.5e6 < xs < 1.5e6
    assert json.loads((tiny_model_dir / "mpi_ray_tiny.json").read_text())["parameters"] == xs  # what build_tiny wrote


def test_chat_template_places_image_and_visual_ids_match_config(tiny_model_dir: Path) -> None:
    loaded = load(tiny_model_dir)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which case?"}]}]
    text = loaded.processor.apply_chat_template(messages, add_generation_prompt=True)
    assert text.startswith("<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Which case?<|im_end|>")
    assert text.endswith("<|im_start|>assistant\n")
    image = Image.new("RGB", (112, 112), (200, 30, 30))
    inputs = loaded.processor(text=[text], images=[image], return_tensors="pt")
    ids = inputs["input_ids"][0]
    # 112x112 pixels = 8x8 patches of 14 = 4x4 merged visual tokens.
    assert int((ids == loaded.visual.image).sum()) == 16
    assert visual_tokens(tiny_model_dir).masked == (loaded.visual.image, loaded.visual.video)
    assert loaded.processor.tokenizer.convert_ids_to_tokens(loaded.visual.image) == "<|image_pad|>"


def test_transformers_generates_from_image_and_text(tiny_model_dir: Path) -> None:
    loaded = load(tiny_model_dir)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which case?"}]}]
    text = loaded.processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = loaded.processor(text=[text], images=[Image.new("RGB", (84, 140), (20, 200, 30))], return_tensors="pt")
    with torch.no_grad():
        out = loaded.model.generate(**inputs, max_new_tokens=8, do_sample=False)
    new_tokens = out[0, inputs["input_ids"].shape[1]:]
    assert 1 <= len(new_tokens) <= 8
    assert isinstance(loaded.processor.decode(new_tokens), str)


def test_unknown_size_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="size must be one of"):
        build_tiny(tmp_path / "bad", size="xl")
