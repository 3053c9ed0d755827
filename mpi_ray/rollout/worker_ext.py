"""Methods vLLM adds to each of its workers (`worker_extension_cls`), called through `collective_rpc`.

The only place that touches vLLM's model runner: when vLLM moves its internals, this file changes.
Importing it registers the object-store weight-transfer backend in the worker's process (vLLM creates
the worker's transfer engine from its factory when the model loads).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mpi_ray.rollout import weight_transfer

weight_transfer.register()

# Where HF checkpoints keep the token embeddings (the legacy and the transformers-5 layout).
EMBED_NAMES = ("model.embed_tokens.weight", "model.language_model.embed_tokens.weight")


class WeightSyncExtension:
    """Mixed into vLLM's worker class; `self.model_runner` is the worker's."""

    def load_checkpoint_files(self, model_path: str) -> int:
        """Reload the weights in place from an HF folder of the same architecture (every *.safetensors
        file), read by the worker itself: only the path crosses the RPC."""
        from safetensors.torch import load_file

        files = sorted(Path(model_path).glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"{model_path} has no *.safetensors weights")
        weights = {name: tensor for file in files for name, tensor in load_file(file).items()}
        # A tied head is not in the file, but vLLM on CPU keeps its own (repacked) copy of it: send it.
        embed = next((weights[k] for k in EMBED_NAMES if k in weights), None)
        if "lm_head.weight" not in weights and embed is not None:
            weights["lm_head.weight"] = embed
        worker: Any = self
        worker.reload_weights(weights_iterator=iter(weights.items()))
        return len(weights)
