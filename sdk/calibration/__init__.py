"""On-device per-user calibration: the Bayesian optimizer over integer t, the objectives
that score a candidate t (γ, ΔAcc, ΔF1, ΔLoss), the :class:`Calibrator` and user profiles."""

from sdk.calibration.bayesopt import (
    GaussianProcess,
    GPHyperparameters,
    OptimizeResult,
    expected_improvement,
    maximize_integer,
)
from sdk.calibration.calibrator import CalibrationResult, Calibrator
from sdk.calibration.objectives import OBJECTIVES, delta_objective, descent_trajectory, gamma
from sdk.calibration.profile import UserProfile, load_profile, save_profile

__all__ = [
    "CalibrationResult",
    "Calibrator",
    "UserProfile",
    "load_profile",
    "save_profile",
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
