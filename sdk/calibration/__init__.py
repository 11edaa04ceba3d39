"""On-device per-user calibration (issue 5). So far: the Bayesian optimizer over integer t."""

from sdk.calibration.bayesopt import (
    GaussianProcess,
    GPHyperparameters,
    OptimizeResult,
    expected_improvement,
    maximize_integer,
)

__all__ = [
    "GPHyperparameters",
    "GaussianProcess",
    "OptimizeResult",
    "expected_improvement",
    "maximize_integer",
]
