"""Next-token losses. VM-CPT and SFT differ only in their labels (see mpi_ray/data/encode.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100


def next_token_mask(labels: torch.Tensor) -> torch.Tensor:
    """Which positions predict a labelled token: position t predicts label t+1."""
    return labels[:, 1:] != IGNORE


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of each next token and its mask, shifted so position t predicts label t+1."""
    logits = logits[:, :-1].float()
    targets = labels[:, 1:]
    mask = next_token_mask(labels)
    logp = -F.cross_entropy(logits.transpose(1, 2), targets.clamp(min=0), reduction="none")
    return logp * mask, mask


def masked_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Paper Eq. 2: per sequence, the mean NLL over its unmasked tokens; then the mean over sequences.

    Returns the loss and the number of tokens it covers. A sequence with no unmasked token adds 0.
    """
    logp, mask = token_logprobs(logits, labels)
    counts = mask.sum(dim=1)
    per_sequence = -logp.sum(dim=1) / counts.clamp(min=1)
    has_tokens = counts > 0
    loss = per_sequence[has_tokens].mean() if has_tokens.any() else logits.sum() * 0.0
    return loss, int(counts.sum())
