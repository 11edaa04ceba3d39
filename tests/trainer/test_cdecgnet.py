"""CD-ECGNet: shapes for 1..12 leads, every loss term finite, training lowers the losses."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sdk.synthetic import synthetic_ecg
from trainer.errors import ConfigError
from trainer.models.cdecgnet import CDConfig, CDECGNet, Discriminator
from trainer.models.cdloss import contrastive_loss, discriminator_loss, generator_losses


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: small convolutions are slower with more on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


TINY = {"stem": 8, "dims": (8, 8, 8), "lead_hidden": 16, "lead_dim": 8, "noise_dim": 4}


@pytest.mark.parametrize("leads", [1, 2, 12])
def test_shapes_for_any_lead_count(leads):
    net = CDECGNet(CDConfig(leads=leads, **TINY)).eval()
    x = torch.randn(3, leads, 1280)
    feats, lead = net.encode(x)
    assert net(x).shape == x.shape
    assert lead.shape == (3, leads, 8)
    assert feats[-1].shape == (3, 8, 1280 // 8)
    assert net.noise_of(x).shape == x.shape


def test_bad_configs_are_refused():
    for kwargs, key, message in [
        ({"leads": 13}, "leads", "must lie in 1..12"),
        ({"window": 1281}, "window", "must be divisible by 2"),
        ({"kernels": (4,)}, "kernels", "must be odd"),
    ]:
        with pytest.raises(ConfigError, match=message) as err:
            CDConfig(**kwargs)
        assert err.value.key == key


def _batch(leads: int = 2, batch: int = 8, seed: int = 0):
    """Synthetic clean windows, low-frequency + broadband noise on a subset of leads."""
    rng = np.random.default_rng(seed)
    ecg = synthetic_ecg((("sinus", 60.0),), fs=128.0, seed=seed).signal
    clean = np.stack(
        [
            np.stack([ecg[s + 7 * j : s + 7 * j + 1280] for j in range(leads)])
            for s in range(0, 400 * batch, 400)
        ]
    )
    clean = (clean - clean.mean(-1, keepdims=True)) / clean.std(-1, keepdims=True)
    t = np.arange(1280) / 128.0
    noise = 0.8 * np.sin(
        2 * np.pi * 0.3 * t + rng.uniform(0, 6, (batch, leads, 1))
    ) + 0.4 * rng.standard_normal((batch, leads, 1280))
    noisy = rng.random((batch, leads)) < 0.5
    noisy[0, 0], noisy[1, 0] = True, False  # both kinds present
    x = clean + noisy[..., None] * noise
    xs = clean + noise
    f = lambda a: torch.from_numpy(a.astype(np.float32))  # noqa: E731
    return f(x), f(xs), f(clean), f(clean), torch.from_numpy(noisy)


def test_every_loss_term_is_finite():
    net, dis = CDECGNet(CDConfig(leads=2, **TINY)), Discriminator(8)
    losses, c, c_s = generator_losses(net, dis, *_batch(), temperature=0.5)
    for name, value in losses.as_dict().items():
        assert np.isfinite(value), name
    assert torch.isfinite(discriminator_loss(dis, c, c_s))
    assert torch.isfinite(losses.total(0.5, 1.0))


def test_contrastive_loss_prefers_separated_features():
    noisy = torch.tensor([[True, False, False]])
    same = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]])
    apart = torch.tensor([[[-1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]])
    assert contrastive_loss(apart, noisy, 0.5) < contrastive_loss(same, noisy, 0.5)
    assert contrastive_loss(same, torch.tensor([[True, True, True]]), 0.5) == 0.0


def test_training_steps_lower_the_losses():
    torch.manual_seed(0)
    net, dis = CDECGNet(CDConfig(leads=2, **TINY)), Discriminator(8)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    opt_d = torch.optim.Adam(dis.parameters(), lr=1e-3)
    batch = _batch()
    history = []
    for _ in range(40):
        losses, c, c_s = generator_losses(net, dis, *batch, temperature=0.5)
        opt.zero_grad()
        losses.total(0.5, 1.0).backward()
        opt.step()
        opt_d.zero_grad()
        discriminator_loss(dis, c, c_s).backward()
        opt_d.step()
        history.append(losses.as_dict())
    first, last = history[0], history[-1]
    for term in ("sup", "rec", "cont", "noise"):
        assert last[term] < first[term], (term, first[term], last[term])
    assert all(np.isfinite(h["cons"]) for h in history)


@pytest.mark.data("mitdb", "nstdb")
@pytest.mark.slow
def test_smoke_preset_trains_and_reloads(tmp_path):
    from trainer.data.denoise_data import record_split
    from trainer.denoise_config import load_denoise_preset
    from trainer.train_denoiser import load_denoiser, train_denoiser

    cfg = load_denoise_preset("smoke", {"train.out_dir": str(tmp_path), "train.steps": "12"})
    result = train_denoiser(cfg)
    assert result.checkpoint.is_file() and result.steps == 12
    assert all(np.isfinite(v) for v in result.final_losses.values())
    cfg2, net, payload = load_denoiser(result.checkpoint)
    split = record_split("mitdb", cfg.data.val_fraction, cfg.data.split_seed, 0.1)
    chosen_on = payload["extra"]["selection_records"]
    assert chosen_on == [f"mitdb/{n}" for n in split.select] and split.select
    assert not set(split.select) & set(split.eval)
    assert cfg2.model == cfg.model
    assert net(torch.zeros(1, 1, 1280)).shape == (1, 1, 1280)


@pytest.mark.data("mitdb", "nstdb")
@pytest.mark.slow
def test_ddp_smoke_run_two_processes(tmp_path):
    """Two CPU processes under torchrun (gloo): both take every step with the same weights
    at the end (gradients averaged, BatchNorm statistics from rank 0), rank 0 alone saves
    and reports."""
    repo = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(repo), CUDA_VISIBLE_DEVICES="")
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "ecgedge", "train-denoiser", "--preset", "smoke", f"--train.out_dir={tmp_path}",
        # rank 0 validates every 2 steps while rank 1 goes on; the time limit also shapes the
        # learning rate, so the ranks must agree on the time
        "--train.ckpt_every=2", "--train.max_minutes=0.2",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the digest is 12 hex digits: another rank's output may follow it on the same line
    pattern = r"rank (\d): trained (\d+) steps, weights ([0-9a-f]{12})"
    done = {r: (n, w) for r, n, w in re.findall(pattern, proc.stdout)}
    assert set(done) == {"0", "1"} and done["0"] == done["1"]  # same steps, same weights
    assert proc.stdout.count("best val") == 1  # rank 0 reports
    from trainer.train_denoiser import CHECKPOINT_NAME, load_denoiser

    _, net, payload = load_denoiser(tmp_path / CHECKPOINT_NAME)
    # the best of the steps validated: every 2nd and the last (an odd one when the time
    # limit stops a slow run early)
    steps = int(done["0"][0])
    assert payload["step"] in {*range(2, steps + 1, 2), steps}
    assert payload["extra"]["world_size"] == 2


@pytest.mark.data("mitdb", "nstdb")
def test_mixed_precision_training_step(tmp_path, monkeypatch, grad_scalers):
    """The CUDA AMP path, run on the CPU (float16 autocast and one loss scaler for both
    optimizers): the networks run in float16, the losses stay finite, the checkpoint is
    float32."""
    from trainer import distributed
    from trainer.denoise_config import load_denoise_preset
    from trainer.train_denoiser import load_denoiser, train_denoiser

    monkeypatch.setattr(distributed.Runtime, "use_amp", property(lambda self: True))
    seen: set[torch.dtype] = set()
    encode = CDECGNet.encode

    def spy(self, *args):
        feats, lead = encode(self, *args)
        seen.add(feats[-1].dtype)  # E_ECG's deepest features
        return feats, lead

    monkeypatch.setattr(CDECGNet, "encode", spy)
    overrides = {"train.out_dir": str(tmp_path), "train.steps": "2", "train.ckpt_every": "2"}
    result = train_denoiser(load_denoise_preset("smoke", overrides))
    assert torch.float16 in seen
    assert len(grad_scalers) == 1 and grad_scalers[0].is_enabled()
    assert all(np.isfinite(v) for v in result.final_losses.values())
    _, net, _ = load_denoiser(result.checkpoint)
    assert all(p.dtype == torch.float32 for p in net.parameters())


def test_train_command_rebuilds_the_config():
    from trainer.config import parse_overrides
    from trainer.denoise_config import load_denoise_preset, train_command

    assert train_command(load_denoise_preset("cpu")) == "ecgedge train-denoiser --preset cpu"
    cfg = load_denoise_preset("cpu", {"model.dims": "24,32,48,64", "train.max_minutes": "68"})
    cmd = train_command(cfg)
    assert "--model.dims=24,32,48,64" in cmd and "--train.max_minutes=68.0" in cmd
    again = load_denoise_preset("cpu", parse_overrides(cmd.split()[4:]))
    assert again.to_dict() == cfg.to_dict()
