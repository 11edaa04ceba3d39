"""ONNX parity of the LRU embedder, the LRU step model and the DACL embedder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from export.lru_export import (
    embedder_parity,
    export_dacl_embedder,
    export_lru_embedder,
    export_lru_step,
    graph_nodes,
    session,
    stream_onnx_step,
)
from export.onnx_export import compare, export_module
from sdk.lru_step import STEP_INPUTS, STEP_OUTPUTS
from trainer.models.dacl import VAE, DACLConfig, DACLEmbedder, LatentUNetEncoder
from trainer.models.diffae import LRUEmbedder
from trainer.models.lru import LRUConfig, LRUEncoder, LRUStepModel, warm_reference
from trainer.models.lru_lean import pack_step_state

CFG = LRUConfig(
    patch=8, chunk=16, d_model=16, d_state=12, layers=2, emb_dim=24, r_cap=0.95, r_max=0.9
)
#: torch vs ONNX Runtime FP32, max |Δ| / max |reference|
TOL = 1e-5


@pytest.fixture(scope="module")
def encoder() -> LRUEncoder:
    torch.manual_seed(0)
    return LRUEncoder(CFG).eval()


def test_lru_embedder_parity(encoder: LRUEncoder, tmp_path: Path) -> None:
    path = tmp_path / "embedder.onnx"
    export_lru_embedder(encoder, 4 * CFG.block_samples, path)
    x = np.random.default_rng(0).standard_normal((3, 1, 4 * CFG.block_samples)).astype(np.float32)
    assert embedder_parity(encoder, path, x).max_rel < TOL
    names = [i.name for i in session(path).get_inputs()]
    assert names == ["x", "t", "noise"]


def test_lru_step_onnx_equals_whole_window_and_warm_stream(
    encoder: LRUEncoder, tmp_path: Path
) -> None:
    path = tmp_path / "step.onnx"
    k = 4
    export_lru_step(encoder, k, path)
    x = np.random.default_rng(1).standard_normal((2, 1, 9 * CFG.block_samples)).astype(np.float32)
    embs = stream_onnx_step(path, encoder, k, x)
    with torch.no_grad():
        whole = encoder(torch.from_numpy(x[..., : k * CFG.block_samples])).numpy()
        warm = warm_reference(encoder, torch.from_numpy(x), k * CFG.block_samples).numpy()
    assert compare(whole, embs[k - 1]).max_rel < TOL  # stream started at the window start
    assert compare(warm, embs[-1]).max_rel < TOL  # continuing stream


def test_lru_step_onnx_states_equal_the_training_step_model(
    encoder: LRUEncoder, tmp_path: Path
) -> None:
    path = tmp_path / "step.onnx"
    k, hop = 3, CFG.block_samples
    export_lru_step(encoder, k, path)
    sess = session(path)
    assert [i.name for i in sess.get_inputs()] == list(STEP_INPUTS)
    assert [o.name for o in sess.get_outputs()] == list(STEP_OUTPUTS)
    ref_model = LRUStepModel(encoder, k)
    ref_state = ref_model.initial(2)
    state = [s.numpy() for s in pack_step_state(ref_state)]
    x = torch.randn(2, 1, 5 * hop, generator=torch.Generator().manual_seed(3))
    for b in range(5):
        block = x[..., b * hop : (b + 1) * hop]
        out = sess.run(list(STEP_OUTPUTS), dict(zip(STEP_INPUTS, [block.numpy(), *state])))
        state = out[1:]
        with torch.no_grad():
            ref = ref_model(block, *ref_state)
        ref_state = list(ref[1:])
        lru_ref, red_ref = (t.numpy() for t in pack_step_state(ref_state))
        assert out[1].shape == (2, CFG.layers, 2 * CFG.d_state)
        assert out[2].shape == (2, k, 3, CFG.emb_dim)
        for r, o in ((ref[0].numpy(), out[0]), (lru_ref, out[1]), (red_ref, out[2])):
            assert compare(r, o).max_rel < TOL


def test_lean_graphs_have_far_fewer_nodes_than_the_training_modules(
    encoder: LRUEncoder, tmp_path: Path
) -> None:
    window, k = 4 * CFG.block_samples, 4
    export_lru_embedder(encoder, window, tmp_path / "lean_window.onnx")
    export_lru_step(encoder, k, tmp_path / "lean_step.onnx")
    x = torch.zeros(2, 1, window)
    t = torch.tensor([1, 2])
    export_module(
        LRUEmbedder(encoder), (x, t, x), tmp_path / "window.onnx", ["x", "t", "noise"], ["e"]
    )
    step = LRUStepModel(encoder, k)
    n_state = 2 * CFG.layers + 3
    export_module(
        step,
        (torch.zeros(2, 1, CFG.block_samples), *step.initial(2)),
        tmp_path / "step.onnx",
        ["x", *(f"s{i}" for i in range(n_state))],
        ["e", *(f"o{i}" for i in range(n_state))],
    )
    for lean, full in (("lean_window", "window"), ("lean_step", "step")):
        a, b = graph_nodes(tmp_path / f"{lean}.onnx"), graph_nodes(tmp_path / f"{full}.onnx")
        assert 0 < a["ort_optimized"] <= a["onnx"]
        assert a["onnx"] < b["onnx"] / 2 and a["ort_optimized"] < b["ort_optimized"] / 2


def test_dacl_embedder_parity(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = DACLConfig(n_features=30)
    emb = DACLEmbedder(
        VAE(cfg), LatentUNetEncoder(cfg), torch.randn(30), torch.rand(30) + 0.5
    ).eval()
    path = tmp_path / "dacl.onnx"
    export_dacl_embedder(emb, 30, path)
    f = np.random.default_rng(0).standard_normal((5, 30)).astype(np.float32)
    t = np.zeros(5, np.int64)
    with torch.no_grad():
        ref = emb(torch.from_numpy(f), torch.from_numpy(t)).numpy()
    out = session(path).run(["embedding"], {"features": f, "t": t})[0]
    assert compare(ref, out).max_rel < TOL


def test_classifier_runs_a_features_embedder_with_numpy_scattering(tmp_path: Path) -> None:
    pytest.importorskip("kymatio")
    from export.build import _tensor
    from export.lru_bundle import bundle_manifest
    from export.onnx_export import export_head
    from sdk.bundle import load_bundle
    from sdk.classifier import WindowClassifier, WindowInputs
    from sdk.rr import RR_FEATURE_NAMES
    from sdk.scattering import scattering_features
    from trainer.config import DataConfig

    torch.manual_seed(0)
    cfg = DACLConfig()
    emb = DACLEmbedder(VAE(cfg), LatentUNetEncoder(cfg), torch.zeros(250), torch.ones(250)).eval()
    export_dacl_embedder(emb, 250, tmp_path / "embedder.fp32.onnx")
    n_rr = len(RR_FEATURE_NAMES)
    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((cfg.emb_dim + n_rr, 4)), rng.standard_normal(4)
    export_head(w, b, tmp_path / "head.onnx")
    np.save(tmp_path / "noise.npy", np.zeros((1, 1, 1280), np.float32))
    inputs = [_tensor("features", "float32", ["batch", 250]), _tensor("t", "int64", ["batch"])]
    bundle_manifest(
        tmp_path,
        name="dacl-test",
        data=DataConfig(),
        emb_inputs=inputs,
        emb_dim=cfg.emb_dim,
        steps=50,
        note="test",
        extra={"provenance": {}, "metrics": {}, "front_end": {"J": 6, "Q": 8, "features": 250}},
    )
    clf = WindowClassifier(load_bundle(tmp_path))
    x = rng.standard_normal((3, 1, 1280)).astype(np.float32)
    rr = rng.standard_normal((3, n_rr)).astype(np.float32)
    proba = clf.classify(WindowInputs(x, rr))
    with torch.no_grad():
        e = emb(torch.from_numpy(scattering_features(x)), torch.zeros(3, dtype=torch.int64))
    logits = np.c_[e.numpy(), rr] @ w + b
    ref = np.exp(logits - logits.max(1, keepdims=True))
    ref /= ref.sum(1, keepdims=True)
    assert np.allclose(proba, ref, atol=1e-4)
