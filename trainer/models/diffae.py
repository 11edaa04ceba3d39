"""Diffusion autoencoder: an ε-predicting U-Net conditioned on t and an LRU semantic embedding.

The U-Net is DiffECG's :class:`~trainer.models.unet1d.UNet1d` (same blocks); its time
embedding gains an additive projection of the semantic embedding ``z`` of the *clean*
signal, so every residual block is conditioned on both. Encoder and U-Net train together
on ``MSE(ε̂(x_t, t, z(x_0)), ε)`` (the DiffAE-LRU poster).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from trainer.models.lru import LRUConfig, LRUEncoder
from trainer.models.unet1d import UNet1d, UNetConfig, timestep_embedding


class DiffAE(nn.Module):
    """``(x_t, t, x_0) → ε̂`` with ``z = LRUEncoder(x_0)`` conditioning the U-Net."""

    def __init__(self, unet_cfg: UNetConfig, lru_cfg: LRUConfig) -> None:
        super().__init__()
        self.unet = UNet1d(unet_cfg)
        self.encoder = LRUEncoder(lru_cfg)
        d = unet_cfg.time_dim
        self.z_proj = nn.Sequential(nn.Linear(lru_cfg.emb_dim, d), nn.SiLU(), nn.Linear(d, d))

    def denoise(self, x_t: torch.Tensor, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        enc, unet = self.unet.encoder, self.unet
        temb = enc.time_mlp(timestep_embedding(t, enc.time_dim)) + self.z_proj(z)
        h = enc.stem(x_t)
        skips = []
        for level, down in zip(enc.levels, enc.downs):
            h = level(h, temb)
            skips.append(h)
            h = down(h)
        for layer in enc.bottleneck:
            h = layer(h, temb)
        for i, (dec, up) in enumerate(zip(unet.dec, unet.ups)):
            h = dec(torch.cat([h, skips[-1 - i]], dim=1), temb)
            if not isinstance(up, nn.Identity):
                h = up(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return unet.head(h)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        return self.denoise(x_t, t, self.encoder(x0))


class LRUEmbedder(nn.Module):
    """Deployable embedder with the SDK's uniform interface ``(x, t, noise) → embedding``.

    ``t`` and ``noise`` are accepted and ignored: the semantic encoder sees the clean window.
    They enter the graph only through a term multiplied by zero so ONNX keeps them as inputs.
    """

    def __init__(self, encoder: LRUEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        unused = t.to(x.dtype)[:, None] * 0.0 + noise[:, 0, :1] * 0.0  # (B, 1)
        return self.encoder(x) + unused
