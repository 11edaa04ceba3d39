"""``ecgedge bench anomaly``: embedding blocks of a bundle and the prototype-distance score."""

from __future__ import annotations

import numpy as np
import pytest

from sdk.bundle import default_bundle_path, load_bundle
from sdk.classifier import WindowClassifier, WindowInputs
from trainer.bench.anomaly import embedding_blocks, score_blocks
from trainer.dacl import anomaly_report
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
    assert set(blocks) == {*clf.modalities, "fused", "modalities", "all"}
    assert all(b.shape[0] == 9 and np.isfinite(b).all() for b in blocks.values())
    widths = sum(blocks[m].shape[1] for m in (*clf.modalities, "fused"))
    assert blocks["all"].shape[1] == widths
    assert np.array_equal(blocks["all"][:, : blocks["modalities"].shape[1]], blocks["modalities"])
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
    r = {k: v["mean"] for k, v in rows["x"].items() if k != "dim"}
    assert rows["x"]["dim"] == 2
    assert r["z_scored"]["records"] == 60  # noisy records excluded
    assert r["z_scored"]["value"] > 0.9
    assert r["euclidean"]["value"] < r["z_scored"]["value"] - 0.2
    lo, hi = r["z_scored"]["ci95"]
    assert lo <= r["z_scored"]["value"] <= hi


def test_mahalanobis_finds_a_shift_across_correlated_dimensions():
    """Normal windows vary along a loud shared direction u; abnormal ones move across it
    (x1 - x2), by far less than u's spread: per-dimension scaling cannot see it, the normal
    class's covariance can."""
    rng = np.random.default_rng(2)
    labels = ["N"] * 40 + ["A"] * 20 + ["O"] * 20
    train, val = _window_set(labels, 10, rng), _window_set(labels, 10, rng)

    def embed(ws: WindowSet) -> np.ndarray:
        abnormal = np.isin(ws.window_labels, ["A", "O"])
        u = 4.0 * rng.standard_normal(len(abnormal))
        across = np.where(abnormal, 1.0, 0.0) + 0.2 * rng.standard_normal(len(abnormal))
        noise = rng.standard_normal((len(abnormal), 3))  # uninformative, unit spread
        return np.c_[u + across, u - across, noise].astype(np.float32)

    rows = score_blocks({"x": embed(train)}, {"x": embed(val)}, train, val)["x"]
    r = {k: rows[k]["mean"] for k in ("euclidean", "z_scored", "mahalanobis")}
    assert r["mahalanobis"]["records"] == 80
    assert r["mahalanobis"]["value"] > 0.95
    assert r["euclidean"]["value"] < 0.75 and r["z_scored"]["value"] < 0.75


def test_knn_scores_a_normal_class_with_two_modes():
    """Normal windows sit in two clusters (x = ±3), abnormal ones between them (x = 0): the
    prototype of the normal windows lies among the abnormal ones; the nearest normal windows
    do not."""
    from trainer.dacl import prototype_distance

    rng = np.random.default_rng(5)
    normal = np.r_[rng.normal(-3, 0.3, 200), rng.normal(3, 0.3, 200)][:, None]
    abnormal = rng.normal(0, 0.3, 100)[:, None]
    query = np.r_[rng.normal(3, 0.3, 100)[:, None], abnormal]
    is_abnormal = np.r_[np.zeros(100, bool), np.ones(100, bool)]
    train = np.r_[normal, abnormal]
    normal_mask = np.r_[np.ones(400, bool), np.zeros(100, bool)]
    from trainer.metrics import auroc

    knn = prototype_distance(train, query, normal_mask, "knn")
    assert auroc(is_abnormal, knn) > 0.99
    for metric in ("euclidean", "z_scored", "mahalanobis"):
        assert auroc(is_abnormal, prototype_distance(train, query, normal_mask, metric)) < 0.1


