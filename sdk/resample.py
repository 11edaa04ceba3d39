"""Streaming polyphase rational resampler.

The rate ratio ``fs_out / fs_in`` is written as ``up / down`` in lowest terms (denominator at
most 1000). Conceptually the input is upsampled by ``up`` (zeros inserted), low-pass filtered
by a causal linear-phase FIR ``h`` (gain ``up``) and every ``down``-th sample is kept:

``y[k] = sum_i h[k * down - i * up] * x[i]``

Only the non-zero products are computed (polyphase form): output ``k`` uses phase
``p = (k * down) % up`` and the inputs ``i = (k * down) // up - q`` for
``q = 0 .. n_phase_taps - 1``. Inputs before the first sample are zero, so the filter starts
from the zero state like :mod:`sdk.filters`.

Timing: the filter is causal, so output sample ``k`` represents the input signal at time
``k / fs_out - delay_s`` (relative to the time of input sample 0), where
:attr:`StreamingResampler.delay_s` is the FIR group delay ``half_len / (fs_in * up)``.
"""

from __future__ import annotations

import math
import numbers
from fractions import Fraction

import numpy as np
from scipy import signal

from sdk.blocks import as_lead_block, as_lead_levels
from sdk.errors import BlockError, ConfigError

__all__ = ["MAX_DENOMINATOR", "StreamingResampler", "resample", "resample_ratio"]

MAX_DENOMINATOR: int = 1000
"""Largest ``up`` or ``down`` accepted after reducing ``fs_out / fs_in``."""

_CUTOFF_FRACTION: float = 0.9
"""Anti-alias cut-off as a fraction of ``min(1/up, 1/down)`` of the upsampled Nyquist."""

_ZERO_CROSSINGS: int = 10
"""FIR half-length, in zero crossings of the ideal low-pass impulse response."""

_KAISER_BETA: float = 5.0
"""Kaiser window shape (about 55 dB stop-band attenuation)."""

_CHUNK_OUT: int = 4096
"""Outputs computed per vectorized step (bounds the temporary gather array)."""


def resample_ratio(fs_in: float, fs_out: float) -> tuple[int, int]:
    """``(up, down)`` that take ``fs_in`` to ``fs_out`` (both at most :data:`MAX_DENOMINATOR`),
    else :class:`~sdk.errors.ConfigError` (``field="fs_in"``, or the rate that is no rate)."""
    for name, value in (("fs_in", fs_in), ("fs_out", fs_out)):
        if not (
            isinstance(value, numbers.Real)
            and not isinstance(value, (bool, np.bool_))
            and math.isfinite(value)
            and value > 0
        ):
            raise ConfigError(
                f"{name} must be a positive finite rate in Hz, got {value!r}", field=name
            )
    ratio = float(fs_out) / float(fs_in)  # numpy float32 and the like: no Fraction of them
    frac = Fraction(ratio).limit_denominator(MAX_DENOMINATOR)
    up, down = frac.numerator, frac.denominator
    if up > MAX_DENOMINATOR or abs(up / down - ratio) > 1e-9 * ratio:
        raise ConfigError(
            f"cannot resample {float(fs_in):g} Hz to {float(fs_out):g} Hz: their ratio is no "
            f"fraction up/down with up, down <= {MAX_DENOMINATOR} (closest: {up}/{down}); "
            "resample the input to a rate that gives one first",
            field="fs_in",
        )
    return up, down


