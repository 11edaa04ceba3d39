"""The classifier head: multinomial logistic regression in numpy.

Trained on frozen features in the trainer and, per user, on the device. Inputs are
standardized with the training mean and scale, which :meth:`SoftmaxHead.folded`
folds into one affine map for export (``logits = x @ W + b``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from sdk.errors import ConfigError


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (N, K) logits, stable for large values."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclass
class SoftmaxHead:
    """``p(y | x) = softmax(((x − mean) / scale) W + b)``; W (D, K), b (K,)."""

    weight: np.ndarray
    bias: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    classes: tuple[str, ...]

    def logits(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, np.float64) - self.mean) / self.scale) @ self.weight + self.bias

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """(N, D) features → (N, K) probabilities."""
        return softmax(self.logits(x))

    def folded(self) -> tuple[np.ndarray, np.ndarray]:
        """(W', b') float32 with standardization folded in: ``logits = x W' + b'``."""
        w = self.weight / self.scale[:, None]
        b = self.bias - (self.mean / self.scale) @ self.weight
        return w.astype(np.float32), b.astype(np.float32)


def _loss_and_grad(
    params: np.ndarray, x: np.ndarray, onehot: np.ndarray, sample_w: np.ndarray, l2: float
) -> tuple[float, np.ndarray]:
    d, k = x.shape[1], onehot.shape[1]
    w, b = params[: d * k].reshape(d, k), params[d * k :]
    p = softmax(x @ w + b)
    loss = -np.sum(sample_w * np.sum(onehot * np.log(p + 1e-12), axis=1)) + 0.5 * l2 * np.sum(w * w)
    err = (p - onehot) * sample_w[:, None]  # (N, K)
    grad_w = x.T @ err + l2 * w
    return float(loss), np.concatenate([grad_w.ravel(), err.sum(axis=0)])


def fit_softmax_head(
    x: np.ndarray,
    y: np.ndarray,
    classes: tuple[str, ...],
    *,
    l2: float = 1.0,
    balanced: bool = True,
    max_iter: int = 500,
) -> SoftmaxHead:
    """Fit by L-BFGS on the (class-balanced) L2-regularized cross-entropy.

    ``x`` (N, D) features, ``y`` (N,) integer class indices in ``range(len(classes))``.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ConfigError(f"x must be (N, D) and y (N,), got {x.shape} and {y.shape}", field="x")
    if y.min(initial=0) < 0 or y.max(initial=0) >= len(classes):
        raise ConfigError("labels must index classes", field="y")
    mean = x.mean(axis=0)
    scale = np.maximum(x.std(axis=0), 1e-6)
    xs = (x - mean) / scale
    k = len(classes)
    onehot = np.eye(k)[y]
    counts = np.bincount(y, minlength=k).astype(np.float64)
    per_class = (
        np.where(counts > 0, len(y) / (k * np.maximum(counts, 1)), 0.0) if balanced else np.ones(k)
    )
    sample_w = per_class[y] / len(y)
    l2_n = l2 / len(y)
    x0 = np.zeros(xs.shape[1] * k + k)
    res = minimize(
        _loss_and_grad,
        x0,
        args=(xs, onehot, sample_w, l2_n),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": max_iter},
    )
    d = xs.shape[1]
    return SoftmaxHead(res.x[: d * k].reshape(d, k), res.x[d * k :], mean, scale, tuple(classes))
