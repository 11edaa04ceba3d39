"""DiffAE-LRU: train the LRU semantic encoder and the conditioned U-Net together, then probe.

``ecgedge train-diffae --preset smoke|cpu|gpu`` (``trainer/presets/lru_<name>.toml``) with
sections ``[data]``
(:class:`~trainer.config.DataConfig`), ``[lru]`` (:class:`~trainer.models.lru.LRUConfig`),
``[unet]`` (:class:`~trainer.models.unet1d.UNetConfig`) and ``[train]``
(:class:`DiffAETrainConfig`); ``--section.key=value`` overrides.

Loss: ``MSE(ε̂(x_t, t, z(x_0)), ε)`` with DDPM's linear schedule (T steps). The probe fits
:func:`sdk.head.fit_softmax_head` on the 128-d embedding of each window (++ RR features),
averages window probabilities per record and reports :func:`trainer.metrics.rhythm_report`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from sdk.bundle import sha256_file
from sdk.head import fit_softmax_head
from trainer import distributed
from trainer.checkpoint import finite_state, load_weights, write_atomic
from trainer.checks import DIFFUSION_TRAIN_POSITIVE, check_out_dir, check_range
from trainer.config import (
    DataConfig,
    build_sections,
    command_with_overrides,
    preset_names,
    read_preset,
)
from trainer.data.datasets import cinc2017_split, pretrain_windows
from trainer.diffusion import add_noise, alphas_cumprod, linear_betas
from trainer.errors import CheckpointError, ConfigError
from trainer.metrics import CLASSES, aggregate_by_record, encode, rhythm_report
from trainer.models.diffae import DiffAE
from trainer.models.lru import LRUConfig
from trainer.models.unet1d import UNetConfig
from trainer.probe import save_head

CHECKPOINT = "diffae.pt"


@dataclass
class DiffAETrainConfig:
    steps: int = 1000
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    grad_clip: float = 1.0
    diffusion_steps: int = 1000
    seed: int = 0
    threads: int = 1
    log_every: int = 20
    max_minutes: float = 0.0
    amp: bool = True  # float16 autocast with loss scaling, used only on CUDA (LRU in float32)
    out_dir: str = "runs/diffae"

    def __post_init__(self) -> None:
        check_range(
            "train",
            self,
            positive=(*DIFFUSION_TRAIN_POSITIVE, "threads"),
            nonnegative=("weight_decay", "warmup_steps", "max_minutes"),
            seeds=("seed",),
        )


@dataclass
class DiffAERunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    lru: LRUConfig = field(default_factory=LRUConfig)
    unet: UNetConfig = field(default_factory=UNetConfig)
    train: DiffAETrainConfig = field(default_factory=DiffAETrainConfig)
    preset: str = "custom"

    def __post_init__(self) -> None:
        if self.data.window % self.lru.block_samples:
            raise ConfigError(
                f"window {self.data.window} must divide by lru block {self.lru.block_samples}",
                key="lru.chunk",
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SECTIONS = {"data": DataConfig, "lru": LRUConfig, "unet": UNetConfig, "train": DiffAETrainConfig}


def build_diffae_config(
    table: dict[str, Any], overrides: dict[str, str] | None = None, preset: str = "custom"
) -> DiffAERunConfig:
    return DiffAERunConfig(**build_sections(table, overrides, SECTIONS), preset=preset)


def load_diffae_preset(name: str, overrides: dict[str, str] | None = None) -> DiffAERunConfig:
    """``smoke``/``cpu``/``gpu`` (``trainer/presets/lru_<name>.toml``) or a path to a TOML file."""
    table, preset = read_preset(name, "lru_")
    return build_diffae_config(table, overrides, preset=preset)


def train_command(cfg: DiffAERunConfig) -> str:
    """The ``ecgedge train-diffae`` command that rebuilds ``cfg``: its preset (``cpu`` for a
    config from a file or none) plus an override for every value that differs from it."""
    preset = cfg.preset if cfg.preset in preset_names("lru_") else "cpu"
    base = load_diffae_preset(preset).to_dict()
    return command_with_overrides("ecgedge train-diffae", preset, cfg.to_dict(), base)


def _lr_at(step: int, tc: DiffAETrainConfig) -> float:
    if step < tc.warmup_steps:
        return tc.lr * (step + 1) / tc.warmup_steps
    progress = (step - tc.warmup_steps) / max(1, tc.steps - tc.warmup_steps)
    return tc.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def train(cfg: DiffAERunConfig, windows: np.ndarray | None = None) -> Path:
    """Train encoder + U-Net jointly; save ``<out_dir>/diffae.pt`` and return its path.

    One process on CUDA or CPU, or several under ``torchrun`` (DDP: each rank draws its own
    batches of ``train.batch_size``, gradients are averaged, rank 0 logs and saves)."""
    check_out_dir(cfg.train.out_dir, "train.out_dir", CHECKPOINT)
    return distributed.launch(cfg.train.threads, lambda rt: _train(cfg, rt, windows))


def _train(cfg: DiffAERunConfig, rt: distributed.Runtime, windows: np.ndarray | None) -> Path:
    tc = cfg.train
    torch.manual_seed(tc.seed)  # the same initial weights on every rank
    data = torch.from_numpy(windows if windows is not None else pretrain_windows(cfg.data))
    model = DiffAE(cfg.unet, cfg.lru).to(rt.device)
    net = DistributedDataParallel(model) if rt.world_size > 1 else model
    abar = torch.from_numpy(alphas_cumprod(linear_betas(tc.diffusion_steps))).float()
    abar = abar.to(rt.device)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    scaler = distributed.grad_scaler(rt, tc.amp)
    gen = torch.Generator().manual_seed(tc.seed + 1000 * rt.rank)  # rank 0: as one process
    start, losses, step = time.perf_counter(), [], 0
    out = Path(tc.out_dir)
    desc = f"diffae ({rt.device.type} x {rt.world_size})"
    bar = tqdm(range(tc.steps), desc=desc, unit="step", mininterval=10, disable=not rt.is_main)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, tc)
        x0 = data[torch.randint(0, len(data), (tc.batch_size,), generator=gen)]
        t = torch.randint(0, tc.diffusion_steps, (tc.batch_size,), generator=gen)
        eps = torch.randn(x0.shape, generator=gen)  # drawn on the CPU: the same on any device
        x0, t, eps = x0.to(rt.device), t.to(rt.device), eps.to(rt.device)
        with distributed.autocast(rt, tc.amp):
            eps_hat = net(add_noise(x0, t, eps, abar), t, x0)
        loss = torch.mean((eps_hat.float() - eps) ** 2)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        scaler.step(opt)
        scaler.update()
        losses.append(float(loss.detach()))
        if rt.is_main and step % tc.log_every == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-tc.log_every :]):.4f}")
            print(f"step {step} loss {np.mean(losses[-tc.log_every :]):.4f}", flush=True)
        if tc.max_minutes and distributed.out_of_time(start, tc.max_minutes, rt):
            break
    extra = {
        "train_seconds": time.perf_counter() - start,
        "final_loss": float(np.mean(losses[-tc.log_every :])),
        "windows": int(len(data)),
        "world_size": rt.world_size,
        "windows_seen": (step + 1) * tc.batch_size * rt.world_size,
    }
    path = out / CHECKPOINT
    if rt.is_main:
        save(path, model, cfg, step + 1, extra)
    digest = distributed.weights_digest(model)
    distributed.say(f"rank {rt.rank}: trained {step + 1} steps, weights {digest}")
    return path


def save(path: Path, model: DiffAE, cfg: DiffAERunConfig, step: int, extra: dict) -> Path:
    payload = {
        "format_version": 1,
        "kind": "diffae-lru",
        "config": cfg.to_dict(),
        "step": step,
        "state_dict": finite_state(model, step),
        "extra": extra,
    }
    return write_atomic(path, partial(torch.save, payload))


def load(path: Path) -> tuple[DiffAERunConfig, DiffAE, dict[str, Any]]:
    """(config, model in eval mode, payload) of a DiffAE checkpoint (weights_only load)."""
    payload = load_weights(path)
    if not isinstance(payload, dict) or payload.get("kind") != "diffae-lru":
        raise CheckpointError("not a DiffAE-LRU checkpoint", path=str(path))
    try:
        raw = payload["config"]
        table = {k: raw[k] for k in SECTIONS}
        # runs from before the presets were named smoke/cpu/gpu recorded lru_<name>
        preset = str(raw.get("preset", "custom")).removeprefix("lru_")
        cfg = build_diffae_config(table, preset=preset)
        model = DiffAE(cfg.unet, cfg.lru)
        model.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, ValueError, ArithmeticError, RuntimeError) as exc:
        raise CheckpointError(f"incomplete or invalid checkpoint: {exc!r}", path=str(path)) from exc
    return cfg, model.eval(), payload


@torch.no_grad()
def embed_windows(encoder: torch.nn.Module, windows: np.ndarray, batch: int = 128) -> np.ndarray:
    """(N, 1, L) → (N, D) with the semantic encoder."""
    device = next(encoder.parameters()).device
    out = [
        encoder(torch.from_numpy(windows[i : i + batch]).to(device)).cpu().numpy()
        for i in tqdm(range(0, len(windows), batch), desc="embed", leave=False, mininterval=10)
    ]
    return np.concatenate(out)


def probe_embeddings(
    emb_train: np.ndarray, emb_val: np.ndarray, train: Any, val: Any
) -> tuple[dict[str, Any], Any]:
    """Linear probes (embedding ++ RR, embedding only) → (report, head on embedding ++ RR)."""
    y_train = encode(train.window_labels)
    report, head_out = {}, None
    for key, xt, xv in (
        ("embedding_plus_rr", np.c_[emb_train, train.rr], np.c_[emb_val, val.rr]),
        ("embedding_only", emb_train, emb_val),
    ):
        head = fit_softmax_head(xt, y_train, CLASSES)
        proba = aggregate_by_record(head.predict_proba(xv), val.record_index, len(val.names))
        report[key] = rhythm_report(encode(val.labels), proba)
        head_out = head_out or head
    return report, head_out


def run_probe(run_dir: Path) -> dict[str, Any]:
    """Probe the run's encoder on CinC 2017; write ``probe.json`` and ``head.npz``."""
    cfg, model, payload = load(run_dir / CHECKPOINT)
    torch.set_num_threads(cfg.train.threads)
    train_ws, val_ws = cinc2017_split(cfg.data)
    emb_train = embed_windows(model.encoder, train_ws.windows)
    emb_val = embed_windows(model.encoder, val_ws.windows)
    report, head = probe_embeddings(emb_train, emb_val, train_ws, val_ws)
    report["train_seconds"] = payload["extra"].get("train_seconds")
    report["steps"] = payload["step"]
    report["split"] = {"val_records": len(val_ws.names), "seed": cfg.data.split_seed}
    noise = np.zeros((1, 1, cfg.data.window), np.float32)
    save_head(
        run_dir / "head.npz",
        head,
        t=np.asarray(0),
        noise=noise,
        checkpoint=np.asarray(CHECKPOINT),  # export refuses the head beside another checkpoint
        checkpoint_sha256=np.asarray(sha256_file(run_dir / CHECKPOINT)),
    )
    np.savez(run_dir / "embeddings.npz", train=emb_train, val=emb_val)
    (run_dir / "probe.json").write_text(json.dumps(report, indent=2))
    return report
