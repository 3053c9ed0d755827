"""The object-store backend's wire format (pure logic): chunk plans, packing and unpacking round-trip
every tensor bit for bit, and vLLM's factories know the backend by name."""

from __future__ import annotations

import torch

from mpi_ray.rollout.weight_transfer import OBJECT_STORE, EnginePoolClient, StateDictSource, pack, plan_chunks, unpack


def _state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {"a.weight": torch.randn(3, 5), "b.bias": torch.randn(7).to(torch.bfloat16), "c.ids": torch.arange(11),
            "big.weight": torch.randn(64, 64), "d.scale": torch.randn(()), "e.half": torch.randn(2, 3).half()}


def test_chunks_round_trip_every_dtype_and_shape_bit_for_bit() -> None:
    state = _state()
    module = torch.nn.Module()
    for name, tensor in state.items():
        module.register_buffer(name.replace(".", "_"), tensor)
    source = StateDictSource(module)
    layouts = plan_chunks(source.metadata(), chunk_bytes=1024)
    # the 16 KB tensor is a chunk alone; the small ones share chunks of at most 1 KB; order is kept
    assert [name for layout in layouts for name in layout.names] == list(module.state_dict())
    assert any(layout.names == ["big_weight"] for layout in layouts)
    assert all(layout.nbytes <= 1024 for layout in layouts if layout.names != ["big_weight"])
    assert all(offset % 64 == 0 for layout in layouts for offset in layout.offsets)
    tensors = module.state_dict()
    for layout in layouts:
        flat = pack(layout, [tensors[name] for name in layout.names])
        assert flat.nbytes == layout.nbytes
        for name, view in unpack(layout, flat):
            assert view.dtype == tensors[name].dtype and view.shape == tensors[name].shape
            assert torch.equal(view, tensors[name])


def test_a_non_contiguous_tensor_is_packed_as_its_values() -> None:
    module = torch.nn.Module()
    module.register_buffer("t", torch.arange(12.0).reshape(3, 4).t())  # a transposed view
    [layout] = plan_chunks(StateDictSource(module).metadata(), chunk_bytes=1 << 20)
    [(_, view)] = unpack(layout, pack(layout, [module.t]))
    assert torch.equal(view, module.t)


def test_vllms_worker_factory_knows_the_object_store_backend_and_the_learner_side_needs_no_vllm() -> None:
    """vLLM's workers import worker_ext (the worker extension), which registers the worker-side engine; the
    learner's side of the object store imports no vLLM (about 11 s of a learner's start-up on 2 cores)."""
    import subprocess
    import sys

    code = "import sys, mpi_ray.rollout.weight_sync; print('vllm' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"

    from vllm.distributed.weight_transfer.factory import WeightTransferEngineFactory

    from mpi_ray.rollout.worker_ext import ObjectStoreWorkerEngine

    assert WeightTransferEngineFactory._registry[OBJECT_STORE]() is ObjectStoreWorkerEngine


def test_separate_engines_get_their_own_ranks_in_the_transfer_group() -> None:
    """vLLM's NCCL init gives every engine rank_offset 1 (made for replicas of one engine); the pool client
    places engine i's tensor-parallel workers after those of engines 0..i-1."""
    calls = []

    class Engine:
        def __init__(self, index: int) -> None:
            self.init_weight_transfer = type("Method", (), {"remote": lambda _, info: calls.append((index, info))})()

    import mpi_ray.rollout.weight_transfer as module

    real_get, module.ray.get = module.ray.get, lambda refs: refs  # the handles here are plain objects
    try:
        EnginePoolClient([Engine(0), Engine(1), Engine(2)], workers_per_engine=2).init_weight_transfer_engine(
            {"master_address": "10.0.0.1", "master_port": 1234, "rank_offset": 1, "world_size": 7})
    finally:
        module.ray.get = real_get
    assert [(index, info["rank_offset"]) for index, info in calls] == [(0, 1), (1, 3), (2, 5)]
    assert all(info["world_size"] == 7 and info["master_port"] == 1234 for _, info in calls)
