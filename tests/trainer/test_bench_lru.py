"""``ecgedge bench lru`` on a tiny exported LRU bundle: timing rows, ratio, warm-vs-cold gap."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from sdk.bundle import load_bundle
from sdk.classifier import WindowClassifier, WindowInputs
from sdk.errors import BlockError, BundleError
from sdk.events import WindowEvent
from sdk.lru_step import StepEmbedder
from sdk.pipeline import StreamPipeline
from sdk.rr import RR_FEATURE_NAMES
from tests.lru_bundles import write_lru_bundle
from trainer.bench.lru import (
    PIPELINE_ROW,
    STEP10_ROW,
    STEP_ROW,
    WINDOW_ROW,
    per_hop_times,
    pipeline_modes,
    run,
    warm_cold_gap,
)
from trainer.models.lru import LRUConfig, LRUEncoder

CFG = LRUConfig(
    patch=8, chunk=16, d_model=16, d_state=12, layers=2, emb_dim=24, r_cap=0.95, r_max=0.9
)
N_PAIRS, LEAD = 6, 640
#: stateful vs whole-window pipeline: the head class agrees on at least this fraction of the
#: windows (as in tests/export/test_lru_pipeline.py; measured here 7/7 at a 5 s hop)
MIN_AGREEMENT = 0.7


@pytest.fixture(scope="module")
def lru_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A schema-v1 LRU bundle (embedder, step model, head, noise) of a random tiny encoder."""
    torch.manual_seed(0)
    encoder = LRUEncoder(CFG).eval()
    rng = np.random.default_rng(0)
    n_feat = CFG.emb_dim + len(RR_FEATURE_NAMES)
    head = (rng.standard_normal((n_feat, 4)), rng.standard_normal(4))
    return write_lru_bundle(tmp_path_factory.mktemp("lru_bundle"), encoder, head, name="lru-test")


