"""DiffECG pretraining: the 1D U-Net as a DDPM noise predictor on unlabelled windows.

Single process on CUDA or CPU, or several under ``torchrun`` (DDP; rank 0 logs and saves).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from trainer import distributed
from trainer.checkpoint import save_checkpoint
from trainer.checks import check_out_dir
from trainer.config import RunConfig
from trainer.data.datasets import pretrain_windows
from trainer.diffusion import add_noise, alphas_cumprod, linear_betas
from trainer.errors import ConfigError
from trainer.models.unet1d import UNet1d

#: Files of a previous run's probe, removed when training starts (they describe the old weights).
STALE_AFTER_TRAINING = ("head.npz", "probe.json")


@dataclass
class TrainResult:
    checkpoint: Path
    steps: int
    final_loss: float
    seconds: float
    windows_seen: int


def _lr_at(step: int, cfg: RunConfig) -> float:
    tc = cfg.train
    if step < tc.warmup_steps:
        return tc.lr * (step + 1) / tc.warmup_steps
    progress = (step - tc.warmup_steps) / max(1, tc.steps - tc.warmup_steps)
    return tc.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def train(cfg: RunConfig, windows: np.ndarray | None = None) -> TrainResult:
    """Pretrain and save ``<out_dir>/diffecg.pt``; return where and how it went."""
    check_out_dir(
        cfg.train.out_dir, "train.out_dir", "diffecg.pt"
    )  # before any data is read or step run
    return distributed.launch(cfg.train.threads, lambda rt: _train(cfg, rt, windows))


def _train(cfg: RunConfig, rt: distributed.Runtime, windows: np.ndarray | None) -> TrainResult:
    tc = cfg.train
    torch.manual_seed(tc.seed + rt.rank)
    data = torch.from_numpy(windows if windows is not None else pretrain_windows(cfg.data))
    factor = cfg.model.downsample_factor
    data = data[..., : data.shape[-1] // factor * factor].contiguous()  # (N, C, L)
    if data.shape[1] != cfg.model.in_channels:
        raise ConfigError(
            f"model.in_channels ({cfg.model.in_channels}) must equal the {cfg.data.modality} "
            f"input's channels ({data.shape[1]})",
            key="model.in_channels",
        )
    model = UNet1d(cfg.model).to(rt.device)
    ddp = DistributedDataParallel(model) if rt.world_size > 1 else None
    net = ddp if ddp is not None else model
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    scaler = distributed.grad_scaler(rt, tc.amp)
    abar = torch.from_numpy(alphas_cumprod(linear_betas(tc.diffusion_steps))).float().to(rt.device)
    gen = torch.Generator().manual_seed(tc.seed * 1000 + rt.rank)
    out = Path(tc.out_dir) / "diffecg.pt"
    if rt.is_main:  # a head probed on the previous checkpoint must not outlive it
        for stale in STALE_AFTER_TRAINING:
            (out.parent / stale).unlink(missing_ok=True)
    bar = tqdm(total=tc.steps, desc="diffecg pretrain", unit="step", disable=not rt.is_main)
    start, ema_loss, step = time.perf_counter(), float("nan"), 0
    for step in range(tc.steps):
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, cfg)
        idx = torch.randint(0, data.shape[0], (tc.batch_size,), generator=gen)
        x0 = data[idx].to(rt.device, non_blocking=True)
        t = torch.randint(0, tc.diffusion_steps, (tc.batch_size,), generator=gen).to(rt.device)
        noise = torch.randn(x0.shape, generator=gen).to(rt.device)
        with distributed.autocast(rt, tc.amp):
            loss = torch.nn.functional.mse_loss(net(add_noise(x0, t, noise, abar), t), noise)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        scaler.step(opt)
        scaler.update()
        value = float(loss.detach())
        ema_loss = value if math.isnan(ema_loss) else 0.95 * ema_loss + 0.05 * value
        bar.update(1)
        if rt.is_main and (step + 1) % tc.log_every == 0:
            rate = (step + 1) * tc.batch_size * rt.world_size / (time.perf_counter() - start)
            bar.set_postfix(loss=f"{ema_loss:.4f}", win_per_s=f"{rate:.0f}")
        if rt.is_main and (step + 1) % tc.ckpt_every == 0:
            save_checkpoint(out, model, cfg, step + 1, {"loss": ema_loss}, complete=False)
        if tc.max_minutes and distributed.out_of_time(start, tc.max_minutes, rt):
            break
    bar.close()
    seconds = time.perf_counter() - start
    if rt.is_main:
        extra = {"loss": ema_loss, "train_seconds": seconds}
        save_checkpoint(out, model, cfg, step + 1, extra, complete=True)
    digest = distributed.weights_digest(model)
    distributed.say(f"rank {rt.rank}: pretrained {step + 1} steps, weights {digest}")
    return TrainResult(out, step + 1, ema_loss, seconds, (step + 1) * tc.batch_size * rt.world_size)
