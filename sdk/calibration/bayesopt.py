"""A small Bayesian optimizer for integer boxes: Gaussian process + Expected Improvement.

Written for on-device calibration of the diffusion step t per modality: a handful of
dimensions, a few dozen expensive evaluations, numpy/scipy only.

- Surrogate: GP with an RBF (squared-exponential) kernel with one length scale per
  dimension, a signal variance and a noise variance, fit by maximizing the log marginal
  likelihood (Rasmussen & Williams, *Gaussian Processes for Machine Learning*, 2006, §5.4).
- Acquisition: Expected Improvement (Jones, Schonlau & Welch, J Global Optim 13:455, 1998),
  maximized exhaustively over the integer box (or a large sample of it), never proposing a
  point twice.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.linalg import cho_factor, cho_solve
from scipy.optimize import minimize
from scipy.special import erf

from sdk.errors import ConfigError

#: Boxes with more integer points than this are searched on a random sample of this size.
MAX_CANDIDATES = 50_000
_JITTER = 1e-9


@dataclass(frozen=True)
class GPHyperparameters:
    """Kernel ``k(a, b) = signal_var · exp(−½ Σ ((a−b)/length_scale)²)`` plus ``noise_var``
    on the diagonal, in the GP's own units (inputs in the unit box, y standardized)."""

    length_scale: tuple[float, ...]
    signal_var: float
    noise_var: float


def rbf(a: np.ndarray, b: np.ndarray, length_scale: np.ndarray, signal_var: float) -> np.ndarray:
    """RBF kernel matrix between rows of ``a`` (n, d) and ``b`` (m, d)."""
    d = (a[:, None, :] - b[None, :, :]) / length_scale
    return signal_var * np.exp(-0.5 * np.sum(d * d, axis=-1))


