"""Data parallelism with FSDP2: the only file in minimost that touches `torch.distributed`.

The model files never import torch.distributed; everything here is applied from outside:

- `init_distributed()` reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT)
  and starts a process group: NCCL on GPUs, gloo on CPU. With one process it starts nothing.
- `shard_model()` calls `fully_shard` on every decoder block, then on the root (embedding, final norm
  and LM head), as torchtitan does (performance-anchors.md §3). On GPU the parameters are gathered
  in bf16 and gradients reduced in fp32; on CPU/gloo everything stays fp32. With world size 1 it
  returns the model untouched: FSDP2 on one device only adds copies and hooks (measured 1.3-2x slower).
- `shard_batch()`: every rank draws the same *global* batch from its (identically seeded) batch
  source and keeps its own contiguous slice of rows. Simple and exact; the data cost is replicated.
- The MoE layers have stacked expert weights and a dispatch without data-dependent branches, so a
  rank whose slice holds no audio token still runs the audio experts (empty groups, zero gradient)
  and every rank takes part in every reduce-scatter: no hang.
- State dicts are gathered to full, unsharded tensors (`model_state_dict`, `optim_state_dict`) so
  a checkpoint does not depend on the number of ranks that wrote it.

Launch: `torchrun --nproc-per-node N -m minimost train --preset small --stage posttrain`.
"""

from __future__ import annotations

import functools
import os

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.utils.checkpoint import checkpoint


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def init_distributed() -> tuple[int, int, torch.device]:
    """(rank, world size, device) from torchrun's environment; a process group only when WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", device_id=device if cuda else None)
    return rank(), world_size(), device


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        # Every rank reaches this point before any tears down: a rank destroying the gloo group while
        # another still finishes its last collective aborted once at exit ("terminate called ...").
        dist.barrier()
        dist.destroy_process_group()


# ------------------------------------------------------------------------------ wrapping

def apply_activation_checkpointing(model: nn.Module) -> nn.Module:
    """Recompute each decoder block's activations in the backward pass instead of storing them.

    The block's forward is replaced on the instance (parameter names are unchanged, so checkpoints
    are the same with and without it). Router statistics are returned, not accumulated, so the
    recomputation does not count tokens twice (a torchtitan pitfall, performance-anchors.md §3).
    """
    for block in model.blocks:
        if getattr(block, "_minimost_ac", False):
            continue
        block.forward = functools.partial(checkpoint, block.forward, use_reentrant=False)
        block._minimost_ac = True
    return model


def shard_model(model: nn.Module, bf16: bool | None = None) -> nn.Module:
    """FSDP2: `fully_shard` each decoder block, then the root. Never wraps when world size is 1.

    bf16 (default: on CUDA) gathers parameters in bf16 and reduce-scatters gradients in fp32;
    the optimizer keeps fp32 master weights in the shards.
    """
    if not is_distributed():
        return model
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    if bf16 is None:
        bf16 = torch.cuda.is_available()
    mp = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16
          else MixedPrecisionPolicy())
    for block in model.blocks:
        fully_shard(block, mp_policy=mp)
    fully_shard(model, mp_policy=mp)
    return model


def shard_batch(batch: dict, rank_: int | None = None, world: int | None = None) -> dict:
    """This rank's contiguous slice of the rows of a global batch (every tensor is split on dim 0)."""
    rank_ = rank() if rank_ is None else rank_
    world = world_size() if world is None else world
    if world == 1:
        return batch
    out = {}
    for key, value in batch.items():
        rows = value.shape[0]
        if rows % world:
            raise ValueError(f"the global batch has {rows} rows, not divisible by {world} ranks; "
                             f"set batch_size to a multiple of {world}.")
        per = rows // world
        out[key] = value[rank_ * per:(rank_ + 1) * per]
    return out


# ------------------------------------------------------------------------------ collectives

def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks, in place (a no-op with one process)."""
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def clip_grad_norm(params, max_norm: float) -> torch.Tensor:
    """Global gradient norm over every rank's shards, clipped to max_norm (inf: only measure)."""
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm


def barrier() -> None:
    if is_distributed():
        dist.barrier()


# ------------------------------------------------------------------------------ state dicts

_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def model_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Full (unsharded) CPU state dict; collective under FSDP (call on every rank; rank 0 gets it)."""
    if not is_distributed():  # tensors stay where they are; tied weights keep sharing memory
        return {k: v.detach() for k, v in model.state_dict().items()}
    return get_model_state_dict(model, options=_FULL)


def optim_state_dict(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Optimizer state keyed by parameter name (not position), unsharded; collective under FSDP."""
    return get_optimizer_state_dict(model, optimizer, options=_FULL)


def load_model_state_dict(model: nn.Module, state: dict[str, torch.Tensor], strict: bool = True) -> None:
    """Load a full state dict into a plain or FSDP-sharded model (each rank keeps its shards)."""
    if not is_distributed():
        model.load_state_dict(state, strict=strict)
        return
    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, strict=strict))


def load_optim_state_dict(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))
