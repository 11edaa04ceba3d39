"""FLOPs of a model forward (convolutions, dense layers, attention products) and one core's peak."""

from __future__ import annotations

import os
import subprocess
import sys

import torch
from torch import nn

from trainer.models.unet1d import SelfAttention1d


def count_flops(model: nn.Module, window: int, t: int) -> int:
    """FLOPs (2 × multiply-accumulates) of one window through ``model(x, t, noise)``."""
    total = 0

    def conv_hook(mod: nn.Conv1d, _inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        total += 2 * out.numel() * (mod.in_channels // mod.groups) * mod.kernel_size[0]

    def linear_hook(mod: nn.Linear, _inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        total += 2 * out.numel() * mod.in_features

    def attn_hook(mod: SelfAttention1d, inp: tuple, _out: torch.Tensor) -> None:
        nonlocal total
        b, c, n = inp[0].shape
        total += 2 * 2 * b * n * n * c  # QK^T and AV

    handles = []
    for mod in model.modules():
        if isinstance(mod, nn.Conv1d):
            handles.append(mod.register_forward_hook(conv_hook))
        elif isinstance(mod, nn.Linear):
            handles.append(mod.register_forward_hook(linear_hook))
        elif isinstance(mod, SelfAttention1d):
            handles.append(mod.register_forward_hook(attn_hook))
    x = torch.zeros(1, 1, window)
    with torch.no_grad():
        model(x, torch.tensor([t]), x)
    for h in handles:
        h.remove()
    return total


_PEAK_CODE = """
import time, numpy as np
a = np.random.default_rng(0).standard_normal((1024, 1024), dtype=np.float32)
best = 0.0
for _ in range(7):
    tic = time.perf_counter(); a @ a; dt = time.perf_counter() - tic
    best = max(best, 2 * 1024**3 / dt)
print(best)
"""


def peak_flops_one_core() -> float:
    """Measured float32 FLOP/s of one thread (best of several 1024² matmuls)."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    out = subprocess.run(
        [sys.executable, "-c", _PEAK_CODE], capture_output=True, text=True, check=True, env=env
    )
    return float(out.stdout.strip())
