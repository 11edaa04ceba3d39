"""A user's calibration learns only from usable, labelled ECG, within checked budgets."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from sdk.bundle import default_bundle_path, load_bundle
from sdk.calibration import Calibrator, load_profile, maximize_integer, save_profile
from sdk.errors import ConfigError, ProfileError
from sdk.synthetic import synthetic_ecg

SEGMENTS = (("sinus", 60.0), ("af", 60.0), ("sinus", 60.0), ("af", 60.0))
INTERVALS = [(0.0, 60.0, "N"), (60.0, 120.0, "A"), (120.0, 180.0, "N"), (180.0, 240.0, "A")]


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(default_bundle_path())


@pytest.fixture(scope="module")
def recording():
    ecg = synthetic_ecg(SEGMENTS, fs=250.0, seed=11)
    return ecg.signal, ecg.fs


def test_windows_the_quality_check_flags_do_not_calibrate(bundle, recording):
    signal, fs = recording
    lead_off = signal.copy()
    lead_off[: int(60 * fs)] = 0.0  # the first sinus minute: electrode off
    cal = Calibrator(bundle, t_box=(1, 60), max_evals=2, n_init=2)
    n = cal.add_recording(lead_off, fs, INTERVALS)
    assert n == 18  # 24 windows of 10 s, the 6 flat ones left out
    profile = cal.calibrate().profile
    assert profile.calibration["windows_rejected_quality"] == 6
    assert profile.calibration["label_counts"] == {"N": 6, "A": 12}


def test_zero_padding_is_not_labelled_and_unknown_classes_fail_early(bundle, recording):
    signal, fs = recording
    cal = Calibrator(bundle)
    assert cal.add_recording(signal[: int(3 * fs)], fs, [(0.0, 600.0, "A")]) == 0
    with pytest.raises(ConfigError, match="not classes"):  # a typo on a minor interval
        cal.add_recording(signal, fs, [*INTERVALS, (239.0, 240.0, "AFIB")])
    with pytest.raises(ConfigError, match="start < end"):
        cal.add_recording(signal, fs, [(math.nan, 60.0, "N")])


def test_budgets_and_boxes_are_checked_before_the_search(bundle, recording, tmp_path):
    n_mods = len(bundle.manifest.modalities)
    for budget in (-1, n_mods - 1, 2.5):
        with pytest.raises(ConfigError, match="max_extractor_evals"):
            Calibrator(bundle, max_extractor_evals=budget)
    cal = Calibrator(bundle, t_box=(np.int64(1), np.int64(40)), max_evals=2, n_init=2)
    cal.add_recording(*recording, INTERVALS)
    profile = cal.calibrate().profile
    path = save_profile(profile, tmp_path / "u.json")  # numpy ints made this a TypeError
    assert load_profile(path, bundle).calibration["t_box"] == [1, 40]


def test_a_non_boolean_denoised_flag_is_refused(bundle, recording, tmp_path):
    from sdk.calibration.profile import _digest

    cal = Calibrator(bundle, t_box=(1, 40), max_evals=2, n_init=2)
    cal.add_recording(*recording, INTERVALS)
    path = save_profile(cal.calibrate().profile, tmp_path / "u.json")
    data = json.loads(path.read_text())
    data.pop("sha256")
    data["calibration"]["denoised"] = "no"  # truthy: would have read as "denoised"
    path.write_text(json.dumps({**data, "sha256": _digest(data)}))
    os.chmod(path, 0o600)
    with pytest.raises(ProfileError, match="denoised"):
        load_profile(path, bundle)


def test_a_failing_region_is_left_not_enumerated():
    """NaN below t = 20 (10% of the box): the GP models failures at the worst value."""
    calls = []

    def objective(x: tuple[int, ...]) -> float:
        calls.append(x[0])
        return math.nan if x[0] < 20 else -(((x[0] - 120) / 50.0) ** 2)

    res = maximize_integer(objective, [(1, 200)], n_init=4, max_evals=30, seed=0)
    failed = sum(t < 20 for t in calls)
    # before: 16 of 30 evaluations, t = 1, 2, 3, … in order; now 6, after the optimum is found
    assert failed <= 8, calls
    assert calls.index(120) < calls.index(1)
    assert abs(res.best_x[0] - 120) <= 10 and math.isfinite(res.best_y)


def test_an_infinite_value_is_a_failure_not_the_best():
    res = maximize_integer(
        lambda x: math.inf if x[0] == 35 else -abs(x[0] - 10), [(1, 60)], n_init=3, max_evals=12
    )
    assert res.best_y <= 0 and res.best_x != (35,)
