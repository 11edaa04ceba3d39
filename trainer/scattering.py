"""Wavelet-scattering features of ECG windows (DACL's training-free front end).

kymatio's ``Scattering1D`` (numpy frontend; no torch) with J = 6 (support 2^6 samples =
0.5 s at 128 Hz) and Q = 8 on each standardized 10 s window gives 126 paths (order 0, 38
first-order, 87 second-order) × 20 time frames. The feature vector of a window is the
time mean and time standard deviation of log(S + 1e-4) per first- and second-order path:
250 numbers (order 0, a signed low-pass of a standardized window, is left out).

kymatio 0.3.0's ``kymatio.numpy`` imports its 3-D frontend, which needs ``scipy.special.sph_harm``
(gone from recent SciPy); the 1-D numpy frontend is imported directly instead.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from trainer.errors import ConfigError

J, Q = 6, 8
LOG_EPS = 1e-4


def scattering(length: int):  # noqa: ANN201 - kymatio object
    """The kymatio 1-D numpy scattering operator for windows of ``length`` samples."""
    from kymatio.scattering1d.frontend.numpy_frontend import ScatteringNumPy1D

    return ScatteringNumPy1D(J=J, shape=length, Q=Q)


def scattering_features(windows: np.ndarray, batch: int = 256, progress: bool = True) -> np.ndarray:
    """(N, 1, L) standardized windows → (N, 250) float32 log-scattering mean and std."""
    if windows.ndim != 3 or windows.shape[1] != 1:
        raise ConfigError(f"windows must be (N, 1, L), got {windows.shape}", key="windows")
    op = scattering(windows.shape[-1])
    out = []
    steps = range(0, len(windows), batch)
    for i in tqdm(steps, desc="scattering", unit="batch", leave=False, disable=not progress):
        s = op(windows[i : i + batch, 0].astype(np.float64))[:, 1:]  # (B, P, T), orders 1-2
        s = np.log(s + LOG_EPS)
        out.append(np.concatenate([s.mean(-1), s.std(-1)], axis=1).astype(np.float32))
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def cached_features(windows: np.ndarray, cache_dir: Path = Path("runs/cache")) -> np.ndarray:
    """:func:`scattering_features`, cached on disk by a digest of the windows and settings."""
    h = hashlib.sha256(np.ascontiguousarray(windows).tobytes())
    h.update(f"J={J},Q={Q},eps={LOG_EPS},v2".encode())
    path = cache_dir / f"scattering-{h.hexdigest()[:16]}.npy"
    if path.is_file():
        return np.load(path, allow_pickle=False)
    feats = scattering_features(windows)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, feats)
    tmp.replace(path)
    return feats
