"""``ecgedge export --add-anchors``: device-path windows of the head's training records only."""

from __future__ import annotations

import numpy as np
import pytest

import export.refit_head as refit
from ecgedge.cli import main
from export.anchors import add_anchors
from sdk.anchors import load_anchors
from sdk.bundle import default_bundle_path, load_bundle
from sdk.denoiser import WindowDenoiser
from sdk.windowing import record_windows
from trainer.bench.rhythm import val_records
from trainer.data import records as rec
from trainer.errors import ConfigError


@pytest.mark.data("cinc2017")
def test_anchors_are_device_windows_of_training_records_and_nothing_else_changes(
    tmp_path, monkeypatch
):
    base = load_bundle(default_bundle_path())
    train = set(refit.training_records(base))
    read: list[str] = []
    real_read = rec.read_cinc2017

    def spy(name: str):
        read.append(name)
        return real_read(name)

    monkeypatch.setattr(rec, "read_cinc2017", spy)
    info = add_anchors(default_bundle_path(), tmp_path / "out", per_class=2, seed=3)
    monkeypatch.setattr(rec, "read_cinc2017", real_read)
    assert set(read) == set(info["records"]) and set(read) <= train
    data = base.manifest.provenance["training_data"]
    held_out = val_records(int(data["split_seed"]), float(data["val_fraction"]))
    assert set(read).isdisjoint(held_out)  # no record the rhythm benchmark evaluates on

    out = load_bundle(tmp_path / "out")  # checksums verified
    old = {f.path: f.sha256 for f in base.manifest.files}
    new = {f.path: f.sha256 for f in out.manifest.files}
    assert new.keys() == old.keys() and all(new[p] == old[p] for p in old if p != "anchors.npz")
    assert new["anchors.npz"] != old["anchors.npz"]  # replaced, not added twice

    a = load_anchors(out)
    m = out.manifest
    labels = rec.cinc2017_labels_cached()
    assert [m.classes[k] for k in a.labels] == [labels[n] for n in info["records"]]
    assert np.bincount(a.labels, minlength=len(m.classes)).tolist() == [2] * len(m.classes)
    denoiser = WindowDenoiser(out)
    for i, (name, start) in enumerate(zip(info["records"], info["window_starts"])):
        r = real_read(name)
        rw = record_windows(
            r.signal[:, 0], r.fs, m.preprocess, m.window_samples, m.hop_samples, denoiser=denoiser
        )
        j = int(np.flatnonzero(rw.starts == start)[0])
        # the window as the device computes it, stored in float16
        assert np.allclose(a.inputs.windows[i], rw.windows[j], atol=1e-2, rtol=1e-3)
        assert np.array_equal(a.inputs.rr[i], rw.rr[j])
        assert np.allclose(a.inputs.lorenz[i], rw.lorenz[j], atol=1e-3)
    assert a.denoiser_sha256 == m.file("denoiser").sha256
    assert "Anchor windows" in (tmp_path / "out" / "MODEL_CARD.md").read_text()


def test_the_cli_needs_its_bundles_and_a_positive_count(tmp_path, capsys):
    assert main(["export", "--add-anchors", "--out", str(tmp_path / "x")]) == 2
    assert "--add-anchors needs --base-bundle" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="per_class"):
        add_anchors(default_bundle_path(), tmp_path / "y", per_class=0)


def test_a_bundle_with_a_multi_lead_denoiser_gets_no_anchors(tmp_path):
    from tests.sdk.test_denoiser import _bundle_with_denoiser

    two = _bundle_with_denoiser(tmp_path / "b2", leads=2)
    with pytest.raises(ConfigError, match="takes 2 leads"):
        add_anchors(two.root, tmp_path / "out")
    assert not (tmp_path / "out").exists()
