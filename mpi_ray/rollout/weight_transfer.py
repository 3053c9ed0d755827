"""Weight transfer, learner -> rollout engines, on vLLM's own weight-transfer protocol.

vLLM ships the protocol (`vllm.distributed.weight_transfer`): a trainer-side engine in the learner, a
worker-side engine inside every vLLM worker, paired by a backend name in vLLM's two factories, and a
four-call client between them (`init_weight_transfer_engine`, `start_weight_update`, `update_weights`,
`finish_weight_update`). `rollout.weight_sync` picks the backend:

- `object_store` (registered here; CPU, CI, and any cluster): the trainer packs the weights into flat
  chunks of at most `rollout.weight_sync_chunk_mb`, puts each chunk into Ray's object store once, and the
  update info carries the chunk refs with their layouts. Each vLLM worker pulls one chunk at a time
  (a zero-copy read of the shared-memory object), loads its tensors through vLLM's layerwise reload and
  lets it go: nothing but the chunk being loaded sits beside the model. The client is the rollout
  buffer, so delivery is deferred: the producer installs a version between rollouts, and async RL keeps
  overlapping the learner with generation.
- `nccl` (learners and engines on separate GPUs) and `ipc` (colocated on the same GPUs): vLLM's own
  engines. The client is the engine pool itself (`EnginePoolClient`), so the learner transfers straight
  into the engines; that needs them idle, hence `rollout.max_staleness: 0` (the config checks it).

Every backend ends the same way: the learner publishes the version and its probe log-probs, and the
producer checks each engine's probe against them (weight_sync.verify) before it samples.

This module imports no vLLM: importing vLLM costs a learner process about 11 s on 2 cores, so the
object-store trainer engine implements vLLM's trainer-engine interface (`trainer_init`, `send_weights`)
structurally, and vLLM's own trainer engines (nccl, ipc) are imported only when asked for. The
worker-side engine, which subclasses vLLM's, lives in `worker_ext.py`, imported by vLLM's workers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, NamedTuple

import numpy as np
import ray
import torch

OBJECT_STORE = "mpi_ray_object_store"  # the name in vLLM's factories (vLLM's own names: nccl, ipc)


def backend_name(weight_sync: str) -> str:
    """rollout.weight_sync -> the backend name vLLM's factories know it by."""
    return OBJECT_STORE if weight_sync == "object_store" else weight_sync


# ---- the wire format of the object-store backend: flat uint8 chunks and their layouts ----

@dataclass(frozen=True)
class Layout:
    """Where each tensor of a chunk lies: name, dtype, shape, byte offset (aligned to 64 bytes)."""

    names: list[str]
    dtype_names: list[str]
    shapes: list[list[int]]
    offsets: list[int]
    nbytes: int


def _aligned(offset: int) -> int:
    return (offset + 63) // 64 * 64


class TensorMeta(NamedTuple):
    """Name, dtype and shape of one tensor to send (the fields of vLLM's ParamMeta)."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]


def plan_chunks(meta: list[TensorMeta], chunk_bytes: int) -> list[Layout]:
    """Cut the parameters, in order, into chunks of at most `chunk_bytes` (a larger tensor is a chunk alone)."""
    chunks: list[Layout] = []
    names: list[str] = []
    dtypes: list[str] = []
    shapes: list[list[int]] = []
    offsets: list[int] = []
    end = 0
    for item in meta:
        size = math.prod(item.shape) * item.dtype.itemsize
        start = _aligned(end)
        if names and start + size > chunk_bytes:
            chunks.append(Layout(names, dtypes, shapes, offsets, end))
            names, dtypes, shapes, offsets, start = [], [], [], [], 0
        names.append(item.name)
        dtypes.append(str(item.dtype).removeprefix("torch."))
        shapes.append(list(item.shape))
        offsets.append(start)
        end = start + size
    if names:
        chunks.append(Layout(names, dtypes, shapes, offsets, end))
    return chunks


def pack(layout: Layout, tensors: list[torch.Tensor]) -> np.ndarray:
    """One chunk's tensors, copied once into a flat byte array (what goes into the object store)."""
    flat = np.empty(layout.nbytes, dtype=np.uint8)
    target = torch.from_numpy(flat)
    for offset, tensor in zip(layout.offsets, tensors):
        data = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
        target[offset: offset + data.numel()].copy_(data)
    return flat


def unpack(layout: Layout, flat: np.ndarray) -> list[tuple[str, torch.Tensor]]:
    """Views into a chunk (no copy): the loader copies each into the model's own parameter."""
    buffer = torch.frombuffer(memoryview(flat), dtype=torch.uint8) if flat.nbytes else torch.empty(0, dtype=torch.uint8)
    named = []
    for name, dtype_name, shape, offset in zip(layout.names, layout.dtype_names, layout.shapes, layout.offsets):
        dtype = getattr(torch, dtype_name)
        size = math.prod(shape) * dtype.itemsize
        named.append((name, buffer[offset: offset + size].view(dtype).reshape(shape)))
    return named


# ---- the trainer side: learner ranks ----