class GaussianProcess:
    """GP regression on (n, d) inputs in [0, 1]^d; ``y`` is standardized internally."""

    def __init__(
        self, x: np.ndarray, y: np.ndarray, hyper: GPHyperparameters | None = None
    ) -> None:
        self.x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        y = np.asarray(y, dtype=np.float64)
        if y.shape != (self.x.shape[0],) or not np.isfinite(y).all():
            raise ConfigError(f"y must be finite with shape ({self.x.shape[0]},)", field="y")
        # scaled by the largest magnitude first: the std of values near the float range
        # overflows (inf, then NaN predictions) or underflows to 0 (read as constant)
        scale = float(np.max(np.abs(y))) or 1.0
        self.y_mean = float((y / scale).mean()) * scale
        self.y_std = float((y / scale).std()) * scale
        if not (math.isfinite(self.y_std) and self.y_std > 0.0):
            self.y_std = 1.0
        self.y = (y - self.y_mean) / self.y_std
        self.hyper = hyper if hyper is not None else self._fit()
        self._factor()

    def _neg_log_marginal(self, log_params: np.ndarray) -> float:
        d = self.x.shape[1]
        ls, sv, nv = np.exp(log_params[:d]), np.exp(log_params[d]), np.exp(log_params[d + 1])
        k = rbf(self.x, self.x, ls, sv) + (nv + _JITTER) * np.eye(len(self.y))
        try:
            c, low = cho_factor(k, lower=True)
        except np.linalg.LinAlgError:
            return 1e25
        alpha = cho_solve((c, low), self.y)
        return float(
            0.5 * self.y @ alpha
            + np.sum(np.log(np.diag(c)))
            + 0.5 * len(self.y) * math.log(2 * math.pi)
        )

    def _fit(self) -> GPHyperparameters:
        """Maximize the log marginal likelihood from a few fixed starting points."""
        d = self.x.shape[1]
        bounds = [(math.log(0.02), math.log(5.0))] * d + [
            (math.log(0.05), math.log(20.0)),
            (math.log(1e-6), math.log(1.0)),
        ]
        best = None
        for ls0, nv0 in ((0.2, 1e-2), (0.5, 1e-3), (0.1, 1e-1)):
            start = np.array([math.log(ls0)] * d + [0.0, math.log(nv0)])
            res = minimize(self._neg_log_marginal, start, method="L-BFGS-B", bounds=bounds)
            if best is None or res.fun < best.fun:
                best = res
        assert best is not None
        p = np.exp(best.x)
        return GPHyperparameters(tuple(float(v) for v in p[:d]), float(p[d]), float(p[d + 1]))

    def _factor(self) -> None:
        h = self.hyper
        k = rbf(self.x, self.x, np.asarray(h.length_scale), h.signal_var)
        k += (h.noise_var + _JITTER) * np.eye(len(self.y))
        self._chol = cho_factor(k, lower=True)
        self._alpha = cho_solve(self._chol, self.y)

    def predict(self, xq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation of the latent function at ``xq`` (m, d),
        in the units of the original ``y``."""
        xq = np.atleast_2d(np.asarray(xq, dtype=np.float64))
        h = self.hyper
        ks = rbf(xq, self.x, np.asarray(h.length_scale), h.signal_var)  # (m, n)
        mean = ks @ self._alpha
        v = cho_solve(self._chol, ks.T)
        var = np.maximum(h.signal_var - np.sum(ks * v.T, axis=1), 0.0)
        return self.y_mean + self.y_std * mean, self.y_std * np.sqrt(var)


def expected_improvement(
    mean: np.ndarray, std: np.ndarray, best: float, xi: float = 0.0
) -> np.ndarray:
    """EI of maximization: E[max(f − best − xi, 0)] under N(mean, std²); 0 where std is 0 and
    the mean does not improve."""
    mean, std = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
    gain = mean - best - xi
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(std > 0, gain / std, 0.0)
    pdf = np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1.0 + erf(z / math.sqrt(2.0)))
    ei = np.where(std > 0, gain * cdf + std * pdf, np.maximum(gain, 0.0))
    return np.maximum(ei, 0.0)


@dataclass
class OptimizeResult:
    """Best point found, every evaluation in order, and why the search stopped: ``budget``,
    ``cancelled``, ``time``, ``exhausted`` (every candidate tried) or ``no_finite_value``
    (the objective gave none; ``best_x`` is then the first point evaluated);
    :meth:`sdk.calibration.Calibrator.calibrate` adds ``extractor_budget`` (its budget of
    extractor runs would have been exceeded)."""

    best_x: tuple[int, ...]
    best_y: float
    xs: list[tuple[int, ...]] = field(default_factory=list)
    ys: list[float] = field(default_factory=list)
    stopped: str = "budget"
    seconds: float = 0.0

    @property
    def evaluations(self) -> int:
        return len(self.ys)


def _candidates(bounds: Sequence[tuple[int, int]], rng: np.random.Generator) -> np.ndarray:
    sizes = [hi - lo + 1 for lo, hi in bounds]
    if math.prod(sizes) <= MAX_CANDIDATES:
        return np.array(
            list(itertools.product(*(range(lo, hi + 1) for lo, hi in bounds))), dtype=np.int64
        )
    cols = [rng.integers(lo, hi + 1, MAX_CANDIDATES) for lo, hi in bounds]
    return np.unique(np.stack(cols, axis=1), axis=0)


def _initial_design(
    bounds: Sequence[tuple[int, int]], n: int, rng: np.random.Generator
) -> np.ndarray:
    """Stratified (Latin hypercube) integer points: each dimension's range cut into n strata."""
    cols = []
    for lo, hi in bounds:
        edges = np.linspace(lo, hi + 1, n + 1)
        pts = np.floor(edges[:-1] + rng.uniform(0, 1, n) * np.diff(edges)).astype(np.int64)
        cols.append(rng.permutation(np.clip(pts, lo, hi)))
    return np.stack(cols, axis=1)


def maximize_integer(
    objective: Callable[[tuple[int, ...]], float],
    bounds: Sequence[tuple[int, int]],
    *,
    n_init: int = 5,
    max_evals: int = 30,
    max_seconds: float | None = None,
    seed: int = 0,
    progress: Callable[[int, tuple[int, ...], float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> OptimizeResult:
    """Maximize ``objective`` over the integer box ``bounds`` [(lo, hi), …] (inclusive).

    Stops after ``max_evals`` evaluations, after ``max_seconds`` of wall time (checked before
    each evaluation), when ``should_stop()`` returns True, or when every point was tried.
    ``progress(i, x, y)`` is called after each evaluation. Deterministic for a given seed.
    A non-finite value is a failed evaluation: never the best, and modelled at the worst
    finite value so the search leaves a failing region.
    """
    if not bounds or any(lo > hi for lo, hi in bounds):
        raise ConfigError(
            f"bounds must be non-empty (lo, hi) pairs with lo <= hi, got {bounds}", field="bounds"
        )
    if not all(isinstance(v, (int, np.integer)) and v >= 1 for v in (max_evals, n_init)):
        raise ConfigError(
            f"max_evals and n_init must be integers >= 1, got {max_evals!r}, {n_init!r}",
            field="max_evals",
        )
    rng = np.random.default_rng(seed)
    lo = np.array([b[0] for b in bounds], dtype=np.float64)
    span = np.array([max(b[1] - b[0], 1) for b in bounds], dtype=np.float64)
    cands = _candidates(bounds, rng)
    tried: set[tuple[int, ...]] = set()
    result = OptimizeResult(best_x=tuple(int(b[0]) for b in bounds), best_y=-math.inf)
    start = time.perf_counter()
    queue = [tuple(int(v) for v in p) for p in _initial_design(bounds, min(n_init, max_evals), rng)]
    while result.evaluations < max_evals:
        if should_stop is not None and should_stop():
            result.stopped = "cancelled"
            break
        if max_seconds is not None and time.perf_counter() - start >= max_seconds:
            result.stopped = "time"
            break
        x = queue.pop(0) if queue else _propose(result, cands, tried, lo, span)
        if x is None:
            result.stopped = "exhausted"
            break
        if x in tried:
            continue
        y = float(objective(x))
        tried.add(x)
        result.xs.append(x)
        result.ys.append(y)
        if math.isfinite(y) and y > result.best_y:  # NaN or ±inf: a failed evaluation
            result.best_x, result.best_y = x, y
        if progress is not None:
            progress(result.evaluations, x, y)
    if result.xs and not math.isfinite(result.best_y):
        result.best_x = result.xs[0]  # an evaluated point, not the box corner
        result.stopped = "no_finite_value"
    result.seconds = time.perf_counter() - start
    return result


def _propose(
    result: OptimizeResult,
    cands: np.ndarray,
    tried: set[tuple[int, ...]],
    lo: np.ndarray,
    span: np.ndarray,
) -> tuple[int, ...] | None:
    """The untried candidate of highest Expected Improvement under the GP of all results.

    Failed evaluations (non-finite values) enter the GP at the worst finite value, so the
    search moves away from a failing region instead of trying it point by point.
    """
    fresh = np.array([tuple(c) not in tried for c in cands.tolist()])
    if not fresh.any():
        return None
    pool = cands[fresh]
    ys = np.asarray(result.ys, dtype=np.float64)
    finite = np.isfinite(ys)
    if not finite.any():  # nothing to model yet: the next untried candidate
        return tuple(int(v) for v in pool[0])
    x = (np.asarray(result.xs, dtype=np.float64) - lo) / span
    gp = GaussianProcess(x, np.where(finite, ys, ys[finite].min()))
    mean, std = gp.predict((pool - lo) / span)
    ei = expected_improvement(mean, std, result.best_y)
    return tuple(int(v) for v in pool[int(np.argmax(ei))])
