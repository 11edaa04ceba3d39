"""The Calibrator: labelled data in, a profile bound to the bundle out, within budgets."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from sdk.bundle import default_bundle_path, load_bundle
from sdk.calibration import Calibrator, load_profile, maximize_integer, save_profile
from sdk.classifier import WindowClassifier, WindowInputs
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
    # 30 evaluations would need more than 4 extractor runs per modality: that budget stops it
    assert res.search.stopped == "extractor_budget" and res.search.evaluations < 30
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


def test_recorded_windows_are_what_the_pipeline_feeds_its_embedders(bundle, recording):
    from sdk.events import WindowEvent
    from sdk.pipeline import StreamPipeline

    signal, fs = recording
    x = signal.copy()
    # a spike: clipped when standardized, so the order of steps shows (5 mV: higher ones are
    # flagged by the quality check and left out of calibration)
    x[int(35 * fs)] += 5.0
    m = bundle.manifest
    win_s = m.window_samples / m.fs
    for denoise in (True, False):
        cal = Calibrator(bundle, denoise=denoise)
        cal.add_recording(x, fs, INTERVALS)
        pipe = StreamPipeline(bundle, fs_in=fs, denoise=denoise)
        fed: list[np.ndarray] = []
        classify = pipe.classifier.classify

        def spy(inputs, *args, _classify=classify, _fed=fed, **kwargs):
            _fed.append(inputs.windows.copy())
            return _classify(inputs, *args, **kwargs)

        pipe.classifier.classify = spy  # type: ignore[method-assign]
        events = pipe.push(x) + pipe.close()
        starts = [e.start_s for e in events if isinstance(e, WindowEvent)]
        assert len(starts) == len(fed)
        by_start = {round(s, 6): w for s, w in zip(starts, fed)}
        got = cal._inputs[0].windows
        assert got.shape[0] == 24
        for k in range(got.shape[0]):  # calibration windows start every window length
            np.testing.assert_allclose(got[k], by_start[round(k * win_s, 6)][0], atol=1e-4)
        assert cal._denoised is denoise


def test_profile_records_whether_its_windows_were_denoised(bundle, recording, caplog):
    from sdk.classifier import WindowInputs
    from sdk.pipeline import StreamPipeline
    from sdk.windowing import record_windows

    m = bundle.manifest
    rw = record_windows(*recording, m.preprocess, m.window_samples, m.window_samples)
    labels = ["A" if int((k * 10 + 5) // 60) % 2 else "N" for k in range(len(rw.windows))]
    inputs = WindowInputs(rw.windows, rw.rr, rw.lorenz)
    cal = Calibrator(bundle, t_box=(1, 60), max_evals=3, n_init=2)
    cal.add_windows(inputs, labels, denoised=False)  # live windows taken before the denoiser
    with pytest.raises(ConfigError, match="fitted on one kind"):
        cal.add_recording(*recording, INTERVALS)  # these are denoised
    profile = cal.calibrate(user="plain").profile
    assert profile.calibration["denoised"] is False
    StreamPipeline(bundle, fs_in=250.0, profile=profile)
    assert "calibrated without the denoiser but this pipeline runs with it" in caplog.text
    denoised = make(bundle, recording, max_evals=3, n_init=2).calibrate(user="d").profile
    assert denoised.calibration["denoised"] is True
    caplog.clear()
    StreamPipeline(bundle, fs_in=250.0, profile=denoised)
    assert "calibrated with" not in caplog.text
    StreamPipeline(bundle, fs_in=250.0, profile=denoised, denoise=False)
    assert "calibrated with the denoiser but this pipeline runs without it" in caplog.text


def test_a_multi_lead_denoiser_needs_denoise_false(bundle, monkeypatch):
    import sdk.calibration.calibrator as calibrator

    class TwoLeads:
        leads = 2

        def __init__(self, *args, **kwargs) -> None:
            pass

    monkeypatch.setattr(calibrator, "WindowDenoiser", TwoLeads)
    with pytest.raises(ConfigError, match="pass denoise=False") as err:
        Calibrator(bundle)
    assert err.value.field == "denoise"
    assert Calibrator(bundle, denoise=False).denoiser is None


def test_a_few_minutes_of_windows_still_rank_t(bundle, recording):
    """24 windows against ~1,000 feature dimensions: the objective must not saturate to the
    same score at every t (it did before features were scaled by 1/sqrt(D))."""
    res = make(bundle, recording, max_evals=4, n_init=4, denoise=False).calibrate()
    scores = res.search.ys
    assert len(scores) == 4 and all(np.isfinite(scores)) and all(s > 0 for s in scores)
    assert len(set(round(s, 12) for s in scores)) > 1


def test_non_finite_or_misshapen_windows_are_refused(bundle, recording):
    base = make(bundle, recording, denoise=False)
    inputs, labels = base._inputs[0], [bundle.manifest.classes[i] for i in base._labels[0]]
    bad = {
        "windows": WindowInputs(np.full_like(inputs.windows, np.nan), inputs.rr, inputs.lorenz),
        "rr": WindowInputs(inputs.windows, np.full_like(inputs.rr, np.inf), inputs.lorenz),
    }
    short = WindowInputs(inputs.windows[:, :, :100], inputs.rr, inputs.lorenz)
    for field, wi in [*bad.items(), ("windows", short)]:
        cal = Calibrator(bundle, denoise=False)
        with pytest.raises(ConfigError) as err:
            cal.add_windows(wi, labels)
        assert err.value.field == field


@pytest.mark.parametrize(
    "kw",
    [
        {"r": -5},
        {"r": 10**9},
        {"t_box": (1.5, 5.5)},
        {"objective": "delta_acc", "r": 0},  # ω_0 against ω_0: every t scored 0
    ],
)
def test_malformed_settings_are_refused_up_front(bundle, kw):
    with pytest.raises(ConfigError):
        Calibrator(bundle, **kw)


def test_an_objective_with_no_finite_value_stops_with_a_clear_error(bundle, recording):
    from sdk.calibration import objectives

    cal = make(bundle, recording, max_evals=3, n_init=2, denoise=False)
    cal.objective = "nan"
    objectives.OBJECTIVES["nan"] = lambda *a, **k: float("nan")
    try:
        with pytest.raises(ConfigError, match="no finite value"):
            cal.calibrate()
    finally:
        del objectives.OBJECTIVES["nan"]


# -- only usable, labelled ECG calibrates; budgets and failures are checked ----------------
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
    # 3 s under a 600 s interval: the 7 s of padding are no recording, so no window
    with pytest.raises(ConfigError, match="no stretch of finite samples gives a window"):
        cal.add_recording(signal[: int(3 * fs)], fs, [(0.0, 600.0, "A")])
    assert cal.add_recording(signal[: int(6 * fs)], fs, [(0.0, 4.0, "A")]) == 0  # 4 of 10 s
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


def test_finite_runs_skip_gaps_and_short_stretches() -> None:
    from sdk.calibration.calibrator import _finite_runs

    x = np.ones(20)
    x[5] = np.nan
    x[12:14] = np.inf
    assert _finite_runs(x, 5) == [(0, 5), (6, 12), (14, 20)]
    assert _finite_runs(x, 6) == [(6, 12), (14, 20)]


def test_lost_samples_split_a_recording_and_are_never_filled_in(bundle, recording, monkeypatch):
    """A recording with 7 s lost (NaN) calibrates on the two stretches around them, each
    windowed on its own: no window is taken across the loss."""
    from sdk.calibration import calibrator as calibrator_mod

    x, fs = recording
    lost = x.astype(np.float64)
    lost[int(93 * fs) : int(100 * fs)] = np.nan
    seen: list[np.ndarray] = []
    original = calibrator_mod.record_windows

    def spy(signal, *args, **kw):
        seen.append(np.asarray(signal))
        return original(signal, *args, **kw)

    monkeypatch.setattr(calibrator_mod, "record_windows", spy)
    split = Calibrator(bundle).add_recording(lost, fs, INTERVALS)
    assert [s.size / fs for s in seen] == [93.0, 140.0] and all(np.isfinite(s).all() for s in seen)
    # 0-93 s: 9 windows and one ending at 93 s (as a stream's last); 100-240 s: 14
    assert split == 10 + 14
    with pytest.raises(ConfigError, match="no stretch of finite samples") as err:
        Calibrator(bundle).add_recording(np.full(int(60 * fs), np.nan), fs, INTERVALS)
    assert err.value.field == "signal"


@pytest.mark.parametrize(
    "fs, message",
    [
        (50.0, r"fs \(50 Hz\) is below 80 Hz, twice the bundle's 40 Hz band-pass high edge"),
        ("250", "fs must be a finite positive number"),
        (float("nan"), "fs must be a finite positive number"),
        (True, "fs must be a finite positive number"),
        (249.98, "cannot resample 249.98 Hz to 128 Hz"),
    ],
)
def test_a_recording_at_a_rate_the_pipeline_refuses_is_refused(bundle, recording, fs, message):
    with pytest.raises(ConfigError, match=message) as err:
        Calibrator(bundle).add_recording(recording[0], fs, INTERVALS)
    assert err.value.field == "fs"


def test_a_numpy_rate_is_a_rate_and_one_lead_only_is_taken(bundle, recording):
    x, fs = recording
    assert Calibrator(bundle).add_recording(x, np.float32(fs), INTERVALS) == 24
    assert Calibrator(bundle).add_recording(x[:, None], fs, INTERVALS) == 24
    with pytest.raises(ConfigError, match=r"one lead, \(n,\), got shape .*signal\[:, lead\]"):
        Calibrator(bundle).add_recording(np.stack([x, x], axis=1), fs, INTERVALS)


def test_a_stretch_between_lost_samples_shorter_than_a_window_is_left_out(bundle, recording):
    """20 s, 3 s lost, 6 s: the 6 s are no window (padded with zeros beside a gap, which the
    stream never analyses); a recording without lost samples may still be short."""
    x, fs = recording
    y = x[: int(29 * fs)].astype(np.float64)
    y[int(20 * fs) : int(23 * fs)] = np.nan
    assert Calibrator(bundle).add_recording(y, fs, [(0.0, 29.0, "N")]) == 2
    assert Calibrator(bundle).add_recording(x[: int(6 * fs)], fs, [(0.0, 6.0, "N")]) == 1
    with pytest.raises(ConfigError, match=r"min_coverage must lie in \(0, 1\]"):
        Calibrator(bundle).add_recording(x, fs, INTERVALS, min_coverage=0.0)


@pytest.mark.parametrize(
    ("intervals", "message"),
    [
        ([(0.0, 240.0, "N"), (0.0, 240.0, "A")], r"\(0, 240, 'N'\) and \(0, 240, 'A'\) overlap"),
        ([(0.0, 130.0, "N"), (120.0, 240.0, "A")], "overlap"),
        ([(0.0, 240.0)], r"interval 0 \(\(0.0, 240.0\)\) is not \(start_s, end_s, class\)"),
        ([None], "interval 0 .* is not"),
        ([("0", "240", "N")], "finite real"),
        ([(0.0, 240.0, 3)], "a class name"),
        ([(True, 240.0, "N")], "finite real"),
        ([(10.0, 5.0, "N")], "start < end"),
    ],
)
def test_intervals_that_overlap_or_are_malformed_are_refused_clearly(
    bundle, recording, intervals, message
):
    """Overlapping labels were accepted (every window took the first), malformed ones raised
    unpacking or ufunc errors."""
    with pytest.raises(ConfigError, match=message) as err:
        Calibrator(bundle).add_recording(*recording, intervals)
    assert err.value.field == "labels"


@pytest.mark.parametrize("dtype", [complex, bool, object, str])
def test_a_signal_that_is_not_real_numbers_is_refused(bundle, recording, dtype):
    signal, fs = recording
    with pytest.raises(ConfigError, match="signal must be real numbers"):
        Calibrator(bundle).add_recording(signal.astype(dtype), fs, [(0.0, 60.0, "N")])


def test_intervals_of_one_class_may_overlap(bundle, recording):
    same = [(0.0, 130.0, "N"), (120.0, 180.0, "N"), (180.0, 240.0, "A")]
    assert Calibrator(bundle).add_recording(*recording, same) == 24


def test_one_class_overlapping_itself_counts_each_second_once(bundle, recording):
    """Two copies of a 4 s label once made 8 s of a 10 s window, above half of it."""
    signal, fs = recording
    once = [(0.0, 4.0, "N"), (120.0, 240.0, "A")]
    twice = [(0.0, 4.0, "N"), (0.0, 4.0, "N"), (120.0, 240.0, "A")]
    assert Calibrator(bundle).add_recording(signal, fs, twice) == 12
    assert Calibrator(bundle).add_recording(signal, fs, once) == 12


def test_coverage_and_overlap_checks_agree_with_the_pairwise_definitions() -> None:
    """The one-pass checks against their definitions on random labels: the seconds of a
    window each class covers (each second once), and whether two classes overlap."""
    from sdk.calibration.calibrator import _check_no_overlap, _covered, _spans_by_class

    rng = np.random.default_rng(0)
    for trial in range(300):
        n = int(rng.integers(1, 12))
        starts = rng.uniform(0, 100, n).round(1)
        ivs = [
            (s, round(s + rng.uniform(0.1, 30), 1), str(rng.choice(["N", "A", "O"])))
            for s in starts
        ]
        clash = any(
            s0 < e1 and s1 < e0 and c0 != c1
            for i, (s0, e0, c0) in enumerate(ivs)
            for s1, e1, c1 in ivs[i + 1 :]
        )
        if clash:
            with pytest.raises(ConfigError, match="overlap"):
                _check_no_overlap(ivs)
        else:
            _check_no_overlap(ivs)
        spans = _spans_by_class(ivs, 90.0)
        grid = np.arange(0, 90, 0.05) + 0.025  # 0.05 s cells; the ends are on tenths
        for label, s in spans.items():
            inside = np.zeros(grid.size, bool)
            for a, e, c in ivs:
                inside |= (c == label) & (grid >= a) & (grid < e)
            for a, b in [(0.0, 10.0), (35.0, 45.0), (80.0, 90.0), (12.3, 22.3)]:
                expected = 0.05 * inside[(grid >= a) & (grid < b)].sum()
                assert _covered(s, a, b) == pytest.approx(expected, abs=1e-9), (trial, label)


def test_calibrator_arguments_are_checked_when_given(bundle):
    """Accepted at construction, they failed only inside calibrate(), after the recordings
    were windowed (or with a raw TypeError); a bundle folder crashed with an AttributeError."""
    assert Calibrator(default_bundle_path()).bundle.manifest.classes == bundle.manifest.classes
    bad = [
        ({"max_evals": -1}, "max_evals"),
        ({"max_evals": "x"}, "max_evals"),
        ({"max_evals": True}, "max_evals"),
        ({"n_init": 0}, "n_init"),
        ({"max_seconds": 0}, "max_seconds"),
        ({"max_seconds": -1.0}, "max_seconds"),
        ({"max_seconds": float("nan")}, "max_seconds"),
    ]
    for kwargs, field in bad:
        with pytest.raises(ConfigError, match=field) as err:
            Calibrator(bundle, **kwargs)
        assert err.value.field == field


def test_recording_arguments_are_checked_with_the_fix_named(bundle, recording):
    signal, fs = recording
    cal = Calibrator(bundle)
    for hop_s in (float("nan"), "5", 0.0, -1.0):
        with pytest.raises(ConfigError, match="hop_s must be a positive number"):
            cal.add_recording(signal, fs, INTERVALS, hop_s=hop_s)
    with pytest.raises(ConfigError, match="under one sample at the bundle's"):
        cal.add_recording(signal, fs, INTERVALS, hop_s=0.0001)
    with pytest.raises(ConfigError, match="no labelled interval"):
        cal.add_recording(signal, fs, [])
    with pytest.raises(ConfigError, match=r"starts after the recording \(240 s\)"):
        cal.add_recording(signal, fs, [(0.0, 60_000.0, "A"), (60_000.0, 120_000.0, "N")])  # ms
    with pytest.raises(ConfigError, match=r"pass signal\[lead\]"):
        cal.add_recording(np.stack([signal, signal]), fs, INTERVALS)
    with pytest.raises(ConfigError, match=r"pass signal\[:, lead\]"):
        cal.add_recording(np.stack([signal, signal], axis=1), fs, INTERVALS)


def test_calibration_leaves_out_what_the_pipeline_would_flag_after_an_artefact(
    bundle, recording, monkeypatch
):
    """A window right after an electrode pop is 'settling' in the stream (its filters still
    ring): calibration kept it. A value beyond ±1000 mV, which the stream holds and never
    filters, was band-passed into the calibration windows."""
    from sdk.calibration import calibrator as calibrator_mod
    from sdk.events import WindowEvent
    from sdk.pipeline import StreamPipeline

    signal, fs = recording
    popped = signal.astype(np.float64)
    popped[int(49.5 * fs) : int(49.8 * fs)] += 50.0  # 50 mV for 0.3 s, in the 40-50 s window
    pipe = StreamPipeline(bundle, fs_in=fs, hop_s=10.0)
    events = pipe.push(popped) + pipe.close()
    flagged = {round(e.start_s) for e in events if isinstance(e, WindowEvent) and not e.quality.ok}
    assert {40, 50} <= flagged  # the pop's window and the settling one after it
    cal = Calibrator(bundle)
    kept = cal.add_recording(popped, fs, INTERVALS)
    assert kept == 24 - len(flagged) and cal._quality_rejected == len(flagged)
    spiked = signal.astype(np.float64)
    spiked[int(125 * fs)] = 3000.0  # no ECG: a lost sample to calibration, as to the stream
    seen: list[int] = []
    original = calibrator_mod.record_windows

    def spy(x, *args, **kw):
        seen.append(np.asarray(x).size)
        return original(x, *args, **kw)

    monkeypatch.setattr(calibrator_mod, "record_windows", spy)
    Calibrator(bundle).add_recording(spiked, fs, INTERVALS)
    assert seen == [int(125 * fs), signal.size - int(125 * fs) - 1]  # split there, unfiltered


def test_a_profile_whose_search_met_a_failed_evaluation_saves(
    bundle, recording, tmp_path, monkeypatch
):
    """A NaN score kept in the trace made the profile unsavable (strict JSON), after the
    search and the head fit had finished: the whole calibration was lost."""
    from sdk.calibration import objectives

    real = objectives.OBJECTIVES["gamma"]
    calls = []

    def sometimes_nan(*a, **k):
        calls.append(1)
        return float("nan") if len(calls) == 2 else real(*a, **k)

    monkeypatch.setitem(objectives.OBJECTIVES, "gamma", sometimes_nan)
    cal = make(bundle, recording, max_evals=4, n_init=3, denoise=False)
    profile = cal.calibrate().profile
    trace = profile.calibration["trace"]
    assert [e["score"] is None for e in trace].count(True) == 1
    path = save_profile(profile, tmp_path / "p.json")
    assert load_profile(path, bundle).calibration["trace"] == trace
