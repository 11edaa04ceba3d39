"""Head refit on the device path's features: training split only, exact head, one file changed."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import export.refit_head as refit
from ecgedge.cli import main
from sdk.bundle import default_bundle_path, load_bundle
from sdk.classifier import WindowClassifier
from sdk.head import fit_softmax_head
from trainer.bench.rhythm import val_records
from trainer.data import records as rec
from trainer.errors import ConfigError

N_RECORDS = 12


@pytest.mark.data("cinc2017")
def test_training_records_are_the_heads_split():
    bundle = load_bundle(default_bundle_path())
    data = bundle.manifest.provenance["training_data"]
    train = refit.training_records(bundle)
    val = val_records(int(data["split_seed"]), float(data["val_fraction"]))
    # the split the head was trained on: same sizes as recorded at training time
    assert len(train) == data["train_records"] and len(val) == data["val_records"]
    # and the complement of the records the rhythm benchmark evaluates on: none of those
    # may teach the refitted head (another split of the same sizes would share ~1000)
    assert set(train).isdisjoint(val)
    assert set(train) | set(val) == set(rec.cinc2017_labels())


def test_a_head_not_trained_on_cinc2017_is_refused(tmp_path):
    root = tmp_path / "b"
    shutil.copytree(default_bundle_path(), root)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["provenance"]["training_data"]["head"] = "someone's private recordings"
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="not trained on CinC 2017"):
        refit.training_records(load_bundle(root))


def test_a_head_trained_on_capped_records_is_refused_saying_so(tmp_path):
    """A smoke run (data.max_records) cannot have its split rebuilt; the error said 'another
    data root'."""
    root = tmp_path / "b"
    shutil.copytree(default_bundle_path(), root)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["provenance"]["training_data"]["max_records"] = 20
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match=r"first 20 CinC 2017 records only \(data.max_records"):
        refit.training_records(load_bundle(root))


def _with_old_figures(root):
    """A copy of the shipped bundle (FP32 only) carrying figures of its head."""
    shutil.copytree(default_bundle_path(), root)
    manifest = json.loads((root / "manifest.json").read_text())
    assert not any(f["precision"] == "int8" for f in manifest["files"])
    manifest["metrics"]["rhythm_val_sdk"] = {"val_fp32": "figures of the old head"}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


@pytest.mark.data("cinc2017")
@pytest.mark.slow
def test_refit_writes_the_fitted_head_reads_only_training_records_and_changes_only_the_head(
    tmp_path, monkeypatch
):
    base_dir = _with_old_figures(tmp_path / "base")
    base = load_bundle(base_dir)
    names = refit.training_records(base)[:N_RECORDS]
    monkeypatch.setattr(refit, "training_records", lambda bundle: names)
    read: list[str] = []
    real_read = rec.read_cinc2017

    def spy(name: str):
        read.append(name)
        return real_read(name)

    monkeypatch.setattr(rec, "read_cinc2017", spy)
    info = refit.refit_head(base_dir, tmp_path / "out")
    # the records it is given (the head's training records), every one, nothing else: no
    # validation record is read, by the features or by the INT8 calibration
    assert sorted(set(read)) == sorted(names)

    out = load_bundle(tmp_path / "out")  # checksums verified
    old = {f.path: f.sha256 for f in base.manifest.files}
    new = {f.path: f.sha256 for f in out.manifest.files}
    assert old.keys() == new.keys()
    assert [p for p in old if old[p] != new[p]] == ["head.onnx"]
    prov = out.manifest.provenance["head_refit"]
    assert prov["records"] == N_RECORDS and prov["windows"] == info["windows"]
    assert prov["denoiser_sha256"] == base.manifest.file("denoiser").sha256
    assert "rhythm_val_sdk" in base.manifest.metrics
    assert "rhythm_val_sdk" not in out.manifest.metrics  # the old head's figures are gone
    card = (tmp_path / "out" / "MODEL_CARD.md").read_text()
    assert "Head refitted" in card and "No export-time figures for this head" in card
    assert "## Denoiser" in card and "rhythm_val_sdk" not in card  # none on figures now gone
    assert not (tmp_path / "out.partial").exists()

    # the exported head is the softmax head fitted on the device features of those windows
    x, y, index = refit.device_features(base, names)
    assert x.shape == (info["windows"], out.manifest.file("head").inputs[0].shape[1])
    assert np.array_equal(np.unique(index), np.arange(N_RECORDS))
    expected = fit_softmax_head(x, y, base.manifest.classes, l2=refit.HEAD_L2)
    got = WindowClassifier(out, precision="fp32").head_probabilities(x.astype(np.float32))
    np.testing.assert_allclose(got, expected.predict_proba(x), atol=2e-5)
    before = WindowClassifier(base, precision="fp32").head_probabilities(x.astype(np.float32))
    assert np.abs(got - before).max() > 0.05  # the head did change


