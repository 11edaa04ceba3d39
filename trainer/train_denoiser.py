"""Train CD-ECGNet on clean ECG with real NSTDB noise (``python -m trainer.train_denoiser``).

Each step draws (X, X_S) pairs from the training records and the first 70% of each noise
source, takes a generator step on L_sup + L_rec + L_cont + λ L_cons (+ the E_noise term) and a
discriminator step. Every ``ckpt_every`` steps the model is scored on fixed selection pairs
(the selection records and the next 10% of each noise source; neither is trained on nor
evaluated by the benchmarks) and the best one is saved as ``<out_dir>/denoiser.pt``
(``trainer.checkpoint`` format, ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from sdk.preprocess import PreprocessSpec
from trainer import distributed
from trainer.checkpoint import mark_complete, read_payload, save_checkpoint
from trainer.checks import check_out_dir
from trainer.config import parse_overrides
from trainer.data.denoise_data import Examples, PairSampler, clean_signals, record_split
from trainer.denoise_config import DenoiseRunConfig, build_denoise_config, load_denoise_preset
from trainer.errors import CheckpointError
from trainer.models.cdecgnet import CDECGNet, Discriminator
from trainer.models.cdloss import discriminator_loss, generator_losses

CHECKPOINT_NAME = "denoiser.pt"


@dataclass
class DenoiseTrainResult:
    checkpoint: Path
    steps: int
    first_losses: dict[str, float]
    final_losses: dict[str, float]
    val: dict[str, float]
    seconds: float


def spec_of(cfg: DenoiseRunConfig) -> PreprocessSpec:
    return PreprocessSpec(fs=cfg.data.fs, low_hz=cfg.data.low_hz, high_hz=cfg.data.high_hz)


def samplers(cfg: DenoiseRunConfig, rank: int = 0) -> tuple[PairSampler, PairSampler]:
    """(train, select) samplers: records split per database, noise split in time. Neither
    touches the evaluation records or the evaluation noise. Under DDP each ``rank`` draws
    its own training pairs (rank 0 as one process); the selection pairs are the same."""
    train, select = [], []
    d = cfg.data
    for db in d.databases:
        split = record_split(db, d.val_fraction, d.split_seed, d.select_fraction)
        train += clean_signals(db, split.train, d.fs, cfg.model.leads)
        select += clean_signals(db, split.select, d.fs, cfg.model.leads)
    spec, win, ctx = spec_of(cfg), d.window, d.context
    seed = cfg.train.seed
    return (
        PairSampler(train, spec, "train", window=win, context=ctx, seed=seed + 1000 * rank),
        PairSampler(select, spec, "select", window=win, context=ctx, seed=10_000 + seed),
    )


def selection_records(cfg: DenoiseRunConfig) -> list[str]:
    """``database/record`` names the checkpoint is chosen on."""
    d = cfg.data
    return [
        f"{db}/{n}"
        for db in d.databases
        for n in record_split(db, d.val_fraction, d.split_seed, d.select_fraction).select
    ]


def _tensors(ex: Examples, device: torch.device) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(a).to(device) for a in (ex.x, ex.target, ex.noisy))


def validate(net: CDECGNet, batches: list[Examples]) -> dict[str, float]:
    """Mean L1 and output SNR (dB) on the noisy leads, and L1 on the clean leads."""
    net.eval()
    err_n, sig_n, l1_n, l1_c, count_n, count_c = 0.0, 0.0, 0.0, 0.0, 0, 0
    device = next(net.parameters()).device
    with torch.no_grad():
        for ex in batches:
            y = net(torch.from_numpy(ex.x).to(device)).cpu().numpy()
            d = y - ex.target
            m = ex.noisy
            err_n += float(np.square(d[m]).sum())
            sig_n += float(np.square(ex.target[m] - ex.target[m].mean(-1, keepdims=True)).sum())
            l1_n += float(np.abs(d[m]).sum())
            l1_c += float(np.abs(d[~m]).sum())
            count_n += int(m.sum()) * d.shape[-1]
            count_c += int((~m).sum()) * d.shape[-1]
    net.train()
    return {
        "val_snr_db": 10 * math.log10(sig_n / max(err_n, 1e-12)),
        "val_l1_noisy": l1_n / max(count_n, 1),
        "val_l1_clean": l1_c / max(count_c, 1),
    }


def _lr(step: int, cfg: DenoiseRunConfig, elapsed_s: float) -> float:
    """Warm-up, then cosine decay over steps or over ``max_minutes``, whichever ends first
    (so a run cut short by its time limit, e.g. on a busy machine, still anneals)."""
    tc = cfg.train
    if step < tc.warmup_steps:
        return tc.lr * (step + 1) / tc.warmup_steps
    progress = (step - tc.warmup_steps) / max(1, tc.steps - tc.warmup_steps)
    if tc.max_minutes:
        progress = max(progress, elapsed_s / (60 * tc.max_minutes))
    return tc.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def train_denoiser(cfg: DenoiseRunConfig) -> DenoiseTrainResult:
    """Train and save the checkpoint best on the selection pairs; return where and how it
    went (``val`` holds the selection figures).

    One process on CUDA or CPU, or several under ``torchrun``: each rank draws its own
    batches, the gradients of both networks are averaged over the ranks and rank 0's
    BatchNorm statistics are copied to the others after every step (what DDP does; the
    losses call the networks' parts directly, which DDP's hooks would not see); rank 0
    validates, logs and saves."""
    check_out_dir(cfg.train.out_dir, "train.out_dir", CHECKPOINT_NAME)
    return distributed.launch(cfg.train.threads, lambda rt: _train(cfg, rt))


def _train(cfg: DenoiseRunConfig, rt: distributed.Runtime) -> DenoiseTrainResult:
    tc = cfg.train
    torch.manual_seed(tc.seed)
    train_s, select_s = samplers(cfg, rt.rank)
    val_batches = [
        select_s.draw(tc.batch_size, p_noisy=cfg.data.p_noisy, p_snr_mode=cfg.data.p_snr_mode)
        for _ in range(tc.val_batches)
    ]
    device = rt.device
    net = CDECGNet(cfg.model).to(device)
    dis = Discriminator(cfg.model.dims[-1]).to(device)
    for module in (net, dis):
        distributed.broadcast_state(module, rt)
    opt = torch.optim.AdamW(net.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    opt_d = torch.optim.Adam(dis.parameters(), lr=tc.lr_dis, betas=(0.5, 0.999))
    scaler = distributed.grad_scaler(rt, tc.amp)  # one scaler, both optimizers
    out = Path(tc.out_dir) / CHECKPOINT_NAME
    best: dict[str, float] = {}
    first: dict[str, float] = {}
    ema: dict[str, float] = {}
    start, step = time.perf_counter(), 0
    desc = f"CD-ECGNet {cfg.model.leads}-lead ({device.type} x {rt.world_size})"
    bar = tqdm(total=tc.steps, desc=desc, unit="step", disable=not rt.is_main)
    for step in range(tc.steps):
        elapsed = distributed.elapsed_s(start, rt) if tc.max_minutes else 0.0  # all ranks agree
        for group in opt.param_groups:
            group["lr"] = _lr(step, cfg, elapsed)
        ex_x, ex_s = train_s.draw_pair(
            tc.batch_size, p_noisy=cfg.data.p_noisy, p_snr_mode=cfg.data.p_snr_mode
        )
        x, tx, noisy = _tensors(ex_x, device)
        xs, txs, _ = _tensors(ex_s, device)
        with distributed.autocast(rt, tc.amp):
            losses, c, c_s = generator_losses(net, dis, x, xs, tx, txs, noisy, tc.temperature)
            total = losses.total(tc.lambda_cons, tc.w_noise)
        opt.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        distributed.average_gradients(net, rt)
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(net.parameters(), tc.grad_clip)
        scaler.step(opt)
        opt_d.zero_grad(set_to_none=True)
        with distributed.autocast(rt, tc.amp):
            d_loss = discriminator_loss(dis, c, c_s)
        scaler.scale(d_loss).backward()
        distributed.average_gradients(dis, rt)
        scaler.step(opt_d)
        scaler.update()
        for module in (net, dis):
            distributed.broadcast_state(module, rt, buffers_only=True)
        values = {**losses.as_dict(), "dis": float(d_loss.detach())}
        first = first or values
        ema = {k: v if k not in ema else 0.95 * ema[k] + 0.05 * v for k, v in values.items()}
        bar.update(1)
        if (step + 1) % tc.log_every == 0:
            bar.set_postfix({k: f"{v:.3f}" for k, v in ema.items()})
        last = step + 1 == tc.steps
        out_of_time = bool(tc.max_minutes) and distributed.out_of_time(start, tc.max_minutes, rt)
        if rt.is_main and ((step + 1) % tc.ckpt_every == 0 or last or out_of_time):
            val = validate(net, val_batches)
            tqdm.write(f"step {step + 1}: {val} losses {ema}")
            if not best or val["val_l1_noisy"] < best["val_l1_noisy"]:
                best = {**val, "step": step + 1}
                extra: dict[str, Any] = {"val": best, "losses": ema, "first_losses": first}
                extra["selection_records"] = selection_records(cfg)
                extra["train_seconds"] = time.perf_counter() - start
                extra["world_size"] = rt.world_size
                save_checkpoint(out, net, cfg, step + 1, extra, complete=False)  # type: ignore[arg-type]
        if out_of_time:
            break
    bar.close()
    if rt.is_main:  # the best checkpoint, saved at a validation, is this finished run's
        mark_complete(out)
    digest = distributed.weights_digest(net)
    distributed.say(f"rank {rt.rank}: trained {step + 1} steps, weights {digest}")
    return DenoiseTrainResult(out, step + 1, first, ema, best, time.perf_counter() - start)


def load_denoiser(path: Path) -> tuple[DenoiseRunConfig, CDECGNet, dict[str, Any]]:
    """Rebuild a trained CD-ECGNet from its checkpoint (``weights_only=True``)."""
    payload = read_payload(path)
    try:
        raw = payload["config"]
        table = {s: raw[s] for s in ("data", "model", "train")}
        cfg = build_denoise_config(table, preset=raw.get("preset", "custom"))
        net = CDECGNet(cfg.model)
        net.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, ValueError, ArithmeticError, RuntimeError) as exc:
        raise CheckpointError(f"not a denoiser checkpoint: {exc!r}", path=str(path)) from exc
    return cfg, net.eval(), payload


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="cpu", help="smoke | cpu | gpu | path/to.toml")
    args, extra = p.parse_known_args(argv)
    cfg = load_denoise_preset(args.preset, parse_overrides(extra))
    result = train_denoiser(cfg)
    if not distributed.is_main_process():  # under torchrun rank 0 reports
        return 0
    print(
        f"trained {result.steps} steps in {result.seconds:.0f} s -> {result.checkpoint}\n"
        f"first losses {result.first_losses}\nfinal losses {result.final_losses}\n"
        f"best val {result.val}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
