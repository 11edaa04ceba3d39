"""A synthetic ECG with known rhythm, for demos and tests that must run without data.

Beats are sums of Gaussian P, Q, R, S and T waves placed on an RR sequence (the
dynamical model of McSharry et al., IEEE TBME 50(3):289–294, 2003, in its simplest
form). Sinus rhythm has regular RR with respiratory variation and P waves; atrial
fibrillation has irregular RR, no P waves and 4–8 Hz fibrillatory waves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sdk.errors import ConfigError

RHYTHMS = ("sinus", "af")
# (centre offset s from R, width s, amplitude mV) of each wave
_WAVES_SINUS = (
    (-0.20, 0.025, 0.15),
    (-0.03, 0.010, -0.12),
    (0.0, 0.011, 1.1),
    (0.03, 0.010, -0.25),
    (0.28, 0.05, 0.3),
)
_WAVES_AF = _WAVES_SINUS[1:]


@dataclass(frozen=True)
class SyntheticECG:
    """``signal`` (n,) float32 mV at ``fs``; ``rhythm`` [(start, end, label)] in samples."""

    signal: np.ndarray
    fs: float
    rhythm: list[tuple[int, int, str]]
    r_peaks: np.ndarray


def _rr_sequence(rhythm: str, duration_s: float, rng: np.random.Generator) -> np.ndarray:
    n = int(duration_s / 0.3) + 4
    if rhythm == "sinus":
        mean_rr = rng.uniform(0.75, 0.95)
        resp = 0.04 * np.sin(2 * np.pi * 0.25 * np.cumsum(np.full(n, mean_rr)))
        rr = mean_rr + resp + rng.normal(0, 0.015, n)
    else:
        rr = rng.gamma(shape=9.0, scale=0.075, size=n)  # mean 0.68 s, CV 0.33
    return np.clip(rr, 0.3, 2.0)


def synthetic_ecg(
    segments: Sequence[tuple[str, float]] = (("sinus", 60.0), ("af", 60.0), ("sinus", 60.0)),
    *,
    fs: float = 250.0,
    noise_mv: float = 0.03,
    wander_mv: float = 0.1,
    seed: int = 0,
) -> SyntheticECG:
    """Render ``segments`` of (rhythm in :data:`RHYTHMS`, seconds) as one ECG lead."""
    if fs < 50:
        raise ConfigError(f"fs must be >= 50 Hz, got {fs}", field="fs")
    for rhythm, seconds in segments:
        if rhythm not in RHYTHMS or seconds <= 0:
            raise ConfigError(
                f"segment ({rhythm!r}, {seconds}) needs a rhythm in {RHYTHMS} and seconds > 0",
                field="segments",
            )
    rng = np.random.default_rng(seed)
    total = int(round(sum(s for _, s in segments) * fs))
    t = np.arange(total) / fs
    x = np.zeros(total, dtype=np.float64)
    rhythm_marks: list[tuple[int, int, str]] = []
    peaks: list[int] = []
    start_s = 0.0
    for rhythm, seconds in segments:
        end_s = start_s + seconds
        beat = start_s + 0.3
        waves = _WAVES_SINUS if rhythm == "sinus" else _WAVES_AF
        for rr in _rr_sequence(rhythm, seconds, rng):
            if beat >= end_s:
                break
            lo, hi = int(max(0, (beat - 0.4) * fs)), int(min(total, (beat + 0.6) * fs))
            seg_t = t[lo:hi] - beat
            for centre, width, amp in waves:
                x[lo:hi] += amp * np.exp(-0.5 * ((seg_t - centre) / width) ** 2)
            peaks.append(int(round(beat * fs)))
            beat += rr
        if rhythm == "af":
            sl = slice(int(start_s * fs), int(end_s * fs))
            f_hz = rng.uniform(4.0, 8.0)
            x[sl] += 0.05 * np.sin(2 * np.pi * f_hz * t[sl] + rng.uniform(0, 2 * np.pi))
        rhythm_marks.append(
            (int(round(start_s * fs)), int(round(end_s * fs)), "AFIB" if rhythm == "af" else "N")
        )
        start_s = end_s
    x += wander_mv * np.sin(2 * np.pi * 0.2 * t + rng.uniform(0, 2 * np.pi))
    x += rng.normal(0.0, noise_mv, total)
    return SyntheticECG(
        x.astype(np.float32), float(fs), rhythm_marks, np.asarray(peaks, dtype=np.int64)
    )
