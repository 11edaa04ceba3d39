"""Causal, stateful IIR filtering for streaming ECG.

Filters are second-order-section (SOS) cascades run with :func:`scipy.signal.sosfilt`.
The filter state is float64 and starts at zero, so the response to a signal that does not
start at 0 contains a start-up transient (:meth:`StreamingSOSFilter.settle_at` avoids it
where a stream resumes after a gap; :func:`step_envelope` bounds it). Because the offline
helpers run the very same causal filter once from the zero state, filtering a signal in
blocks of any size gives the same result as filtering it in one call (bit-identical in
practice; tests allow 1e-5).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import signal

from sdk.blocks import as_lead_block, as_lead_levels
from sdk.errors import BlockError, ConfigError

__all__ = ["StreamingSOSFilter", "bandpass", "design_bandpass", "step_envelope"]


class StreamingSOSFilter:
    """Causal SOS IIR filter applied independently to each lead, with carried state.

    Parameters
    ----------
    sos : numpy.ndarray
        ``(n_sections, 6)`` second-order sections, e.g. from :func:`design_bandpass`.
    n_leads : int, default 1
        Number of leads (columns) of every block.

    Notes
    -----
    The state (``float64 (n_sections, 2, n_leads)``) starts at zero; :meth:`reset` zeroes it.
    """

    def __init__(self, sos: np.ndarray, n_leads: int = 1) -> None:
        arr = np.array(sos, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != 6 or arr.shape[0] < 1:
            raise ConfigError(f"sos must have shape (n_sections, 6), got {arr.shape}", field="sos")
        if not np.all(np.isfinite(arr)):
            raise ConfigError("sos coefficients must be finite", field="sos")
        if np.any(arr[:, 3] == 0.0):
            raise ConfigError("every section needs a0 != 0 (sos[:, 3])", field="sos")
        if int(n_leads) != n_leads or n_leads < 1:
            raise ConfigError(f"n_leads must be an integer >= 1, got {n_leads!r}", field="n_leads")
        self._sos = arr
        self._n_leads = int(n_leads)
        self._zi = np.zeros((arr.shape[0], 2, self._n_leads), dtype=np.float64)

    @property
    def sos(self) -> np.ndarray:
        """Copy of the ``(n_sections, 6)`` float64 coefficients."""
        return self._sos.copy()

    @property
    def n_leads(self) -> int:
        """Number of leads per block."""
        return self._n_leads

    def reset(self) -> None:
        """Zero the filter state (as if no sample had been processed)."""
        self._zi.fill(0.0)

    def settle_at(self, level: np.ndarray) -> None:
        """Set the state to the steady state of a constant input ``level`` (one value per lead):
        the next block is filtered as if the input had been ``level`` forever, so a jump of the
        input's offset (e.g. across a gap) causes no start-up transient."""
        lv = as_lead_levels(level, self._n_leads)
        self._zi = signal.sosfilt_zi(self._sos)[:, :, None] * lv[None, None, :]

    def process(self, block: np.ndarray) -> np.ndarray:
        """Filter one block and advance the state.

        Parameters
        ----------
        block : numpy.ndarray
            ``(n, n_leads)`` real samples, or ``(n,)`` when ``n_leads == 1``; ``n`` may be 0.

        Returns
        -------
        numpy.ndarray
            float32 array of the same shape as ``block``. Computation is float64.

        Raises
        ------
        BlockError
            ``reason="lead_count"`` / ``"shape"`` for a malformed block.
        """
        x, one_d = as_lead_block(block, self._n_leads, "filter")
        if x.shape[0] == 0:
            out = np.empty((0, self._n_leads), dtype=np.float32)
        else:
            y, self._zi = signal.sosfilt(self._sos, x, axis=0, zi=self._zi)
            out = y.astype(np.float32)
        return out.reshape(-1) if one_d else out


def design_bandpass(fs: float, low_hz: float, high_hz: float, order: int = 2) -> np.ndarray:
    """Design a Butterworth band-pass filter as second-order sections.

    Parameters
    ----------
    fs : float
        Sample rate in Hz, > 0.
    low_hz, high_hz : float
        Pass-band edges (-3 dB) in Hz, ``0 < low_hz < high_hz < fs / 2``.
    order : int, default 2
        Butterworth prototype order (the band-pass has ``2 * order`` poles).

    Returns
    -------
    numpy.ndarray
        float64 ``(order, 6)`` SOS array.

    Raises
    ------
    ConfigError
        If the edges or the order are out of range.
    """
    if not (math.isfinite(fs) and fs > 0):
        raise ConfigError(f"fs must be a positive finite rate in Hz, got {fs!r}", field="fs")
    if not (0.0 < low_hz < high_hz < fs / 2.0):
        raise ConfigError(
            f"band edges must satisfy 0 < low_hz ({low_hz}) < high_hz ({high_hz}) "
            f"< fs/2 ({fs / 2.0})",
            field="low_hz" if not 0.0 < low_hz < fs / 2.0 else "high_hz",
        )
    if int(order) != order or order < 1:
        raise ConfigError(f"order must be an integer >= 1, got {order!r}", field="order")
    sos = signal.butter(int(order), [low_hz, high_hz], btype="bandpass", fs=fs, output="sos")
    return np.asarray(sos, dtype=np.float64)


def bandpass(x: np.ndarray, fs: float, low_hz: float, high_hz: float, order: int = 2) -> np.ndarray:
    """Band-pass a whole signal offline with the causal streaming filter.

    Runs a fresh :class:`StreamingSOSFilter` from the zero state once over ``x``, so the
    result equals streaming the same signal in blocks.

    Parameters
    ----------
    x : numpy.ndarray
        ``(n,)`` or ``(n, n_leads)`` samples; filtering is along axis 0.
    fs, low_hz, high_hz, order
        As in :func:`design_bandpass`.

    Returns
    -------
    numpy.ndarray
        float32 array shaped like ``x`` (causal: delayed by the filter's group delay).
    """
    arr = np.asarray(x)
    if arr.ndim not in (1, 2):
        raise BlockError(f"x must be 1-D or 2-D, got shape {arr.shape}", reason="shape")
    n_leads = 1 if arr.ndim == 1 else arr.shape[1]
    filt = StreamingSOSFilter(design_bandpass(fs, low_hz, high_hz, order), n_leads=max(1, n_leads))
    return filt.process(arr)


def step_envelope(sos: np.ndarray, n: int) -> np.ndarray:
    """How long a filter keeps answering a jump of its input: for ``k = 0 .. n - 1``, the
    largest ``|y|`` from sample ``k`` on of its response to a unit step (zero state, the step
    at sample 0; for a band-pass the response decays to 0).

    A jump of ``a`` in the input (an artefact's edge, an electrode pop) still moves the output
    by up to ``a * step_envelope(sos, n)[k]`` ``k`` samples later.

    Parameters
    ----------
    sos : numpy.ndarray
        ``(n_sections, 6)`` second-order sections.
    n : int
        Samples to compute, >= 1.

    Returns
    -------
    numpy.ndarray
        float64 ``(n,)``, non-increasing.
    """
    if int(n) != n or n < 1:
        raise ConfigError(f"n must be an integer >= 1, got {n!r}", field="n")
    y = np.abs(signal.sosfilt(np.asarray(sos, dtype=np.float64), np.ones(int(n))))
    return np.maximum.accumulate(y[::-1])[::-1]
