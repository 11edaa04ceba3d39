"""Devices and torchrun (DDP) set-up from the environment, in a few lines."""

from __future__ import annotations

import os
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


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
