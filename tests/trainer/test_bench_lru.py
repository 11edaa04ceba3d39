"""``ecgedge bench lru`` on a tiny exported LRU bundle: timing rows, ratio, warm-vs-cold gap."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from sdk.bundle import load_bundle  # noqa: E402
from sdk.errors import BlockError, BundleError  # noqa: E402
from sdk.lru_step import StepEmbedder  # noqa: E402
from sdk.rr import RR_FEATURE_NAMES  # noqa: E402
from tests.lru_bundles import write_lru_bundle  # noqa: E402
from trainer.bench.lru import (  # noqa: E402
    PIPELINE_ROW,
    STEP_ROW,
    WINDOW_ROW,
    per_hop_times,
    pipeline_modes,
    run,
    warm_cold_gap,
)
from trainer.models.lru import LRUConfig, LRUEncoder  # noqa: E402

CFG = LRUConfig(
    patch=8, chunk=16, d_model=16, d_state=12, layers=2, emb_dim=24, r_cap=0.95, r_max=0.9
)
N_PAIRS, LEAD = 6, 640


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


def test_run_writes_consistent_timings_ratio_and_gap(lru_bundle: Path, tmp_path: Path) -> None:
    stream = (_record(), 128.0, "synthetic")
    result = run(
        lru_bundle, tmp_path, {"Same": lru_bundle}, n=15, pairs=_pairs(LEAD), stream=stream
    )
    rows = result["rows"]
    assert list(rows) == [STEP_ROW, WINDOW_ROW, "Same whole-window re-encode (10 s)"]
    for row in rows.values():
        assert row["n"] == 15 and 0 < row["median_ms"] <= row["p90_ms"] < 1e4
    ratio = rows[WINDOW_ROW]["median_ms"] / rows[STEP_ROW]["median_ms"]
    assert math.isclose(result["ratio_window_over_step"], ratio)
    manifest = json.loads((lru_bundle / "manifest.json").read_text())
    assert result["graph_nodes"] == manifest["metrics"]["graph_nodes"]
    gap = result["warm_vs_cold"]
    assert result["blocks_per_window"] == 1280 // CFG.block_samples
    assert gap["pairs"] == N_PAIRS and gap["lead_samples"] == LEAD
    assert 1e-3 < gap["rel_l2_median"] <= gap["rel_l2_p95"] < 10  # the carried state matters
    assert 0.0 <= gap["head_class_agreement"] <= 1.0
    assert math.isclose(
        gap["head_class_agreement"] * N_PAIRS, round(gap["head_class_agreement"] * N_PAIRS)
    )
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
            assert 0 < f[key]["p50"] <= f[key]["p99"] < 1e4
        assert f["ms_per_hop"] > 0
    assert math.isclose(
        res["head_class_agreement"] * n_windows, round(res["head_class_agreement"] * n_windows)
    )
    assert 1 / n_windows <= res["head_class_agreement"] <= 1.0  # the first windows are identical
    assert 0.0 <= res["max_abs_dprob_median"] < 1.0


def test_pipeline_modes_at_a_one_block_hop(lru_bundle: Path) -> None:
    x = _record()
    res = pipeline_modes(lru_bundle, x, 128.0, repeats=1, hop_s=1.0)
    n_windows = (x.size - 1280) // CFG.block_samples + 1
    assert res["hop_s"] == 1.0 and res["step_calls_per_hop"] == 1
    assert res["modes"]["stateful"]["stateful_windows"] == n_windows
    assert res["modes"]["whole-window"]["windows"] == n_windows