@pytest.mark.data("cinc2017")
@pytest.mark.slow
def test_refit_redoes_the_int8_layer_search_for_the_new_head(tmp_path, monkeypatch):
    from tests.export.test_tensorrt_build import make_int8_bundle

    base_dir = make_int8_bundle(tmp_path / "base", "cpu")  # a base with an INT8 embedder
    manifest = json.loads((base_dir / "manifest.json").read_text())
    manifest["provenance"]["int8_calibration"] = {  # budgets every signal layer meets
        "budget_mean_max_prob_change": 1.0,
        "budget_worst_max_prob_change": 1.0,
    }
    (base_dir / "manifest.json").write_text(json.dumps(manifest))
    base = load_bundle(base_dir)
    names = refit.training_records(base)[:4]
    monkeypatch.setattr(refit, "training_records", lambda bundle: names)
    refit.refit_head(base_dir, tmp_path / "out", calibration_windows=8)
    out = load_bundle(tmp_path / "out")
    q = out.manifest.provenance["int8_calibration"]
    assert q["windows"] == 8 and "device-path" in q["calibration"]
    # every layer on the signal's path is INT8; the time-embedding layers are no candidates
    assert q["int8_layers"] == q["candidate_layers"] > 0 and q["layers_kept_float"] == []
    assert out.manifest.provenance["head_refit"]["int8_layers_kept_float"] == len(
        q["layers_kept_float"]
    )
    assert q["shipped"] and q["budget_mean_max_prob_change"] == 1.0
    assert not any(k.startswith(("p99_", "budget_p99_")) for k in q)  # no earlier search's
    assert any(f.precision == "int8" for f in out.manifest.files)
    # the gate's figure, recomputed with the SDK on the same windows and the NEW head
    inputs = refit.calibration_inputs(base, names, 8)
    p32 = WindowClassifier(out, precision="fp32").classify(inputs)
    p8 = WindowClassifier(out, precision="int8").classify(inputs)
    change = np.abs(p32 - p8).max(axis=1)
    assert float(change.mean()) == pytest.approx(q["mean_max_prob_change"], abs=1e-4)
    assert float(change.max()) == pytest.approx(q["worst_max_prob_change"], abs=1e-4)
    old_head = WindowClassifier(load_bundle(base_dir), precision="fp32").head_probabilities(
        WindowClassifier(out, precision="int8").features(inputs, None)
    )
    assert not np.allclose(old_head, p8, atol=1e-3)  # p8 came through the new head


def test_device_features_give_the_pipelines_probabilities(monkeypatch):
    """The refit's windows and features (``device_features``, through the CinC reader) are
    the pipeline's: the head on them gives the probabilities ``StreamPipeline`` emits (FP32,
    denoiser on) for a synthetic record read in place of a CinC 2017 one."""
    from sdk.events import WindowEvent
    from sdk.pipeline import StreamPipeline
    from sdk.synthetic import synthetic_ecg

    bundle = load_bundle(default_bundle_path())
    ecg = synthetic_ecg((("sinus", 30.0), ("af", 23.0)), fs=300.0, seed=2)
    record = rec.Record("S1", "cinc2017", 300.0, ecg.signal[:, None], ("ECG",), label="A")
    monkeypatch.setattr(rec, "read_cinc2017", lambda name: record)
    features, labels, index = refit.device_features(bundle, ["S1"])
    expected = WindowClassifier(bundle, precision="fp32").head_probabilities(features)
    pipe = StreamPipeline(bundle, fs_in=300.0, precision="fp32")
    events = [e for e in pipe.push(ecg.signal) + pipe.close() if isinstance(e, WindowEvent)]
    got = np.array([list(e.probabilities.values()) for e in events])
    assert got.shape == expected.shape and len(got) > 3
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert set(labels) == {bundle.manifest.classes.index("A")} and set(index) == {0}


@pytest.mark.parametrize(
    "argv",
    [
        ["export", "--refit-head", "--out", "x"],
        ["export", "--refit-head", "--base-bundle", "sdk/default_bundle"],
    ],
)
def test_cli_refit_head_needs_the_bundle_and_the_output(argv, capsys):
    assert main(argv) == 2
    assert "--refit-head needs --base-bundle" in capsys.readouterr().err


def test_the_pipeline_warns_when_a_refitted_head_runs_without_its_denoiser(caplog):
    from sdk.pipeline import StreamPipeline

    bundle = load_bundle(default_bundle_path())
    with caplog.at_level("WARNING", logger="sdk.pipeline"):
        StreamPipeline(bundle, fs_in=128.0)
    assert not caplog.records
    with caplog.at_level("WARNING", logger="sdk.pipeline"):
        StreamPipeline(bundle, fs_in=128.0, denoise=False)
    assert "fitted on denoised windows" in caplog.text
