"""CD-ECGNet: contrastive disentanglement denoiser for 1 to 12 leads (METHODS.md §4).

- ``E_ECG`` (content code c) and ``E_noise`` (noise code n): multi-scale 1D convolutions with
  squeeze-and-excitation and residual connections; ``E_ECG`` downsamples (U-Net encoder).
- ``E_lead``: kernel-1 convolutions over the time axis of the permuted input (one feature
  vector per lead; leads never mix), giving F (B, leads, d).
- ``D_ECG``: 1D U-Net upsampling, each step a linear interpolation and two 3-tap convolutions.
- ``Dis``: least-squares discriminator on content codes.

Two adaptations, both stated in the model card: the decoder predicts a correction added to
the input, gated per lead by a sigmoid of F (a clean lead can pass through unchanged), and
E_noise is trained by reconstructing the noisy input as D(c) + H(n) (the paper gives it no
loss of its own). Only E_ECG, E_lead and D_ECG run on the device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from trainer.checks import check_range
from trainer.errors import ConfigError


@dataclass
class CDConfig:
    """Architecture of CD-ECGNet; ``leads`` is configuration (1 for straps … 12)."""

    leads: int = 1
    window: int = 1280
    stem: int = 16
    dims: tuple[int, ...] = (16, 24, 32)
    kernels: tuple[int, ...] = (3, 9)
    noise_dim: int = 8
    lead_hidden: int = 64
    lead_dim: int = 32
    se_reduction: int = 4

    def __post_init__(self) -> None:
        self.dims = tuple(int(d) for d in self.dims)
        self.kernels = tuple(int(k) for k in self.kernels)
        check_range(
            "model",
            self,
            positive=(
                "window",
                "stem",
                "dims",
                "kernels",
                "noise_dim",
                "lead_hidden",
                "lead_dim",
                "se_reduction",
            ),
        )
        if not 1 <= self.leads <= 12:
            raise ConfigError(f"model.leads must lie in 1..12, got {self.leads}", key="leads")
        if self.window % (2 ** len(self.dims)):
            raise ConfigError(
                f"model.window ({self.window}) must be divisible by 2**len(dims)", key="window"
            )
        if any(k % 2 == 0 for k in self.kernels) or not self.kernels:
            raise ConfigError("model.kernels must be odd sizes", key="kernels")


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        hidden = max(4, channels // reduction)
        self.fc1 = nn.Conv1d(channels, hidden, 1)
        self.fc2 = nn.Conv1d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=-1, keepdim=True)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


class MultiScaleBlock(nn.Module):
    """Parallel convolutions of several kernel sizes, concatenated, SE, residual."""

    def __init__(self, channels: int, kernels: tuple[int, ...], reduction: int) -> None:
        super().__init__()
        width = channels // len(kernels)
        widths = [width] * (len(kernels) - 1) + [channels - width * (len(kernels) - 1)]
        self.branches = nn.ModuleList(
            nn.Conv1d(channels, w, k, padding=k // 2) for w, k in zip(widths, kernels)
        )
        self.norm = nn.BatchNorm1d(channels)
        self.se = SqueezeExcite(channels, reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([b(x) for b in self.branches], dim=1)
        return F.relu(x + self.se(F.relu(self.norm(y))))


class Encoder(nn.Module):
    """Stem + (strided conv down, multi-scale block) per level; returns every level's output."""

    def __init__(self, cfg: CDConfig, dims: tuple[int, ...], stem: int, down: bool) -> None:
        super().__init__()
        self.stem = nn.Conv1d(cfg.leads, stem, 7, padding=3)
        self.levels = nn.ModuleList()
        prev = stem
        for d in dims:
            self.levels.append(
                nn.Sequential(
                    nn.Conv1d(prev, d, 4 if down else 3, stride=2 if down else 1, padding=1),
                    nn.ReLU(),
                    MultiScaleBlock(d, cfg.kernels, cfg.se_reduction),
                )
            )
            prev = d

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [F.relu(self.stem(x))]
        for level in self.levels:
            feats.append(level(feats[-1]))
        return feats


class LeadEncoder(nn.Module):
    """E_lead: kernel-1 convolutions on the permuted input (B, L, leads) → F (B, leads, d)."""

    def __init__(self, cfg: CDConfig) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(cfg.window, cfg.lead_hidden, 1)
        self.conv2 = nn.Conv1d(cfg.lead_hidden, cfg.lead_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv1(x.transpose(1, 2)))  # (B, hidden, leads)
        return self.conv2(h).transpose(1, 2)  # (B, leads, d)


class Decoder(nn.Module):
    """D_ECG: per level, linear ×2 interpolation, concat the skip, two 3-tap convolutions."""

    def __init__(self, cfg: CDConfig) -> None:
        super().__init__()
        skips = [cfg.stem, *cfg.dims[:-1]]
        self.ups = nn.ModuleList()
        prev = cfg.dims[-1]
        for skip in reversed(skips):
            self.ups.append(
                nn.Sequential(
                    nn.Conv1d(prev + skip, skip, 3, padding=1),
                    nn.ReLU(),
                    nn.Conv1d(skip, skip, 3, padding=1),
                    nn.ReLU(),
                )
            )
            prev = skip
        self.out = nn.Conv1d(prev, cfg.leads, 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        h = feats[-1]
        for up, skip in zip(self.ups, reversed(feats[:-1])):
            h = F.interpolate(h, size=skip.shape[-1], mode="linear", align_corners=False)
            h = up(torch.cat([h, skip], dim=1))
        return self.out(h)


class Discriminator(nn.Module):
    """Least-squares discriminator on content codes (B, C, L/2**levels) → (B,)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.fc = nn.Linear(channels, 1)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        return self.fc(F.leaky_relu(self.conv(c), 0.2).mean(dim=-1)).squeeze(-1)


class CDECGNet(nn.Module):
    """The generator side: E_ECG, E_noise (+ noise head), E_lead, D_ECG."""

    def __init__(self, cfg: CDConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.e_ecg = Encoder(cfg, cfg.dims, cfg.stem, down=True)
        self.e_noise = Encoder(cfg, (cfg.noise_dim,), cfg.noise_dim, down=False)
        self.noise_head = nn.Conv1d(cfg.noise_dim, cfg.leads, 1)
        self.e_lead = LeadEncoder(cfg)
        self.gate = nn.Linear(cfg.lead_dim, 1)
        self.d_ecg = Decoder(cfg)

    def encode(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Content features (every level; the last is c) and lead features F."""
        return self.e_ecg(x), self.e_lead(x)

    def decode(self, x: torch.Tensor, feats: list[torch.Tensor], lead: torch.Tensor):
        gate = torch.sigmoid(self.gate(lead))  # (B, leads, 1)
        return x + gate * self.d_ecg(feats)

    def noise_of(self, x: torch.Tensor) -> torch.Tensor:
        """H(E_noise(x)): the noise part of ``x`` (training only)."""
        return self.noise_head(self.e_noise(x)[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats, lead = self.encode(x)
        return self.decode(x, feats, lead)


class Denoiser(nn.Module):
    """What is exported: standardized noisy window (B, leads, L) → denoised window."""

    def __init__(self, net: CDECGNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