class StateDictSource:
    """The learner's weights under their HF names, as `state_dict` has them: with a tied head, the
    `lm_head.weight` key too (vLLM on CPU keeps its own repacked copy of it, which must follow). The two
    channels of vLLM's WeightSource: `metadata()` and iteration, in the same order."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module

    def metadata(self) -> list[TensorMeta]:
        return [TensorMeta(name, tensor.dtype, tuple(tensor.shape)) for name, tensor in self.module.state_dict().items()]

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
        yield from self.module.state_dict().items()


@dataclass
class ObjectStoreUpdateInfo:
    """What the worker-side engine receives per update (vLLM's update_info, as a dict)."""

    # per chunk: {"ref": [ObjectRef] (a list, so Ray passes the ref rather than the value), "layout": Layout as a dict}
    chunks: list[dict[str, Any]] = field(default_factory=list)


class ObjectStoreTrainerEngine:
    """The trainer side of the object-store backend (vLLM's TrainerWeightTransferEngine interface). Rank 0
    packs and puts the chunks; the other ranks have nothing to send (their gather, under ZeRO-3, is the
    strategy's `gathered()` around the call)."""

    def __init__(self, *, client: Any, source: StateDictSource, is_sender: bool, chunk_bytes: int) -> None:
        self.client, self.source, self.is_sender, self.chunk_bytes = client, source, is_sender, chunk_bytes

    @classmethod
    def trainer_init(cls, *, rank: int, client: Any, source: StateDictSource, chunk_bytes: int) -> "ObjectStoreTrainerEngine":
        engine = cls(client=client, source=source, is_sender=rank == 0, chunk_bytes=chunk_bytes)
        if engine.is_sender:
            engine.client.init_weight_transfer_engine({})
        return engine

    def send_weights(self) -> None:
        if not self.is_sender:
            return
        tensors = dict(iter(self.source))
        chunks = []
        meta = [TensorMeta(name, tensor.dtype, tuple(tensor.shape)) for name, tensor in tensors.items()]
        for layout in plan_chunks(meta, self.chunk_bytes):
            flat = pack(layout, [tensors[name] for name in layout.names])
            chunks.append({"ref": [ray.put(flat)], "layout": asdict(layout)})
            del flat
        self.client.start_weight_update()
        self.client.update_weights(asdict(ObjectStoreUpdateInfo(chunks)))
        self.client.finish_weight_update()


# ---- clients: where the trainer engine's four calls go ----

class BufferClient:
    """object_store: the update info goes to the rollout buffer with its version and probe; the producer
    installs it into every engine between rollouts (`RolloutPool.take_weights`)."""

    def __init__(self, buffer: Any) -> None:
        self.buffer = buffer
        self.version = 0
        self.probe: list[float] = []
        self.update_info: dict[str, Any] | None = None

    def init_weight_transfer_engine(self, init_info: dict[str, Any]) -> None:
        return None  # the engines were created with the backend; it needs no handshake

    def start_weight_update(self) -> None:
        self.update_info = None

    def update_weights(self, update_info: Any) -> None:
        self.update_info = update_info

    def finish_weight_update(self, weight_version: str | None = None) -> None:
        ray.get(self.buffer.publish_weights.remote(self.version, self.update_info, self.probe))
        self.update_info = None


class EnginePoolClient:
    """nccl / ipc: the four calls fan out to every rollout engine actor. vLLM's RayVLLMWeightSyncClient
    sends one init to all handles, made for data-parallel replicas of one engine; these are separate
    engines, so each gets its own rank offset in the transfer group (trainer rank 0, then each engine's
    tensor-parallel workers in turn). The four calls reach the engines as separate actor calls; nothing
    samples in between because with rollout.max_staleness 0 (required) the producer waits for this version.
    """

    def __init__(self, engines: list[Any], workers_per_engine: int, colocated: bool = False) -> None:
        self.engines = engines
        self.workers_per_engine = workers_per_engine
        self.colocated = colocated  # asleep since their rollouts (rollout.colocate): wake the weights first
        self.version = 0

    def init_weight_transfer_engine(self, init_info: dict[str, Any]) -> None:
        offset = int(init_info.get("rank_offset", 1))
        ray.get([engine.init_weight_transfer.remote(
                 {**init_info, "rank_offset": offset + index * self.workers_per_engine} if "rank_offset" in init_info else init_info)
                 for index, engine in enumerate(self.engines)])

    def start_weight_update(self) -> None:
        if self.colocated:
            ray.get([engine.wake_up.remote(["weights"]) for engine in self.engines])
        ray.get([engine.start_weight_update.remote(self.version) for engine in self.engines])

    def update_weights(self, update_info: Any) -> None:
        ray.get([engine.update_weights.remote(update_info) for engine in self.engines])

    def finish_weight_update(self, weight_version: str | None = None) -> None:
        ray.get([engine.finish_weight_update.remote() for engine in self.engines])


def trainer_engine(weight_sync: str, rank: int, client: Any, source: StateDictSource, *, chunk_mb: int = 256,
                   master_address: str = "", master_port: int = 0, world_size: int = 0) -> Any:
    """The learner's end of the protocol for rollout.weight_sync: ours for object_store, vLLM's own
    trainer engines (through its factory) for nccl and ipc."""
    if weight_sync == "object_store":
        return ObjectStoreTrainerEngine.trainer_init(rank=rank, client=client, source=source, chunk_bytes=chunk_mb << 20)
    from vllm.distributed.weight_transfer.base import ParamMeta, WeightSource
    from vllm.distributed.weight_transfer.factory import WeightTransferTrainerFactory

    class VllmSource(WeightSource):
        def metadata(self) -> list[ParamMeta]:
            return [ParamMeta(*meta) for meta in source.metadata()]

        def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
            return iter(source)

    if weight_sync == "nccl":
        from vllm.distributed.weight_transfer.nccl_engine import NCCLTrainerInitInfo

        info: Any = NCCLTrainerInitInfo(rank=rank, master_address=master_address, master_port=master_port, world_size=world_size)
    elif weight_sync == "ipc":
        from vllm.distributed.weight_transfer.ipc_engine import IPCTrainerInitInfo

        info = IPCTrainerInitInfo(rank=rank, packed=True)
    else:
        raise ValueError(f"unknown rollout.weight_sync={weight_sync!r}")
    return WeightTransferTrainerFactory.trainer_init(info, client=client, source=VllmSource())
