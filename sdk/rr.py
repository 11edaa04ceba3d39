"""RR-interval features of a window: the rhythm's timing, as the head sees it.

Computed from the R-peaks that the streaming detector found inside a window, the
same way in training and on the device. Beats closer than 250 ms or further than
2 s apart are treated as detection errors and ignored.
"""

from __future__ import annotations

import numpy as np

RR_FEATURE_NAMES = (
    "hr_per_100bpm",
    "rr_mean_s",
    "rr_std_s",
    "rr_cv",
    "rmssd_s",
    "pnn50",
    "median_abs_drr_rel",
    "irregular_fraction",
    "rr_valid",
)
MIN_RR_S = 0.25
MAX_RR_S = 2.0
MIN_BEATS = 4


def rr_features(peaks: np.ndarray, fs: float) -> np.ndarray:
    """Feature vector (len(RR_FEATURE_NAMES),) float32 from R-peak sample indices of one window.

    With fewer than :data:`MIN_BEATS` plausible beats every feature is 0, including ``rr_valid``.
    """
    out = np.zeros(len(RR_FEATURE_NAMES), dtype=np.float32)
    rr = np.diff(np.sort(np.asarray(peaks, dtype=np.float64))) / fs
    rr = rr[(rr >= MIN_RR_S) & (rr <= MAX_RR_S)]
    if rr.size < MIN_BEATS - 1:
        return out
    drr = np.diff(rr)
    median = float(np.median(rr))
    mean = float(rr.mean())
    out[:] = (
        60.0 / median / 100.0,
        mean,
        rr.std(),
        rr.std() / mean,
        np.sqrt(np.mean(drr**2)) if drr.size else 0.0,
        np.mean(np.abs(drr) > 0.05) if drr.size else 0.0,
        np.median(np.abs(drr)) / median if drr.size else 0.0,
        np.mean(np.abs(rr / median - 1.0) > 0.2),
        1.0,
    )
    return out
