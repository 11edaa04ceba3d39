"""DACL: scattering features, VAE, triplet sampling and loss, latent encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.dacl import (
    DACLTrainConfig,
    _Views,
    sample_triplets,
    train_encoder,
    triplet_loss,
)
from trainer.errors import ConfigError
from trainer.models.dacl import VAE, DACLConfig, DACLEmbedder, LatentUNetEncoder, vae_loss


def test_vae_terms_finite_and_latent_shape() -> None:
    torch.manual_seed(0)
    cfg = DACLConfig(n_features=40)
    vae = VAE(cfg)
    x = torch.randn(16, 40) * 3
    recon, mu, logvar = vae(x)
    total, rec, kl = vae_loss(x, recon, mu, logvar, beta=1.0)
    assert mu.shape == logvar.shape == (16, 32) and recon.shape == x.shape
    assert all(bool(torch.isfinite(v)) for v in (total, rec, kl))
    assert float(kl) >= 0.0 and float(rec) > 0.0


def test_vae_loss_kl_zero_at_prior() -> None:
    mu, logvar = torch.zeros(4, 32), torch.zeros(4, 32)
    x = torch.randn(4, 8)
    _, rec, kl = vae_loss(x, x.clone(), mu, logvar, beta=1.0)
    assert float(kl) == 0.0 and float(rec) == 0.0


def test_triplet_negative_never_from_anchor_class() -> None:
    rng = np.random.default_rng(0)
    labels = np.array(["N"] * 900 + ["A"] * 60 + ["O"] * 30 + ["~"] * 10)
    for _ in range(50):
        a, n = sample_triplets(labels, 64, rng)
        assert not np.any(labels[a] == labels[n])
    assert set(labels[n]) <= {"N", "A", "O", "~"}


def test_triplet_sampling_needs_two_classes() -> None:
    with pytest.raises(ConfigError):
        sample_triplets(np.array(["N"] * 5), 4, np.random.default_rng(0))


def test_triplet_loss_margin() -> None:
    e = torch.zeros(3, 4)
    far = torch.full((3, 4), 10.0)
    assert float(triplet_loss(e, e, far, margin=1.0)) == 0.0
    assert float(triplet_loss(e, e, e, margin=1.0)) == pytest.approx(1.0)


def test_views_use_configured_timestep_range() -> None:
    tc = DACLTrainConfig(t_lo=34, t_hi=50)
    views = _Views(tc, torch.Generator().manual_seed(0))
    _, t = views(torch.zeros(500, 32))
    assert int(t.min()) >= 33 and int(t.max()) <= 49  # table index = t - 1


def test_encoder_shape_and_t_conditioning() -> None:
    torch.manual_seed(0)
    cfg = DACLConfig()
    enc = LatentUNetEncoder(cfg)
    z = torch.randn(5, 32)
    e0 = enc(z, torch.zeros(5, dtype=torch.int64))
    e1 = enc(z, torch.full((5,), 40, dtype=torch.int64))
    assert e0.shape == (5, cfg.emb_dim) and not torch.allclose(e0, e1)


def test_triplet_training_separates_classes() -> None:
    rng = np.random.default_rng(0)
    z = np.concatenate([rng.normal(-1, 0.3, (100, 32)), rng.normal(1, 0.3, (100, 32))])
    labels = np.array(["N"] * 100 + ["A"] * 100)
    cfg = DACLConfig()
    enc = train_encoder(z.astype(np.float32), labels, cfg, DACLTrainConfig(steps=150))
    with torch.no_grad():
        e = enc(torch.from_numpy(z.astype(np.float32)), torch.zeros(200, dtype=torch.int64))
    d_within = torch.cdist(e[:100], e[:100]).mean()
    d_between = torch.cdist(e[:100], e[100:]).mean()
    assert float(d_between) > 2 * float(d_within)


def test_embedder_standardizes_features() -> None:
    torch.manual_seed(0)
    cfg = DACLConfig(n_features=10)
    vae, enc = VAE(cfg).eval(), LatentUNetEncoder(cfg).eval()
    mean, std = torch.randn(10), torch.rand(10) + 0.5
    emb = DACLEmbedder(vae, enc, mean, std)
    f = torch.randn(3, 10)
    t = torch.zeros(3, dtype=torch.int64)
    with torch.no_grad():
        assert torch.allclose(emb(f, t), enc(vae.encode((f - mean) / std)[0], t))


def test_scattering_features_shape_and_finite() -> None:
    pytest.importorskip("kymatio")
    from sdk.synthetic import synthetic_ecg
    from trainer.scattering import scattering_features

    ecg = synthetic_ecg((("sinus", 12.0),), fs=128.0, seed=0).signal[:1280]
    w = ((ecg - ecg.mean()) / ecg.std()).astype(np.float32)[None, None]
    f = scattering_features(np.concatenate([w, -w]), progress=False)
    assert f.shape == (2, 250) and bool(np.isfinite(f).all())


def test_schedules_differ_in_late_noise() -> None:
    from trainer.dacl import schedule_betas
    from trainer.diffusion import alphas_cumprod

    scaled = alphas_cumprod(schedule_betas(DACLTrainConfig()))
    ddpm = alphas_cumprod(schedule_betas(DACLTrainConfig(schedule="ddpm")))
    assert scaled[-1] < 1e-3 < 0.5 < ddpm[-1] and scaled.shape == ddpm.shape == (50,)
    with pytest.raises(ConfigError):
        DACLTrainConfig(schedule="cosine")


@pytest.mark.parametrize(
    "key, value",
    [
        ("train.steps", "0"),
        ("train.lr", "-1"),
        ("train.batch_size", "0"),
        ("train.sigma", "-2"),
        ("train.margin", "-1"),
        ("run.vae_steps", "0"),
        ("run.experiments", "dacl,nope"),
    ],
)
def test_dacl_presets_refuse_values_out_of_range(key: str, value: str) -> None:
    from trainer.dacl import load_dacl_preset
    from trainer.errors import ConfigError

    with pytest.raises(ConfigError):
        load_dacl_preset("smoke", {key: value})


def test_the_recorded_train_command_rebuilds_the_run(tmp_path) -> None:
    from dataclasses import asdict

    from trainer.config import parse_overrides
    from trainer.dacl import load_dacl_preset, train_command

    argv = [
        "--data.max_records=100",
        "--run.vae_steps=10",
        "--run.experiments=dacl,dae",
        "--train.schedule=ddpm",
        f"--run.out_dir={tmp_path}",
    ]
    cfg = load_dacl_preset("cpu", parse_overrides(argv))
    results = {
        "preset": cfg.preset,
        "train": asdict(cfg.train),
        "data": asdict(cfg.data),
        "run": asdict(cfg.run),
    }
    command = train_command(results, tmp_path)
    assert command.startswith("ecgedge train-dacl --preset cpu ")
    again = load_dacl_preset("cpu", parse_overrides(command.split()[4:]))
    assert again == cfg
