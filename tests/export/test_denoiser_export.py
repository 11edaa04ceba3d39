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
    assert ms_per_window(path, 2, 1280, repeats=5) > 0


def test_int8_candidate_runs_and_stays_close(exported, tmp_path):
    net, path = exported
    calib = np.random.default_rng(1).standard_normal((32, 2, 1280)).astype(np.float32)
    int8 = quantize_denoiser(path, tmp_path / "denoiser.int8.onnx", calib)
    y32, y8 = run_onnx(path, calib[:4]), run_onnx(int8, calib[:4])
    assert y8.shape == y32.shape
    assert compare(y32, y8).max_rel < 0.2  # a loose sanity bound; the real gate is on metrics


def test_manifest_entry_makes_a_loadable_bundle(exported, tmp_path):
    _, path = exported
    root = tmp_path / "bundle"
    shutil.copytree(default_bundle_path(), root)
    shutil.copy(path, root / "denoiser.fp32.onnx")
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["files"].append(_entry(root, "denoiser.fp32.onnx", "fp32", 2, 1280))
    (root / "manifest.json").write_text(json.dumps(manifest))
    den = WindowDenoiser(load_bundle(root))
    assert (den.leads, den.window, den.precision) == (2, 1280, "fp32")
