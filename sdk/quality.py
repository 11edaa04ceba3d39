"""Signal-quality assessment of an ECG window.

Signals are in millivolts. Each check below raises one flag; a window is ``ok`` when no
flag is raised. Multi-lead windows are checked lead by lead and a flag is raised when any
lead shows it. The function never raises on NaN or +/-inf samples: it reports them.

Flags
-----
``"nonfinite"``
    Any NaN/inf sample, or any sample marked :data:`sdk.ringbuffer.INVALID` in ``flags_in``.
``"flatline"``
    Some window of ``FLATLINE_WINDOW_S`` (the whole signal if shorter) with only finite
    samples has peak-to-peak below ``FLATLINE_PTP_MV``.
``"saturated"``
    At least ``SATURATION_MIN_FRACTION`` of the samples lie within
    ``SATURATION_BAND_FRACTION`` of the lead's range from its minimum or maximum *and* belong
    to runs of at least ``SATURATION_MIN_RUN`` identical consecutive values (a clipped rail).
``"low_amplitude"`` / ``"high_amplitude"``
    Peak-to-peak of the finite samples (after removing the median; the offset does not
    change it) below ``AMPLITUDE_MIN_PTP_MV`` or above ``AMPLITUDE_MAX_PTP_MV``.
``"too_short"``
    Duration below ``min_duration_s``.
``"gap"``
    ``flags_in`` marks :data:`sdk.ringbuffer.GAP_BEFORE` on a sample after the first (a gap
    *inside* the window).
``"settling"``
    Only with ``before`` and ``settle``: the filters in front of the model are still answering
    a jump shortly before the window. A sample of ``before`` (the values the filters
    received; non-finite ones are held at the last finite value) lies more than
    ``SETTLE_MIN_JUMP_MV`` from the median of the window's valid samples, and that distance
    times ``settle`` at its lag behind the window's first sample exceeds
    ``SETTLE_RESIDUAL_MV``. The score does not count it.

Score
-----
Per lead, the fraction of usable samples (finite, not INVALID, not inside a flat window,
not on a saturated rail), times ``AMPLITUDE_PENALTY`` if the amplitude is implausible; the
mean over leads, times ``GAP_PENALTY`` if there is a gap, times
``min(1, duration / min_duration_s)``. Always within ``[0, 1]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from sdk.errors import BlockError, ConfigError
from sdk.filters import design_bandpass, step_envelope
from sdk.preprocess import PreprocessSpec
from sdk.ringbuffer import GAP_BEFORE, INVALID

__all__ = [
    "AMPLITUDE_MAX_PTP_MV",
    "AMPLITUDE_MIN_PTP_MV",
    "FLAG_NAMES",
    "FLATLINE_PTP_MV",
    "FLATLINE_WINDOW_S",
    "QualityReport",
    "SATURATION_BAND_FRACTION",
    "SATURATION_MIN_FRACTION",
    "SATURATION_MIN_RUN",
    "SETTLE_MIN_JUMP_MV",
    "SETTLE_RESIDUAL_MV",
    "MAX_ABS_MV",
    "assess_quality",
    "settle_envelope",
    "settling_look_back",
]

FLATLINE_WINDOW_S: float = 1.0
"""Length in seconds of the window tested for a flat line."""
FLATLINE_PTP_MV: float = 0.010
"""Peak-to-peak below which a window is flat: 10 microvolts."""
SATURATION_BAND_FRACTION: float = 0.005
"""Width of the band at each extreme, as a fraction of the lead's range (0.5 %)."""
SATURATION_MIN_RUN: int = 3
"""Minimum run of identical consecutive values on a rail."""
SATURATION_MIN_FRACTION: float = 0.02
"""Fraction of the samples on a rail above which the lead is saturated (2 %)."""
AMPLITUDE_MIN_PTP_MV: float = 0.05
"""Smallest plausible ECG peak-to-peak in millivolts."""
AMPLITUDE_MAX_PTP_MV: float = 10.0
"""Largest plausible ECG peak-to-peak in millivolts."""
AMPLITUDE_PENALTY: float = 0.5
"""Score factor applied when the amplitude is implausible."""
GAP_PENALTY: float = 0.8
"""Score factor applied when the window contains a gap."""
SETTLE_MIN_JUMP_MV: float = AMPLITUDE_MAX_PTP_MV / 2.0
"""Distance from the window's median beyond which a sample before it is an artefact (5 mV)."""
SETTLE_RESIDUAL_MV: float = 0.05
"""Largest filter response to an artefact before the window that is tolerated (50 uV)."""
MAX_ABS_MV: float = 1000.0
"""Input beyond ±this many millivolts is no ECG (a front end's full scale is far below): the
pipeline holds it like NaN so that the filters never see it (float32 overflow, seconds of
ringing), and calibration takes it for lost samples."""
SETTLE_LOOKBACK_MAX_S: float = 10.0
"""Longest settling look-back (s): a slower band-pass than the bundles' 0.5 Hz one is watched
for this long after a jump, not until it settles."""


