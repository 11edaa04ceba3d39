"""Rhythm metrics of the CinC 2017 protocol, with bootstrap intervals.

Challenge F1 is the mean of the per-class F1 of N, A and O (Clifford et al., CinC 2017);
AUROC is Normal vs (A + O) with noisy records excluded (DACL's binary framing).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

CLASSES = ("N", "A", "O", "~")


def f1_per_class(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-class F1 from integer labels; a class absent from both gets F1 = 0."""
    f1 = np.zeros(n_classes)
    for k in range(n_classes):
        tp = np.sum((y_pred == k) & (y_true == k))
        denom = np.sum(y_pred == k) + np.sum(y_true == k)
        f1[k] = 2 * tp / denom if denom else 0.0
    return f1


def challenge_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean F1 over N, A, O (indices 0, 1, 2 of :data:`CLASSES`)."""
    return float(f1_per_class(y_true, y_pred, len(CLASSES))[:3].mean())


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(f1_per_class(y_true, y_pred, len(CLASSES)).mean())


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann–Whitney U with average ranks for ties)."""
    labels = np.asarray(labels, dtype=bool)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = np.asarray(scores)[order]
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auroc_normal_vs_abnormal(y_true: np.ndarray, proba: np.ndarray) -> float:
    """AUROC of P(A) + P(O) for (A + O) vs N, noisy records excluded."""
    keep = y_true != CLASSES.index("~")
    positive = np.isin(y_true[keep], [CLASSES.index("A"), CLASSES.index("O")])
    score = proba[keep, CLASSES.index("A")] + proba[keep, CLASSES.index("O")]
    return auroc(positive, score)


def rhythm_metrics(y_true: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    pred = proba.argmax(axis=1)
    return {
        "challenge_f1": challenge_f1(y_true, pred),
        "macro_f1": macro_f1(y_true, pred),
        "auroc_normal_vs_af_other": auroc_normal_vs_abnormal(y_true, proba),
    }


def bootstrap_ci(
    metric: Callable[[np.ndarray], float], n: int, *, n_boot: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """95% percentile interval of ``metric(indices)`` over resamples of ``range(n)``."""
    rng = np.random.default_rng(seed)
    values = [metric(rng.integers(0, n, n)) for _ in range(n_boot)]
    lo, hi = np.nanpercentile(values, [2.5, 97.5])
    return float(lo), float(hi)


def rhythm_report(
    y_true: np.ndarray, proba: np.ndarray, *, n_boot: int = 1000, seed: int = 0
) -> dict[str, object]:
    """Point metrics plus 95% bootstrap intervals, keyed by metric name."""
    point = rhythm_metrics(y_true, proba)
    report: dict[str, object] = {"n_records": int(len(y_true))}
    for name, value in point.items():
        ci = bootstrap_ci(
            lambda i, name=name: rhythm_metrics(y_true[i], proba[i])[name],
            len(y_true),
            n_boot=n_boot,
            seed=seed,
        )
        report[name] = {"value": value, "ci95": list(ci)}
    return report


def aggregate_by_record(proba: np.ndarray, record_index: np.ndarray, n_records: int) -> np.ndarray:
    """Mean window probability per record: (W, K) → (R, K)."""
    out = np.zeros((n_records, proba.shape[1]))
    np.add.at(out, record_index, proba)
    counts = np.bincount(record_index, minlength=n_records)[:, None]
    return out / np.maximum(counts, 1)


def encode(labels: Sequence[str]) -> np.ndarray:
    return np.array([CLASSES.index(label) for label in labels], dtype=np.int64)
