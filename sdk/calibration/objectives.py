"""Objectives that score a candidate diffusion step t from a user's calibration windows.

DiffECG's γ (Section 3.4 of the paper): train the head on the candidate t's features by
plain gradient descent from zero and measure, at update r, the loss decrease per unit of
parameter change, ``γ = (L(ω_r) − L(ω_{r+1})) / ‖ω_{r+1} − ω_r‖``; larger means features the
head learns from quickly. ΔAcc, ΔF1 and ΔLoss (after r updates against the start) are the
alternatives of the paper's ablation. Features are standardized first (and scaled by 1/√D),
so candidates with different feature scales and widths are comparable.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from sdk.errors import ConfigError
from sdk.head import softmax


def _standardize(x: np.ndarray) -> np.ndarray:
    """Each dimension to zero mean and unit variance, then all scaled by 1/√D so a window's
    squared norm is about 1 whatever the width D: with D ≈ 1,000 features and a few dozen
    windows, unscaled features let one update at ``lr`` saturate the softmax, and every t
    then scores the same (γ = 0)."""
    x = np.asarray(x, dtype=np.float64)
    z = (x - x.mean(axis=0)) / np.maximum(x.std(axis=0), 1e-6)
    return z / np.sqrt(max(z.shape[1], 1)) if z.ndim == 2 else z


def _loss_grad(
    w: np.ndarray, b: np.ndarray, x: np.ndarray, onehot: np.ndarray
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    p = softmax(x @ w + b)
    loss = float(-np.mean(np.sum(onehot * np.log(p + 1e-12), axis=1)))
    err = (p - onehot) / x.shape[0]
    return loss, x.T @ err, err.sum(axis=0), p


def descent_trajectory(
    features: np.ndarray, labels: np.ndarray, n_classes: int, *, updates: int, lr: float = 0.5
) -> tuple[list[float], list[np.ndarray], list[np.ndarray]]:
    """Losses, flat parameters and probabilities at ω_0 … ω_updates (descent from 0)."""
    x = _standardize(features)
    y = np.asarray(labels, dtype=np.int64)
    if (
        x.ndim != 2
        or y.shape != (x.shape[0],)
        or y.min(initial=0) < 0
        or y.max(initial=0) >= n_classes
    ):
        raise ConfigError(
            "features must be (N, D) and labels (N,) in range(n_classes)", field="labels"
        )
    onehot = np.eye(n_classes)[y]
    w, b = np.zeros((x.shape[1], n_classes)), np.zeros(n_classes)
    losses, params, probs = [], [], []
    for step in range(updates + 1):
        loss, gw, gb, p = _loss_grad(w, b, x, onehot)
        losses.append(loss)
        params.append(np.concatenate([w.ravel(), b]))
        probs.append(p)
        if step < updates:
            w, b = w - lr * gw, b - lr * gb
    return losses, params, probs


def gamma(
    features: np.ndarray, labels: np.ndarray, n_classes: int, *, r: int = 5, lr: float = 0.5
) -> float:
    """DiffECG's γ at update ``r`` (see the module docstring)."""
    losses, params, _ = descent_trajectory(features, labels, n_classes, updates=r + 1, lr=lr)
    step = float(np.linalg.norm(params[r + 1] - params[r]))
    return (losses[r] - losses[r + 1]) / step if step > 0 else 0.0


def _macro_f1(y: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    f1 = []
    for k in range(n_classes):
        tp = np.sum((pred == k) & (y == k))
        denom = np.sum(pred == k) + np.sum(y == k)
        if np.sum(y == k):
            f1.append(2 * tp / denom)
    return float(np.mean(f1)) if f1 else 0.0


def delta_objective(kind: str) -> Callable[..., float]:
    """ΔAcc, ΔF1 or ΔLoss between ω_0 and ω_r (larger is better: ΔLoss is the decrease)."""
    if kind not in ("acc", "f1", "loss"):
        raise ConfigError(
            f"objective {kind!r} unknown; expected one of ['acc', 'f1', 'loss']", field="kind"
        )

    def score(
        features: np.ndarray, labels: np.ndarray, n_classes: int, *, r: int = 5, lr: float = 0.5
    ) -> float:
        losses, _, probs = descent_trajectory(features, labels, n_classes, updates=r, lr=lr)
        y = np.asarray(labels)
        if kind == "loss":
            return losses[0] - losses[r]
        before, after = probs[0].argmax(axis=1), probs[r].argmax(axis=1)
        if kind == "acc":
            return float(np.mean(after == y) - np.mean(before == y))
        return _macro_f1(y, after, n_classes) - _macro_f1(y, before, n_classes)

    return score


#: Selectable objectives by name; ``gamma`` is the default.
OBJECTIVES: dict[str, Callable[..., float]] = {
    "gamma": gamma,
    "delta_acc": delta_objective("acc"),
    "delta_f1": delta_objective("f1"),
    "delta_loss": delta_objective("loss"),
}
