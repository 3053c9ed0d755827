"""LoRA through peft on the language model only; merged into the base weights on export."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from mpi_ray.config.schema import LoraConfig

if TYPE_CHECKING:
    import torch

# Qwen2.5-VL's vision tower has its own q/k/v names; restrict LoRA to the language model's layers.
LANGUAGE_LAYERS = r".*language_model.*\.({names})$"


def apply_lora(model: torch.nn.Module, cfg: LoraConfig) -> torch.nn.Module:
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model  # imported when used: peft costs every learner worker 3-4 s of imports

    pattern = LANGUAGE_LAYERS.format(names="|".join(cfg.target_modules))
    peft_cfg = PeftLoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=pattern, bias="none")
    return get_peft_model(model, peft_cfg)


def merged(model: torch.nn.Module) -> torch.nn.Module:
    """The plain model with any LoRA adapter folded into its weights."""
    peft = sys.modules.get("peft")  # never imported: no adapter to merge
    return model.merge_and_unload() if peft is not None and isinstance(model, peft.PeftModel) else model
