"""Denoising metrics per window (SSD, MAD, PRD, cosine similarity, SNR, RMSE).

All take ``reference`` and ``output`` of shape (..., L) and reduce the last axis; each window
is compared after removing its own mean (band-passed signals have no meaningful offset).
"""

from __future__ import annotations

import numpy as np

METRICS = ("ssd", "mad", "prd", "cos", "snr_out", "snr_in", "snr_imp", "rmse")


def _centred(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x - x.mean(axis=-1, keepdims=True)


def window_metrics(
    reference: np.ndarray, output: np.ndarray, noisy: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Per-window metrics; ``noisy`` (the input) adds input SNR and SNR improvement.

    SSD = Σ(y−r)² (units²), MAD = max|y−r|, PRD = 100·sqrt(Σ(y−r)²/Σr²) (%), cos = cosine
    similarity (%), SNR = 10·log10(Σr²/Σ(y−r)²) (dB), RMSE = sqrt(mean (y−r)²).
    """
    r, y = _centred(reference), _centred(output)
    err = np.square(y - r).sum(-1)
    sig = np.square(r).sum(-1)
    out = {
        "ssd": err,
        "mad": np.abs(y - r).max(-1),
        "prd": 100.0 * np.sqrt(err / np.maximum(sig, 1e-20)),
        "cos": 100.0 * (r * y).sum(-1) / np.maximum(np.sqrt(sig * np.square(y).sum(-1)), 1e-20),
        "snr_out": 10.0 * np.log10(np.maximum(sig, 1e-20) / np.maximum(err, 1e-20)),
        "rmse": np.sqrt(err / r.shape[-1]),
    }
    if noisy is not None:
        e_in = np.square(_centred(noisy) - r).sum(-1)
        out["snr_in"] = 10.0 * np.log10(np.maximum(sig, 1e-20) / np.maximum(e_in, 1e-20))
        out["snr_imp"] = out["snr_out"] - out["snr_in"]
    return out


def summarize(per_window: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Mean and standard deviation of each metric over windows."""
    return {
        k: {"mean": float(np.mean(v)), "std": float(np.std(v)), "n": int(np.size(v))}
        for k, v in per_window.items()
    }
