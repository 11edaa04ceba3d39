"""DACL networks: the feature VAE, the U-Net-style latent encoder Enc(z_t, t), the DAE decoder.

All operate on vectors: scattering features (B, F) → VAE latent μ (B, 32) = z_0 → Enc(z_t, t)
→ embedding (B, E). The "U-Net style" encoder is an MLP with a contracting path (32 → 128 →
64 → 64), an expanding path with skip concatenations, and the diffusion step added to every
block through a sinusoidal embedding (as in DACL, Zewail 2025).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from trainer.errors import ConfigError
from trainer.models.unet1d import timestep_embedding


@dataclass
class DACLConfig:
    """Geometry of the DACL networks."""

    n_features: int = 250
    latent: int = 32
    vae_hidden: int = 128
    enc_dims: tuple[int, ...] = (128, 64, 64)
    emb_dim: int = 64
    time_dim: int = 32

    def __post_init__(self) -> None:
        self.enc_dims = tuple(int(d) for d in self.enc_dims)
        if len(self.enc_dims) < 2 or min(self.enc_dims) <= 0:
            raise ConfigError("dacl.enc_dims needs at least two positive sizes", key="enc_dims")


class VAE(nn.Module):
    """Gaussian VAE on standardized features: ``encode → (μ, log σ²)``, ``decode(z)``."""

    def __init__(self, cfg: DACLConfig) -> None:
        super().__init__()
        h = cfg.vae_hidden
        self.enc = nn.Sequential(
            nn.Linear(cfg.n_features, h), nn.SiLU(), nn.Linear(h, h // 2), nn.SiLU()
        )
        self.mu = nn.Linear(h // 2, cfg.latent)
        self.logvar = nn.Linear(h // 2, cfg.latent)
        self.dec = nn.Sequential(
            nn.Linear(cfg.latent, h // 2),
            nn.SiLU(),
            nn.Linear(h // 2, h),
            nn.SiLU(),
            nn.Linear(h, cfg.n_features),
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.enc(x)
        return self.mu(h), self.logvar(h).clamp(-10.0, 10.0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(reconstruction, μ, log σ²) with a reparametrized sample."""
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.dec(z), mu, logvar


def vae_loss(
    x: torch.Tensor, recon: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, beta: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, reconstruction, KL): per-sample sums averaged over the batch."""
    rec = ((recon - x) ** 2).sum(dim=1).mean()
    kl = (-0.5 * (1.0 + logvar - mu**2 - logvar.exp()).sum(dim=1)).mean()
    return rec + beta * kl, rec, kl


class _Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, time_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(c_in, c_out)
        self.time = nn.Linear(time_dim, c_out)
        self.norm = nn.LayerNorm(c_out)
        self.fc2 = nn.Linear(c_out, c_out)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.norm(self.fc1(x) + self.time(temb)))
        return h + F.silu(self.fc2(h))


class LatentUNetEncoder(nn.Module):
    """``Enc(z_t (B, latent), t (B,) int64) → (B, emb_dim)``."""

    def __init__(self, cfg: DACLConfig) -> None:
        super().__init__()
        self.time_dim = cfg.time_dim
        self.time_mlp = nn.Sequential(
            nn.Linear(cfg.time_dim, cfg.time_dim), nn.SiLU(), nn.Linear(cfg.time_dim, cfg.time_dim)
        )
        dims = (cfg.latent, *cfg.enc_dims)
        self.down = nn.ModuleList(
            [_Block(dims[i], dims[i + 1], cfg.time_dim) for i in range(len(dims) - 1)]
        )
        ups = []
        c = dims[-1]
        for skip in reversed(dims[1:-1]):  # expanding path: concat the matching level
            ups.append(_Block(c + skip, skip, cfg.time_dim))
            c = skip
        self.up = nn.ModuleList(ups)
        self.out = nn.Linear(c + cfg.latent, cfg.emb_dim)

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        temb = self.time_mlp(timestep_embedding(t, self.time_dim))
        h, skips = z, []
        for block in self.down:
            h = block(h, temb)
            skips.append(h)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            h = block(torch.cat([h, skip], dim=1), temb)
        return self.out(torch.cat([h, z], dim=1))


class LatentDecoder(nn.Module):
    """DAE baseline's decoder: embedding → clean latent."""

    def __init__(self, cfg: DACLConfig) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(cfg.emb_dim, 128), nn.SiLU(), nn.Linear(128, cfg.latent))

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return self.net(e)


class DACLEmbedder(nn.Module):
    """Deployable DACL: standardized scattering features → VAE μ → Enc(μ, t) → embedding.

    ``features`` (B, F) raw scattering features (standardized inside with the training
    mean/std buffers); ``t`` (B,) int64 table index (DACL's t = 1 is index 0).
    """

    def __init__(
        self, vae: VAE, encoder: LatentUNetEncoder, mean: torch.Tensor, std: torch.Tensor
    ) -> None:
        super().__init__()
        self.vae, self.encoder = vae, encoder
        self.register_buffer("mean", mean.float().clone())
        self.register_buffer("std", std.float().clone())

    def forward(self, features: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        mu, _ = self.vae.encode((features - self.mean) / self.std)
        return self.encoder(mu, t)
