"""The device-path measurement worker: figures from a real stream, paced like a sensor.

Speed itself (real-time factor > 1, latency targets) is measured by ``ecgedge bench``, not
asserted here: the worker's clock is replaced by a fake one, so the bookkeeping is checked
exactly and the test does not depend on how loaded the machine is.
"""

from __future__ import annotations

import numpy as np
import pytest

import sdk.bench as worker
from sdk.bundle import default_bundle_path
from sdk.synthetic import synthetic_ecg

#: every reading of the fake clock advances it by this much (a stand-in compute cost, s)
TICK_S = 0.001


class FakeTime:
    """``time.perf_counter`` and ``time.sleep`` for ``sdk.bench``: time moves only by one
    ``TICK_S`` per reading and by the amount slept; records when each sleep ends."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.slept: list[float] = []
        self.woke_at: list[float] = []

    def perf_counter(self) -> float:
        self.now += TICK_S
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.slept.append(seconds)
        self.now += seconds
        self.woke_at.append(self.now)


def test_stream_benchmark_reports_every_window(monkeypatch):
    ecg = synthetic_ecg((("sinus", 30.0),), fs=250.0, seed=4)
    for paced in (False, True):
        clock = FakeTime()
        monkeypatch.setattr(worker, "time", clock)
        start = clock.now + TICK_S  # the worker's first reading
        r = worker.stream_benchmark(
            default_bundle_path(), ecg.signal, ecg.fs, precision="fp32", paced=paced
        )
        assert r["paced"] is paced and r["windows"] == 5  # 30 s, 10 s windows, 5 s hop
        # each of the 60 pushes of 0.5 s and the close is timed between two readings: one tick
        assert r["compute_s"] == pytest.approx(61 * TICK_S)
        assert r["ecg_s"] == 30.0
        assert r["real_time_factor"] == pytest.approx(r["ecg_s"] / r["compute_s"])
        assert r["real_time_factor"] > 0
        assert r["hop_latency_ms"]["p50"] == pytest.approx(1000 * TICK_S)
        assert r["hop_latency_ms"]["p99"] == pytest.approx(1000 * TICK_S)
        assert r["peak_rss_mb"] > 0
        if paced:  # one wait per 0.5 s block, until the block's last sample would be taken
            deadlines = start + 0.5 * np.arange(1, 61)
            np.testing.assert_allclose(clock.woke_at, deadlines, rtol=0, atol=1e-9)
        else:
            assert clock.slept == []
    assert np.isfinite(r["window_analysis_ms"]["p50"])  # the pipeline's own (real) clock
