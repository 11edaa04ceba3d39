"""Challenge F1, macro F1, AUROC and per-record aggregation on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import mannwhitneyu

from trainer.metrics import (
    aggregate_by_record,
    auroc,
    auroc_normal_vs_abnormal,
    bootstrap_ci,
    challenge_f1,
    encode,
    f1_per_class,
    macro_f1,
    rhythm_metrics,
)

# classes: 0 N, 1 A, 2 O, 3 ~
Y_TRUE = np.array([0, 0, 1, 1, 2, 3])
Y_PRED = np.array([0, 1, 1, 1, 2, 2])
# N: tp 1, |pred| 1, |true| 2 -> F1 = 2*1/(1+2) = 2/3
# A: tp 2, |pred| 3, |true| 2 -> F1 = 2*2/(3+2) = 4/5
# O: tp 1, |pred| 2, |true| 1 -> F1 = 2*1/(2+1) = 2/3
# ~: tp 0, |pred| 0, |true| 1 -> F1 = 0
# challenge F1 = (2/3 + 4/5 + 2/3) / 3 = 32/45;  macro F1 = (2/3 + 4/5 + 2/3 + 0) / 4 = 8/15


def test_f1_per_class_by_hand() -> None:
    np.testing.assert_allclose(f1_per_class(Y_TRUE, Y_PRED, 4), [2 / 3, 4 / 5, 2 / 3, 0.0])


def test_challenge_and_macro_f1_by_hand() -> None:
    assert challenge_f1(Y_TRUE, Y_PRED) == pytest.approx(32 / 45)
    assert macro_f1(Y_TRUE, Y_PRED) == pytest.approx(8 / 15)


def test_f1_perfect_and_absent_classes() -> None:
    y = np.array([0, 1, 2, 2])
    assert challenge_f1(y, y) == pytest.approx(1.0)
    assert macro_f1(y, y) == pytest.approx(3 / 4)  # ~ absent from both: F1 0
    only_n = np.zeros(5, dtype=int)
    assert challenge_f1(only_n, only_n) == pytest.approx(1 / 3)


def test_auroc_by_hand() -> None:
    # positives 0.35, 0.8; negatives 0.1, 0.4: pairs won 0.35>0.1, 0.8>0.1, 0.8>0.4 -> 3/4
    assert auroc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert auroc(np.array([1, 1, 0]), np.array([3.0, 2.0, 1.0])) == pytest.approx(1.0)
    assert auroc(np.array([1, 1, 0]), np.array([1.0, 2.0, 3.0])) == pytest.approx(0.0)


def test_auroc_with_ties_by_hand() -> None:
    labels = np.array([1, 0, 1, 0, 1])
    scores = np.array([0.5, 0.5, 0.9, 0.1, 0.5])
    # positives 0.5, 0.9, 0.5 vs negatives 0.5, 0.1:
    # (0.5,0.5)=1/2 (0.5,0.1)=1 (0.9,0.5)=1 (0.9,0.1)=1 (0.5,0.5)=1/2 (0.5,0.1)=1 -> 5/6
    assert auroc(labels, scores) == pytest.approx(5 / 6)
    assert auroc(np.array([1, 0, 1, 0]), np.full(4, 0.3)) == pytest.approx(0.5)


def test_auroc_equals_mann_whitney_on_tied_scores() -> None:
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, 200).astype(bool)
    scores = rng.integers(0, 6, 200).astype(float) + labels  # many ties, some signal
    pos, neg = scores[labels], scores[~labels]
    pairwise = ((pos[:, None] > neg[None]) + 0.5 * (pos[:, None] == neg[None])).mean()
    u = mannwhitneyu(pos, neg, alternative="two-sided").statistic
    assert auroc(labels, scores) == pytest.approx(pairwise, abs=1e-12)
    assert auroc(labels, scores) == pytest.approx(u / (len(pos) * len(neg)), abs=1e-12)
    assert auroc(labels, -scores) == pytest.approx(1 - pairwise, abs=1e-12)


def test_auroc_single_class_is_nan() -> None:
    assert math.isnan(auroc(np.ones(3), np.array([0.1, 0.2, 0.3])))
    assert math.isnan(auroc(np.zeros(3), np.array([0.1, 0.2, 0.3])))


def test_auroc_normal_vs_abnormal_excludes_noisy() -> None:
    y = np.array([0, 0, 1, 2, 3])  # N, N, A, O, ~
    proba = np.array(
        [
            [0.7, 0.2, 0.1, 0.0],  # N: score P(A)+P(O) = 0.3
            [0.2, 0.5, 0.2, 0.1],  # N: 0.7
            [0.1, 0.8, 0.1, 0.0],  # A: 0.9
            [0.4, 0.1, 0.4, 0.1],  # O: 0.5
            [0.0, 0.0, 0.0, 1.0],  # ~: 0.0, must be dropped (as a negative it would give 5/6)
        ]
    )
    # positives 0.9, 0.5 vs negatives 0.3, 0.7: wins 0.9>0.3, 0.9>0.7, 0.5>0.3 -> 3/4
    assert auroc_normal_vs_abnormal(y, proba) == pytest.approx(0.75)
    m = rhythm_metrics(y, proba)  # argmax: N, A, A, N|O tie -> N (first), ~
    assert m["auroc_normal_vs_af_other"] == pytest.approx(0.75)
    assert m["challenge_f1"] == pytest.approx(challenge_f1(y, proba.argmax(axis=1)))


def test_aggregate_by_record_means() -> None:
    proba = np.array([[1.0, 0.0], [0.0, 1.0], [0.2, 0.8], [0.6, 0.4]])
    index = np.array([0, 0, 2, 2])
    out = aggregate_by_record(proba, index, 3)
    # record 0: mean of rows 0, 1; record 1: no window -> zeros; record 2: mean of rows 2, 3
    np.testing.assert_allclose(out, [[0.5, 0.5], [0.0, 0.0], [0.4, 0.6]])


def test_encode() -> None:
    np.testing.assert_array_equal(encode(["N", "A", "O", "~", "A"]), [0, 1, 2, 3, 1])
    with pytest.raises(ValueError):
        encode(["X"])


def test_bootstrap_ci_is_seeded_and_brackets_the_mean() -> None:
    values = np.arange(100, dtype=float)
    lo, hi = bootstrap_ci(lambda i: float(values[i].mean()), 100, n_boot=200, seed=1)
    assert (lo, hi) == bootstrap_ci(lambda i: float(values[i].mean()), 100, n_boot=200, seed=1)
    assert lo < 49.5 < hi and hi - lo < 25
