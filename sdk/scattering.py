"""Wavelet-scattering features of standardized windows: DACL's front end, on the device in numpy.

kymatio's ``Scattering1D`` (numpy frontend, no torch; imported lazily, like onnxruntime) with
J = 6 (support 2^6 samples = 0.5 s at 128 Hz) and Q = 8. On a 10 s window it gives 126 paths
(order 0, 38 first-order, 87 second-order) × 20 time frames; the feature vector is the time
mean and time standard deviation of log(S + 1e-4) per first- and second-order path: 250
numbers (order 0, a signed low-pass of a standardized window, is left out).

The scattering runs here rather than inside the ONNX graph: it is a fixed, training-free
transform, kymatio's FFT implementation is the reference, and ONNX Runtime has no portable
complex FFT. kymatio 0.3.0's ``kymatio.numpy`` imports its 3-D frontend, which needs
``scipy.special.sph_harm`` (gone from recent SciPy), so the 1-D frontend is imported directly.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from sdk.errors import ConfigError, require_package

J, Q = 6, 8
LOG_EPS = 1e-4


@lru_cache(maxsize=4)
def scattering_operator(length: int) -> Any:
    """kymatio's 1-D numpy scattering for windows of ``length`` samples (cached)."""
    require_kymatio()
    from kymatio.scattering1d.frontend.numpy_frontend import ScatteringNumPy1D

    return ScatteringNumPy1D(J=J, shape=length, Q=Q)


def require_kymatio() -> None:
    """Raise :class:`~sdk.errors.MissingDependencyError` (extra ``dacl``) without kymatio."""
    require_package(
        "kymatio", "dacl", hint="a DACL bundle computes its scattering features with it"
    )


def scattering_features(windows: np.ndarray) -> np.ndarray:
    """(N, 1, L) standardized windows → (N, 250) float32 log-scattering mean and std."""
    if windows.ndim != 3 or windows.shape[1] != 1:
        raise ConfigError(f"windows must be (N, 1, L), got {windows.shape}", field="windows")
    if len(windows) == 0:
        return np.zeros((0, 0), np.float32)
    s = scattering_operator(windows.shape[-1])(windows[:, 0].astype(np.float64))[:, 1:]
    s = np.log(s + LOG_EPS)  # (N, P, T), orders 1-2
    return np.concatenate([s.mean(-1), s.std(-1)], axis=1).astype(np.float32)
