"""Devices and torchrun (DDP) set-up from the environment, in a few lines."""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

from trainer.errors import ConfigError

T = TypeVar("T")


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


def autocast(rt: Runtime, enabled: bool) -> torch.autocast:
    """Mixed precision for a training step: float16 autocast on CUDA when ``enabled`` (a
    no-op context on the CPU)."""
    return torch.autocast(rt.device.type, dtype=torch.float16, enabled=enabled and rt.use_amp)


def grad_scaler(rt: Runtime, enabled: bool) -> torch.amp.GradScaler:
    """The loss scaler that goes with :func:`autocast` (disabled when it is)."""
    return torch.amp.GradScaler(rt.device.type, enabled=enabled and rt.use_amp)


def launch(threads: int, train: Callable[[Runtime], T]) -> T:
    """Run ``train`` with this process's :class:`Runtime` (:func:`setup`); the process group
    is torn down however it ends, so no rank is left waiting on a collective."""
    rt = setup(threads)
    try:
        return train(rt)
    finally:
        teardown()


def is_main_process() -> bool:
    """False on every rank but 0 under torchrun (before or after :func:`setup`)."""
    return os.environ.get("RANK", "0") == "0"


def elapsed_s(start: float, rt: Runtime) -> float:
    """Seconds since ``start`` (``time.perf_counter``), the largest over the ranks under DDP:
    every rank gets the same value, so schedules and time limits built on it agree."""
    t = torch.tensor([time.perf_counter() - start], dtype=torch.float64, device=rt.device)
    if rt.world_size > 1:
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def out_of_time(start: float, max_minutes: float, rt: Runtime) -> bool:
    """Whether ``max_minutes`` have passed since ``start`` on any rank (:func:`elapsed_s`),
    so every rank stops at the same step."""
    return elapsed_s(start, rt) > 60 * max_minutes


def _coalesced(tensors: list[torch.Tensor], op: Callable[[torch.Tensor], None]) -> None:
    """Apply a collective ``op`` to ``tensors`` as one flat buffer (one call, not one per
    tensor), then copy the result back."""
    if not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    op(flat)
    offset = 0
    for t in tensors:
        t.copy_(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()


def broadcast_state(module: torch.nn.Module, rt: Runtime, *, buffers_only: bool = False) -> None:
    """Copy rank 0's parameters (unless ``buffers_only``) and floating-point buffers to every
    rank; other buffers (e.g. BatchNorm's batch counter) one by one."""
    if rt.world_size == 1:
        return
    tensors = [] if buffers_only else [p.data for p in module.parameters()]
    floats = [*tensors, *(b for b in module.buffers() if b.is_floating_point())]
    for dtype in dict.fromkeys(t.dtype for t in floats):  # the same order on every rank
        _coalesced([t for t in floats if t.dtype == dtype], lambda f: dist.broadcast(f, src=0))
    for b in module.buffers():
        if not b.is_floating_point():
            dist.broadcast(b, src=0)


def average_gradients(module: torch.nn.Module, rt: Runtime) -> None:
    """Average the gradients of every trainable parameter over the ranks, in one call (DDP's
    reduction, for training steps that call a module's methods other than ``forward``, which
    DDP's hooks do not see)."""
    if rt.world_size == 1:
        return
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)  # a rank whose batch did not reach p still joins
    _coalesced([p.grad for p in params], dist.all_reduce)
    for p in params:
        p.grad /= rt.world_size


def weights_digest(model: torch.nn.Module) -> str:
    """A short SHA-256 of a model's parameters and buffers: equal on every rank when DDP kept
    the replicas in step."""
    h = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def say(line: str) -> None:
    """Print ``line`` to stdout in one write. The ranks share torchrun's stdout and ``print``
    writes the text and its newline apart when stdout is unbuffered (``PYTHONUNBUFFERED``),
    so another rank's output could otherwise land in the middle of a line."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
