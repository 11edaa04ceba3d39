"""Pieces of the denoise and noise-stress benchmarks: beat matching, spans, metrics, references."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from sdk.filters import design_bandpass
from sdk.preprocess import PreprocessSpec
from sdk.rpeaks import SEARCH_BACK_THRESHOLD
from trainer.bench.denoise import medfilt_reference, zerophase_reference
from trainer.bench.noise_stress import TOLERANCE_S, match, score, se_pp, spans_of
from trainer.denoise_metrics import window_metrics


def test_beat_matching_is_one_to_one_within_tolerance():
    ref = np.array([1.0, 2.0, 3.0, 4.0])
    det = np.array([1.05, 1.06, 2.2, 3.0, 4.07, 5.0])
    assert match(ref, det, TOLERANCE_S) == 3  # 1.05, 3.0, 4.07; 1.06 is a duplicate
    c = score(ref, det, None)
    assert c == {"tp": 3, "fn": 1, "fp": 3}
    se, pp = se_pp(c)
    assert se == 75.0 and pp == 50.0


def test_scoring_inside_spans_only():
    ref = np.array([1.0, 5.0, 9.0])
    det = np.array([1.0, 5.3, 9.0])
    assert score(ref, det, [(4.0, 6.0)]) == {"tp": 0, "fn": 1, "fp": 1}


def test_noise_stress_spans():
    spans = spans_of(650000)
    assert spans["whole"] is None
    noisy, unseen = spans["noisy"], spans["noisy_unseen_em"]
    assert noisy[0] == (300.0, 420.0) and len(noisy) == 7
    total = sum(b - a for a, b in noisy)
    assert abs(sum(b - a for a, b in unseen) - 0.2 * total) < 0.01
    assert unseen[-1] == noisy[-1]


def test_window_metrics_on_known_signals():
    rng = np.random.default_rng(0)
    r = rng.standard_normal((4, 1280))
    m = window_metrics(r, r.copy())
    assert np.all(m["ssd"] == 0) and np.allclose(m["cos"], 100.0)
    noise = rng.standard_normal((4, 1280))
    noise *= np.sqrt(np.sum(r**2, -1, keepdims=True) / np.sum(noise**2, -1, keepdims=True)) / 10
    m = window_metrics(r, r + noise, r + 2 * noise)
    np.testing.assert_allclose(m["snr_out"], 20.0, atol=0.2)
    np.testing.assert_allclose(m["snr_imp"], 20 * np.log10(2), atol=0.2)
    np.testing.assert_allclose(m["prd"], 10.0, atol=0.3)


def test_medfilt_reference_removes_a_slow_baseline():
    fs = 128.0
    t = np.arange(2560) / fs
    spikes = (np.abs((t % 1.0) - 0.5) < 0.02).astype(float)
    ref = medfilt_reference(spikes + 0.8 * np.sin(2 * np.pi * 0.2 * t), fs)
    assert np.abs(ref - spikes)[300:-300].max() < 0.05


@pytest.mark.parametrize("hz", [0.3, 1.0, 10.0, 45.0])
def test_zerophase_reference_has_the_device_magnitude_and_no_phase(hz: float) -> None:
    """A tone comes out scaled by the device band-pass's gain at its frequency, not delayed,
    while the device filter itself delays it."""
    spec = PreprocessSpec()
    t = np.arange(2176) / spec.fs
    tone = np.sin(2 * np.pi * hz * t) + 0.5  # an offset too: the band-pass removes it
    sos = design_bandpass(spec.fs, spec.low_hz, spec.high_hz, spec.order)
    gain = np.abs(signal.sosfreqz(sos, worN=[hz], fs=spec.fs)[1][0])
    inner = slice(640, 1920)
    out = zerophase_reference(tone, spec)
    np.testing.assert_allclose(out[inner], gain * (tone[inner] - 0.5), atol=0.02)
    causal = signal.sosfilt(sos, tone)
    assert np.abs(causal[inner] - gain * (tone[inner] - 0.5)).max() > 0.05 * gain


class _IdentityDenoiser:
    """Stands in for WindowDenoiser: returns its input and keeps what it saw."""

    search_back_threshold = SEARCH_BACK_THRESHOLD

    def __init__(self, leads: int) -> None:
        self.leads, self.window, self.precision, self.seen = leads, 1280, "fp32", []

    def denoise(self, x: np.ndarray) -> np.ndarray:
        self.seen.append(x.copy())
        return x


def test_noise_stress_feeds_a_two_lead_denoiser_both_leads_and_detects_on_both(monkeypatch):
    from sdk.preprocess import PreprocessSpec
    from sdk.synthetic import synthetic_ecg
    from trainer.bench.noise_stress import Detectors

    fs = 360.0
    ecg = synthetic_ecg((("sinus", 40.0),), fs=fs, seed=1).signal
    other = np.random.default_rng(0).standard_normal(ecg.size) * 0.05  # a different lead 1
    record = np.c_[ecg, other]
    found = {}
    for leads in (1, 2):
        den = _IdentityDenoiser(leads)
        found[leads] = Detectors(den, PreprocessSpec())(record, fs, peers=False)
        assert {x.shape[1] for x in den.seen} == {leads}
        if leads == 2:  # lead 1 is the record's lead 1, not a copy of lead 0
            assert not np.allclose(den.seen[0][0, 0], den.seen[0][0, 1])
    # the identity denoiser changes nothing the detector sees on lead 0, and lead 1 is small
    for leads in (1, 2):
        a, b = found[leads]["SDK Pan-Tompkins"], found[leads]["SDK Pan-Tompkins + denoiser"]
        assert len(a) >= 40 and np.allclose(a, b, atol=1.0 / 128)
    # behind the 2-lead denoiser the SDK's detector takes both leads, as the pipeline does
    import trainer.bench.noise_stress as ns

    shapes, rules = [], []

    def spy(x, f, **kw):  # noqa: ANN001, ANN202
        shapes.append(np.shape(x)[1:])
        rules.append(kw.get("search_back_threshold"))
        return detect(x, f, **kw)

    detect = ns.detect_rpeaks
    monkeypatch.setattr(ns, "detect_rpeaks", spy)
    den = _IdentityDenoiser(2)
    den.search_back_threshold = 0.3  # the bundle's rule for its denoiser's output
    Detectors(den, PreprocessSpec())(record, fs, peers=False)
    assert shapes == [(), (2,)]  # without the denoiser lead 0; behind it both leads
    assert rules == [None, 0.3]  # the default without the denoiser, the bundle's behind it
    three = Detectors(_IdentityDenoiser(3), PreprocessSpec())
    with pytest.raises(ValueError, match="takes 3 leads"):
        three(record, fs, peers=False)


@pytest.mark.data("mitdb", "challenge2021", "nstdb")
def test_a_bundles_denoiser_is_benchmarked_without_its_training_run(tmp_path):
    """bench denoise --bundle alone: the shipped denoiser on the records and split its manifest
    records (no torch row), the selection records it was chosen on, and the figure."""
    import json
    from pathlib import Path

    from sdk.bundle import default_bundle_path, load_bundle
    from trainer.bench.denoise import run

    out = run([], tmp_path, bundle_dir=default_bundle_path(), n_per_type=2, report="b")
    res = out["runs"][0]
    rows = list(res["summary"]["amplitude"]["pooled"]["device"])
    assert "CD-ECGNet via SDK (FP32)" in rows and not any("torch" in r for r in rows)
    info = load_bundle(default_bundle_path()).manifest.provenance["denoiser"]
    assert res["run"].endswith(f"denoiser of run {info['run']}") and res["leads"] == 1
    assert res["selection_records"] == ["mitdb/106", "mitdb/122", "challenge2021/E07514",
                                        "challenge2021/E07518", "challenge2021/JS20006",
                                        "challenge2021/JS20016"]  # fmt: skip
    assert "mitdb/114" in res["val_records"] and not set(res["val_records"]) & set(
        res["selection_records"]
    )
    assert (tmp_path / "b.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "b.json").read_text())["plot"] == "b.png"
    assert Path(tmp_path / "b.md").read_text().count("--run") == 0


def test_a_bundle_without_a_recorded_denoiser_config_is_refused(tmp_path):
    from trainer.bench.denoise import bundle_source

    class Manifest:
        provenance = {"denoiser": {"run": "r"}}

    with pytest.raises(ValueError, match="records no denoiser configuration"):
        bundle_source(type("B", (), {"manifest": Manifest()})(), tmp_path)
