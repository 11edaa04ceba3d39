"""The device-path measurement worker: figures from a real stream, paced like a sensor."""

from __future__ import annotations

import numpy as np

import sdk.bench as worker
from sdk.bundle import default_bundle_path
from sdk.synthetic import synthetic_ecg


def test_stream_benchmark_reports_every_window(monkeypatch):
    ecg = synthetic_ecg((("sinus", 30.0),), fs=250.0, seed=4)
    slept: list[float] = []
    monkeypatch.setattr(worker.time, "sleep", slept.append)  # pace without waiting
    for paced in (False, True):
        slept.clear()
        r = worker.stream_benchmark(
            default_bundle_path(), ecg.signal, ecg.fs, precision="int8", paced=paced
        )
        assert r["paced"] is paced and r["windows"] == 5  # 30 s, 10 s windows, 5 s hop
        assert 0 < r["hop_latency_ms"]["p50"] <= r["hop_latency_ms"]["p99"]
        assert r["real_time_factor"] > 1 and r["peak_rss_mb"] > 0
        if paced:  # one wait per 0.5 s block, until the block's last sample would be taken
            # (sleep does not wait here, so each wait runs to the block's deadline from the start)
            assert len(slept) == 60 and all(s >= 0 for s in slept)
            assert 29.0 < slept[-1] <= 30.0
            assert np.all(np.abs(np.diff(slept) - 0.5) < 0.1)
        else:
            assert slept == []
    assert np.isfinite(r["window_analysis_ms"]["p50"])
