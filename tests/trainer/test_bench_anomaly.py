"""``ecgedge bench anomaly``: embedding blocks of a bundle and the prototype-distance score."""

from __future__ import annotations

import numpy as np

from sdk.bundle import default_bundle_path, load_bundle
from sdk.classifier import WindowClassifier, WindowInputs
from trainer.bench.anomaly import embedding_blocks, score_blocks
from trainer.data.datasets import WindowSet


def _window_set(labels: list[str], per_record: int, rng: np.random.Generator) -> WindowSet:
    n = len(labels) * per_record
    return WindowSet(
        windows=rng.standard_normal((n, 1, 1280)).astype(np.float32),
        record_index=np.repeat(np.arange(len(labels)), per_record).astype(np.int32),
        rr=rng.random((n, 9)).astype(np.float32),
        names=[f"r{i}" for i in range(len(labels))],
        labels=labels,
        lorenz=rng.random((n, 24, 24)).astype(np.float32),
    )


def test_blocks_of_the_shipped_multimodal_bundle():
    clf = WindowClassifier(load_bundle(default_bundle_path()), precision="fp32")
    ws = _window_set(["N", "A", "O"], 3, np.random.default_rng(0))
    ws.rr = ws.rr[:, : clf.n_rr]
    blocks = embedding_blocks(clf, ws, "test")
    assert set(blocks) == {*clf.modalities, "fused", "all"}
    assert all(b.shape[0] == 9 and np.isfinite(b).all() for b in blocks.values())
    widths = sum(blocks[m].shape[1] for m in (*clf.modalities, "fused"))
    assert blocks["all"].shape[1] == widths
    head_width = clf.features(WindowInputs(ws.windows, ws.rr, ws.lorenz), None).shape[1]
    assert widths + clf.n_rr == head_width  # every head input but the RR features


def test_z_scoring_finds_the_signal_a_loud_dimension_hides():
    rng = np.random.default_rng(1)
    labels = ["N"] * 30 + ["A"] * 15 + ["O"] * 15 + ["~"] * 5
    train, val = _window_set(labels, 2, rng), _window_set(labels, 2, rng)

    def embed(ws: WindowSet) -> np.ndarray:
        abnormal = np.isin(ws.window_labels, ["A", "O"]).astype(np.float32)
        signal = abnormal + 0.3 * rng.standard_normal(len(abnormal))  # informative, small
        loud = 100.0 * rng.standard_normal(len(abnormal))  # uninformative, huge
        return np.stack([signal, loud], axis=1).astype(np.float32)

    rows = score_blocks({"x": embed(train)}, {"x": embed(val)}, train, val)
    r = rows["x"]
    assert r["dim"] == 2
    assert r["z_scored"]["records"] == 60  # noisy records excluded
    assert r["z_scored"]["value"] > 0.9
    assert r["euclidean"]["value"] < r["z_scored"]["value"] - 0.2
    lo, hi = r["z_scored"]["ci95"]
    assert lo <= r["z_scored"]["value"] <= hi
