"""The Calibrator: labelled data in, a profile bound to the bundle out, within budgets."""

from __future__ import annotations

import numpy as np
import pytest

from sdk.bundle import default_bundle_path, load_bundle
from sdk.calibration import Calibrator
from sdk.classifier import WindowClassifier
from sdk.errors import ConfigError
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


def make(bundle, recording, **kw) -> Calibrator:
    cal = Calibrator(bundle, t_box=(1, 60), **kw)
    cal.add_recording(*recording, INTERVALS)
    return cal


def test_recording_windows_take_the_majority_label(bundle, recording):
    cal = Calibrator(bundle)
    m = bundle.manifest
    hop_s, win_s = m.hop_samples / m.fs, m.window_samples / m.fs
    n = cal.add_recording(*recording, INTERVALS, hop_s=hop_s)
    assert Calibrator(bundle).add_recording(*recording, INTERVALS) == 24  # 240 s / 10 s
    assert n == len(cal._labels[0])
    for i, y in enumerate(cal._labels[0]):
        centre = i * hop_s + win_s / 2  # a window's majority is the interval holding its centre
        expected = "A" if int(centre // 60) % 2 else "N"
        if abs(centre % 60) > 0.01:  # centre exactly on a boundary: a tie
            assert m.classes[y] == expected


def test_calibration_finds_t_in_the_box_within_budget_and_fits_the_user(bundle, recording):
    seen = []
    mods = bundle.manifest.modalities
    cal = make(bundle, recording, max_evals=5, n_init=3, max_extractor_evals=None)
    res = cal.calibrate(user="u7", progress=lambda i, t, s: seen.append((i, t, s)))
    p = res.profile
    assert set(p.t) == set(mods) and all(1 <= t <= 60 for t in p.t.values())
    assert res.search.evaluations == 5 == len(seen)
    assert res.extractor_evaluations <= 5 * len(mods)
    assert [i for i, _, _ in seen] == [1, 2, 3, 4, 5]
    assert p.bundle_sha256 == bundle.manifest_sha256 and p.user == "u7"
    counts = p.calibration["label_counts"]
    assert set(counts) == {"N", "A"} and sum(counts.values()) == len(cal._labels[0])
    # the fitted head separates the user's rhythms on its own calibration windows
    inputs, y = cal._data()
    clf = WindowClassifier(bundle)
    proba = clf.classify(inputs, p.t, p.head)
    assert np.mean(proba.argmax(1) == y) >= 0.95


def test_extractor_budget_stops_the_search(bundle, recording):
    mods = len(bundle.manifest.modalities)
    res = make(bundle, recording, max_evals=30, max_extractor_evals=4 * mods).calibrate()
    assert res.extractor_evaluations <= 4 * mods
    assert res.search.stopped in ("extractor_budget", "budget")
    assert res.profile.calibration["extractor_evaluations"] == res.extractor_evaluations


def test_objectives_are_selectable_and_unknown_ones_refused(bundle, recording):
    res = make(bundle, recording, objective="delta_f1", max_evals=3).calibrate()
    assert res.profile.calibration["objective"] == "delta_f1"
    with pytest.raises(ConfigError, match="objective"):
        Calibrator(bundle, objective="accuracy")


def test_cancellation_keeps_the_best_so_far(bundle, recording):
    calls = iter(range(100))
    res = make(bundle, recording, max_evals=30).calibrate(should_stop=lambda: next(calls) >= 2)
    assert res.search.stopped == "cancelled" and res.search.evaluations == 2
    with pytest.raises(ConfigError, match="before any evaluation"):
        make(bundle, recording).calibrate(should_stop=lambda: True)


def test_too_little_or_one_class_data_is_refused(bundle, recording):
    signal, fs = recording
    cal = Calibrator(bundle)
    cal.add_recording(signal[: int(55 * fs)], fs, [(0.0, 55.0, "N")])
    with pytest.raises(ConfigError, match="2 classes"):
        cal.calibrate()
    with pytest.raises(ConfigError, match="no calibration windows"):
        Calibrator(bundle).calibrate()
    with pytest.raises(ConfigError, match="not classes"):
        Calibrator(bundle).add_recording(signal, fs, [(0.0, 60.0, "AFIB")])
    with pytest.raises(ConfigError, match="t_box"):
        Calibrator(bundle, t_box=(0, 10_000))


def test_recorded_windows_are_denoised_as_the_pipeline_denoises_them(bundle, recording, caplog):
    from sdk.denoiser import WindowDenoiser
    from sdk.pipeline import StreamPipeline
    from sdk.preprocess import standardize_window
    from sdk.windowing import record_windows

    m = bundle.manifest
    rw = record_windows(*recording, m.preprocess, m.window_samples, m.window_samples)
    plain = Calibrator(bundle, denoise=False)
    plain.add_recording(*recording, INTERVALS)
    np.testing.assert_array_equal(plain._inputs[0].windows, rw.windows)
    cal = Calibrator(bundle)
    cal.add_recording(*recording, INTERVALS)
    # independently: the denoiser's raw output on the same windows, re-standardized per window
    raw = WindowDenoiser(bundle).denoise(rw.windows)
    expected = np.stack([standardize_window(w[0])[None] for w in raw])
    np.testing.assert_allclose(cal._inputs[0].windows, expected, atol=1e-5)
    assert np.abs(cal._inputs[0].windows - rw.windows).max() > 1e-3  # the denoiser really ran
    profile = make(bundle, recording, max_evals=3, n_init=2).calibrate(user="d").profile
    assert profile.calibration["denoised"] is True
    StreamPipeline(bundle, fs_in=250.0, profile=profile)
    assert "calibrated with the denoiser" not in caplog.text
    StreamPipeline(bundle, fs_in=250.0, profile=profile, denoise=False)
    assert "calibrated with the denoiser but this pipeline runs without it" in caplog.text
