"""Preprocessing shared by the trainer and the device: one source of truth.

A record or a live stream goes through the same steps, in the same order:
resample to the model rate (streaming polyphase), band-pass (causal Butterworth,
state carried across blocks), then each window is standardized on its own.
The offline functions run a fresh streaming object over the whole input, so
streaming output equals offline output by construction.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass
from typing import TypeGuard

import numpy as np

from sdk.errors import BlockError, ConfigError
from sdk.filters import StreamingSOSFilter, design_bandpass
from sdk.resample import StreamingResampler, resample_ratio

#: Standardized windows are clipped to this many standard deviations.
CLIP_STD = 8.0
#: Floor of the standard deviation (mV) so a flat window does not blow up.
MIN_STD_MV = 1e-3


@dataclass(frozen=True)
class PreprocessSpec:
    """What the model expects: rate (Hz) and band-pass edges (Hz)."""

    fs: float = 128.0
    low_hz: float = 0.5
    high_hz: float = 40.0
    order: int = 2

    def __post_init__(self) -> None:
        if not 0 < self.low_hz < self.high_hz < self.fs / 2:
            raise ConfigError(
                f"0 < low_hz ({self.low_hz}) < high_hz ({self.high_hz}) < fs/2 ({self.fs / 2}) "
                "must hold",
                field="high_hz",
            )
        if self.order < 1:
            raise ConfigError(f"order must be >= 1, got {self.order}", field="order")

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


def is_real_number(value: object) -> TypeGuard[numbers.Real]:
    """A real number (numpy scalars too), not a bool or a string."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def check_input_rate(fs: object, spec: PreprocessSpec, *, field: str = "fs_in") -> float:
    """``fs`` as a float if ECG at that rate can go through ``spec``; else :class:`ConfigError`.

    The rate must be a finite positive real number (numpy scalars too; not a bool or a
    string), at least twice ``spec.high_hz`` (a slower signal cannot carry the QRS content
    the bundle's models were trained on, and its windows would look clean), and resampled to
    ``spec.fs`` by a ratio ``up/down`` with both at most 1000 (:mod:`sdk.resample`; for the
    shipped 128 Hz, any whole number of Hz up to 1000 is one).
    """
    if not is_real_number(fs) or not math.isfinite(fs) or fs <= 0:
        raise ConfigError(f"{field} must be a finite positive number, got {fs!r}", field=field)
    rate = float(fs)
    if rate < 2.0 * spec.high_hz:
        raise ConfigError(
            f"{field} ({rate:g} Hz) is below {2.0 * spec.high_hz:g} Hz, twice the bundle's "
            f"{spec.high_hz:g} Hz band-pass high edge: the signal cannot carry what its models "
            "were trained on",
            field=field,
        )
    try:
        resample_ratio(rate, spec.fs)
    except ConfigError as exc:
        raise ConfigError(str(exc), field=field) from exc
    return rate


class Preprocessor:
    """Streaming resample + band-pass for ``n_leads`` leads arriving at ``fs_in`` Hz.

    Not thread-safe: one instance per stream.
    """

    def __init__(self, fs_in: float, spec: PreprocessSpec, n_leads: int = 1) -> None:
        if fs_in <= 0 or not np.isfinite(fs_in):
            raise ConfigError(f"fs_in must be a positive rate in Hz, got {fs_in}", field="fs_in")
        self.spec = spec
        self.fs_in = float(fs_in)
        self._resampler = StreamingResampler(fs_in, spec.fs, n_leads)
        sos = design_bandpass(spec.fs, spec.low_hz, spec.high_hz, spec.order)
        self._filter = StreamingSOSFilter(sos, n_leads)

    @property
    def delay_s(self) -> float:
        """Group delay of the resampler (s); the band-pass adds a frequency-dependent one."""
        return float(self._resampler.delay_s)

    def settle_at(self, level: np.ndarray) -> None:
        """Continue as if the input had been constant at ``level`` (one value per lead) before
        the next block: the stream resumes after a gap without the band-pass's start-up
        transient from the jump of the offset (seconds of ringing otherwise)."""
        self._resampler.settle_at(level)
        gain = self._resampler.dc_gain
        self._filter.settle_at(np.asarray(level, dtype=np.float64).reshape(-1) * gain)

    def process(self, block: np.ndarray) -> np.ndarray:
        """Return the block resampled and filtered, (m, n_leads) float32 at ``spec.fs``.

        Raises
        ------
        BlockError
            reason ``"nonfinite"`` when the block holds NaN or inf: the filters would carry it
            to every later sample. Nothing is consumed; :class:`sdk.pipeline.StreamPipeline`
            holds such samples before they reach here, and
            :meth:`sdk.calibration.Calibrator.add_recording` splits a record at them.
        """
        bad = int(np.size(block) - np.count_nonzero(np.isfinite(block)))
        if bad:
            raise BlockError(
                f"{bad} non-finite sample(s) (NaN or inf): the filters would carry them to the "
                "end; split the record at them or stream it (StreamPipeline holds them)",
                reason="nonfinite",
            )
        return self._filter.process(self._resampler.process(block))


def preprocess_record(x: np.ndarray, fs_in: float, spec: PreprocessSpec) -> np.ndarray:
    """Offline preprocessing of a whole record, (n,) or (n, leads) → (m, leads) float32."""
    x2 = x[:, None] if x.ndim == 1 else x
    return Preprocessor(fs_in, spec, x2.shape[1]).process(x2)


def standardize_window(window: np.ndarray) -> np.ndarray:
    """Zero-mean, unit-variance copy of a window along time (axis 0), clipped to ±CLIP_STD."""
    w = np.asarray(window, dtype=np.float32)
    mean = w.mean(axis=0, keepdims=True)
    std = np.maximum(w.std(axis=0, keepdims=True), MIN_STD_MV)
    return np.clip((w - mean) / std, -CLIP_STD, CLIP_STD).astype(np.float32)
