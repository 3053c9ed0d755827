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
        # vLLM's in-place reload, not model.load_weights: on CPU the linear layers were repacked for oneDNN
        # after the first load, and reload restores their loaders, copies, then repacks again.
        worker: Any = self
        worker.reload_weights(weights_iterator=iter(named))
        return len(named)
