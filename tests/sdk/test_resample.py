"""Tests of sdk.resample."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sdk.errors import BlockError, ConfigError
from sdk.resample import StreamingResampler, resample

STREAM_TOL = 1e-5  # absolute, streaming vs one-shot (float32 output, unit-scale data)


@pytest.mark.parametrize(
    ("fs_in", "up", "down"),
    [
        (300, 32, 75),
        (360, 16, 45),
        (250, 64, 125),
        (500, 32, 125),
        (200, 16, 25),
        (130, 64, 65),
        (128, 1, 1),
    ],
)
def test_exact_ratios(fs_in: float, up: int, down: int) -> None:
    rs = StreamingResampler(fs_in, 128.0)
    assert (rs.up, rs.down) == (up, down)


def test_passthrough_is_identity() -> None:
    x = np.random.default_rng(2).standard_normal((100, 2)).astype(np.float32)
    rs = StreamingResampler(128.0, 128.0, n_leads=2)
    assert rs.delay_s == 0.0
    np.testing.assert_array_equal(rs.process(x), x)


@pytest.mark.parametrize(("fs_in", "fs_out"), [(360.0, 128.0), (300.0, 128.0), (100.0, 128.0)])
def test_streaming_equals_one_shot(fs_in: float, fs_out: float) -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2000, 2)).astype(np.float32)
    whole = resample(x, fs_in, fs_out)
    rs = StreamingResampler(fs_in, fs_out, n_leads=2)
    assert whole.shape == (math.ceil(len(x) * rs.up / rs.down), 2)
    parts, pos = [rs.process(x[:0]), rs.process(x[:1])], 1
    while pos < len(x):
        size = int(rng.choice([0, 1, 3, 17, 250]))
        parts.append(rs.process(x[pos : pos + size]))
        pos += size
    got = np.concatenate(parts)
    assert got.dtype == np.float32 and rs.n_out == len(got) and rs.n_in == len(x)
    np.testing.assert_allclose(got, whole, rtol=0, atol=STREAM_TOL)


def test_sine_in_band_keeps_amplitude_and_delay() -> None:
    fs_in, fs_out = 300.0, 128.0
    t = np.arange(int(20 * fs_in)) / fs_in
    rs = StreamingResampler(fs_in, fs_out)
    y = rs.process(np.sin(2 * np.pi * 5.0 * t))
    t_out = np.arange(y.size) / fs_out - rs.delay_s  # output k represents input time t_out[k]
    steady = slice(int(2 * fs_out), None)
    expected = np.sin(2 * np.pi * 5.0 * t_out[steady])
    assert abs(np.max(np.abs(y[steady])) - 1.0) < 0.01
    assert np.max(np.abs(y[steady] - expected)) < 0.01


def test_tone_above_new_nyquist_attenuated() -> None:
    fs_in, fs_out = 300.0, 128.0
    t = np.arange(int(10 * fs_in)) / fs_in
    y = resample(np.sin(2 * np.pi * 100.0 * t), fs_in, fs_out)
    peak_db = 20 * np.log10(np.max(np.abs(y[int(1 * fs_out) :])))
    assert peak_db < -40.0


def test_leads_are_independent() -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((500, 2))
    both = resample(x, 360.0, 128.0)
    np.testing.assert_allclose(both[:, 1], resample(x[:, 1], 360.0, 128.0), atol=1e-7)


def test_errors() -> None:
    with pytest.raises(ConfigError, match="up, down <= 1000") as err:
        StreamingResampler(1031.0, 128.0)  # 128/1031 needs a denominator > 1000
    assert err.value.field == "fs_in"
    assert "cannot resample 1031 Hz to 128 Hz" in str(err.value)
    assert StreamingResampler(np.float32(130.0), 128.0).up == 64  # no Fraction of a float32
    with pytest.raises(ConfigError, match="positive finite rate") as err:
        StreamingResampler(-1.0, 128.0)
    assert err.value.field == "fs_in"
    with pytest.raises(BlockError, match="3 leads but the resampler has 2") as err:
        StreamingResampler(360.0, 128.0, n_leads=2).process(np.zeros((4, 3)))
    assert err.value.reason == "lead_count"
