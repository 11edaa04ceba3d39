"""Windowing of records, with an explicit policy for the tail, shared by trainer and device."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from sdk.errors import ConfigError
from sdk.modalities import LorenzSpec, lorenz_image, rr_from_peaks
from sdk.preprocess import PreprocessSpec, preprocess_record, standardize_window
from sdk.rpeaks import denoised_window_rpeaks, detect_rpeaks
from sdk.rr import RR_FEATURE_NAMES, rr_features

if TYPE_CHECKING:
    from sdk.denoiser import WindowDenoiser

TailPolicy = Literal["align_end", "pad", "drop"]


def window_starts(
    n_samples: int, window: int, hop: int, tail: TailPolicy = "align_end"
) -> np.ndarray:
    """Start indices of windows over ``n_samples``.

    ``align_end`` adds a last window ending at the record's end when the regular hops
    leave a tail (so no sample is lost); ``pad`` starts a window at every hop, the last
    one running past the end (to be zero-padded); ``drop`` ignores the tail. A record
    shorter than one window gives a single window at 0 under every policy but ``drop``.
    """
    if window <= 0 or hop <= 0:
        raise ConfigError(f"window ({window}) and hop ({hop}) must be positive", field="hop")
    if n_samples < window:
        return np.zeros(0 if tail == "drop" else 1, dtype=np.int64)
    starts = np.arange(0, n_samples - window + 1, hop, dtype=np.int64)
    covered = starts[-1] + window
    if covered < n_samples:
        if tail == "align_end":
            starts = np.append(starts, n_samples - window)
        elif tail == "pad":
            starts = np.append(starts, starts[-1] + hop)
    return starts


def cut_windows(x: np.ndarray, window: int, hop: int, tail: TailPolicy = "align_end") -> np.ndarray:
    """Cut (n, leads) into (n_windows, leads, window), zero-padding where a window runs out."""
    x2 = x[:, None] if x.ndim == 1 else x
    starts = window_starts(x2.shape[0], window, hop, tail)
    out = np.zeros((starts.size, x2.shape[1], window), dtype=np.float32)
    for i, s in enumerate(starts):
        seg = x2[s : s + window]
        out[i, :, : seg.shape[0]] = seg.T
    return out


@dataclass(frozen=True)
class RecordWindows:
    """Model inputs of a whole record, cut the way a stream and the trainer cut them.

    Attributes
    ----------
    windows : (W, 1, L) float32 standardized windows of the preprocessed lead.
    rr : (W, K) float32 RR features (:data:`sdk.rr.RR_FEATURE_NAMES`) of each window's beats.
    lorenz : (W, G, G) float32 Lorenz images of each window's beats.
    starts : (W,) start of each window, in samples at ``fs``.
    fs : the model's sample rate (Hz).
    denoised : whether ``windows`` went through a 1-lead denoiser (as the pipeline's do).
    """

    windows: np.ndarray
    rr: np.ndarray
    lorenz: np.ndarray
    starts: np.ndarray
    fs: float
    denoised: bool = False


def denoised_context(prev: tuple[int, np.ndarray] | None, start: int) -> np.ndarray | None:
    """The samples of the previous denoised window ``prev`` = (its start, its denoised samples)
    that precede a window starting at ``start``, or ``None`` when ``prev`` does not reach
    ``start`` (no overlap or adjacency) or is missing."""
    if prev is None:
        return None
    k = start - prev[0]
    return prev[1][:k] if 0 < k <= prev[1].shape[0] else None


def record_windows(
    x: np.ndarray,
    fs_in: float,
    spec: PreprocessSpec,
    window: int,
    hop: int,
    tail: TailPolicy = "align_end",
    denoiser: WindowDenoiser | None = None,
) -> RecordWindows:
    """One lead (n,) in mV at ``fs_in`` → :class:`RecordWindows` at ``spec.fs``.

    Preprocessing, R-peaks, windowing, standardization, RR features and Lorenz images are the
    device's own code. Without a denoiser, R-peaks are found on the whole record, as a stream
    finds them. With a 1-lead ``denoiser`` each window is denoised from its band-passed segment
    exactly as ``StreamPipeline(denoise=True)`` does (:meth:`WindowDenoiser.denoise_leads`),
    and its R-peaks, RR features and Lorenz image come from the denoised window
    (:func:`sdk.rpeaks.denoised_window_rpeaks`, the previous window's denoised samples before
    it as context: :func:`denoised_context`), as in the pipeline.
    """
    if denoiser is not None and denoiser.leads != 1:
        raise ConfigError(
            f"record_windows takes one lead; the denoiser takes {denoiser.leads}", field="denoiser"
        )
    y = preprocess_record(np.asarray(x, dtype=np.float32), fs_in, spec)[:, 0]
    peaks = detect_rpeaks(y, spec.fs) if denoiser is None else None
    starts = window_starts(y.shape[0], window, hop, tail)
    wins = np.zeros((starts.size, 1, window), dtype=np.float32)
    feats = np.zeros((starts.size, len(RR_FEATURE_NAMES)), dtype=np.float32)
    grid = LorenzSpec().grid
    lorenz = np.zeros((starts.size, grid, grid), dtype=np.float32)
    prev: tuple[int, np.ndarray] | None = None  # the last denoised window: start, samples
    for i, s in enumerate(starts):
        seg = y[s : s + window]
        if denoiser is None:
            assert peaks is not None
            wins[i, 0, : seg.shape[0]] = standardize_window(seg)
            inside = peaks[(peaks >= s) & (peaks < s + window)] - s
        else:
            denoised = denoiser.denoise_leads(seg[:, None], 0)
            wins[i] = denoised.embedder_input(window)[0]
            beats_in = denoised.beat_signal()
            context = denoised_context(prev, int(s))
            inside = denoised_window_rpeaks(
                beats_in,
                seg.shape[0],
                spec.fs,
                context,
                search_back_threshold=denoiser.search_back_threshold,
                min_qrs_energy=denoised.min_qrs_energy,
            )
            prev = (int(s), beats_in)
        feats[i] = rr_features(inside, spec.fs)
        lorenz[i] = lorenz_image(rr_from_peaks(inside, spec.fs))
    return RecordWindows(wins, feats, lorenz, starts, spec.fs, denoised=denoiser is not None)
