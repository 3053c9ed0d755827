"""What runs inside vLLM's workers: the worker side of the object-store weight-transfer backend, and the
methods vLLM adds to each worker (`worker_extension_cls`), called through `collective_rpc`.

The only place that touches vLLM's model runner: when vLLM moves its internals, this file changes.
vLLM imports this module in every worker (it names the worker extension), which registers the
backend in vLLM's factory before the worker creates its transfer engine from it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from vllm.distributed.weight_transfer.base import WeightTransferEngine, WeightTransferInitInfo, WeightTransferUpdateInfo
from vllm.distributed.weight_transfer.factory import WeightTransferEngineFactory

from mpi_ray.rollout.weight_transfer import OBJECT_STORE, Layout, unpack

# Where HF checkpoints keep the token embeddings (the legacy and the transformers-5 layout).
EMBED_NAMES = ("model.embed_tokens.weight", "model.language_model.embed_tokens.weight")


@dataclass
class ObjectStoreInitInfo(WeightTransferInitInfo):
    """Nothing to connect: the worker runs in a Ray process (the engine core in the actor, or vLLM's Ray executor)."""


@dataclass
class ObjectStoreUpdate(WeightTransferUpdateInfo):
    chunks: list[dict[str, Any]] = field(default_factory=list)  # weight_transfer.ObjectStoreUpdateInfo, typed for vLLM


class ObjectStoreWorkerEngine(WeightTransferEngine[ObjectStoreInitInfo, ObjectStoreUpdate]):
    init_info_cls = ObjectStoreInitInfo
    update_info_cls = ObjectStoreUpdate
    supports_draft_weight_update = False

    def init_transfer_engine(self, init_info: ObjectStoreInitInfo) -> None:
        return None

    def start_weight_update(self) -> None:
        # the layerwise reload, as vLLM's NCCL engine: on CPU it also restores the loaders of the linear
        # layers that were repacked for oneDNN after the first load, and repacks them again at the end
        from vllm.model_executor.model_loader.reload import initialize_layerwise_reload

        initialize_layerwise_reload(self.model)

    def finish_weight_update(self) -> None:
        from vllm.model_executor.model_loader.reload import finalize_layerwise_reload

        finalize_layerwise_reload(self.model, self.model_config)

    def update_weights(self, update_info: dict[str, Any]) -> None:
        # the base class ends with torch.accelerator.synchronize(), which raises on a CPU-only machine;
        # nothing here is asynchronous
        self.receive_weights(self.parse_update_info(update_info))

    def receive_weights(self, update_info: ObjectStoreUpdate) -> None:
        for chunk in update_info.chunks:
            flat = ray.get(chunk["ref"][0])  # read-only shared memory: torch warns once that it is not writable
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                named = unpack(Layout(**chunk["layout"]), flat)
            self.model.load_weights(named)
            del flat, named  # one chunk at a time beside the model

    def shutdown(self) -> None:
        return None


if OBJECT_STORE not in WeightTransferEngineFactory._registry:
    WeightTransferEngineFactory.register_engine(OBJECT_STORE, ObjectStoreWorkerEngine)


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
