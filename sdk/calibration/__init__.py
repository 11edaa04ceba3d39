"""On-device per-user calibration (issue 5): the Bayesian optimizer over integer t and the
objectives that score a candidate t (γ, ΔAcc, ΔF1, ΔLoss)."""

from sdk.calibration.bayesopt import (
    GaussianProcess,
    GPHyperparameters,
    OptimizeResult,
    expected_improvement,
    maximize_integer,
)
from sdk.calibration.objectives import OBJECTIVES, delta_objective, descent_trajectory, gamma

__all__ = [
    "OBJECTIVES",
    "delta_objective",
    "descent_trajectory",
    "gamma",
    "GPHyperparameters",
    "GaussianProcess",
    "OptimizeResult",
    "expected_improvement",
    "maximize_integer",
]
