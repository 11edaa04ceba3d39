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
def test_training_records_are_the_heads_split_and_exclude_the_benchmark_records():
    bundle = load_bundle(default_bundle_path())
    data = bundle.manifest.provenance["training_data"]
    train = refit.training_records(bundle)
    val = val_records(int(data["split_seed"]), float(data["val_fraction"]))
    assert len(train) == data["train_records"] and len(val) == data["val_records"]
    assert not set(train) & set(val)


def test_a_head_not_trained_on_cinc2017_is_refused(tmp_path):
    root = tmp_path / "b"
    shutil.copytree(default_bundle_path(), root)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["provenance"]["training_data"]["head"] = "someone's private recordings"
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="not trained on CinC 2017"):
        refit.training_records(load_bundle(root))


@pytest.mark.data("cinc2017")
@pytest.mark.slow
def test_refit_writes_the_fitted_head_reads_only_training_records_and_changes_only_the_head(
    tmp_path, monkeypatch
):
    base = load_bundle(default_bundle_path())
    names = refit.training_records(base)[:N_RECORDS]
    monkeypatch.setattr(refit, "training_records", lambda bundle: names)
    read: list[str] = []
    real_read = rec.read_cinc2017

    def spy(name: str):
        read.append(name)
        return real_read(name)

    monkeypatch.setattr(rec, "read_cinc2017", spy)
    info = refit.refit_head(default_bundle_path(), tmp_path / "out")
    assert sorted(set(read)) == sorted(names)  # every training record, nothing else

    out = load_bundle(tmp_path / "out")  # checksums verified
    old = {f.path: f.sha256 for f in base.manifest.files}
    new = {f.path: f.sha256 for f in out.manifest.files}
    assert old.keys() == new.keys()
    assert [p for p in old if old[p] != new[p]] == ["head.onnx"]
    prov = out.manifest.provenance["head_refit"]
    assert prov["records"] == N_RECORDS and prov["windows"] == info["windows"]
    assert prov["denoiser_sha256"] == base.manifest.file("denoiser").sha256
    assert "rhythm_val_sdk" not in out.manifest.metrics  # the old head's figures are gone
    assert "Head refitted" in (tmp_path / "out" / "MODEL_CARD.md").read_text()

    # the exported head is the softmax head fitted on the device features of those windows
    x, y, index = refit.device_features(base, names)
    assert x.shape == (info["windows"], out.manifest.file("head").inputs[0].shape[1])
    assert np.array_equal(np.unique(index), np.arange(N_RECORDS))
    expected = fit_softmax_head(x, y, base.manifest.classes, l2=refit.HEAD_L2)
    got = WindowClassifier(out, precision="fp32").head_probabilities(x.astype(np.float32))
    np.testing.assert_allclose(got, expected.predict_proba(x), atol=2e-5)
    before = WindowClassifier(base, precision="fp32").head_probabilities(x.astype(np.float32))
    assert np.abs(got - before).max() > 0.05  # the head did change


def test_cli_refit_head_needs_the_bundle(capsys):
    assert main(["export", "--refit-head", "--out", "x"]) == 2
    assert "--refit-head needs --base-bundle" in capsys.readouterr().err

