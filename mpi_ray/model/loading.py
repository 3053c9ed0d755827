"""The one model-loading path: a local HF folder or a hub id, for every stage, test and server.

Returns the model, its processor and the token ids the visual mask needs. A local folder is read
with `local_files_only`, so nothing is fetched for it; a hub id (e.g. Qwen/Qwen2.5-VL-7B-Instruct on
a user's cluster) goes through the same calls.

torch and transformers are imported inside the functions: every process that unpickles a Ray Data
stream (Ray Train's controller, its dataset manager, Ray Data's own actors) imports this module
through the stream's encoder, and at module level they cost it 12-15 s of imports on 2 cores.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class VisualTokens:
    """Token ids that stand for pixels: the visual mask drops exactly these from the loss."""

    image: int
    video: int
    vision_start: int
    vision_end: int

    @property
    def masked(self) -> tuple[int, int]:
        return (self.image, self.video)


def is_local(name_or_path: str | Path) -> bool:
    return Path(name_or_path).is_dir()


def _source_kwargs(name_or_path: str | Path) -> dict[str, Any]:
    return {"local_files_only": True} if is_local(name_or_path) else {}


def load_processor(name_or_path: str | Path, min_pixels: int | None = None, max_pixels: int | None = None) -> Any:
    """The processor; min/max pixels bound the visual tokens per image (config: model.min_pixels/max_pixels)."""
    from transformers import AutoProcessor

    source = _source_kwargs(name_or_path)
    if min_pixels is None and max_pixels is None:
        return AutoProcessor.from_pretrained(str(name_or_path), **source)
    # Bounds go in as `size` (transformers 5): min_pixels/max_pixels kwargs are kept and re-passed on
    # every call, which warns "deprecated, removed in v5.23" on every call in every encoding worker.
    if min_pixels is None or max_pixels is None:  # one bound given: the other from the saved processor
        saved = dict(AutoProcessor.from_pretrained(str(name_or_path), **source).image_processor.size)
        min_pixels = saved["shortest_edge"] if min_pixels is None else min_pixels
        max_pixels = saved["longest_edge"] if max_pixels is None else max_pixels
    return AutoProcessor.from_pretrained(str(name_or_path), **source,
                                         size={"shortest_edge": min_pixels, "longest_edge": max_pixels})


def image_bounds(min_pixels: int | None, max_pixels: int | None) -> dict[str, int]:
    """model.min_pixels / max_pixels as vLLM's mm_processor_kwargs, for every engine (rollout, eval,
    serve), so vLLM sees the same pixels, hence the same visual tokens, as the learner's processor
    (`load_processor` with the same bounds). Empty: the checkpoint's own processor bounds."""
    return {key: value for key, value in (("min_pixels", min_pixels), ("max_pixels", max_pixels)) if value is not None}


def visual_tokens(name_or_path: str | Path) -> VisualTokens:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(name_or_path), **_source_kwargs(name_or_path))
    return VisualTokens(
        image=config.image_token_id,
        video=config.video_token_id,
        vision_start=config.vision_start_token_id,
        vision_end=config.vision_end_token_id,
    )


def load_model(name_or_path: str | Path, dtype: str = "float32", attn_implementation: str = "sdpa") -> torch.nn.Module:
    import torch
    from transformers import AutoModelForImageTextToText

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    return AutoModelForImageTextToText.from_pretrained(
        str(name_or_path),
        dtype=getattr(torch, dtype),
        attn_implementation=attn_implementation,
        **_source_kwargs(name_or_path),
    )


@dataclass
class LoadedModel:
    model: torch.nn.Module
    processor: Any
    visual: VisualTokens


def load(
    name_or_path: str | Path, dtype: str = "float32", min_pixels: int | None = None, max_pixels: int | None = None
) -> LoadedModel:
    """Model + processor + visual token ids, from one place."""
    return LoadedModel(
        load_model(name_or_path, dtype),
        load_processor(name_or_path, min_pixels, max_pixels),
        visual_tokens(name_or_path),
    )
