"""Build a deterministic tiny Qwen2.5-VL checkpoint locally (no hub, no download).

    python -m mpi_ray.model.tiny --out DIR [--size xs|s|m|l] [--seed S]

Writes a Hugging Face folder (config, safetensors weights, a byte-level BPE tokenizer trained on
the project's own text with the Qwen special tokens and an image-placing chat template, and a
Qwen2.5-VL processor) that transformers and vLLM load as it is. Same size and seed, same bytes.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLImageProcessor,
    Qwen2VLVideoProcessor,
)

from mpi_ray.model.corpus import corpus_lines

SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|image_pad|>", "<|video_pad|>",
)
# Qwen2-VL's template shape, without the default system turn (short prompts for a tiny model).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or 'image' in part or 'image_url' in part %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# One merged visual token covers 28x28 pixels; bound the tiny model's images to 4..64 tokens.
IMAGE_MIN_PIXELS = 56 * 56
IMAGE_MAX_PIXELS = 224 * 224


@dataclass(frozen=True)
class TinySize:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vision_hidden: int
    vision_depth: int
    vision_heads: int
    vocab: int


# head_dim stays 32 in every size: vLLM's CPU attention kernels do not take smaller heads.
SIZES = {
    "xs": TinySize(hidden=128, layers=2, heads=4, kv_heads=2, intermediate=384,
                   vision_hidden=64, vision_depth=2, vision_heads=2, vocab=2048),
    "s": TinySize(hidden=192, layers=4, heads=6, kv_heads=2, intermediate=512,
                  vision_hidden=128, vision_depth=2, vision_heads=4, vocab=3072),
    "m": TinySize(hidden=256, layers=6, heads=8, kv_heads=2, intermediate=768,
                  vision_hidden=192, vision_depth=3, vision_heads=6, vocab=4096),
    # about 100M parameters: weight-sync and learner benchmarks at a size where copies cost seconds
    "l": TinySize(hidden=768, layers=14, heads=24, kv_heads=4, intermediate=2048,
                  vision_hidden=384, vision_depth=4, vision_heads=12, vocab=4096),
}


def train_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on the fixed domain corpus; deterministic."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(corpus_lines(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(SPECIAL_TOKENS[1:]),
        chat_template=CHAT_TEMPLATE,
        model_max_length=8192,
        padding_side="left",
    )


def build_config(size: TinySize, tokenizer: PreTrainedTokenizerFast) -> Qwen2_5_VLConfig:
    head_dim = size.hidden // size.heads
    half = head_dim // 2  # mrope sections (temporal, height, width) sum to head_dim / 2, as 16/24/24 in 7B
    mrope_section = [half // 4, (half - half // 4) // 2, half - half // 4 - (half - half // 4) // 2]
    token = tokenizer.convert_tokens_to_ids
    text = dict(
        vocab_size=len(tokenizer), hidden_size=size.hidden, intermediate_size=size.intermediate,
        num_hidden_layers=size.layers, num_attention_heads=size.heads, num_key_value_heads=size.kv_heads,
        max_position_embeddings=8192, max_window_layers=size.layers,
        rope_scaling={"type": "mrope", "mrope_section": mrope_section, "rope_theta": 10000.0},
        bos_token_id=token("<|endoftext|>"), eos_token_id=token("<|im_end|>"), pad_token_id=token("<|endoftext|>"),
    )
    vision = dict(
        depth=size.vision_depth, hidden_size=size.vision_hidden, intermediate_size=2 * size.vision_hidden,
        num_heads=size.vision_heads, out_hidden_size=size.hidden, patch_size=14, spatial_merge_size=2,
        temporal_patch_size=2, window_size=112, fullatt_block_indexes=[size.vision_depth - 1],
    )
    return Qwen2_5_VLConfig(
        text_config=text, vision_config=vision, tie_word_embeddings=True,
        image_token_id=token("<|image_pad|>"), video_token_id=token("<|video_pad|>"),
        vision_start_token_id=token("<|vision_start|>"), vision_end_token_id=token("<|vision_end|>"),
    )


def build_processor(
    tokenizer: PreTrainedTokenizerFast, min_pixels: int = IMAGE_MIN_PIXELS, max_pixels: int = IMAGE_MAX_PIXELS
) -> Qwen2_5_VLProcessor:
    pixels = dict(min_pixels=min_pixels, max_pixels=max_pixels)
    return Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(**pixels),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(**pixels),
        chat_template=CHAT_TEMPLATE,
    )


def build_tiny(
    out: str | Path, size: str = "xs", seed: int = 0,
    min_pixels: int = IMAGE_MIN_PIXELS, max_pixels: int = IMAGE_MAX_PIXELS,
) -> Path:
    """Write the tiny checkpoint to `out` and return its path."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    out = Path(out)
    tokenizer = train_tokenizer(SIZES[size].vocab)
    config = build_config(SIZES[size], tokenizer)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = config.text_config.eos_token_id
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    model.save_pretrained(out)
    build_processor(tokenizer, min_pixels, max_pixels).save_pretrained(out)
    params = sum(p.numel() for p in model.parameters())
    (out / "mpi_ray_tiny.json").write_text(json.dumps({"size": size, "seed": seed, "parameters": params}) + "\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--size", default="xs", choices=sorted(SIZES))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    path = build_tiny(args.out, args.size, args.seed)
    info = json.loads((path / "mpi_ray_tiny.json").read_text())
    print(f"tiny Qwen2.5-VL ({args.size}, seed {args.seed}, {info['parameters']:,} parameters) -> {path}")


if __name__ == "__main__":
    main()
