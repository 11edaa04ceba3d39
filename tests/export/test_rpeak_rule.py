"""``ecgedge export --rpeak-rule``: a bundle's search-back threshold for its denoiser's output."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import sdk.pipeline
import sdk.windowing
from ecgedge.cli import main
from export.denoiser import set_rpeak_rule
from sdk.bundle import DENOISED_SEARCH_BACK_KEY, default_bundle_path, load_bundle
from sdk.denoiser import WindowDenoiser
from sdk.errors import BundleError
from sdk.pipeline import StreamPipeline
from sdk.rpeaks import SEARCH_BACK_THRESHOLD, denoised_window_rpeaks, detect_rpeaks
from sdk.synthetic import synthetic_ecg
from sdk.windowing import record_windows


def _report(tmp_path, **changes):
    shipped = load_bundle(default_bundle_path()).manifest.file("denoiser").sha256
    report = {
        "command": "ecgedge bench rpeak-tuning --bundle B",
        "records": ["106", "114"],
        "signal_for_choice": "denoised",
        "chosen": [0.25, "nearest"],
        "denoiser_sha256": shipped,
        **changes,
    }
    path = tmp_path / "rpeak_tuning.json"
    path.write_text(json.dumps(report))
    return path


@pytest.fixture(scope="module")
def ruled(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rule")
    with pytest.warns(UserWarning) as caught:
        rule = set_rpeak_rule(default_bundle_path(), _report(tmp), tmp / "out")
    return load_bundle(tmp / "out"), rule, " ".join(str(w.message) for w in caught)


def test_the_rule_goes_into_the_manifest_and_what_it_changes_is_flagged(ruled):
    bundle, rule, warned = ruled
    base = load_bundle(default_bundle_path())
    assert bundle.manifest.thresholds[DENOISED_SEARCH_BACK_KEY] == rule["threshold"] == 0.25
    # the models are the base's; the anchors, whose beats came from the old rule, are gone
    old = {f.path: f.sha256 for f in base.manifest.files if f.role != "anchors"}
    assert {f.path: f.sha256 for f in bundle.manifest.files} == old
    assert "anchors" not in bundle.manifest.provenance
    # the refitted head saw features of the old rule: stale, and said so
    stale = bundle.manifest.provenance["head_refit"]["stale"]
    assert "search-back threshold 0.1" in stale and "--refit-head" in stale
    assert "search-back threshold 0.1" in warned and "anchor windows" in warned
    assert bundle.manifest.provenance["denoiser"]["rpeak_rule"]["records"] == ["106", "114"]
    assert "I2 / I1 = 0.25" in (bundle.root / "MODEL_CARD.md").read_text()
    assert WindowDenoiser(bundle).search_back_threshold == 0.25
    assert WindowDenoiser(base).search_back_threshold == SEARCH_BACK_THRESHOLD


def test_pipeline_and_record_windows_detect_with_the_bundles_rule(ruled, monkeypatch):
    bundle = ruled[0]
    seen: dict[str, list[float]] = {"pipeline": [], "record_windows": []}

    def spy(where):
        def detect(*args, search_back_threshold, **kw):
            seen[where].append(search_back_threshold)
            return denoised_window_rpeaks(*args, search_back_threshold=search_back_threshold, **kw)

        return detect

    monkeypatch.setattr(sdk.pipeline, "denoised_window_rpeaks", spy("pipeline"))
    monkeypatch.setattr(sdk.windowing, "denoised_window_rpeaks", spy("record_windows"))
    ecg = synthetic_ecg((("sinus", 30.0),), fs=250.0, seed=3)
    p = StreamPipeline(bundle, fs_in=ecg.fs)
    p.push(ecg.signal)
    p.close()
    m = bundle.manifest
    record_windows(
        ecg.signal,
        ecg.fs,
        m.preprocess,
        m.window_samples,
        m.hop_samples,
        denoiser=WindowDenoiser(bundle),
    )
    assert all(v and set(v) == {0.25} for v in seen.values()), seen


def test_denoised_window_rpeaks_applies_the_threshold():
    x = synthetic_ecg((("sinus", 20.0),), fs=128.0, seed=5).signal.astype(np.float64)
    beat = next(p for p in detect_rpeaks(x, 128.0) if p > 1000)
    x[beat - 10 : beat + 10] *= 0.15  # one faint beat: only a low search-back threshold takes it
    ctx, w = x[:640], x[640:1920]
    found = {}
    for threshold in (0.0, 0.5):
        expected = detect_rpeaks(np.concatenate([ctx, w]), 128.0, search_back_threshold=threshold)
        got = denoised_window_rpeaks(w, w.size, 128.0, ctx, search_back_threshold=threshold)
        assert np.array_equal(got, expected[expected >= 640] - 640)
        found[threshold] = got.size
    assert found[0.0] == found[0.5] + 1  # the threshold reached the detector


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"denoiser_sha256": "0" * 64}, "a rule for denoiser 000000000000"),
        ({"denoiser_sha256": None}, "an unrecorded denoiser"),
        ({"signal_for_choice": "raw"}, "on the 'raw' signal"),
        ({"chosen": [0.2, "largest"]}, "nearest"),
        ({"chosen": [1.5, "nearest"]}, r"\[0, 1\]"),
        ({"chosen": [True, "nearest"]}, "must be a number"),
        ({"chosen": ["0.3", "nearest"]}, "must be a number"),
        ({"chosen": [None, "nearest"]}, "must be a number"),
        ({"chosen": [float("nan"), "nearest"]}, "must be finite"),
        ({"chosen": None}, "not an `ecgedge bench rpeak-tuning` report"),
        ({"records": []}, "list of record names"),
        ({"records": [1, 2]}, "list of record names"),
    ],
)
def test_a_report_of_another_denoiser_or_rule_is_refused(tmp_path, changes, match):
    with pytest.raises(ValueError, match=match):
        set_rpeak_rule(default_bundle_path(), _report(tmp_path, **changes), tmp_path / "o")
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.partial").exists()


def test_an_out_of_range_threshold_in_a_manifest_is_refused(tmp_path):
    root = tmp_path / "b"
    shutil.copytree(default_bundle_path(), root)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["thresholds"][DENOISED_SEARCH_BACK_KEY] = 2.0
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="denoised_rpeak_search_back"):
        load_bundle(root)


def test_the_cli_needs_its_bundles(tmp_path, capsys):
    assert main(["export", "--rpeak-rule", "r.json", "--out", str(tmp_path / "x")]) == 2
    assert "--rpeak-rule needs --base-bundle" in capsys.readouterr().err


@pytest.mark.data("mitdb", "nstdb")  # the smoke denoiser trains on them
def test_replacing_the_denoiser_drops_its_rule(ruled, tmp_path):
    from export.denoiser import add_denoiser
    from trainer.denoise_config import load_denoise_preset
    from trainer.train_denoiser import train_denoiser

    bundle = ruled[0]
    run = tmp_path / "run"
    train_denoiser(load_denoise_preset("smoke", {"train.out_dir": str(run), "train.steps": "2"}))
    with pytest.warns(UserWarning) as caught:
        add_denoiser(bundle.root, run, tmp_path / "new")
    assert any(
        "search-back threshold was chosen for the replaced" in str(w.message) for w in caught
    )
    new = load_bundle(tmp_path / "new")
    assert DENOISED_SEARCH_BACK_KEY not in new.manifest.thresholds
    assert "rpeak_rule" not in new.manifest.provenance["denoiser"]
    assert WindowDenoiser(new).search_back_threshold == SEARCH_BACK_THRESHOLD
