"""Devices and torchrun (DDP) set-up from the environment, in a few lines."""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

from trainer.errors import ConfigError


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    rank: int
    world_size: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def use_amp(self) -> bool:
        return self.device.type == "cuda"


def setup(threads: int = 0) -> Runtime:
    """CUDA when present, else CPU; joins the process group when launched by torchrun."""
    if threads > 0:
        torch.set_num_threads(threads)
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        if local >= torch.cuda.device_count():
            raise ConfigError(
                f"LOCAL_RANK {local} but only {torch.cuda.device_count()} CUDA device(s) are "
                "visible: start at most one process per GPU (torchrun --nproc_per_node)",
                key="nproc_per_node",
            )
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Runtime(device, rank, world)


def is_main_process() -> bool:
    """False on every rank but 0 under torchrun (before or after :func:`setup`)."""
    return os.environ.get("RANK", "0") == "0"


def out_of_time(start: float, max_minutes: float, rt: Runtime) -> bool:
    """Whether ``max_minutes`` have passed since ``start`` (``time.perf_counter``); under DDP
    the decision is reduced across the group, so every rank stops at the same step."""
    flag = torch.tensor([float(time.perf_counter() - start > 60 * max_minutes)], device=rt.device)
    if rt.world_size > 1:
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def broadcast_state(module: torch.nn.Module, rt: Runtime, *, buffers_only: bool = False) -> None:
    """Copy rank 0's parameters (unless ``buffers_only``) and buffers to every rank."""
    if rt.world_size == 1:
        return
    tensors = [] if buffers_only else [p.data for p in module.parameters()]
    for t in [*tensors, *module.buffers()]:
        dist.broadcast(t, src=0)


def average_gradients(module: torch.nn.Module, rt: Runtime) -> None:
    """Average every parameter's gradient over the ranks (DDP's reduction, for training steps
    that call a module's methods other than ``forward``, which DDP's hooks do not see)."""
    if rt.world_size == 1:
        return
    for p in module.parameters():
        if p.grad is None:
            p.grad = torch.zeros_like(p)  # a rank whose batch did not reach p still joins
        dist.all_reduce(p.grad)
        p.grad /= rt.world_size


def weights_digest(model: torch.nn.Module) -> str:
    """A short SHA-256 of a model's parameters and buffers: equal on every rank when DDP kept
    the replicas in step."""
    h = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
