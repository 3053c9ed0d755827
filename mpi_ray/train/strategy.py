"""Distributed strategies behind one interface: plain DDP, or DeepSpeed ZeRO-2/3. Swappable by config.

`train_step(compute_loss)` runs one micro-batch (forward through the wrapped model, backward, and at
each gradient-accumulation boundary: clip, optimizer and scheduler step); `save`/`load` hold the
optimizer and scheduler state beside the weights; `gathered()` exposes full weights on rank 0 for
export (ZeRO-3 shards them).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
from torch.optim.lr_scheduler import LambdaLR

from mpi_ray.config.schema import LearnerConfig, OptimConfig

ComputeLoss = Callable[[torch.nn.Module], torch.Tensor]


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class DDPStrategy:
    def __init__(self, module: torch.nn.Module, optim: OptimConfig, lr_factor: Callable[[int], float], grad_accum: int):
        self.module = module
        self.wrapped = torch.nn.parallel.DistributedDataParallel(module) if _world() > 1 else module
        params = [p for p in module.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=optim.lr, betas=optim.betas, weight_decay=optim.weight_decay)
        self.scheduler = LambdaLR(self.optimizer, lr_factor)
        self.grad_clip = optim.grad_clip
        self.grad_accum = grad_accum
        self.micro = 0

    @property
    def forward_module(self) -> torch.nn.Module:
        """What a gradient-free forward (old / reference log-probs) runs through."""
        return self.module

    @property
    def steps_to_update(self) -> int:
        """train_step calls until the weights change (the next one at an accumulation boundary counts)."""
        return self.grad_accum - self.micro % self.grad_accum

    def train_step(self, compute_loss: ComputeLoss) -> tuple[float, float | None]:
        self.micro += 1
        boundary = self.micro % self.grad_accum == 0
        # Gradients are all-reduced only at the accumulation boundary.
        sync = contextlib.nullcontext() if boundary or self.wrapped is self.module else self.wrapped.no_sync()
        with sync:
            loss = compute_loss(self.wrapped)
            (loss / self.grad_accum).backward()
        if not boundary:
            return float(loss.detach()), None
        params = [p for p in self.module.parameters() if p.requires_grad]
        norm = torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach()), float(norm)

    @property
    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def save(self, directory: Path, rank: int) -> None:
        if rank == 0:
            state = {"model": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
                     "scheduler": self.scheduler.state_dict(), "micro": self.micro}
            torch.save(state, directory / "ddp_state.pt")

    def load(self, directory: Path) -> None:
        state = torch.load(directory / "ddp_state.pt", map_location="cpu", weights_only=False)
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.micro = state["micro"]

    @contextlib.contextmanager
    def gathered(self) -> Iterator[torch.nn.Module]:
        yield self.module


class DeepSpeedStrategy:
    def __init__(self, module: torch.nn.Module, optim: OptimConfig, lr_factor: Callable[[int], float],
                 grad_accum: int, micro_batch: int, learner: LearnerConfig):
        import deepspeed

        self.stage = learner.zero_stage
        config = {
            "train_micro_batch_size_per_gpu": micro_batch,
            "gradient_accumulation_steps": grad_accum,
            "gradient_clipping": optim.grad_clip,
            "zero_optimization": {"stage": learner.zero_stage},
            "bf16": {"enabled": learner.precision == "bf16"},
            "optimizer": {"type": "AdamW", "params": {"lr": optim.lr, "betas": list(optim.betas),
                                                      "weight_decay": optim.weight_decay, "torch_adam": True}},
            "steps_per_print": 10**9,
            "wall_clock_breakdown": False,
        }
        params = [p for p in module.parameters() if p.requires_grad]
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=module, model_parameters=params, config=config,
            lr_scheduler=lambda optimizer: LambdaLR(optimizer, lr_factor),
        )
        self.module = module

    @property
    def forward_module(self) -> torch.nn.Module:
        """What a gradient-free forward runs through: the engine, which gathers ZeRO-3 shards."""
        return self.engine

    @property
    def steps_to_update(self) -> int:
        """train_step calls until the weights change (the next one at an accumulation boundary counts)."""
        accum = self.engine.gradient_accumulation_steps()
        return accum - self.engine.micro_steps % accum

    def train_step(self, compute_loss: ComputeLoss) -> tuple[float, float | None]:
        boundary = self.engine.is_gradient_accumulation_boundary()
        loss = compute_loss(self.engine)
        self.engine.backward(loss)
        self.engine.step()
        if not boundary:
            return float(loss.detach()), None
        norm = self.engine.get_global_grad_norm()
        return float(loss.detach()), float(norm) if norm is not None else None

    @property
    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def save(self, directory: Path, rank: int) -> None:
        # Collective: every rank writes its optimizer/parameter shards.
        self.engine.save_checkpoint(str(directory), tag="deepspeed")

    def load(self, directory: Path) -> None:
        self.engine.load_checkpoint(str(directory), tag="deepspeed")

    @contextlib.contextmanager
    def gathered(self) -> Iterator[torch.nn.Module]:
        """Full weights visible on every rank (collective under ZeRO-3)."""
        if self.stage < 3:
            yield self.module
            return
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(self.module.parameters()), modifier_rank=0):
            yield self.module


def make_strategy(module: torch.nn.Module, learner: LearnerConfig, optim: OptimConfig,
                  lr_factor: Callable[[int], float], grad_accum: int, micro_batch: int) -> Any:
    if learner.strategy == "deepspeed":
        return DeepSpeedStrategy(module, optim, lr_factor, grad_accum, micro_batch, learner)
    return DDPStrategy(module, optim, lr_factor, grad_accum)