def _pairs(lead: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Synthetic continuing streams: ``lead`` samples, then a 10 s window; RR features."""
    rng = np.random.default_rng(1)
    t = np.arange(lead + 1280) / 128.0
    x = np.stack([np.sin(2 * np.pi * (1 + i / 3) * t) for i in range(N_PAIRS)])
    x = (x + 0.3 * rng.standard_normal(x.shape)).astype(np.float32)[:, None]
    rr = rng.standard_normal((N_PAIRS, len(RR_FEATURE_NAMES))).astype(np.float32)
    return x[..., :lead], x[..., lead:], rr


def _record(seconds: float = 40.0) -> np.ndarray:
    from sdk.synthetic import synthetic_ecg

    return synthetic_ecg((("sinus", seconds / 2), ("af", seconds / 2)), fs=128.0, seed=2).signal


def _warm_cold_reference(
    bundle_dir: Path, preceding: np.ndarray, windows: np.ndarray, rr: np.ndarray
) -> tuple[np.ndarray, float]:
    """``warm_cold_gap`` recomputed through the SDK's classes: the step model over each
    preceding signal and its window (warm) vs the whole-window embedder at t = 0 (cold; this
    bundle's inference noise is zero), both through the head. (relative L2 gaps, agreement)"""
    bundle = load_bundle(bundle_dir)
    stepper, clf = StepEmbedder(bundle), WindowClassifier(bundle, precision="fp32")
    hop = stepper.spec.hop_samples
    gaps, same = [], []
    for pre, w, feats in zip(preceding, windows, rr):
        x = np.concatenate([pre, w], axis=-1)[None]
        state = stepper.initial_state(1)
        for j in range(0, x.shape[-1], hop):
            warm, state = stepper.step(x[..., j : j + hop], state)
        cold, _ = clf.embed_modality("raw", WindowInputs(w[None], feats[None]), t=0)
        gaps.append(np.linalg.norm(warm - cold) / np.linalg.norm(cold))
        warm_p, cold_p = (
            clf.head_probabilities(clf.combine({"raw": (e, None)}, feats[None]))
            for e in (warm, cold)
        )
        same.append(warm_p.argmax() == cold_p.argmax())
    return np.asarray(gaps), float(np.mean(same))


def _modes_reference(bundle_dir: Path, x: np.ndarray) -> tuple[float, float]:
    """The two modes compared directly: fresh pipelines, stateful and whole-window, fed
    ``x`` in 0.5 s blocks; (head-class agreement, median over windows of max |dp|)."""
    probs = []
    for stateful in (True, False):
        p = StreamPipeline(bundle_dir, fs_in=128.0, stateful=stateful)
        events = [e for i in range(0, x.size, 64) for e in p.push(x[i : i + 64])] + p.close()
        windows = [e for e in events if isinstance(e, WindowEvent)]
        probs.append(np.array([list(e.probabilities.values()) for e in windows]))
    a, b = probs
    assert a.shape == b.shape and len(a) > 0
    agreement = float(np.mean(a.argmax(axis=1) == b.argmax(axis=1)))
    return agreement, float(np.median(np.abs(a - b).max(axis=1)))


def test_run_writes_consistent_timings_ratio_and_gap(lru_bundle: Path, tmp_path: Path) -> None:
    stream = (_record(), 128.0, "synthetic")
    result = run(
        lru_bundle, tmp_path, {"Same": lru_bundle}, n=15, pairs=_pairs(LEAD), stream=stream
    )
    rows = result["rows"]
    assert list(rows) == [STEP_ROW, STEP10_ROW, WINDOW_ROW, "Same whole-window re-encode (10 s)"]
    for row in rows.values():
        assert row["n"] == 15 and 0 < row["median_ms"] <= row["p90_ms"]
    ratio = rows[WINDOW_ROW]["median_ms"] / rows[STEP_ROW]["median_ms"]
    assert math.isclose(result["ratio_window_over_step"], ratio)
    split = result["step_cost_split_ms"]  # t1 = fixed + block, t10 = fixed + 10 block
    t1, t10 = rows[STEP_ROW]["median_ms"], rows[STEP10_ROW]["median_ms"]
    assert math.isclose(split["fixed_ms"] + split["per_block_ms"], t1)
    assert math.isclose(split["fixed_ms"] + 10 * split["per_block_ms"], t10)
    manifest = json.loads((lru_bundle / "manifest.json").read_text())
    assert result["graph_nodes"] == manifest["metrics"]["graph_nodes"]
    gap = result["warm_vs_cold"]
    assert result["blocks_per_window"] == 1280 // CFG.block_samples
    assert gap["pairs"] == N_PAIRS and gap["lead_samples"] == LEAD
    assert 1e-3 < gap["rel_l2_median"] <= gap["rel_l2_p95"] < 10  # the carried state matters
    gaps, agreement = _warm_cold_reference(lru_bundle, *_pairs(LEAD))
    assert gap["rel_l2_median"] == pytest.approx(np.median(gaps), rel=1e-4)
    assert gap["rel_l2_p95"] == pytest.approx(np.percentile(gaps, 95), rel=1e-4)
    assert gap["head_class_agreement"] == agreement
    saved = json.loads((tmp_path / "lru.json").read_text())
    assert saved["benchmark"] == "lru"
    assert math.isclose(saved["ratio_window_over_step"], result["ratio_window_over_step"])
    md = (tmp_path / "lru.md").read_text()
    assert result["pipeline"]["source"] == "synthetic" and f"## {PIPELINE_ROW}" in md
    assert saved["pipeline"]["modes"]["stateful"] == result["pipeline"]["modes"]["stateful"]
    one_s = result["pipeline_1s"]
    assert one_s["hop_s"] == 1.0 and one_s["step_calls_per_hop"] == 1
    assert f"## {PIPELINE_ROW}, 1 s hop" in md and f"## {PIPELINE_ROW}, 5 s hop" in md
    assert (
        f"**{ratio:.1f}×**" in md
        and f"step model {manifest['metrics']['graph_nodes']['step']['onnx']} /" in md
    )


def test_gap_vanishes_when_the_stream_starts_at_the_window(lru_bundle: Path) -> None:
    """No preceding signal: the streamed embedding is the whole-window one (ONNX parity)."""
    gap = warm_cold_gap(lru_bundle, *_pairs(0))
    assert gap["pairs"] == N_PAIRS and gap["lead_samples"] == 0
    assert gap["rel_l2_p95"] < 1e-5
    assert gap["head_class_agreement"] == 1.0


def test_gap_rejects_lengths_off_the_hop(lru_bundle: Path) -> None:
    pre, w, rr = _pairs(LEAD)
    with pytest.raises(ValueError, match="multiples of the hop"):
        warm_cold_gap(lru_bundle, pre[..., 3:], w, rr)


def test_step_embedder_checks_block_shape(lru_bundle: Path) -> None:
    stepper = StepEmbedder(load_bundle(lru_bundle))
    state = stepper.initial_state(1)
    with pytest.raises(BlockError):
        stepper.step(np.zeros((1, 1, CFG.block_samples + 1), np.float32), state)
    emb, (lru, red) = stepper.step(np.zeros((1, 1, CFG.block_samples), np.float32), state)
    assert emb.shape == (1, CFG.emb_dim) and lru.shape == state[0].shape
    assert red.shape == state[1].shape


def test_bundle_with_the_old_state_layout_is_refused(lru_bundle: Path, tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(lru_bundle, old)
    path = old / "manifest.json"
    data = json.loads(path.read_text())
    st = data["streaming"]
    for key in ("state_layout", "layers", "inputs", "state_shapes"):
        del st[key]
    st["state_inputs"] = ["state_re_0", "state_im_0", "red_m", "red_s", "red_v"]
    path.write_text(json.dumps(data))
    with pytest.raises(BundleError) as err:
        per_hop_times(old, {}, n=1)
    assert err.value.reason == "streaming_layout"


def test_pipeline_modes_time_both_modes_on_the_same_windows(lru_bundle: Path) -> None:
    x = _record()
    res = pipeline_modes(lru_bundle, x, 128.0, repeats=2)
    n_windows = (x.size - 1280) // 640 + 1
    step, whole = res["modes"]["stateful"], res["modes"]["whole-window"]
    assert step["windows"] == whole["windows"] == n_windows
    assert step["stateful_windows"] == n_windows and whole["stateful_windows"] == 0
    assert res["step_calls_per_hop"] == 640 // CFG.block_samples and res["hop_s"] == 5.0
    for f in (step, whole):
        for key in ("window_latency_ms", "emitting_push_ms"):
            assert 0 < f[key]["p50"] <= f[key]["p99"]
        assert f["ms_per_hop"] > 0
    agreement, dprob = _modes_reference(lru_bundle, x)
    assert res["head_class_agreement"] == agreement >= MIN_AGREEMENT
    # measured 0.0069: the carried state moves the probabilities, but only a little
    assert res["max_abs_dprob_median"] == pytest.approx(dprob, abs=1e-6)
    assert 1e-4 < dprob < 0.1


def test_pipeline_modes_at_a_one_block_hop(lru_bundle: Path) -> None:
    x = _record()
    res = pipeline_modes(lru_bundle, x, 128.0, repeats=1, hop_s=1.0)
    n_windows = (x.size - 1280) // CFG.block_samples + 1
    assert res["hop_s"] == 1.0 and res["step_calls_per_hop"] == 1
    assert res["modes"]["stateful"]["stateful_windows"] == n_windows
    assert res["modes"]["whole-window"]["windows"] == n_windows
