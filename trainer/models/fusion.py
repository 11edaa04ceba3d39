"""Cross-modal attention fusion of DiffECG's per-modality feature maps.

Each modality's extractor gives a bottleneck map pooled to a few tokens, (B, C_m, N_m).
Tokens are projected to a shared width, tagged with a learned modality embedding and
stacked; one pre-norm multi-head self-attention layer (every token attends to every
modality's tokens) and a feed-forward layer mix them; the output is the mean over each
modality's tokens, concatenated: (B, M · d). Written with plain ops so it exports to ONNX.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class FusionConfig:
    """Token channels and counts per modality (in modality order) and the fusion width."""

    channels: tuple[int, ...]
    tokens: tuple[int, ...]
    width: int = 64
    heads: int = 4

    def __post_init__(self) -> None:
        self.channels, self.tokens = tuple(self.channels), tuple(self.tokens)
        if len(self.channels) != len(self.tokens) or self.width % self.heads:
            raise ValueError("channels and tokens must pair up; width must divide by heads")

    @property
    def out_dim(self) -> int:
        return self.width * len(self.channels)


class CrossModalFusion(nn.Module):
    """``(tokens_1 (B, C_1, N_1), …, tokens_M) -> fused (B, M · width)``."""

    def __init__(self, cfg: FusionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.width
        self.proj = nn.ModuleList([nn.Linear(c, d) for c in cfg.channels])
        self.modality = nn.Parameter(torch.zeros(len(cfg.channels), d))
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.ffn = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, *tokens: torch.Tensor) -> torch.Tensor:
        parts = [
            proj(x.transpose(1, 2)) + self.modality[i]  # (B, N_i, d)
            for i, (proj, x) in enumerate(zip(self.proj, tokens))
        ]
        h = torch.cat(parts, dim=1)  # (B, N, d)
        b, n, d = h.shape
        heads = self.cfg.heads
        q, k, v = self.qkv(self.norm1(h)).reshape(b, n, 3, heads, d // heads).unbind(2)
        attn = torch.softmax(torch.einsum("bihc,bjhc->bhij", q, k) * (d // heads) ** -0.5, -1)
        h = h + self.out(torch.einsum("bhij,bjhc->bihc", attn, v).reshape(b, n, d))
        h = h + self.ffn(self.norm2(h))
        pooled, start = [], 0
        for count in self.cfg.tokens:
            pooled.append(h[:, start : start + count].mean(dim=1))
            start += count
        return torch.cat(pooled, dim=-1)  # (B, M · d)
