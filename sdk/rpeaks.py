"""R-peak (QRS) detection, streaming and one-shot.

Algorithm ``pantompkins1985``, after Pan J, Tompkins WJ. "A real-time QRS detection
algorithm." IEEE Trans Biomed Eng 32(3):230-236, 1985:

1. causal Butterworth band-pass 5-15 Hz (:class:`sdk.filters.StreamingSOSFilter`);
2. five-point derivative ``(2x[n] + x[n-1] - x[n-3] - 2x[n-4]) * fs / 8``;
3. squaring (with several leads, the leads' squares summed: one integrated signal, one set
   of thresholds; each lead weighs by its scale, so a pipeline passes denoised leads in mV:
   :meth:`sdk.denoiser.DenoisedWindow.beat_signal`);
4. moving-window integration over 150 ms;
5. candidate peaks: local maxima of the integrated signal that are the largest within
   +/-200 ms (found vectorized, so a candidate is confirmed 200 ms after it occurs);
6. adaptive thresholds ``I1 = NPKI + 0.25 (SPKI - NPKI)`` and ``I2`` with running
   signal/noise peak levels, 200 ms refractory period, T-wave discrimination (a candidate
   within 360 ms of the previous QRS whose maximal band-pass slope is below half of that
   QRS's is a T wave), search-back for a missed beat at ``I2`` when no QRS was found for
   1.66 x the RR average, and halved thresholds while the last RR lies outside 92-116 % of
   the RR average (irregular rhythm).

Differences from the paper: the RR average is the median of the last 8 RR intervals
(robust to a single missed or extra beat). Search-back takes, among the rejected candidates
above ``I2 = SEARCH_BACK_THRESHOLD * I1`` (0.1; the paper's is 0.5), the one nearest to where
the RR average expects the beat (the paper: the largest): a beat the RR timing says is
missing is often a small one in noise, or one a denoiser shrank. Both changes were chosen on
mitdb records with added noise, never on the noise-stress records (``bench/rpeak_tuning.md``).
SPKI / NPKI are learnt from the first 2 s
(half the maximum / half the mean of the integrated signal) and learnt again from the
preceding 2 s whenever 3 s pass without a QRS even after search-back (recovery after an
amplitude change or a large artefact).

The R location is refined to the maximum of ``|band-passed signal|`` of the first lead within
+/-75 ms of the integrated peak's centre, minus the band-pass group delay at 10 Hz; the T-wave
slope check also uses the first lead.

Latency: nothing is reported during the first ``LEARNING_S`` (2 s); beats found there
are reported when it ends. After that, an R peak is reported about 0.2 s (candidate
confirmation) plus the integration/filter delay (about 0.15 s) after it occurs; beats found by
search-back are reported when the search-back fires (at most 1.66 x RR average after the
previous beat).
Non-finite input samples are replaced by 0.0 before filtering. A candidate whose integrated
value is below ``MIN_QRS_ENERGY`` ((mV/s)²) is ignored, so a flat line or a signal of
sensor noise alone gives no beats: the input must be in mV (or at least the scale of one).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from scipy import ndimage, signal

from sdk.errors import BlockError, ConfigError
from sdk.filters import StreamingSOSFilter, design_bandpass

__all__ = [
    "MIN_QRS_ENERGY",
    "StreamingRPeakDetector",
    "detect_rpeaks",
    "denoised_window_rpeaks",
    "heart_rate_bpm",
    "rr_intervals_s",
]

# Algorithm constants (units in the names; see the module docstring for their role).
BAND_LOW_HZ: float = 5.0
BAND_HIGH_HZ: float = 15.0
INTEGRATION_WINDOW_S: float = 0.150
CANDIDATE_HALF_WINDOW_S: float = 0.200
REFRACTORY_S: float = 0.200
T_WAVE_WINDOW_S: float = 0.360
REFINE_HALF_WINDOW_S: float = 0.075
LEARNING_S: float = 2.0
INITIAL_RR_S: float = 1.0
SEARCH_BACK_RR_FACTOR: float = 1.66
SEARCH_BACK_THRESHOLD: float = 0.1
SEARCH_BACK_PICKS = ("nearest", "largest")
RELEARN_S: float = 3.0
RR_LOW_LIMIT: float = 0.92
RR_HIGH_LIMIT: float = 1.16
RR_MIN_S: float = 0.25
RR_MAX_S: float = 2.0
#: Integrated squared slope, (mV/s)², below which a candidate is no QRS at all, neither beat
#: nor noise peak: a flat or held line, or sensor noise of about 0.01 mV with no ECG, where
#: the adaptive thresholds would otherwise sink with the signal and take its ripples for
#: beats. Beats accepted on 8 mitdb and 60 CinC 2017 records lie far above it (their lowest
#: 1st percentile per record: 5.1). Input in mV, as the pipeline gives it.
MIN_QRS_ENERGY: float = 0.5

_N_RR = 8
_MAX_NOISE_PEAKS = 64
_CHUNK_S = 4.0
_CONTEXT_S = 2.5
_GROUP_DELAY_HZ = 10.0


class StreamingRPeakDetector:
    """Streaming Pan-Tompkins (``pantompkins1985``) R-peak detector for one or more leads.

    Parameters
    ----------
    fs : float
        Sample rate in Hz; must exceed ``2 * 15`` Hz (tested at 128 and 360 Hz).
    leads : int, default 1
        Leads per sample. With several, the squared slopes of the band-passed leads are summed
        before the moving-window integration (one integrated signal, one set of thresholds),
        and each R peak is placed, and checked for a T wave, on the first lead.
    search_back_threshold : float, default ``SEARCH_BACK_THRESHOLD`` (0.1)
        ``I2 / I1`` in [0, 1]: how small a rejected candidate search-back may take
        (Pan and Tompkins: 0.5).
    search_back_pick : ``"nearest"`` (default) or ``"largest"``
        Which candidate above ``I2`` search-back takes: the one nearest to where the RR
        average expects the beat, or the largest (Pan and Tompkins).
    min_qrs_energy : float, default ``MIN_QRS_ENERGY`` (0.5, for input in mV)
        Integrated value below which a candidate is no QRS (neither beat nor noise peak), in
        the input's units squared per second squared: for a signal scaled by ``a`` against
        mV, pass ``MIN_QRS_ENERGY * a**2``. 0 turns the floor off.

    Notes
    -----
    Feed blocks with :meth:`process`; it returns the absolute sample indices (counted from
    the first sample ever processed) of R peaks confirmed during that call, in increasing
    order. Call :meth:`flush` at the end of a recording to decide the last candidates.
    The result does not depend on how the signal is split into blocks.
    """

    def __init__(
        self,
        fs: float,
        *,
        leads: int = 1,
        search_back_threshold: float = SEARCH_BACK_THRESHOLD,
        search_back_pick: Literal["nearest", "largest"] = "nearest",
        min_qrs_energy: float = MIN_QRS_ENERGY,
    ) -> None:
        if not (math.isfinite(fs) and fs > 2.0 * BAND_HIGH_HZ):
            raise ConfigError(
                f"fs must be finite and > 2 * {BAND_HIGH_HZ} Hz (band-pass upper edge), got {fs!r}",
                field="fs",
            )
        if not 0.0 <= search_back_threshold <= 1.0:
            raise ConfigError(
                f"search_back_threshold must lie in [0, 1], got {search_back_threshold!r}",
                field="search_back_threshold",
            )
        if search_back_pick not in SEARCH_BACK_PICKS:
            raise ConfigError(
                f"search_back_pick must be one of {SEARCH_BACK_PICKS}, got {search_back_pick!r}",
                field="search_back_pick",
            )
        if not (math.isfinite(min_qrs_energy) and min_qrs_energy >= 0.0):
            raise ConfigError(
                f"min_qrs_energy must be finite and >= 0, got {min_qrs_energy!r}",
                field="min_qrs_energy",
            )
        self._min_energy = float(min_qrs_energy)
        if not isinstance(leads, (int, np.integer)) or isinstance(leads, bool) or leads < 1:
            raise ConfigError(f"leads must be an integer >= 1, got {leads!r}", field="leads")
        self._leads = int(leads)
        self._sb_threshold = float(search_back_threshold)
        self._sb_nearest = search_back_pick == "nearest"
        self._fs = float(fs)
        sos = design_bandpass(self._fs, BAND_LOW_HZ, BAND_HIGH_HZ, order=2)
        self._bp = StreamingSOSFilter(sos, self._leads)
        b, a = signal.sos2tf(sos)
        _, gd = signal.group_delay((b, a), w=[_GROUP_DELAY_HZ], fs=self._fs)
        self._bp_delay = int(round(float(gd[0])))
        self._win = max(1, int(round(INTEGRATION_WINDOW_S * self._fs)))
        self._b_deriv = np.array([2.0, 1.0, 0.0, -1.0, -2.0]) * (self._fs / 8.0)
        self._b_mwi = np.full(self._win, 1.0 / self._win)
        self._half = max(1, int(round(CANDIDATE_HALF_WINDOW_S * self._fs)))
        self._refine = max(1, int(round(REFINE_HALF_WINDOW_S * self._fs)))
        self._refractory = int(round(REFRACTORY_S * self._fs))
        self._t_wave = int(round(T_WAVE_WINDOW_S * self._fs))
        self._learn = max(1, int(round(LEARNING_S * self._fs)))
        self._relearn = int(round(RELEARN_S * self._fs))
        self._chunk = max(1, int(round(_CHUNK_S * self._fs)))
        self._context = max(self._learn, int(round(_CONTEXT_S * self._fs)))
        cap = self._context + self._chunk
        self._bp_buf = np.zeros(cap, dtype=np.float64)
        self._mwi_buf = np.zeros(cap, dtype=np.float64)
        self._rr = np.zeros(_N_RR, dtype=np.float64)
        self._noise = np.zeros((_MAX_NOISE_PEAKS, 4), dtype=np.float64)  # k, value, r, slope
        self.reset()

    @property
    def fs(self) -> float:
        """Sample rate in Hz."""
        return self._fs

    @property
    def n_processed(self) -> int:
        """Samples consumed so far."""
        return self._n

    def reset(self) -> None:
        """Forget all state, as if freshly constructed."""
        self._bp.reset()
        self._zi_deriv = np.zeros((self._b_deriv.size - 1, self._leads), dtype=np.float64)
        self._zi_mwi = np.zeros(self._win - 1, dtype=np.float64)
        self._buf_start = 0
        self._buf_len = 0
        self._n = 0
        self._scan_from = 0
        self._initialized = False
        self._spki = 0.0
        self._npki = 0.0
        self._last: int | None = None
        self._last_slope = 0.0
        self._last_r = -1
        self._ref = 0
        self._n_rr = 0
        self._n_noise = 0
        self._irregular = False
        self._rr_avg = INITIAL_RR_S * self._fs

    # ------------------------------------------------------------------ public API
    def process(self, block: np.ndarray) -> np.ndarray:
        """Consume a block and return newly confirmed R peaks.

        Parameters
        ----------
        block : numpy.ndarray
            ``(n,)`` samples of one lead, or ``(n, leads)`` (any unit; millivolts by
            convention), ``n >= 0``.

        Returns
        -------
        numpy.ndarray
            int64 ``(k,)`` absolute sample indices of R peaks, increasing.
        """
        x = np.asarray(block, dtype=np.float64)
        if x.ndim == 1 and (self._leads == 1 or x.size == 0):
            x = x.reshape(-1, self._leads)
        if x.ndim != 2 or x.shape[1] != self._leads:
            raise BlockError(
                f"block must be (n, {self._leads})"
                + (" or (n,)" if self._leads == 1 else "")
                + f", got shape {x.shape}",
                reason="shape",
            )
        x = np.where(np.isfinite(x), x, 0.0)
        out: list[int] = []
        for start in range(0, x.shape[0], self._chunk):
            self._ingest(x[start : start + self._chunk], out)
        return np.asarray(out, dtype=np.int64)

    def flush(self) -> np.ndarray:
        """Decide the remaining candidates at the end of a recording.

        Returns
        -------
        numpy.ndarray
            int64 absolute indices of R peaks not yet returned. Candidates in the last
            200 ms are judged without look-ahead.
        """
        out: list[int] = []
        if not self._initialized and self._n > 0:
            self._learn_thresholds(0, self._n)
            self._initialized = True
        if self._initialized:
            self._scan(self._n, out)
        return np.asarray(out, dtype=np.int64)

    # ------------------------------------------------------------------ signal chain
    def _ingest(self, x: np.ndarray, out: list[int]) -> None:
        bps = self._bp.process(x).astype(np.float64)
        deriv, self._zi_deriv = signal.lfilter(self._b_deriv, 1.0, bps, axis=0, zi=self._zi_deriv)
        slopes = np.sum(deriv * deriv, axis=1)
        mwi, self._zi_mwi = signal.lfilter(self._b_mwi, 1.0, slopes, zi=self._zi_mwi)
        bp = bps[:, 0]  # R peaks are placed on the first lead
        m = x.shape[0]
        if self._buf_len + m > self._bp_buf.size:
            keep = min(self._buf_len, self._context)
            drop = self._buf_len - keep
            self._bp_buf[:keep] = self._bp_buf[drop : self._buf_len]
            self._mwi_buf[:keep] = self._mwi_buf[drop : self._buf_len]
            self._buf_start += drop
            self._buf_len = keep
        self._bp_buf[self._buf_len : self._buf_len + m] = bp
        self._mwi_buf[self._buf_len : self._buf_len + m] = mwi
        self._buf_len += m
        self._n += m
        if not self._initialized:
            if self._n < self._learn:
                return
            self._learn_thresholds(0, self._learn)
            self._initialized = True
        self._scan(self._n - self._half, out)

    def _learn_thresholds(self, start: int, stop: int) -> None:
        """Set SPKI / NPKI from the integrated signal in ``[start, stop)`` (absolute)."""
        a = max(start, self._buf_start) - self._buf_start
        seg = self._mwi_buf[a : stop - self._buf_start]
        self._spki = 0.5 * float(seg.max())
        self._npki = 0.5 * float(seg.mean())

    def _scan(self, end: int, out: list[int]) -> None:
        """Find candidates in ``[scan_from, end)`` (vectorized) and decide each in order."""
        if end > self._scan_from:
            lo = max(self._scan_from - self._half - 1, self._buf_start)
            hi = min(end + self._half, self._n)
            seg = self._mwi_buf[lo - self._buf_start : hi - self._buf_start]
            peak = ndimage.maximum_filter1d(
                seg, size=2 * self._half + 1, mode="constant", cval=-np.inf
            )
            prev = np.empty_like(seg)
            prev[0] = 0.0 if lo == 0 else self._mwi_buf[lo - self._buf_start - 1]
            prev[1:] = seg[:-1]
            is_cand = (seg == peak) & (seg > prev) & (seg > 0.0)
            first = self._scan_from - lo
            cands = np.flatnonzero(is_cand[first : end - lo]) + self._scan_from
            for k in cands.tolist():
                self._on_candidate(k, out)
            self._scan_from = end
        self._search_back(end, out)

    def _describe(self, k: int) -> tuple[float, int, float]:
        """Integrated value, refined R index and maximal band-pass slope of candidate ``k``."""
        value = float(self._mwi_buf[k - self._buf_start])
        centre = k - 2 - (self._win - 1) // 2
        a = max(centre - self._refine, self._buf_start)
        b = max(min(centre + self._refine + 1, self._n, k + 1), a + 1)
        seg = self._bp_buf[a - self._buf_start : b - self._buf_start]
        r = a + int(np.argmax(np.abs(seg))) - self._bp_delay
        slope = float(np.max(np.abs(np.diff(seg)))) if seg.size > 1 else 0.0
        return value, max(r, 0), slope

    # ------------------------------------------------------------------ decision logic
    def _on_candidate(self, k: int, out: list[int]) -> None:
        self._search_back(k, out)
        if self._last is not None and k - self._last < self._refractory:
            return
        value, r, slope = self._describe(k)
        if value < self._min_energy:  # no QRS: neither a beat nor a noise level to learn
            return
        i1 = self._threshold()
        if value > i1 and not self._is_t_wave(k, slope):
            self._accept(k, value, r, slope, weight=0.125, out=out)
            return
        self._npki = 0.125 * value + 0.875 * self._npki
        if self._n_noise == _MAX_NOISE_PEAKS:
            self._noise[:-1] = self._noise[1:]
            self._n_noise -= 1
        self._noise[self._n_noise] = (k, value, r, slope)
        self._n_noise += 1

    def _threshold(self) -> float:
        """Threshold I1, halved while the rhythm is irregular."""
        i1 = self._npki + 0.25 * (self._spki - self._npki)
        return 0.5 * i1 if self._irregular else i1

    def _is_t_wave(self, k: int, slope: float) -> bool:
        return (
            self._last is not None
            and k - self._last < self._t_wave
            and slope < 0.5 * self._last_slope
        )

    def _accept(
        self, k: int, value: float, r: int, slope: float, *, weight: float, out: list[int]
    ) -> None:
        if self._last is not None:
            avg = self._rr_average()
            rr = k - self._last
            self._irregular = self._n_rr >= _N_RR and not (
                RR_LOW_LIMIT * avg <= rr <= RR_HIGH_LIMIT * avg
            )
            self._rr[self._n_rr % _N_RR] = rr
            self._n_rr += 1
            recent = sorted(self._rr[: min(self._n_rr, _N_RR)].tolist())
            mid = len(recent) // 2
            self._rr_avg = (recent[mid] + recent[~mid]) / 2.0  # median of <= 8 values
        self._spki = weight * value + (1.0 - weight) * self._spki
        self._last = k
        self._ref = max(self._ref, k)
        self._last_slope = slope
        kept = self._noise[: self._n_noise, 0] > k
        n_kept = int(kept.sum())
        self._noise[:n_kept] = self._noise[: self._n_noise][kept]
        self._n_noise = n_kept
        r = max(r, self._last_r + 1)  # keep the reported indices strictly increasing
        self._last_r = r
        out.append(r)

    def _rr_average(self) -> float:
        """Median of the last 8 RR intervals in samples (``INITIAL_RR_S`` before any)."""
        return self._rr_avg

    def _search_back(self, t: int, out: list[int]) -> None:
        """Look for a missed beat among noise peaks before ``t`` when the RR limit is exceeded:
        the one above ``I2`` nearest to the beat the RR average expects."""
        while t - self._ref > SEARCH_BACK_RR_FACTOR * self._rr_average():
            i2 = self._sb_threshold * self._threshold()
            # one RR after the last beat; before any beat, after the last relearn point
            expected = (self._last if self._last is not None else self._ref) + self._rr_average()
            best, best_rank = -1, math.inf
            for j in range(self._n_noise):
                k, value, _, slope = self._noise[j]
                if k >= t or value <= i2 or self._is_t_wave(int(k), slope):
                    continue
                if self._last is not None and k - self._last < self._refractory:
                    continue
                rank = abs(k - expected) if self._sb_nearest else -value
                if rank < best_rank:
                    best, best_rank = j, rank
            if best >= 0:
                k, value, r, slope = self._noise[best]
                self._accept(int(k), value, int(r), slope, weight=0.25, out=out)
                continue
            relearn_at = self._ref + self._relearn
            if t <= relearn_at:
                break
            self._learn_thresholds(relearn_at - self._learn, relearn_at)
            self._ref = relearn_at


def detect_rpeaks(
    x: np.ndarray,
    fs: float,
    *,
    search_back_threshold: float = SEARCH_BACK_THRESHOLD,
    search_back_pick: Literal["nearest", "largest"] = "nearest",
    min_qrs_energy: float = MIN_QRS_ENERGY,
) -> np.ndarray:
    """Detect R peaks in a whole signal of one or more leads (``pantompkins1985``).

    Runs a fresh :class:`StreamingRPeakDetector` over ``x`` and flushes it, so the result is
    exactly what streaming would report.

    Parameters
    ----------
    x : numpy.ndarray
        ``(n,)`` samples of one lead, or ``(n, leads)`` (peaks placed on the first lead).
    fs : float
        Sample rate in Hz.
    search_back_threshold, search_back_pick, min_qrs_energy
        See :class:`StreamingRPeakDetector`.

    Returns
    -------
    numpy.ndarray
        int64 ``(k,)`` sample indices of R peaks, increasing.
    """
    x = np.asarray(x)
    det = StreamingRPeakDetector(
        fs,
        leads=1 if x.ndim == 1 else x.shape[-1],
        search_back_threshold=search_back_threshold,
        search_back_pick=search_back_pick,
        min_qrs_energy=min_qrs_energy,
    )
    return np.concatenate([det.process(x), det.flush()])


def denoised_window_rpeaks(
    x: np.ndarray,
    n: int,
    fs: float,
    context: np.ndarray | None = None,
    *,
    search_back_threshold: float = SEARCH_BACK_THRESHOLD,
    min_qrs_energy: float = MIN_QRS_ENERGY,
) -> np.ndarray:
    """R peaks of a denoised window, detected on that window and the denoised signal just
    before it.

    A pipeline that denoises takes a window's beats (heart rate, RR features, Lorenz image)
    from here instead of from the stream's detector on the signal before denoising: under
    noise the denoised window gives far more accurate beats (``bench/noise_stress.md``).
    ``context`` gives the detector what it learns its thresholds and RR average from before
    the window starts, and the beat just before the window (a beat at the window's first
    samples is then not taken twice or missed): the previous window's denoised samples that
    precede this window, contiguous with it.

    Parameters
    ----------
    x : numpy.ndarray
        ``(window,)`` one denoised lead, or ``(window, leads)`` the leads of a multi-lead
        denoiser (beats from all of them, placed on the first:
        :class:`StreamingRPeakDetector`).
    n : int
        Samples at the start of ``x`` that hold signal (the rest is zero padding).
    fs : float
        Sample rate in Hz.
    context : numpy.ndarray, optional
        ``(m,)`` or ``(m, leads)`` denoised samples immediately before ``x`` (none at a
        stream's start or after a gap).
    search_back_threshold : float
        See :class:`StreamingRPeakDetector`; a bundle may set it for its denoiser's output
        (:attr:`sdk.denoiser.WindowDenoiser.search_back_threshold`).
    min_qrs_energy : float
        See :class:`StreamingRPeakDetector`: for ``x`` on the scale of the window's
        standardized lead, :attr:`sdk.denoiser.DenoisedWindow.min_qrs_energy`.

    Returns
    -------
    numpy.ndarray
        int64 sample indices within the window, increasing.
    """
    w = np.asarray(x[:n], dtype=np.float64)
    ctx = np.zeros((0, *w.shape[1:])) if context is None else np.asarray(context, np.float64)
    if ctx.shape[1:] != w.shape[1:]:
        raise ConfigError(
            f"context {ctx.shape} must have the window's leads {w.shape[1:]}", field="context"
        )
    both = np.concatenate([ctx, w])
    peaks = detect_rpeaks(
        both, fs, search_back_threshold=search_back_threshold, min_qrs_energy=min_qrs_energy
    )
    peaks = peaks - ctx.shape[0]
    return peaks[peaks >= 0]


def rr_intervals_s(peaks: np.ndarray, fs: float) -> np.ndarray:
    """RR intervals in seconds from increasing R-peak sample indices.

    Parameters
    ----------
    peaks : numpy.ndarray
        ``(k,)`` integer sample indices, strictly increasing.
    fs : float
        Sample rate in Hz, > 0.

    Returns
    -------
    numpy.ndarray
        float64 ``(max(k - 1, 0),)`` intervals in seconds.
    """
    if not (math.isfinite(fs) and fs > 0):
        raise ConfigError(f"fs must be a positive finite rate in Hz, got {fs!r}", field="fs")
    p = np.asarray(peaks)
    if p.ndim != 1:
        raise ConfigError(f"peaks must be 1-D, got shape {p.shape}", field="peaks")
    rr = np.diff(p.astype(np.float64)) / fs
    if np.any(rr <= 0):
        raise ConfigError("peaks must be strictly increasing", field="peaks")
    return rr


def heart_rate_bpm(peaks: np.ndarray, fs: float, *, min_beats: int = 2) -> float | None:
    """Heart rate from R peaks: ``60 / median(RR)`` over plausible RR intervals.

    Parameters
    ----------
    peaks : numpy.ndarray
        ``(k,)`` increasing R-peak sample indices.
    fs : float
        Sample rate in Hz.
    min_beats : int, default 2
        Minimum number of peaks (>= 2) required.

    Returns
    -------
    float or None
        Beats per minute, or ``None`` if fewer than ``min_beats`` peaks or no RR interval
        lies within ``RR_MIN_S``-``RR_MAX_S`` (250-2000 ms).
    """
    if int(min_beats) != min_beats or min_beats < 2:
        raise ConfigError(
            f"min_beats must be an integer >= 2, got {min_beats!r}", field="min_beats"
        )
    rr = rr_intervals_s(peaks, fs)
    if rr.size + 1 < min_beats:
        return None
    valid = rr[(rr >= RR_MIN_S) & (rr <= RR_MAX_S)]
    if valid.size == 0:
        return None
    return 60.0 / float(np.median(valid))
