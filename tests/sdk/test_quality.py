"""Tests of sdk.quality.assess_quality."""

from __future__ import annotations

import numpy as np
import pytest

from sdk.errors import BlockError, ConfigError
from sdk.quality import FLAG_NAMES, QualityReport, assess_quality
from sdk.ringbuffer import GAP_BEFORE, INVALID

FS = 250.0


def clean_ecg(duration_s: float = 10.0, seed: int = 0) -> np.ndarray:
    """ECG-like signal in mV: Gaussian QRS and T waves at ~72 bpm, wander and noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(duration_s * FS)) / FS
    x = 0.1 * np.sin(2 * np.pi * 0.25 * t) + 0.01 * rng.standard_normal(t.size)
    for r in np.arange(0.4, duration_s, 60.0 / 72.0):
        x += 1.2 * np.exp(-0.5 * ((t - r) / 0.012) ** 2)
        x += 0.3 * np.exp(-0.5 * ((t - r - 0.28) / 0.05) ** 2)
    return x


def test_clean_signal_ok() -> None:
    report = assess_quality(clean_ecg(), FS)
    assert report == QualityReport(ok=True, score=1.0, flags=())


def test_nan_and_inf_reported_not_raised() -> None:
    x = clean_ecg()
    x[100] = np.nan
    x[200] = np.inf
    report = assess_quality(x, FS)
    assert not report.ok and report.flags == ("nonfinite",)
    assert 0.99 < report.score < 1.0
    all_nan = assess_quality(np.full(1000, np.nan), FS)
    assert all_nan.flags == ("nonfinite",) and all_nan.score == 0.0


def test_flatline_second() -> None:
    x = clean_ecg()
    x[1000:1400] = 0.2 + 0.001 * np.sin(np.arange(400))  # 1.6 s, 2 uV peak-to-peak
    report = assess_quality(x, FS)
    assert report.flags == ("flatline",)
    assert 0.8 < report.score < 0.9


def test_saturation_clipped_sine() -> None:
    t = np.arange(int(10 * FS)) / FS
    x = np.clip(1.5 * np.sin(2 * np.pi * 1.1 * t), -1.0, 1.0)
    report = assess_quality(x, FS)
    assert "saturated" in report.flags and not report.ok
    assert "saturated" not in assess_quality(1.5 * np.sin(2 * np.pi * 1.1 * t), FS).flags


def test_amplitude_and_duration_flags() -> None:
    x = clean_ecg()
    assert assess_quality(0.02 * x, FS).flags == ("low_amplitude",)
    high = assess_quality(20.0 * x, FS)
    assert high.flags == ("high_amplitude",) and high.score == pytest.approx(0.5)
    short = assess_quality(x[: int(1.0 * FS)], FS)
    assert short.flags == ("too_short",) and short.score == pytest.approx(0.5)
    assert assess_quality(x[:0], FS).flags == ("too_short",)


def test_ring_buffer_flags() -> None:
    x = clean_ecg()
    flags = np.zeros(x.size, dtype=np.uint8)
    flags[0] = GAP_BEFORE  # a gap before the window is not inside it
    assert assess_quality(x, FS, flags_in=flags).ok
    flags[500] = GAP_BEFORE
    flags[600] = INVALID
    report = assess_quality(x, FS, flags_in=flags)
    assert report.flags == ("nonfinite", "gap")
    with pytest.raises(BlockError):
        assess_quality(x, FS, flags_in=flags[:-1])


def test_multi_lead_union_and_flag_vocabulary() -> None:
    x = np.stack([clean_ecg(seed=1), np.full(int(10 * FS), 0.3)], axis=1)
    report = assess_quality(x, FS)
    assert set(report.flags) <= set(FLAG_NAMES)
    assert "flatline" in report.flags and "low_amplitude" in report.flags
    assert 0.0 <= report.score <= 0.5


def test_config_errors() -> None:
    with pytest.raises(ConfigError):
        assess_quality(np.zeros(10), 0.0)
    with pytest.raises(ConfigError):
        assess_quality(np.zeros(10), FS, min_duration_s=-1.0)
    with pytest.raises(BlockError):
        assess_quality(np.zeros((2, 2, 2)), FS)


def test_settling_after_a_jump_shortly_before_the_window() -> None:
    from scipy import signal

    from sdk.filters import design_bandpass, step_envelope

    settle = step_envelope(design_bandpass(FS, 0.5, 40.0), int(6 * FS))
    x = clean_ecg()
    before = clean_ecg(4.0, seed=2)
    # the window itself is clean, and clean input before it raises nothing
    assert assess_quality(x, FS, before=before, settle=settle).ok
    # a 20 mV electrode pop 0.5 s before the window: the band-pass still answers it
    popped = before.copy()
    popped[-int(0.5 * FS) :] += 20.0
    report = assess_quality(x + 20.0, FS, before=popped, settle=settle)
    assert report.flags == ("settling",) and not report.ok
    # the same jump longer ago than the filter takes to settle from it is forgotten
    lag = int(np.argmax(20.0 * settle <= 0.05)) + 1
    early = np.concatenate([clean_ecg(1.0, seed=4), clean_ecg(lag / FS, seed=5) + 20.0])
    assert assess_quality(x + 20.0, FS, before=early, settle=settle).ok
    # held NaNs count at the value the filters saw; a jump below 5 mV is ECG-sized
    nan_held = popped.copy()
    nan_held[-int(0.3 * FS) :] = np.nan
    assert "settling" in assess_quality(x + 20.0, FS, before=nan_held, settle=settle).flags
    assert assess_quality(x + 3.0, FS, before=before, settle=settle).ok
    # the envelope is the filter's step response bound
    y = signal.sosfilt(design_bandpass(FS, 0.5, 40.0), np.ones(settle.size))
    assert np.all(settle >= np.abs(y) - 1e-12) and np.all(np.diff(settle) <= 0)
    with pytest.raises(BlockError):
        assess_quality(x, FS, before=np.zeros((10, 2)), settle=settle)


def test_the_settling_look_back_is_the_filters_recent_input_and_their_zero_state():
    from sdk.quality import settling_look_back

    settle = np.ones(5)  # looks back 4 samples
    x = np.arange(1.0, 11.0)
    assert settling_look_back(x, settle, from_zero_state=True).tolist() == [7, 8, 9, 10]
    assert settling_look_back(x[:3], settle, from_zero_state=True).tolist() == [0, 1, 2, 3]
    assert settling_look_back(x[:3], settle, from_zero_state=False).tolist() == [1, 2, 3]
    two = np.stack([x[:2], -x[:2]], axis=1)  # (m, leads): a row of 0 mV in front
    assert settling_look_back(two, settle, from_zero_state=True).tolist() == [
        [0, 0],
        [1, -1],
        [2, -2],
    ]