class StreamingResampler:
    """Resample a multi-lead stream from ``fs_in`` to ``fs_out`` with carried state.

    Parameters
    ----------
    fs_in : float
        Input sample rate in Hz, > 0.
    fs_out : float
        Output sample rate in Hz, > 0; ``fs_out / fs_in`` must reduce to ``up / down`` with
        both at most :data:`MAX_DENOMINATOR`.
    n_leads : int, default 1
        Number of leads (columns) per block.

    Notes
    -----
    The anti-alias filter is ``scipy.signal.firwin`` with a Kaiser window (beta 5), cut-off
    ``0.9 * min(1/up, 1/down)`` of the upsampled Nyquist rate, ``2 * half_len + 1`` taps where
    ``half_len`` spans 10 zero crossings of the cut-off, and gain ``up``. When
    ``fs_in == fs_out`` the resampler is an exact pass-through with zero delay.
    Concatenated outputs of any block split equal one call on the whole signal.
    """

    def __init__(self, fs_in: float, fs_out: float, n_leads: int = 1) -> None:
        self._up, self._down = resample_ratio(fs_in, fs_out)
        if int(n_leads) != n_leads or n_leads < 1:
            raise ConfigError(f"n_leads must be an integer >= 1, got {n_leads!r}", field="n_leads")
        self._fs_in = float(fs_in)
        self._fs_out = float(fs_out)
        self._n_leads = int(n_leads)
        self._passthrough = self._up == 1 and self._down == 1
        if self._passthrough:
            self._half_len = 0
            self._poly = np.ones((1, 1), dtype=np.float64)
        else:
            cutoff = _CUTOFF_FRACTION / max(self._up, self._down)
            self._half_len = math.ceil(_ZERO_CROSSINGS / cutoff)
            taps = signal.firwin(
                2 * self._half_len + 1, cutoff, window=("kaiser", _KAISER_BETA)
            ) * float(self._up)
            n_phase = -(-taps.size // self._up)
            padded = np.zeros(n_phase * self._up, dtype=np.float64)
            padded[: taps.size] = taps
            # poly[p, q] = h[p + q * up]
            self._poly = padded.reshape(n_phase, self._up).T.copy()
        self._n_hist = self._poly.shape[1] - 1
        self._work = np.zeros((self._n_hist + 1024, self._n_leads), dtype=np.float64)
        self._n_in = 0
        self._n_out = 0

    # ------------------------------------------------------------------ properties
    @property
    def up(self) -> int:
        """Upsampling factor."""
        return self._up

    @property
    def down(self) -> int:
        """Downsampling factor."""
        return self._down

    @property
    def fs_in(self) -> float:
        """Input rate in Hz."""
        return self._fs_in

    @property
    def fs_out(self) -> float:
        """Output rate in Hz."""
        return self._fs_out

    @property
    def n_leads(self) -> int:
        """Number of leads per block."""
        return self._n_leads

    @property
    def n_taps(self) -> int:
        """Length of the anti-alias FIR at the upsampled rate (1 for pass-through)."""
        return 2 * self._half_len + 1

    @property
    def delay_s(self) -> float:
        """Group delay of the causal FIR in seconds, ``half_len / (fs_in * up)``."""
        return self._half_len / (self._fs_in * self._up)

    @property
    def n_in(self) -> int:
        """Input samples consumed so far."""
        return self._n_in

    @property
    def n_out(self) -> int:
        """Output samples produced so far."""
        return self._n_out

    def reset(self) -> None:
        """Forget all history (zero state, counters back to 0)."""
        self._work.fill(0.0)
        self._n_in = 0
        self._n_out = 0

    def settle_at(self, level: np.ndarray) -> None:
        """Replace the input history by the constant ``level`` (one value per lead), keeping
        the counters: the next outputs are computed as if the input had been ``level`` before
        the next block (no mixing of samples across a gap)."""
        lv = as_lead_levels(level, self._n_leads)
        self._work[: self._n_hist] = lv[None, :]

    @property
    def dc_gain(self) -> float:
        """Mean gain of the resampler for a constant input (1 within the FIR's ripple)."""
        return float(self._poly.sum(axis=1).mean())

    # ------------------------------------------------------------------ processing
    def process(self, block: np.ndarray) -> np.ndarray:
        """Resample one block.

        Parameters
        ----------
        block : numpy.ndarray
            ``(n, n_leads)`` real samples, or ``(n,)`` when ``n_leads == 1``; ``n`` may be 0.

        Returns
        -------
        numpy.ndarray
            float32 ``(m, n_leads)`` (or ``(m,)`` for 1-D input): every output whose newest
            contributing input has arrived, i.e. outputs ``k`` with
            ``k * down < n_in * up`` after this block. Computation is float64.
        """
        x, one_d = as_lead_block(block, self._n_leads, "resampler")
        n = x.shape[0]
        total_in = self._n_in + n
        end_out = -(-total_in * self._up // self._down)  # ceil(total_in * up / down)
        m = end_out - self._n_out
        out = np.empty((m, self._n_leads), dtype=np.float32)
        if self._passthrough:
            out[:] = x
        elif n > 0:
            self._ensure_work(n)
            work = self._work
            work[self._n_hist : self._n_hist + n] = x
            base = self._n_in - self._n_hist  # absolute input index of work[0]
            for start in range(0, m, _CHUNK_OUT):
                k = np.arange(self._n_out + start, self._n_out + min(m, start + _CHUNK_OUT))
                pos = k * self._down
                newest = pos // self._up - base
                idx = newest[:, None] - np.arange(self._poly.shape[1])[None, :]
                weights = self._poly[pos % self._up]
                out[start : start + k.size] = np.einsum("mq,mql->ml", weights, work[idx])
            if self._n_hist:
                work[: self._n_hist] = work[n : n + self._n_hist].copy()
        self._n_in = total_in
        self._n_out = end_out
        return out.reshape(-1) if one_d else out

    def _ensure_work(self, n: int) -> None:
        """Grow the work buffer (history + block) if a block is larger than any before."""
        need = self._n_hist + n
        if need > self._work.shape[0]:
            grown = np.zeros((max(need, 2 * self._work.shape[0]), self._n_leads), np.float64)
            grown[: self._n_hist] = self._work[: self._n_hist]
            self._work = grown


def resample(x: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    """Resample a whole signal with a fresh :class:`StreamingResampler`.

    Parameters
    ----------
    x : numpy.ndarray
        ``(n,)`` or ``(n, n_leads)`` samples along axis 0.
    fs_in, fs_out : float
        Input and output rates in Hz.

    Returns
    -------
    numpy.ndarray
        float32 ``(m,)`` or ``(m, n_leads)`` with ``m = ceil(n * up / down)``; delayed by
        ``StreamingResampler(fs_in, fs_out).delay_s`` seconds (causal filter).
    """
    arr = np.asarray(x)
    if arr.ndim not in (1, 2):
        raise BlockError(f"x must be 1-D or 2-D, got shape {arr.shape}", reason="shape")
    n_leads = 1 if arr.ndim == 1 else max(1, arr.shape[1])
    return StreamingResampler(fs_in, fs_out, n_leads=n_leads).process(arr)
