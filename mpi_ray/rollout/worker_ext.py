"""Methods vLLM adds to each of its workers (`worker_extension_cls`), called through `collective_rpc`.

The only place that touches vLLM's model runner: when vLLM moves its internals, this file changes.
"""

from __future__ import annotations

import io
from typing import Any

import torch


class WeightSyncExtension:
    """Mixed into vLLM's worker class; `self.model_runner` is the worker's."""

    def load_named_weights(self, payload: bytes) -> int:
        """Copy HF-named tensors (a torch.save'd list of (name, tensor)) into the running model.

        Bytes, because vLLM's RPC serializer does not carry tensors inside nested containers.
        """
        named: list[tuple[str, torch.Tensor]] = torch.load(io.BytesIO(payload), weights_only=True)
        model: Any = self.model_runner.model  # type: ignore[attr-defined]
        model.load_weights(weights=iter(named))
        return len(named)
