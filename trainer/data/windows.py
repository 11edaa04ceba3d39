"""Windowing of preprocessed records, with an explicit policy for the tail."""

from __future__ import annotations

from typing import Literal

import numpy as np

from trainer.errors import ConfigError

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
        raise ConfigError(f"window ({window}) and hop ({hop}) must be positive", key="hop")
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
