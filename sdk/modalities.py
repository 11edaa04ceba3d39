"""The two derived modalities of DiffECG, computed the same way in training and on a device.

- :func:`spectrogram`: the log-power STFT (Hann window) of a standardized window, as a
  (frequency bins, frames) image, z-scored.
- :func:`lorenz_image`: the Lorenz (Poincaré) plot of successive RR differences,
  ``(ΔRR_i, ΔRR_{i-1})`` with ``ΔRR_i = RR_i − RR_{i-1}``, as a fixed-size, Gaussian-smoothed
  density image scaled to [-1, 1]. It needs only beat times, so it works from a detector's
  R-peaks, a Heart Rate Service's RR intervals, or beat annotations.

Geometry lives in :class:`SpectrogramSpec` and :class:`LorenzSpec`, which a bundle's manifest
carries; the defaults are what the shipped models were trained with.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from sdk.errors import ConfigError
from sdk.rr import MAX_RR_S, MIN_RR_S

MODALITIES = ("raw", "spectrogram", "lorenz")


@dataclass(frozen=True)
class SpectrogramSpec:
    """STFT of a window of ``window_samples``: Hann frames of ``nperseg`` every ``hop``.

    The window is zero-padded by ``pad`` samples on both sides; frequency bins
    ``0 .. n_bins-1`` are kept (bin k is ``k * fs / nperseg`` Hz).
    """

    nperseg: int = 64
    hop: int = 16
    pad: int = 24
    n_bins: int = 20
    floor: float = 1e-3

    def __post_init__(self) -> None:
        if not 0 < self.hop <= self.nperseg:
            raise ConfigError("0 < hop <= nperseg must hold", field="hop")
        if not 0 < self.n_bins <= self.nperseg // 2 + 1:
            raise ConfigError("0 < n_bins <= nperseg // 2 + 1 must hold", field="n_bins")

    def n_frames(self, window_samples: int) -> int:
        return 1 + (window_samples + 2 * self.pad - self.nperseg) // self.hop


@dataclass(frozen=True)
class LorenzSpec:
    """A ``grid`` × ``grid`` image over ΔRR in ``[-limit_s, limit_s]``, smoothed by ``sigma_px``."""

    grid: int = 24
    limit_s: float = 0.6
    sigma_px: float = 1.0

    def __post_init__(self) -> None:
        if self.grid < 4 or self.limit_s <= 0 or self.sigma_px <= 0:
            raise ConfigError("grid >= 4, limit_s > 0 and sigma_px > 0 must hold", field="grid")


def spectrogram(windows: np.ndarray, spec: SpectrogramSpec = SpectrogramSpec()) -> np.ndarray:
    """(..., L) standardized windows → (..., n_bins, frames) float32 z-scored log power."""
    x = np.asarray(windows, dtype=np.float64)
    pad = [(0, 0)] * (x.ndim - 1) + [(spec.pad, spec.pad)]
    frames = sliding_window_view(np.pad(x, pad), spec.nperseg, axis=-1)[..., :: spec.hop, :]
    power = np.abs(np.fft.rfft(frames * np.hanning(spec.nperseg + 2)[1:-1], axis=-1)) ** 2
    logp = np.log(power[..., : spec.n_bins] + spec.floor)  # (..., frames, bins)
    logp = np.swapaxes(logp, -1, -2)
    mean = logp.mean(axis=(-2, -1), keepdims=True)
    std = np.maximum(logp.std(axis=(-2, -1), keepdims=True), 1e-6)
    return ((logp - mean) / std).astype(np.float32)


def rr_from_peaks(peaks: np.ndarray, fs: float) -> np.ndarray:
    """RR intervals in seconds from sorted R-peak sample indices (implausible ones removed)."""
    rr = np.diff(np.sort(np.asarray(peaks, dtype=np.float64))) / fs
    return rr[(rr >= MIN_RR_S) & (rr <= MAX_RR_S)]


def lorenz_image(rr_s: np.ndarray, spec: LorenzSpec = LorenzSpec()) -> np.ndarray:
    """RR intervals (n,) in seconds → (grid, grid) float32 image in [-1, 1].

    Rows index ``ΔRR_{i-1}``, columns ``ΔRR_i``. Fewer than three intervals give an empty
    plot (all -1). Points beyond ``limit_s`` are clipped to the border.
    """
    rr = np.asarray(rr_s, dtype=np.float64).ravel()
    if rr.size and not np.all(np.isfinite(rr)):
        raise ConfigError("RR intervals must be finite", field="rr_s")
    img = np.zeros((spec.grid, spec.grid))
    drr = np.diff(rr)
    if drr.size >= 2:
        centres = (np.arange(spec.grid) + 0.5) / spec.grid * 2 * spec.limit_s - spec.limit_s
        px = 2 * spec.limit_s / spec.grid
        xs = np.clip(drr[1:], -spec.limit_s, spec.limit_s)
        ys = np.clip(drr[:-1], -spec.limit_s, spec.limit_s)
        gx = np.exp(-0.5 * ((centres[None, :] - xs[:, None]) / (spec.sigma_px * px)) ** 2)
        gy = np.exp(-0.5 * ((centres[None, :] - ys[:, None]) / (spec.sigma_px * px)) ** 2)
        img = gy.T @ gx  # (grid, grid): sum over points of separable Gaussians
        img /= img.max()
    return (2.0 * img - 1.0).astype(np.float32)
