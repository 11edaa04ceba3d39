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


@pytest.fixture
def moved_tree(multimodal, tmp_path):
    """The fixture's runs and raw bundle copied elsewhere (the originals stay untouched)."""
    import shutil

    root = multimodal[0].parent
    for name in (*CHANNELS, "fusion", "raw-bundle"):
        shutil.copytree(root / name, tmp_path / name)
    return tmp_path


@pytest.mark.slow
def test_a_fusion_run_finds_its_inputs_wherever_the_runs_are_moved_together(multimodal, moved_tree):
    from trainer.fusion import verified_inputs

    folders = verified_inputs(moved_tree / "fusion")
    assert folders == {m: moved_tree / "fusion" / ".." / m for m in CHANNELS}
    alone = moved_tree / "elsewhere" / "fusion"  # the fusion run moved without its runs
    alone.parent.mkdir()
    (moved_tree / "fusion").rename(alone)
    trained_beside = multimodal[0].parent  # where the fixture trained them
    assert verified_inputs(alone) == {m: trained_beside / m for m in CHANNELS}


@pytest.mark.slow
def test_the_multimodal_export_refuses_inputs_that_changed_since_the_fusion(moved_tree):
    import torch

    from export.errors import ExportError
    from sdk.bundle import default_bundle_path
    from trainer.errors import CheckpointError

    out = moved_tree / "bundle"
    args = (moved_tree / "raw-bundle", moved_tree / "fusion", out)
    # a raw bundle exported from another run (here the shipped one) is not the fusion's
    with pytest.raises(ExportError, match="not exported from the raw run the fusion"):
        build_multimodal_bundle(default_bundle_path(), moved_tree / "fusion", out)
    # the fusion's weights swapped under its head
    fusion_pt = moved_tree / "fusion" / "fusion.pt"
    good = fusion_pt.read_bytes()
    payload = torch.load(fusion_pt, weights_only=True)
    payload["state_dict"] = {k: v + 0.01 for k, v in payload["state_dict"].items()}
    torch.save(payload, fusion_pt)
    with pytest.raises(CheckpointError, match="another fusion.pt; run ecgedge train-fusion again"):
        build_multimodal_bundle(*args)
    fusion_pt.write_bytes(good)
    # a modality run trained again after the fusion (a valid checkpoint, other weights)
    ckpt = moved_tree / "lorenz" / "diffecg.pt"
    payload = torch.load(ckpt, weights_only=True)
    payload["step"] += 1
    torch.save(payload, ckpt)
    with pytest.raises(CheckpointError, match="lorenz run's .*diffecg.pt is not the one"):
        build_multimodal_bundle(*args)
    # nothing published, no staging folder left (the lock file stays by design)
    assert [p.name for p in moved_tree.glob("bundle*")] == ["bundle.lock"]


@pytest.mark.slow
def test_a_spectrogram_run_is_refused_as_a_bundles_embedder(multimodal, tmp_path):
    from export.errors import ExportError

    spectrogram_run = multimodal[0].parent / "spectrogram"
    with pytest.raises(ExportError, match="is a spectrogram run: .*train-fusion"):
        build_bundle(spectrogram_run, tmp_path / "b")
    assert not (tmp_path / "b").exists()


@pytest.mark.slow
def test_a_fusion_rerun_that_fails_before_writing_leaves_the_old_run_whole(moved_tree):
    """Its modalities.json was deleted before the inputs were read: the old run, still
    consistent, could no longer be exported."""
    from trainer.errors import CheckpointError
    from trainer.fusion import verified_inputs

    fusion = moved_tree / "fusion"
    with pytest.raises(CheckpointError, match="not found"):
        run_fusion({m: moved_tree / "absent" for m in CHANNELS}, fusion)
    assert set(verified_inputs(fusion)) == set(CHANNELS)