def settle_envelope(spec: PreprocessSpec, fs_in: float) -> np.ndarray:
    """The band-pass's step envelope at the input rate ``fs_in``
    (:func:`sdk.filters.step_envelope`), as long as the largest accepted jump
    (:data:`MAX_ABS_MV`) takes to settle below :data:`SETTLE_RESIDUAL_MV`, at most
    :data:`SETTLE_LOOKBACK_MAX_S`: how far back the ``settling`` check looks (``settle`` of
    :func:`assess_quality`)."""
    sos = design_bandpass(spec.fs, spec.low_hz, spec.high_hz, spec.order)
    env = step_envelope(sos, int(SETTLE_LOOKBACK_MAX_S * spec.fs))
    settled = MAX_ABS_MV * env <= SETTLE_RESIDUAL_MV
    n = int(np.argmax(settled)) + 1 if settled.any() else env.size
    lag_in = np.arange(int(math.ceil(n * fs_in / spec.fs)))
    return env[np.minimum(np.round(lag_in * spec.fs / fs_in).astype(np.int64), n - 1)]


FLAG_NAMES: tuple[str, ...] = (
    "nonfinite",
    "flatline",
    "saturated",
    "low_amplitude",
    "high_amplitude",
    "too_short",
    "gap",
    "settling",
)


@dataclass(frozen=True)
class QualityReport:
    """Outcome of :func:`assess_quality`.

    Attributes
    ----------
    ok : bool
        True when no flag is raised.
    score : float
        Usability in ``[0, 1]`` (see the module docstring).
    flags : tuple of str
        Raised flags, a subset of :data:`FLAG_NAMES` in that order.
    """

    ok: bool
    score: float
    flags: tuple[str, ...]


