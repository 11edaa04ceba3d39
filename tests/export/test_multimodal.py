"""Multimodal DiffECG: three smoke extractors, fusion, bundle export with parity, SDK stream."""

from __future__ import annotations

import numpy as np
import pytest

from export.build import build_bundle
from export.multimodal import FP32_PARITY_TOL, build_multimodal_bundle
from sdk.bundle import load_bundle
from sdk.calibration import Calibrator
from sdk.classifier import WindowClassifier
from sdk.pipeline import StreamPipeline
from sdk.synthetic import synthetic_ecg
from trainer.config import load_preset
from trainer.fusion import run_fusion
from trainer.probe import run_probe
from trainer.train_diffusion import train

CHANNELS = {"raw": 1, "spectrogram": 20, "lorenz": 24}


@pytest.fixture(scope="module")
def multimodal(tmp_path_factory):
    root = tmp_path_factory.mktemp("mm")
    runs = {}
    for modality, channels in CHANNELS.items():
        out = root / modality
        cfg = load_preset(
            "smoke",
            {
                "data.source": "synthetic",
                "data.modality": modality,
                "model.in_channels": str(channels),
                "train.out_dir": str(out),
            },
        )
        run_probe(train(cfg).checkpoint, out)
        runs[modality] = out
    report = run_fusion(runs, root / "fusion", epochs=2)
    build_bundle(
        runs["raw"], root / "raw-bundle", int8_limit=1.0, calibration_windows=16, int8_budget=1.0
    )
    figures = build_multimodal_bundle(root / "raw-bundle", root / "fusion", root / "bundle")
    return root / "bundle", report, figures


@pytest.mark.slow
def test_fusion_reports_every_combination(multimodal):
    _, report, _ = multimodal
    assert set(report["rows"]) >= {"raw", "raw + spectrogram + lorenz + fused", "fused only"}
    assert len(report["fusion_training"]["history"]) == 2


@pytest.mark.slow
def test_multimodal_bundle_has_parity_and_verifies(multimodal):
    path, _, figures = multimodal
    assert set(figures["parity_max_rel"]) == {"raw", "spectrogram", "lorenz", "fusion"}
    assert max(figures["parity_max_rel"].values()) <= FP32_PARITY_TOL
    bundle = load_bundle(path)
    assert bundle.manifest.modalities == ("raw", "spectrogram", "lorenz")
    assert set(bundle.manifest.default_t) == set(CHANNELS)
    assert WindowClassifier(bundle).fusion is not None


@pytest.mark.slow
def test_multimodal_bundle_streams_equal_to_offline_and_calibrates(multimodal):
    path, _, _ = multimodal
    bundle = load_bundle(path)
    ecg = synthetic_ecg((("sinus", 40.0), ("af", 40.0)), fs=250.0, seed=2)
    pipeline = StreamPipeline(bundle, fs_in=ecg.fs)
    streamed = []
    for i in range(0, ecg.signal.size, 333):  # odd block sizes
        streamed += pipeline.push(ecg.signal[i : i + 333])
    streamed += pipeline.close()
    windows = [e for e in streamed if e.kind == "window"]
    whole = StreamPipeline(bundle, fs_in=ecg.fs)
    offline = [e for e in whole.push(ecg.signal) + whole.close() if e.kind == "window"]
    assert len(windows) == len(offline) > 10
    for a, b in zip(windows, offline):
        np.testing.assert_allclose(
            list(a.probabilities.values()), list(b.probabilities.values()), atol=1e-5
        )
    cal = Calibrator(bundle, t_box=(1, 20), max_evals=4, n_init=2)
    cal.add_recording(ecg.signal, ecg.fs, [(0.0, 40.0, "N"), (40.0, 80.0, "A")])
    res = cal.calibrate()
    assert set(res.profile.t) == set(CHANNELS) and res.extractor_evaluations <= 4 * 3
