"""Multi-process training with torch.distributed: ``torchrun --nproc_per_node N trainer/run.py``.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; :func:`setup` joins the process group (NCCL on
GPUs, gloo on CPUs, so the CPU tests run the same code path) and picks the rank's device.
:func:`shard` wraps the policy (and the reference) with FSDP2's ``fully_shard``: each decoder
layer is one unit, then the root; bf16 compute with float32 gradient reduction on GPUs;
optional activation checkpointing. Multi-node runs use torchrun's rendezvous
(``--nnodes``, ``--rdzv-backend c10d --rdzv-endpoint host:port``); nothing here depends on it.

A single process (no torchrun) is world size 1 and none of this is used.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def setup(device: str = "auto") -> World:
    """Join the process group torchrun describes; a plain process gets World(0, 1, device)."""
    from trainer.models import resolve_device

    if not launched_by_torchrun():
        return World(0, 1, resolve_device(device))
    use_cuda = torch.cuda.is_available() and device in ("auto", "cuda")
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        target = torch.device("cuda", local)
    else:
        target = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return World(dist.get_rank(), dist.get_world_size(), target)


def teardown() -> None:
    """Leave the process group once every rank is done (a rank that exits while another still
    talks to it aborts the run)."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def exit_process(code: int) -> None:
    """End a torchrun worker with ``code`` once its work is saved and it has left the group.

    Under torchrun the process leaves with ``os._exit`` after flushing stdout and stderr,
    skipping interpreter finalization: there, 2-rank gloo runs on a loaded 2-core machine
    aborted about once in 20 ("terminate called without an active exception", SIGABRT,
    after the run had finished, saved and called destroy_process_group), which torchrun
    reports as a failed run. pytorch/pytorch PR 179291 describes the cause (gloo's C++
    threads still holding Python objects while the interpreter is torn down). Everything the
    trainer writes is closed before this point. A plain process exits normally.
    """
    if not launched_by_torchrun():
        raise SystemExit(code)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def decoder_layers(model) -> list:
    """The transformer blocks of a transformers causal LM (``model.model.layers``)."""
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None:
        raise ValueError(
            f"cannot find the decoder layers of {type(model).__name__} (expected model.model.layers) to shard"
        )
    return list(layers)


def shard(model, world: World, activation_checkpointing: bool = False):
    """FSDP2 over all ranks: one ``fully_shard`` unit per decoder layer, then the root."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    from trainer.models import enable_activation_checkpointing

    if activation_checkpointing:
        enable_activation_checkpointing(model)
    mesh = init_device_mesh(world.device.type, (world.size,))
    policy = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if world.device.type == "cuda"
        else MixedPrecisionPolicy()
    )
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return model


@dataclass(frozen=True)
class Collectives:
    """The cross-rank reductions of a step, each a plain value on a single process."""

    world: World
    device: torch.device

    def total(self, value) -> float:
        """The sum over ranks."""
        return total(float(value), self.world, self.device)

    def concat(self, array) -> np.ndarray:
        """Every rank's 1-D ``array``, concatenated in rank order."""
        return np.concatenate(gather(array, self.world))

    def maximum(self, value: float) -> float:
        """The largest over ranks."""
        return max(gather(value, self.world))


def broadcast(obj, world: World):
    """``obj`` of rank 0 on every rank (a picklable object: counts, prompt indices)."""
    if world.size == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj, world: World) -> list:
    """Every rank's ``obj``, in rank order, on every rank."""
    if world.size == 1:
        return [obj]
    out = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def all_true(flag: bool, world: World, device) -> bool:
    """True when ``flag`` holds on every rank (keeps the ranks' forward passes in step)."""
    if world.size == 1:
        return flag
    t = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def total(value: float, world: World, device) -> float:
    """The sum of ``value`` over ranks."""
    if world.size == 1:
        return value
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item())
