"""Tests of sdk.filters."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from sdk.errors import BlockError, ConfigError
from sdk.filters import StreamingSOSFilter, bandpass, design_bandpass

STREAM_TOL = 1e-5  # absolute, streaming vs offline (float32 output, unit-scale data)


def _random_split(n: int, rng: np.random.Generator) -> list[int]:
    """Block sizes summing to n, including 0 and 1."""
    sizes = [0, 1, 0, 1]
    while sum(sizes) < n:
        sizes.append(int(rng.choice([0, 1, 2, 7, 64, 301])))
    sizes[-1] -= sum(sizes) - n
    return sizes


@pytest.mark.parametrize("n_leads", [1, 3])
def test_streaming_equals_offline(n_leads: int) -> None:
    rng = np.random.default_rng(1)
    fs = 250.0
    x = rng.standard_normal((3000, n_leads))
    offline = bandpass(x, fs, 0.5, 40.0, order=3)
    filt = StreamingSOSFilter(design_bandpass(fs, 0.5, 40.0, order=3), n_leads=n_leads)
    parts, pos = [], 0
    for size in _random_split(len(x), rng):
        out = filt.process(x[pos : pos + size])
        assert out.shape == (size, n_leads) and out.dtype == np.float32
        parts.append(out)
        pos += size
    np.testing.assert_allclose(np.concatenate(parts), offline, rtol=0, atol=STREAM_TOL)


def test_zero_initial_state_and_reset() -> None:
    fs = 360.0
    sos = design_bandpass(fs, 5.0, 15.0)
    impulse = np.zeros(200)
    impulse[0] = 1.0
    filt = StreamingSOSFilter(sos)
    first = filt.process(impulse)
    np.testing.assert_allclose(first, signal.sosfilt(sos, impulse), atol=1e-7)
    filt.reset()
    np.testing.assert_array_equal(filt.process(impulse), first)
    np.testing.assert_array_equal(StreamingSOSFilter(sos).process(np.zeros(10)), 0.0)


def test_bandpass_passes_band_and_rejects_outside() -> None:
    fs = 250.0
    t = np.arange(int(20 * fs)) / fs
    steady = slice(int(10 * fs), None)
    for freq, lo_gain, hi_gain in [(10.0, 0.97, 1.01), (0.05, 0.0, 0.05), (100.0, 0.0, 0.05)]:
        y = bandpass(np.sin(2 * np.pi * freq * t), fs, 0.5, 40.0, order=2)
        gain = float(np.max(np.abs(y[steady])))
        assert lo_gain <= gain <= hi_gain, (freq, gain)


def test_shapes_and_errors() -> None:
    sos = design_bandpass(128.0, 1.0, 20.0)
    assert sos.shape == (2, 6)
    assert bandpass(np.ones(50), 128.0, 1.0, 20.0).shape == (50,)
    with pytest.raises(BlockError):
        StreamingSOSFilter(sos, n_leads=2).process(np.zeros((5, 3)))
    with pytest.raises(BlockError):
        StreamingSOSFilter(sos, n_leads=2).process(np.zeros(5))
    with pytest.raises(ConfigError):
        StreamingSOSFilter(np.zeros((2, 5)))


@pytest.mark.parametrize(
    ("fs", "low", "high", "order"),
    [(128.0, 0.0, 20.0, 2), (128.0, 20.0, 10.0, 2), (128.0, 5.0, 64.0, 2), (128.0, 5, 20, 0)],
)
def test_design_validation(fs: float, low: float, high: float, order: int) -> None:
    with pytest.raises(ConfigError):
        design_bandpass(fs, low, high, order)


def test_settle_at_starts_in_the_steady_state_of_a_level() -> None:
    from sdk.resample import StreamingResampler

    filt = StreamingSOSFilter(design_bandpass(128.0, 0.5, 40.0), n_leads=2)
    filt.process(np.random.default_rng(0).standard_normal((300, 2)))
    filt.settle_at(np.array([7.0, -3.0]))
    assert np.abs(filt.process(np.tile([7.0, -3.0], (256, 1)))).max() < 1e-5
    res = StreamingResampler(360.0, 128.0)
    res.process(np.zeros(1000))
    res.settle_at(np.array([5.0]))
    assert np.allclose(res.process(np.full(720, 5.0)), 5.0, atol=1e-3)
    with pytest.raises(BlockError):
        filt.settle_at(np.array([np.nan, 0.0]))
