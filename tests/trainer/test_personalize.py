"""The personalization benchmark's calibration/test split."""

from __future__ import annotations

import numpy as np

from sdk.classifier import WindowInputs
from trainer.bench.personalize import Subject, calibration_split


def test_split_takes_each_rhythms_first_tenth_and_never_overlaps():
    labels = np.array(["N"] * 40 + ["A"] * 30 + ["N"] * 30)
    seconds = np.arange(100) * 5.0  # 10 s windows every 5 s
    subject = Subject("s", WindowInputs(np.zeros((100, 1, 8)), np.zeros((100, 9))), labels, seconds)
    cal, test = calibration_split(subject, window_s=10.0)
    assert list(cal) == list(range(7)) + list(range(40, 43))  # 10% of 70 N, of 30 A
    assert set(labels[cal]) == {"N", "A"}
    assert not set(cal) & set(test)
    gaps = np.abs(seconds[test][:, None] - seconds[cal][None, :])
    assert gaps.min() >= 10.0  # no test window shares a sample with a calibration window
    assert len(test) == 100 - 10 - 3  # the neighbours 7, 39 and 43 are left out


def test_scores_count_af_and_the_non_af_windows_called_other_or_noisy():
    from trainer.bench.personalize import _scores

    classes = ("N", "A", "O", "~")
    truth = np.array(["A", "A", "N", "N", "N", "N"])
    pred = np.array([1, 0, 1, 2, 3, 0])  # TP, FN, FP, O, ~, N
    s = _scores(truth, pred, classes)
    assert s["f1"] == 2 * 1 / (2 + 2)
    assert s["accuracy"] == 4 / 6  # AF vs non-AF: the O, ~ and N windows are right
    assert s["other_share"] == 2 / 4
    assert _scores(np.array(["A"]), np.array([1]), classes)["other_share"] is None


def test_reference_scores_are_recall_per_class_and_macro_f1():
    from trainer.bench.personalize import ReferenceWindows

    ref = ReferenceWindows(
        WindowInputs(np.zeros((4, 1, 8)), np.zeros((4, 9))),
        np.array([0, 0, 1, 2]),
        ("N", "A", "O", "~"),
        4,
    )
    proba = np.eye(4)[[0, 1, 1, 3]]  # N right, N called A, A right, O called ~
    s = ref.scores(proba)
    assert s["recall_N"] == 0.5 and s["recall_A"] == 1.0 and s["recall_O"] == 0.0
    assert s["recall_~"] == 0.0  # no ~ window: recall 0 by convention, F1 0
    f1 = [2 * 1 / 3, 2 * 1 / 3, 0.0, 0.0]
    assert np.isclose(s["macro_f1"], np.mean(f1))


def test_report_tables_have_as_many_cells_as_headers():
    from trainer.bench.personalize import _markdown, _summaries

    score = {"f1": 0.9, "accuracy": 0.95, "other_share": 0.0, "t": 5}
    names = ["global", "finetune_default_t", "finetune_default_t_anchors_missing", "fixed_t20"]
    names += ["fixed_t50", "grid_gamma", "gp_gamma", "gp_gamma_anchors_all"]
    names += ["gp_gamma_anchors_none"]
    subject = {
        "subject": "db/1",
        "windows_cal": 10,
        "windows_test": 90,
        "af_cal": 3,
        "af_test": 30,
        "calibratable": True,
        "methods": {n: dict(score, evaluations=3) for n in names},
    }
    rr_names = ["finetune_default_t", "fixed_t20", "fixed_t50", "gp_gamma", "grid_gamma"]
    rr_subject = dict(subject, methods={n: dict(score, evaluations=3) for n in rr_names})
    result = {
        "bundle": "b",
        "denoised": True,
        "protocol": {"calibration_fraction": 0.1, "gp_max_evaluations": 13, "grid_t": [1, 5]},
        "subjects": [subject],
        "summary": _summaries([subject]),
        "rr_subjects": [rr_subject],
        "rr_summary": _summaries([rr_subject]),
        "default_anchors": "missing",
        "anchors_usable": True,
        "calibration_speed": {
            "minutes": 10,
            "record": "db/1",
            "windows": 60,
            "seconds": 2.0,
            "extractor_evaluations": 28,
            "stopped": "extractor_budget",
            "t": {"raw": 4},
        },
    }
    text = _markdown(result)
    assert "Command: `ecgedge bench personalize --bundle DIR`" in text  # a file from before
    result["bundle_dir"] = "sdk/default_bundle"  # what the run records now
    assert "`ecgedge bench personalize --bundle sdk/default_bundle`" in _markdown(result)
    tables = [line for line in text.splitlines() if line.startswith("|")]
    blocks, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            current.append(line.count("|"))
        elif current:
            blocks.append(current)
            current = []
    assert len(blocks) == 4 and tables  # methods, per subject, and both for beat times
    for cells in blocks:
        assert len(set(cells)) == 1, cells  # every row as wide as its header
    assert "GP + γ, anchors all" in text and "GP + γ, anchors none" in text
