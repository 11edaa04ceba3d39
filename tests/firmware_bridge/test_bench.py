"""The bridge benchmark's stress scenario: on virtual time it repeats exactly and accounts
for every sample."""

from __future__ import annotations

from firmware_bridge.bench import STRESS, scenario
from sdk.bundle import default_bundle_path
from sdk.synthetic import synthetic_ecg


def test_stress_on_virtual_time_repeats_and_accounts_for_every_sample():
    ecg = synthetic_ecg((("sinus", 90.0), ("af", 90.0)), fs=250.0, seed=3)
    runs = [scenario(default_bundle_path(), ecg.signal, ecg.fs, STRESS, speed=0.0) for _ in (1, 2)]
    assert runs[0] == runs[1]  # virtual time: the same run whatever the machine's load
    r = runs[0]
    assert r["samples_misplaced"] == 0 and r["unaccounted_samples"] == 0
    assert r["reconnects"] == 3 and r["gaps_detected"] == r["gaps_in_pipeline"] > 0
    assert r["processing_ms"] is None  # computing takes no virtual time: no latency figures
