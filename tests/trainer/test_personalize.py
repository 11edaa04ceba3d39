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
