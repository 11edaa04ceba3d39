"""On-device calibration: the GP + Expected Improvement optimizer and the objectives for t."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sdk.calibration import (
    GaussianProcess,
    GPHyperparameters,
    expected_improvement,
    maximize_integer,
)
from sdk.errors import ConfigError


def test_posterior_matches_the_closed_form_on_two_points():
    x = np.array([[0.0], [1.0]])
    y = np.array([1.0, -1.0])  # already standardized: mean 0, std 1
    h = GPHyperparameters(length_scale=(0.5,), signal_var=2.0, noise_var=0.1)
    gp = GaussianProcess(x, y, h)
    xq = np.array([[0.25]])
    k = lambda a, b: 2.0 * math.exp(-0.5 * ((a - b) / 0.5) ** 2)  # noqa: E731
    kxx = np.array([[k(0, 0) + 0.1, k(0, 1)], [k(1, 0), k(1, 1) + 0.1]])
    ks = np.array([k(0.25, 0), k(0.25, 1)])
    mean = ks @ np.linalg.solve(kxx, y)
    var = k(0.25, 0.25) - ks @ np.linalg.solve(kxx, ks)
    got_mean, got_std = gp.predict(xq)
    assert got_mean[0] == pytest.approx(mean, rel=1e-6)
    assert got_std[0] == pytest.approx(math.sqrt(var), rel=1e-5)


def test_fitted_gp_interpolates_a_smooth_function():
    x = np.linspace(0, 1, 12)[:, None]
    y = np.sin(6 * x[:, 0])
    gp = GaussianProcess(x, y)
    mean, std = gp.predict(np.array([[0.37], [0.81]]))
    assert np.allclose(mean, np.sin(6 * np.array([0.37, 0.81])), atol=0.05)
    assert np.all(std < 0.1)


def test_expected_improvement_is_nonnegative_and_zero_when_certain_and_not_better():
    mean = np.array([0.0, 1.0, 2.0, 0.5])
    std = np.array([1.0, 0.0, 0.0, 0.3])
    ei = expected_improvement(mean, std, best=1.0)
    assert np.all(ei >= 0)
    assert ei[1] == 0.0  # certain, equal to the best
    assert ei[2] == pytest.approx(1.0)  # certain and better by 1
    assert ei[0] > ei[3] > 0  # uncertainty is worth something
    # closed form at mean == best: std / sqrt(2π)
    assert expected_improvement(np.array([1.0]), np.array([2.0]), 1.0)[0] == pytest.approx(
        2.0 / math.sqrt(2 * math.pi)
    )


def test_finds_a_1d_maximum_with_few_evaluations():
    f = lambda x: -((x[0] - 37) ** 2) / 400.0 + 0.1 * math.sin(x[0] / 3.0)  # noqa: E731
    grid = max(range(1, 101), key=lambda t: f((t,)))
    res = maximize_integer(f, [(1, 100)], max_evals=15, seed=0)
    assert res.evaluations <= 15
    assert f(res.best_x) >= f((grid,)) - 0.01
    assert len(set(res.xs)) == len(res.xs)  # never evaluates a point twice


def test_finds_a_3d_maximum_within_30_evaluations():
    centre = np.array([20, 35, 8])

    def f(x):
        return float(np.exp(-np.sum(((np.array(x) - centre) / 12.0) ** 2)))

    res = maximize_integer(f, [(1, 50), (1, 50), (1, 50)], max_evals=30, seed=1)
    assert res.best_y >= 0.95  # the optimum is 1.0 at the centre


def test_budgets_cancellation_and_progress():
    calls = []
    res = maximize_integer(
        lambda x: -abs(x[0] - 3),
        [(1, 10)],
        max_evals=4,
        progress=lambda i, x, y: calls.append((i, x, y)),
    )
    assert res.evaluations == 4 == len(calls) and res.stopped == "budget"
    res = maximize_integer(lambda x: 0.0, [(1, 10)], max_evals=10, should_stop=lambda: True)
    assert res.evaluations == 0 and res.stopped == "cancelled"
    res = maximize_integer(lambda x: 0.0, [(1, 10)], max_evals=10, max_seconds=0.0)
    assert res.stopped == "time"
    res = maximize_integer(lambda x: float(x[0]), [(1, 3)], max_evals=10)
    assert res.stopped == "exhausted" and res.best_x == (3,) and res.evaluations == 3
    with pytest.raises(ConfigError):
        maximize_integer(lambda x: 0.0, [(5, 1)])


def test_gamma_matches_a_hand_worked_example():
    from sdk.calibration import gamma

    # One feature (standardized: x = +1, −1), labels 0 and 1, two classes, lr = 1, r = 0.
    # ω_0 = 0: p = (.5, .5) for both samples, L_0 = ln 2 = 0.6931472.
    # ∇W = mean(x (p − y)) = mean([−.5, .5], [−.5, .5]) = [−.5, .5]; ∇b = [0, 0].
    # ω_1: W = [.5, −.5], ‖ω_1 − ω_0‖ = √.5 = 0.707107.
    # Logits ±(.5, −.5): p(true) = 1 / (1 + e^−1), L_1 = ln(1 + e^−1) = 0.3132617.
    # γ = (0.6931472 − 0.3132617) / 0.7071068 = 0.3798855 / 0.7071068 = 0.5372392.
    x = np.array([[3.0], [1.0]])  # standardizes to +1, −1
    assert gamma(x, np.array([0, 1]), 2, r=0, lr=1.0) == pytest.approx(0.5372392, abs=1e-6)


def test_objectives_prefer_informative_features():
    from sdk.calibration import OBJECTIVES

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    informative = y[:, None] * 2.0 + rng.normal(0, 1.0, (200, 4))
    noise = rng.normal(0, 1.0, (200, 4))
    for name, objective in OBJECTIVES.items():
        assert objective(informative, y, 2) > objective(noise, y, 2), name


def test_an_objective_without_finite_values_returns_a_point_it_evaluated():
    res = maximize_integer(lambda x: float("nan"), [(1, 50)], n_init=1, max_evals=3)
    assert res.stopped == "no_finite_value" and res.best_x in res.xs
    assert not math.isfinite(res.best_y)
    with pytest.raises(ConfigError):
        maximize_integer(lambda x: 0.0, [(1, 50)], max_evals=2.5)


@pytest.mark.parametrize("scale", [1e300, 1e-300])
def test_objective_scales_near_the_float_range_still_find_the_optimum(scale):
    """The std of values near 1e300 overflowed (NaN predictions: the search walked t = 1, 2,
    3 ...), and near 1e-300 it underflowed to 0 (the objective read as constant)."""
    result = maximize_integer(
        lambda x: -scale * ((x[0] - 40) / 50) ** 2, [(1, 200)], n_init=4, max_evals=15, seed=0
    )
    assert abs(result.best_x[0] - 40) <= 2
