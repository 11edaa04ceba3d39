"""Denoiser export: ONNX parity with PyTorch, INT8 candidate, manifest entry."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from export.denoiser import (
    DENOISER_PARITY_TOL,
    _entry,
    add_denoiser,
    export_denoiser,
    ms_per_window,
    quantize_denoiser,
    run_onnx,
)
from export.onnx_export import compare
from sdk.bundle import default_bundle_path, load_bundle
from sdk.denoiser import WindowDenoiser
from trainer.models.cdecgnet import CDConfig, CDECGNet

TINY = {"stem": 8, "dims": (8, 8, 8), "lead_hidden": 16, "lead_dim": 8, "noise_dim": 4}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    net = CDECGNet(CDConfig(leads=2, **TINY)).eval()
    path = tmp_path_factory.mktemp("den") / "denoiser.fp32.onnx"
    export_denoiser(net, path)
    return net, path


def test_onnx_matches_torch(exported):
    net, path = exported
    x = np.random.default_rng(0).standard_normal((5, 2, 1280)).astype(np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    assert compare(ref, run_onnx(path, x)).max_rel <= DENOISER_PARITY_TOL
    # the timing helper runs on the exported graph; its figure is the benchmark's business
    assert isinstance(ms_per_window(path, 2, 1280, repeats=1), float)


def test_int8_candidate_runs_and_stays_close(exported, tmp_path, capsys):
    net, path = exported
    calib = np.random.default_rng(1).standard_normal((32, 2, 1280)).astype(np.float32)
    capsys.readouterr()
    int8 = quantize_denoiser(path, tmp_path / "denoiser.int8.onnx", calib)
    assert capsys.readouterr().out == ""  # ONNX Runtime's calibrator prints are dropped
    y32, y8 = run_onnx(path, calib[:4]), run_onnx(int8, calib[:4])
    assert y8.shape == y32.shape
    assert compare(y32, y8).max_rel < 0.2  # a loose sanity bound; the real gate is on metrics


def test_manifest_entry_makes_a_loadable_bundle(exported, tmp_path):
    _, path = exported
    root = tmp_path / "bundle"
    shutil.copytree(default_bundle_path(), root)
    shutil.copy(path, root / "denoiser.fp32.onnx")
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["files"] = [f for f in manifest["files"] if f["role"] != "denoiser"]
    manifest["files"].append(_entry(root, "denoiser.fp32.onnx", "fp32", 2, 1280))
    (root / "manifest.json").write_text(json.dumps(manifest))
    den = WindowDenoiser(load_bundle(root))
    assert (den.leads, den.window, den.precision) == (2, 1280, "fp32")


@pytest.mark.data("mitdb", "nstdb")
@pytest.mark.slow
def test_add_denoiser_replaces_the_denoiser_of_a_bundle(tmp_path):
    from trainer.denoise_config import load_denoise_preset
    from trainer.train_denoiser import train_denoiser

    run = tmp_path / "run"
    train_denoiser(load_denoise_preset("smoke", {"train.out_dir": str(run), "train.steps": "2"}))
    base = load_bundle(default_bundle_path()).manifest
    assert "head_refit" in base.provenance  # the shipped head was refitted behind its denoiser
    assert "anchors" in base.provenance
    with pytest.warns(UserWarning) as caught:
        add_denoiser(default_bundle_path(), run, tmp_path / "bundle")
    said = " ".join(str(w.message) for w in caught)
    assert "refitted on windows of another denoiser" in said
    assert "anchor windows were computed with another denoiser and were removed" in said
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    # anchors of the old denoiser are gone, file and entry: no calibration could use them
    assert "anchors" not in manifest["provenance"]
    assert all(f["role"] != "anchors" for f in manifest["files"])
    assert not (tmp_path / "bundle" / "anchors.npz").exists()
    assert "run `ecgedge export --refit-head`" in manifest["provenance"]["head_refit"]["stale"]
    assert manifest["name"] == base.name  # not "…-denoise-denoise"
    assert manifest["provenance"]["denoiser"]["run"] == str(run)
    assert [f["role"] for f in manifest["files"]].count("denoiser") in (1, 2)  # FP32 (+ INT8)
    card = (tmp_path / "bundle" / "MODEL_CARD.md").read_text()
    assert card.count("## Denoiser (CD-ECGNet)") == 1 and "Checkpoint of training step 2" in card
    assert "**Stale:**" in card
    assert WindowDenoiser(load_bundle(tmp_path / "bundle")).leads == 1


#: Clean windows through the shipped bundle's denoiser (runs/denoise-1lead-d4, FP32, via the
#: SDK), output vs input on 256 windows of its validation records. Measured: median SNR
#: 61.7 dB, 5th percentile 10.4 dB, mean cosine 99.39% (min 80.0%). Bounds, with margin:
PASS_THROUGH_MIN_MEDIAN_SNR_DB = 30.0
PASS_THROUGH_MIN_P5_SNR_DB = 8.0
PASS_THROUGH_MIN_COS_PCT = 99.0


@pytest.mark.data("mitdb", "nstdb", "challenge2021")
@pytest.mark.slow
def test_shipped_denoiser_passes_clean_leads_nearly_unchanged():
    from trainer.data.denoise_data import PairSampler, clean_signals, record_split
    from trainer.denoise_config import build_denoise_config
    from trainer.denoise_metrics import window_metrics
    from trainer.train_denoiser import spec_of

    bundle = load_bundle(default_bundle_path())
    conf = bundle.manifest.provenance["denoiser"]["config"]
    cfg = build_denoise_config({k: conf[k] for k in ("data", "model", "train")})
    clean = []
    for db in cfg.data.databases:
        val = record_split(db, cfg.data.val_fraction, cfg.data.split_seed).eval
        clean += clean_signals(db, val, cfg.data.fs, cfg.model.leads)
    s = PairSampler(clean, spec_of(cfg), "eval", window=1280, context=cfg.data.context, seed=3)
    ex = s.draw(256, p_noisy=0.0)
    m = window_metrics(ex.x, WindowDenoiser(bundle).denoise(ex.x))
    assert np.median(m["snr_out"]) >= PASS_THROUGH_MIN_MEDIAN_SNR_DB
    assert np.percentile(m["snr_out"], 5) >= PASS_THROUGH_MIN_P5_SNR_DB
    assert np.mean(m["cos"]) >= PASS_THROUGH_MIN_COS_PCT


def test_a_jetson_denoiser_candidate_is_in_tensorrts_form(exported, tmp_path):
    """The denoiser's INT8 candidate ignored the bundle's target: a CPU-form graph (uint8
    activations, INT32 biases) in a Jetson bundle only failed on the device."""
    from export.jetson_rules import check_file

    _, path = exported
    calib = np.random.default_rng(1).standard_normal((32, 2, 1280)).astype(np.float32)
    cpu = quantize_denoiser(path, tmp_path / "cpu.onnx", calib)
    assert check_file(cpu)  # the CPU form breaks TensorRT's rules
    jetson = quantize_denoiser(path, tmp_path / "jetson.onnx", calib, target="jetson")
    assert check_file(jetson) == []