def test_record_scores_aggregate_each_records_windows():
    from trainer.dacl import record_scores

    ws = _window_set(["N", "A", "O"], 1, np.random.default_rng(6))
    ws.record_index = np.array([2, 0, 2, 0, 2], np.int32)  # record 1 has no window
    dist = np.array([1.0, 4.0, 2.0, 6.0, 9.0])
    np.testing.assert_allclose(record_scores(dist, ws, "mean"), [5.0, np.nan, 4.0])
    np.testing.assert_allclose(record_scores(dist, ws, "median"), [5.0, np.nan, 2.0])
    np.testing.assert_allclose(record_scores(dist, ws, "max"), [6.0, np.nan, 9.0])
    with pytest.raises(ValueError, match="aggregate"):
        record_scores(dist, ws, "min")


def test_the_variant_is_chosen_on_the_selection_records_only():
    """Block "sel" separates the classes only on the selection records, block "fit" only on
    the fitting records, block "val" only on validation: ranked on the selection records
    (fitted on the fitting records), "sel" must win; "fit" would win if the fitting records
    were scored, "val" if validation were. The chosen figure is the validation report
    fitted on all training windows."""
    from trainer.bench.anomaly import chosen_variant, select_variant, selection_split

    rng = np.random.default_rng(7)
    labels = ["N"] * 60 + ["A"] * 20 + ["O"] * 20 + ["~"] * 8
    train, val = _window_set(labels, 3, rng), _window_set(labels, 3, rng)
    fit_mask, fit, sel = selection_split(train)
    assert set(fit.names).isdisjoint(sel.names) and len(fit.names) + len(sel.names) == 108
    assert sorted(sel.labels) == sorted(["N"] * 15 + ["A"] * 5 + ["O"] * 5 + ["~"] * 2)
    assert fit_mask.sum() == len(fit.windows) and (~fit_mask).sum() == len(sel.windows)
    np.testing.assert_array_equal(train.windows[~fit_mask], sel.windows)  # rows aligned

    def block(ws: WindowSet, where: np.ndarray | bool) -> np.ndarray:
        abnormal = np.isin(ws.window_labels, ["A", "O"]) & where
        return (abnormal + 0.5 * rng.standard_normal((2, len(ws.windows)))).T.astype(np.float32)

    tr = {"fit": block(train, fit_mask), "sel": block(train, ~fit_mask), "val": block(train, False)}
    va = {"fit": block(val, False), "sel": block(val, False), "val": block(val, True)}
    selection = select_variant({"b": tr}, train)
    best = selection["ranking"][0]
    assert best["block"] == "sel" and best["selection_auroc"] > 0.9
    assert all(v["selection_auroc"] < 0.75 for v in selection["ranking"] if v["block"] != "sel")
    assert len(selection["ranking"]) == 3 * 4 * 3
    results = {"b": {"blocks": score_blocks(tr, va, train, val)}}
    chosen = chosen_variant(results, selection)
    expected = anomaly_report(tr["sel"], va["sel"], train, val, best["distance"], best["aggregate"])
    assert chosen["validation"]["value"] == expected["value"] < 0.75  # nothing on validation


def test_selection_never_scores_a_window_against_itself():
    """Pure noise carries nothing: if the selection records' normal windows were among the
    fitted ones, each would be its own nearest neighbour and kNN would separate them."""
    from trainer.bench.anomaly import select_variant

    rng = np.random.default_rng(8)
    labels = ["N"] * 60 + ["A"] * 20 + ["O"] * 20
    train = _window_set(labels, 3, rng)
    noise = rng.standard_normal((len(train.windows), 64)).astype(
        np.float32
    )  # kNN distances concentrate
    ranking = select_variant({"b": {"noise": noise}}, train)["ranking"]
    assert max(v["selection_auroc"] for v in ranking if v["distance"] == "knn") < 0.75


