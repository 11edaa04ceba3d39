"""Tests of trainer.bench.stream_heart_rate (per-window heart-rate error)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from trainer.bench import stream_heart_rate as hr


def _event(start: float, end: float, bpm: float | None) -> SimpleNamespace:
    return SimpleNamespace(start_s=start, end_s=end, heart_rate_bpm=bpm)


def test_window_errors_against_the_reference_beats_inside_each_window():
    ref = np.arange(0.0, 60.0, 0.8)  # 75 bpm
    events = [
        _event(0.0, 10.0, 75.0),  # exact
        _event(10.0, 20.0, 81.0),  # 6 bpm off
        _event(20.0, 30.0, None),  # no heart rate: outside every tolerance
        _event(100.0, 110.0, 60.0),  # no reference beats: skipped
    ]
    noisy = [(9.0, 31.0)]
    out = hr.window_errors(events, ref, 0.0, noisy)
    assert out["whole"] == pytest.approx([0.0, 6.0, np.inf])
    assert out["noisy"] == pytest.approx([6.0, np.inf])  # wholly inside 9-31 s only
    # the pipeline's delay shifts the window onto the record's time axis
    shifted = hr.window_errors([_event(0.5, 10.5, 75.0)], ref, 0.5, [])
    assert shifted["whole"] == pytest.approx([0.0])


def test_summary_counts_windows_within_tolerance():
    s = hr.summarize([0.0, 4.0, 6.0, np.inf])
    assert s["windows"] == 4 and s["within_pct"] == 50.0 and s["median_abs_bpm"] == 5.0
    assert hr.summarize([])["windows"] == 0