def _flat_mask(x: np.ndarray, finite: np.ndarray, win: int) -> np.ndarray:
    """Samples covered by some all-finite window of ``win`` samples with ptp < threshold."""
    n = x.size
    win = min(win, n)
    filled = np.where(finite, x, 0.0)
    # windows [s, s + win) for s = 0 .. n - win, as filters centred on s + win // 2
    centre = slice(win // 2, win // 2 + n - win + 1)
    hi = ndimage.maximum_filter1d(filled, size=win, mode="nearest")[centre]
    lo = ndimage.minimum_filter1d(filled, size=win, mode="nearest")[centre]
    bad_count = np.convolve((~finite).astype(np.int64), np.ones(win, dtype=np.int64), "valid")
    flat_start = ((hi - lo) < FLATLINE_PTP_MV) & (bad_count == 0)
    if not flat_start.any():
        return np.zeros(n, dtype=bool)
    # sample i is covered if a flat window starts in [i - win + 1, i]
    covered = np.convolve(flat_start.astype(np.int64), np.ones(win, dtype=np.int64), "full")
    return covered[:n] > 0


def _rail_mask(x: np.ndarray, finite: np.ndarray) -> np.ndarray:
    """Finite samples near an extreme that sit in runs of identical values."""
    vals = x[finite]
    lo, hi = float(vals.min()), float(vals.max())
    band = SATURATION_BAND_FRACTION * (hi - lo)
    if hi - lo <= 0.0:
        return np.zeros(x.size, dtype=bool)
    near = finite & ((x >= hi - band) | (x <= lo + band))
    starts = np.flatnonzero(np.r_[True, x[1:] != x[:-1]])
    lengths = np.diff(np.r_[starts, x.size])
    in_run = np.repeat(lengths >= SATURATION_MIN_RUN, lengths)
    return near & in_run


def _assess_lead(x: np.ndarray, fs: float, invalid: np.ndarray) -> tuple[set[str], float]:
    """Flags and usable-sample score of one lead."""
    flags: set[str] = set()
    finite = np.isfinite(x)
    if not finite.all() or invalid.any():
        flags.add("nonfinite")
    valid = finite & ~invalid  # held samples (stored as 0 mV) are no signal to judge
    if not valid.any():
        return flags, 0.0
    win = max(1, int(round(FLATLINE_WINDOW_S * fs)))
    flat = _flat_mask(x, valid, win)
    if flat.any():
        flags.add("flatline")
    usable = valid & ~flat
    rail = _rail_mask(x, valid)
    if rail.mean() >= SATURATION_MIN_FRACTION:
        flags.add("saturated")
        usable &= ~rail
    vals = x[valid]
    centred = vals - np.median(vals)
    ptp = float(centred.max() - centred.min())
    if ptp < AMPLITUDE_MIN_PTP_MV:
        flags.add("low_amplitude")
    elif ptp > AMPLITUDE_MAX_PTP_MV:
        flags.add("high_amplitude")
    score = float(usable.mean())
    if flags & {"low_amplitude", "high_amplitude"}:
        score *= AMPLITUDE_PENALTY
    return flags, score


def _as_leads(before: np.ndarray, n_leads: int) -> np.ndarray:
    b = np.asarray(before, dtype=np.float64)
    if b.ndim == 1:
        b = b.reshape(-1, 1)
    if b.ndim != 2 or b.shape[1] != n_leads:
        raise BlockError(
            f"before must be (m,) or (m, {n_leads}), got shape {np.shape(before)}", reason="shape"
        )
    return b


def settling_look_back(
    received: np.ndarray, settle: np.ndarray, *, from_zero_state: bool
) -> np.ndarray:
    """``before`` for :func:`assess_quality`: of the samples the filters ``received`` before a
    window since they (re)started, the last ``settle.size - 1`` (the longest look-back), or all
    of them after a sample of 0 mV when the filters started from their zero state within that
    span (a stream's or a recording's start: the jump from 0 rings like any other)."""
    n = max(settle.size - 1, 0)
    if received.shape[0] > n:
        return received[received.shape[0] - n :]
    if from_zero_state:
        return np.concatenate([np.zeros((1, *received.shape[1:])), received])
    return received


def _settling(x: np.ndarray, usable: np.ndarray, before: np.ndarray, settle: np.ndarray) -> bool:
    """Whether a jump in ``before`` still moves the filters' output at ``x``'s start
    (``usable``: samples of ``x`` that are real values, for its median)."""
    m = min(before.shape[0], settle.size - 1)
    if m <= 0:
        return False
    lag = np.arange(m, 0, -1)  # samples from each of the last m samples to x's first
    for lead in range(x.shape[1]):
        col, ref = before[-m:, lead], x[usable[:, lead], lead]
        ok = np.isfinite(col)
        if not ok.any() or ref.size == 0:
            continue
        idx = np.maximum.accumulate(np.where(ok, np.arange(m), -1))  # hold the last finite
        held = col[np.maximum(idx, 0)]
        dist = np.where(idx >= 0, np.abs(held - np.median(ref)), 0.0)
        if np.any((dist > SETTLE_MIN_JUMP_MV) & (dist * settle[lag] > SETTLE_RESIDUAL_MV)):
            return True
    return False


def assess_quality(
    x: np.ndarray,
    fs: float,
    *,
    min_duration_s: float = 2.0,
    flags_in: np.ndarray | None = None,
    before: np.ndarray | None = None,
    settle: np.ndarray | None = None,
) -> QualityReport:
    """Assess whether an ECG window is usable.

    Parameters
    ----------
    x : numpy.ndarray
        ``(n,)`` or ``(n, n_leads)`` samples in millivolts, any real dtype; may hold NaN/inf.
    fs : float
        Sample rate in Hz, > 0.
    min_duration_s : float, default 2.0
        Shortest acceptable window in seconds, >= 0.
    flags_in : numpy.ndarray, optional
        ``(n,)`` uint8 per-sample flags from :class:`sdk.ringbuffer.RingBuffer`
        (:data:`~sdk.ringbuffer.GAP_BEFORE`, :data:`~sdk.ringbuffer.INVALID`).
    before : numpy.ndarray, optional
        ``(m,)`` or ``(m, n_leads)`` samples immediately before ``x`` (none across a gap: the
        pipeline restarts its filters there), for the ``"settling"`` check; may hold NaN/inf.
    settle : numpy.ndarray, optional
        ``(k,)`` bound on the filters' response ``j`` samples after a unit jump of their input
        (:func:`sdk.filters.step_envelope`, at ``fs``); lags of ``k`` or more are settled.

    Returns
    -------
    QualityReport
        ``ok`` is True when no flag is raised; see the module docstring for the checks.

    Raises
    ------
    ConfigError
        If ``fs`` or ``min_duration_s`` is out of range.
    BlockError
        ``reason="shape"`` if ``x`` is not 1-D/2-D or ``flags_in`` does not match it.
    """
    if not (math.isfinite(fs) and fs > 0):
        raise ConfigError(f"fs must be a positive finite rate in Hz, got {fs!r}", field="fs")
    if not (math.isfinite(min_duration_s) and min_duration_s >= 0):
        raise ConfigError(
            f"min_duration_s must be finite and >= 0, got {min_duration_s!r}",
            field="min_duration_s",
        )
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    elif arr.ndim != 2:
        raise BlockError(f"x must be (n,) or (n, n_leads), got shape {arr.shape}", reason="shape")
    if arr.shape[1] == 0:
        raise BlockError("x has no leads", reason="shape")
    n = arr.shape[0]
    flags_arr = np.zeros(n, dtype=np.uint8) if flags_in is None else np.asarray(flags_in)
    if flags_arr.shape != (n,):
        raise BlockError(
            f"flags_in shape {flags_arr.shape} does not match x's ({n},)", reason="shape"
        )
    flags_arr = flags_arr.astype(np.uint8, copy=False)
    raised: set[str] = set()
    duration = n / fs
    if duration < min_duration_s or n == 0:
        raised.add("too_short")
    if n > 1 and np.any(flags_arr[1:] & GAP_BEFORE):
        raised.add("gap")
    invalid = (flags_arr & INVALID) != 0
    scores = []
    for lead in range(arr.shape[1]):
        if n == 0:
            scores.append(0.0)
            continue
        lead_flags, lead_score = _assess_lead(arr[:, lead], fs, invalid)
        raised |= lead_flags
        scores.append(lead_score)
    if before is not None and settle is not None and n > 0:
        usable = np.isfinite(arr) & ~invalid[:, None]
        if _settling(arr, usable, _as_leads(before, arr.shape[1]), np.asarray(settle, np.float64)):
            raised.add("settling")
    score = float(np.mean(scores)) if scores else 0.0
    if "gap" in raised:
        score *= GAP_PENALTY
    if min_duration_s > 0:
        score *= min(1.0, duration / min_duration_s)
    ordered = tuple(name for name in FLAG_NAMES if name in raised)
    return QualityReport(ok=not ordered, score=float(np.clip(score, 0.0, 1.0)), flags=ordered)