def test_knn_equals_a_brute_force_computation_on_uneven_scales():
    from trainer.dacl import KNN_K, prototype_distance

    rng = np.random.default_rng(9)
    train = rng.standard_normal((1500, 3)) * [1.0, 30.0, 0.01]
    query = rng.standard_normal((1200, 3)) * [1.0, 30.0, 0.01]
    normal = rng.random(1500) < 0.7
    ref = train[normal]
    mean, std = ref.mean(0), ref.std(0) + 1e-6
    d = np.linalg.norm((query - mean)[:, None] / std - (ref - mean)[None] / std, axis=2)
    expected = np.sort(d, axis=1)[:, :KNN_K].mean(axis=1)
    got = prototype_distance(train, query, normal, "knn")
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)


def test_a_record_without_windows_is_left_out_of_the_auroc():
    from trainer.dacl import auroc_report

    ws = _window_set(["N", "N", "A", "O", "A"], 1, np.random.default_rng(10))
    score = np.array([0.1, 0.2, 0.9, np.nan, 0.8])  # record 3 has no windows
    r = auroc_report(score, ws)
    assert r["records"] == 4 and r["value"] == 1.0


def test_prototype_distance_rejects_an_unknown_metric():
    from trainer.dacl import prototype_distance

    x = np.zeros((4, 2))
    with pytest.raises(ValueError, match="mahalanobis"):
        prototype_distance(x, x, np.ones(4, bool), "cosine")


def test_windows_are_denoised_as_the_pipeline_denoises_them():
    """Against the device path's own denoised windows (``record_windows`` with the denoiser,
    which streaming equals), not the call the benchmark makes."""
    import dataclasses

    from sdk.denoiser import WindowDenoiser
    from sdk.synthetic import synthetic_ecg
    from sdk.windowing import record_windows
    from trainer.bench.anomaly import denoised

    bundle = load_bundle(default_bundle_path())
    m = bundle.manifest
    den = WindowDenoiser.from_bundle(bundle, 1)
    ecg = synthetic_ecg((("sinus", 25.0), ("af", 25.0)), fs=250.0, seed=6)
    cut = (ecg.signal, 250.0, m.preprocess, m.window_samples, m.hop_samples)
    raw, device = record_windows(*cut), record_windows(*cut, denoiser=den)
    ws = dataclasses.replace(
        _window_set(["N"], len(raw.windows), np.random.default_rng(4)), windows=raw.windows
    )
    out = denoised(den, ws, "test")
    np.testing.assert_allclose(out.windows, device.windows, atol=1e-5)
    assert not np.allclose(out.windows, ws.windows)  # the denoiser changed them
    assert out.rr is ws.rr and out.lorenz is ws.lorenz  # beat features from the raw signal


@pytest.mark.data("cinc2017")
def test_a_bundle_trained_with_another_split_is_refused(tmp_path, monkeypatch):
    """The benchmark held out its own split's validation records without checking that each
    bundle's head had been trained with the same split."""
    import json
    import shutil
    from types import SimpleNamespace

    import trainer.bench.anomaly as anomaly
    from trainer.config import DataConfig
    from trainer.data.datasets import cinc2017_record_names
    from trainer.errors import ConfigError

    cfg = DataConfig()
    train, val = cinc2017_record_names(cfg.split_seed, cfg.val_fraction)
    monkeypatch.setattr(  # the split's names, without cutting every record's windows
        anomaly,
        "cinc2017_split",
        lambda _: (SimpleNamespace(names=train), SimpleNamespace(names=val)),
    )
    monkeypatch.setattr(anomaly, "bundle_anomaly", lambda *a, **k: pytest.fail("scored"))
    other = tmp_path / "other"
    shutil.copytree(default_bundle_path(), other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["provenance"]["training_data"]["split_seed"] = cfg.split_seed + 1
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="another CinC 2017 split"):
        anomaly.run({"default": default_bundle_path(), "other": other}, tmp_path / "out")
