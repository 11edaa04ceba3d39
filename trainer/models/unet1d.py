"""1D U-Net ε-predictor of DiffECG and its feature extractor.

The network maps ``(x_t, t)`` to predicted noise and knows nothing of betas. The
feature extractor kept for downstream work is the contracting path plus the two
attention bottleneck layers (DiffECG's architecture-search result); the decoder is
dropped. The extractor module takes the clean window, the diffusion step and a fixed
noise tensor, so ``t`` is an input of the exported graph and can change on a device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn
from torch.nn import functional as F

from trainer.checks import check_range
from trainer.errors import ConfigError


@dataclass
class UNetConfig:
    """Geometry of the U-Net; saved beside every checkpoint."""

    in_channels: int = 1
    dims: tuple[int, ...] = (16, 32, 64, 64)
    kernel_size: int = 7
    time_dim: int = 64
    groups: int = 8
    attn_heads: int = 4

    def __post_init__(self) -> None:
        self.dims = tuple(int(d) for d in self.dims)
        check_range(
            "model",
            self,
            positive=("in_channels", "dims", "kernel_size", "time_dim", "groups", "attn_heads"),
        )
        if self.time_dim % 2:
            raise ConfigError(f"time_dim must be even, got {self.time_dim}", key="time_dim")
        if len(self.dims) < 2:
            raise ConfigError("dims needs at least two levels", key="dims")
        if any(d % self.groups for d in self.dims):
            raise ConfigError(
                f"every entry of dims {self.dims} must divide by groups={self.groups}", key="dims"
            )
        if self.dims[-1] % self.attn_heads:
            raise ConfigError("dims[-1] must divide by attn_heads", key="attn_heads")
        if self.kernel_size % 2 == 0:
            raise ConfigError("kernel_size must be odd", key="kernel_size")

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.dims) - 1)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of integer steps: (B,) → (B, dim)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half
    )
    args = t.to(torch.float32)[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], dim=-1)


class ResBlock(nn.Module):
    """GroupNorm → SiLU → Conv, time-conditioned by an additive shift, twice, plus a residual."""

    def __init__(
        self, c_in: int, c_out: int, *, time_dim: int, kernel_size: int, groups: int
    ) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.norm1 = nn.GroupNorm(groups if c_in % groups == 0 else 1, c_in)
        self.conv1 = nn.Conv1d(c_in, c_out, kernel_size, padding=pad)
        self.time = nn.Linear(time_dim, c_out)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.conv2 = nn.Conv1d(c_out, c_out, kernel_size, padding=pad)
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, C_out, L)
        h = h + self.time(temb)[:, :, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return h + self.skip(x)


class SelfAttention1d(nn.Module):
    """Multi-head self-attention over time with a residual, written with plain ops for ONNX."""

    def __init__(self, channels: int, heads: int, groups: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.out = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, n = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, n).unbind(1)
        scale = (c // self.heads) ** -0.5
        attn = torch.softmax(torch.einsum("bhdi,bhdj->bhij", q * scale, k), dim=-1)  # (B, H, N, N)
        h = torch.einsum("bhij,bhdj->bhdi", attn, v).reshape(b, c, n)
        return x + self.out(h)


class BottleneckLayer(nn.Module):
    """A residual block followed by self-attention: one of the two bottleneck layers."""

    def __init__(self, channels: int, cfg: UNetConfig) -> None:
        super().__init__()
        self.res = ResBlock(
            channels,
            channels,
            time_dim=cfg.time_dim,
            kernel_size=cfg.kernel_size,
            groups=cfg.groups,
        )
        self.attn = SelfAttention1d(channels, cfg.attn_heads, cfg.groups)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        return self.attn(self.res(x, temb))


class Encoder(nn.Module):
    """Contracting path + two attention bottleneck layers; returns every level's output."""

    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        block = partial(
            ResBlock, time_dim=cfg.time_dim, kernel_size=cfg.kernel_size, groups=cfg.groups
        )
        self.time_mlp = nn.Sequential(
            nn.Linear(cfg.time_dim, cfg.time_dim), nn.SiLU(), nn.Linear(cfg.time_dim, cfg.time_dim)
        )
        self.time_dim = cfg.time_dim
        self.stem = nn.Conv1d(
            cfg.in_channels, cfg.dims[0], cfg.kernel_size, padding=cfg.kernel_size // 2
        )
        self.levels = nn.ModuleList()
        self.downs = nn.ModuleList()
        c_prev = cfg.dims[0]
        for i, c in enumerate(cfg.dims):
            self.levels.append(block(c_prev, c))
            is_last = i == len(cfg.dims) - 1
            self.downs.append(nn.Identity() if is_last else nn.Conv1d(c, c, 4, stride=2, padding=1))
            c_prev = c
        self.bottleneck = nn.ModuleList(
            [BottleneckLayer(c_prev, cfg), BottleneckLayer(c_prev, cfg)]
        )

    def forward(
        self, x_t: torch.Tensor, t: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        temb = self.time_mlp(timestep_embedding(t, self.time_dim))  # (B, E)
        h = self.stem(x_t)  # (B, C0, L)
        skips = []
        for level, down in zip(self.levels, self.downs):
            h = level(h, temb)
            skips.append(h)
            h = down(h)
        for layer in self.bottleneck:
            h = layer(h, temb)  # (B, C_last, L / 2^(levels-1))
        return skips, h, temb


class UNet1d(nn.Module):
    """ε-predictor ``(x_t (B, C, L), t (B,)) -> ε̂ (B, C, L)``; L divides by 2^(levels-1)."""

    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        block = partial(
            ResBlock, time_dim=cfg.time_dim, kernel_size=cfg.kernel_size, groups=cfg.groups
        )
        self.ups = nn.ModuleList()
        self.dec = nn.ModuleList()
        c_prev = cfg.dims[-1]
        for i in reversed(range(len(cfg.dims))):
            c = cfg.dims[i]
            self.dec.append(block(c_prev + c, c))
            self.ups.append(
                nn.Identity() if i == 0 else nn.Conv1d(c, cfg.dims[i - 1], 3, padding=1)
            )
            c_prev = c if i == 0 else cfg.dims[i - 1]
        self.head = nn.Sequential(
            nn.GroupNorm(cfg.groups, cfg.dims[0]),
            nn.SiLU(),
            nn.Conv1d(cfg.dims[0], cfg.in_channels, 1),
        )

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        factor = self.cfg.downsample_factor
        if x_t.shape[-1] % factor:
            raise ValueError(f"length {x_t.shape[-1]} must divide by {factor}")
        skips, h, temb = self.encoder(x_t, t)
        for i, (dec, up) in enumerate(zip(self.dec, self.ups)):
            h = dec(torch.cat([h, skips[-1 - i]], dim=1), temb)
            if not isinstance(up, nn.Identity):
                h = up(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.head(h)


def pool_features(skips: list[torch.Tensor], bottleneck: torch.Tensor) -> torch.Tensor:
    """Frozen-feature vector: time-mean of every level, mean and max of the bottleneck."""
    pooled = [s.mean(dim=-1) for s in skips]
    pooled += [bottleneck.mean(dim=-1), bottleneck.amax(dim=-1)]
    return torch.cat(pooled, dim=-1)  # (B, sum(dims) + 2 * dims[-1])


def feature_dim(cfg: UNetConfig) -> int:
    return sum(cfg.dims) + 2 * cfg.dims[-1]


class DiffusionFeatureExtractor(nn.Module):
    """Deployable extractor: ``(x0, t, noise) -> embedding`` (and ``tokens`` when
    ``n_tokens`` > 0: the bottleneck map pooled to ``n_tokens`` positions, for fusion).

    ``x0``: (B, C, L) standardized windows; ``t``: (B,) int64 steps; ``noise``: (B, C, L)
    the fixed inference noise. The ᾱ table is a buffer, so the graph noises the input
    itself and ``t`` stays a runtime input.
    """

    def __init__(self, encoder: Encoder, abar: torch.Tensor, n_tokens: int = 0) -> None:
        super().__init__()
        self.encoder = encoder
        self.n_tokens = n_tokens
        self.register_buffer("abar", abar.to(torch.float32).clone())

    def forward(
        self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        a = self.abar.index_select(0, t).view(-1, 1, 1)
        x_t = a.sqrt() * x0 + (1.0 - a).sqrt() * noise
        skips, h, _ = self.encoder(x_t, t)
        if not self.n_tokens:
            return pool_features(skips, h)
        # the bottleneck map, average-pooled to a fixed number of tokens for cross-modal fusion
        # (a reshape-mean rather than adaptive pooling, which ONNX cannot export dynamically)
        if not torch.jit.is_tracing() and h.shape[-1] % self.n_tokens:
            raise ValueError(f"bottleneck length {h.shape[-1]} must divide by {self.n_tokens}")
        tokens = h.reshape(h.shape[0], h.shape[1], self.n_tokens, -1).mean(-1)  # (B, C, n)
        return pool_features(skips, h), tokens
