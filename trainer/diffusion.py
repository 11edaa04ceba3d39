"""DDPM noise schedule as small pure functions, separate from the networks.

Math in float64, tables handed out as float32. ``t`` indexes the tables, 0 … T-1.
Reference: Ho J, Jain A, Abbeel P. Denoising Diffusion Probabilistic Models. NeurIPS 2020.
"""

from __future__ import annotations

import numpy as np
import torch

#: Largest β of a schedule (as in Nichol & Dhariwal 2021): ᾱ stays > 0 and √(1 − β) real.
MAX_BETA = 0.999


def linear_betas(n_steps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """DDPM's linear schedule, scaled so any ``n_steps`` spans the same total noise as 1000;
    β is capped at :data:`MAX_BETA` (with 20 steps or fewer the scaled β would reach 1)."""
    scale = 1000.0 / n_steps
    betas = np.linspace(scale * beta_start, scale * beta_end, n_steps, dtype=np.float64)
    return np.minimum(betas, MAX_BETA)


def alphas_cumprod(betas: np.ndarray) -> np.ndarray:
    """ᾱ_t = ∏_{s≤t} (1 − β_s), float64."""
    return np.cumprod(1.0 - betas)


def add_noise(
    x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, abar: torch.Tensor
) -> torch.Tensor:
    """Forward process ``x_t = sqrt(ᾱ_t) x_0 + sqrt(1 − ᾱ_t) ε``.

    ``x0``/``noise``: (B, C, L); ``t``: (B,) int64; ``abar``: (T,) float32 on the same device.
    """
    a = abar.index_select(0, t).view(-1, *([1] * (x0.dim() - 1)))
    return a.sqrt() * x0 + (1.0 - a).sqrt() * noise
