"""Writing small WFDB test records (mV, 16-bit, 1 µV steps; NaN stays a lost sample)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def write_record(folder: Path, name: str, x: np.ndarray, fs: int = 250) -> None:
    """Write ``x`` (n,) or (n, leads) in mV as ``folder/name`` (.hea/.dat); NaN is WFDB's
    missing sample."""
    wfdb = pytest.importorskip("wfdb")
    folder.mkdir(parents=True, exist_ok=True)
    signal = np.asarray(x, dtype=np.float64)
    signal = signal.reshape(-1, 1) if signal.ndim == 1 else signal
    leads = signal.shape[1]
    wfdb.wrsamp(
        name,
        fs=fs,
        units=["mV"] * leads,
        sig_name=[f"ECG{j}" for j in range(leads)],
        p_signal=signal,
        fmt=["16"] * leads,
        adc_gain=[1000.0] * leads,
        baseline=[0] * leads,
        write_dir=str(folder),
    )
