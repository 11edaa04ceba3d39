"""Writing small WFDB test records (1 lead, mV, 16-bit, 1 µV steps; NaN stays a lost sample)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def write_record(folder: Path, name: str, x: np.ndarray, fs: int = 250) -> None:
    """Write ``x`` (n,) in mV as ``folder/name`` (.hea/.dat); NaN is WFDB's missing sample."""
    wfdb = pytest.importorskip("wfdb")
    folder.mkdir(parents=True, exist_ok=True)
    wfdb.wrsamp(
        name,
        fs=fs,
        units=["mV"],
        sig_name=["ECG0"],
        p_signal=np.asarray(x, dtype=np.float64).reshape(-1, 1),
        fmt=["16"],
        adc_gain=[1000.0],
        baseline=[0],
        write_dir=str(folder),
    )
