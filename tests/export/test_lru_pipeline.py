"""StreamPipeline with a DiffAE-LRU step model (sdk.step_stream) on a tiny exported bundle.

The bundle's head ignores the RR features (zero weights), so its probabilities depend on the
embedding alone: these tests compare embeddings through the public events, independent of
the R-peak detector's learning phase.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from sdk.bundle import load_bundle
from sdk.classifier import WindowClassifier
from sdk.errors import ConfigError
from sdk.events import WindowEvent
from sdk.lru_step import (
    StepEmbedder,
    streaming_spec,
)
from sdk.pipeline import StreamPipeline
from sdk.preprocess import preprocess_record
from sdk.ringbuffer import RingBuffer
from sdk.rr import RR_FEATURE_NAMES
from sdk.step_stream import StepStream, standardize_block
from sdk.synthetic import synthetic_ecg
from sdk.windowing import record_windows
from tests.lru_bundles import write_lru_bundle
from trainer.config import DataConfig
from trainer.data.datasets import spec_of
from trainer.models.lru import LRUConfig, LRUEncoder

CFG = LRUConfig(
    patch=8, chunk=16, d_model=16, d_state=12, layers=2, emb_dim=24, r_cap=0.95, r_max=0.9
)
FS = 128.0  # the model rate: no resampling, so stream samples map 1:1 to model samples
#: probabilities, step model vs whole-window embedder on identical input (ONNX parity ~1e-6)
PROBA_TOL = 1e-4
#: continuing stream: the head class of the stateful path equals the whole-window path's on
#: at least this fraction of windows (loose: a random tiny encoder; measured 20/23 = 87%)
MIN_AGREEMENT = 0.7


def _ecg() -> np.ndarray:
    sig = synthetic_ecg((("sinus", 60.0), ("af", 60.0)), fs=FS, seed=5).signal
    return np.asarray(sig, dtype=np.float64)


@pytest.fixture(scope="module")
def ecg() -> np.ndarray:
    return _ecg()


@pytest.fixture(scope="module")
def lru_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A schema-v1 LRU bundle of a random tiny encoder whose head reads the embedding only."""
    torch.manual_seed(0)
    encoder = LRUEncoder(CFG).eval()
    data = DataConfig()
    # a random head on the embedding standardized over this record's windows, so that its
    # class varies from window to window (the random encoder's embeddings vary little)
    rw = record_windows(_ecg(), FS, spec_of(data), data.window, data.hop)
    with torch.no_grad():
        emb = encoder(torch.from_numpy(rw.windows)).numpy()
    w_emb = np.random.default_rng(0).standard_normal((CFG.emb_dim, 4))
    w_emb /= emb.std(axis=0)[:, None] * np.sqrt(CFG.emb_dim)
    weight = np.zeros((CFG.emb_dim + len(RR_FEATURE_NAMES), 4))
    weight[: CFG.emb_dim] = w_emb
    root = tmp_path_factory.mktemp("lru_pipeline_bundle")
    write_lru_bundle(root, encoder, (weight, -emb.mean(axis=0) @ w_emb), name="lru-pipeline-test")
    return root


def run(bundle: Path, parts: list[tuple[np.ndarray, float | None]], **kw: Any) -> tuple:
    """Push each (signal, timestamp of its first sample) in 0.5 s packets; window events."""
    p = StreamPipeline(bundle, fs_in=FS, **kw)
    events: list[Any] = []
    for x, t0 in parts:
        for i in range(0, len(x), 64):
            events += p.push(x[i : i + 64], timestamp_s=None if (i or t0 is None) else t0)
    events += p.close()
    return p, [e for e in events if isinstance(e, WindowEvent)]


def probs(events: list[WindowEvent]) -> np.ndarray:
    return np.array([list(e.probabilities.values()) for e in events])


def test_stateful_pipeline_against_whole_window(lru_bundle: Path, ecg: np.ndarray) -> None:
    """First window: identical input, identical output. Later windows: the state carries
    the stream; same events, finite, mostly the same class."""
    p, step = run(lru_bundle, [(ecg, None)], stateful=True)
    q, whole = run(lru_bundle, [(ecg, None)], stateful=False)
    assert p.step_stream is not None and q.step_stream is None
    assert len(step) == len(whole) == (len(ecg) - 1280) // 640 + 1
    assert all(e.stateful for e in step) and not any(e.stateful for e in whole)
    assert [e.start_s for e in step] == [e.start_s for e in whole]
    a, b = probs(step), probs(whole)
    assert np.all(np.isfinite(a)) and np.allclose(a.sum(axis=1), 1.0, atol=1e-5)
    assert np.max(np.abs(a[0] - b[0])) < PROBA_TOL
    assert np.max(np.abs(a[1:] - b[1:])) > 100 * PROBA_TOL  # the carried state shows
    agreement = float(np.mean(a.argmax(axis=1) == b.argmax(axis=1)))
    print(f"head-class agreement stateful vs whole-window: {agreement:.3f} of {len(a)}")
    assert agreement >= MIN_AGREEMENT
    assert [e.n_beats for e in step] == [e.n_beats for e in whole]
    assert all(e.latency_ms > 0 for e in step)


def test_bench_pipeline_modes_agreement_is_the_pipelines(lru_bundle: Path, ecg: np.ndarray) -> None:
    """``ecgedge bench lru``'s mode comparison recomputed from the two pipelines' events.
    On this bundle the classes differ on some windows (about 20/23 agree), so a wrong
    agreement cannot hide behind 1.0."""
    from trainer.bench.lru import pipeline_modes

    res = pipeline_modes(lru_bundle, ecg, FS, repeats=1)
    a, b = (probs(run(lru_bundle, [(ecg, None)], stateful=s)[1]) for s in (True, False))
    agreement = float(np.mean(a.argmax(axis=1) == b.argmax(axis=1)))
    assert MIN_AGREEMENT <= agreement < 1.0
    assert res["head_class_agreement"] == agreement
    assert res["max_abs_dprob_median"] == pytest.approx(
        np.median(np.abs(a - b).max(axis=1)), abs=1e-6
    )


def test_windows_follow_the_documented_block_normalization(
    lru_bundle: Path, ecg: np.ndarray
) -> None:
    """An independent reference: the offline-preprocessed record, each 1 s block standardized
    with the 10 s ending at it (the first window's blocks with the first window), streamed
    through a fresh step model; the head on its output at every window end."""
    _, events = run(lru_bundle, [(ecg, None)], stateful=True)
    bundle = load_bundle(lru_bundle)
    stepper, clf = StepEmbedder(bundle), WindowClassifier(bundle)
    y = preprocess_record(ecg, FS, bundle.manifest.preprocess)[:, 0]
    state, ref = stepper.initial_state(1), []
    for end in range(128, len(y) + 1, 128):
        hi = max(end, 1280)
        x = standardize_block(y[hi - 1280 : hi], 128, 1280 - (hi - end))
        emb, state = stepper.step(x[None, None], state)
        if end >= 1280 and (end - 1280) % 640 == 0:
            feats = clf.combine({"raw": (emb, None)}, np.zeros((1, len(RR_FEATURE_NAMES))))
            ref.append(clf.head_probabilities(feats)[0])
    assert len(ref) == len(events)
    assert np.max(np.abs(probs(events) - np.array(ref))) < PROBA_TOL


def test_gap_resets_the_state(lru_bundle: Path, ecg: np.ndarray) -> None:
    """After a gap, windows equal a fresh pipeline's fed only the post-gap samples.

    Before the gap: 40 s of ECG, then 10 s of zeros so that the band-pass state has decayed
    (< 1e-6) and the pre-gap samples cannot reach the post-gap ones through the filter; the
    step model's state and normalization would carry them (see the control below). The
    post-gap signal starts at 0 mV: the filters restart settled at the first post-gap sample,
    which for 0 is the fresh pipeline's zero state."""
    pre = np.r_[ecg[: 40 * 128], np.zeros(10 * 128)]
    post, gap_s = ecg[40 * 128 :] - ecg[40 * 128], 7.0
    t_post = len(pre) / FS + gap_s
    p, events = run(lru_bundle, [(pre, 0.0), (post, t_post)], stateful=True)
    _, fresh = run(lru_bundle, [(post, None)], stateful=True)
    assert p.stats.gaps == 1 and p.step_stream is not None
    # one reset at the gap; before it, one at the end of each window flagged for its signal
    # (the 10 s of zeros: flat) that starts after the last reset; none for the windows
    # flagged only for the gap
    reset_s, flat_resets = 0.0, 0
    for e in events:
        if e.end_s <= len(pre) / FS + 1e-9 and "flatline" in e.quality.flags:
            if e.start_s >= reset_s - 1e-9:
                reset_s, flat_resets = e.end_s, flat_resets + 1
    assert flat_resets and p.step_stream.resets == 1 + flat_resets
    after = [e for e in events if e.start_s >= t_post - 1e-9]
    assert not [e for e in events if e.start_s < t_post - 1e-9 and t_post - gap_s < e.end_s - 1e-9]
    assert len(after) == len(fresh) and all(e.stateful for e in after)
    assert np.allclose([e.start_s - t_post for e in after], [e.start_s for e in fresh])
    assert np.max(np.abs(probs(after) - probs(fresh))) < PROBA_TOL
    # control: without the reset the same stream gives other outputs after the gap
    _, merged = run(lru_bundle, [(pre, 0.0), (post, len(pre) / FS)], stateful=True)
    joined = [e for e in merged if e.start_s >= len(pre) / FS - 1e-9]
    assert np.max(np.abs(probs(joined) - probs(fresh))) > 100 * PROBA_TOL


def test_gap_inside_a_block_restarts_at_the_next_block(lru_bundle: Path, ecg: np.ndarray) -> None:
    """StepStream alone: a reset at sample g feeds nothing of the block holding g; from the
    next block boundary on it gives the inputs and embeddings of a fresh stream over the
    samples from there."""
    bundle = load_bundle(lru_bundle)
    g, skip = 50 * 128 + 37, 128 - 37  # the post-gap samples of g's block are not fed
    x = ecg[: g + 40 * 128].astype(np.float32)[:, None]

    def record(stream: StepStream) -> list[tuple[np.ndarray, np.ndarray]]:
        calls, inner = [], stream.embedder.step

        def step(block: np.ndarray, state: Any) -> Any:
            emb, new = inner(block, state)
            calls.append((block.copy(), emb.copy()))
            return emb, new

        stream.embedder.step = step  # type: ignore[method-assign]
        return calls

    a, b = StepStream(bundle, hop_samples=128), StepStream(bundle, hop_samples=128)
    a_calls, b_calls = record(a), record(b)
    buf_a, buf_b = RingBuffer(8192, 1), RingBuffer(8192, 1)
    buf_a.write(x[:g], np.arange(g) / FS)
    a.feed(buf_a)
    n_pre = len(a_calls)
    a.reset(g)
    buf_a.write(x[g:], (np.arange(g, len(x)) + 7 * 128) / FS, gap_before=True)
    a.feed(buf_a)
    buf_b.write(x[g + skip :], np.arange(len(x) - g - skip) / FS)
    b.feed(buf_b)
    assert n_pre == g // 128 and a.reset_at == g + skip and a.resets == 1
    assert len(a_calls) - n_pre == len(b_calls) == (len(x) - g - skip) // 128
    for (xa, ea), (xb, eb) in zip(a_calls[n_pre:], b_calls):
        assert np.array_equal(xa, xb)
        assert np.allclose(ea, eb, rtol=0, atol=1e-6 * np.abs(eb).max())


def test_default_re_encodes_when_the_hop_spans_several_blocks(lru_bundle: Path) -> None:
    p = StreamPipeline(lru_bundle, fs_in=FS)
    assert p.bundle.manifest.hop_samples > streaming_spec(p.bundle).hop_samples
    assert p.step_stream is None


def test_one_block_hop_uses_the_step_model_by_default(lru_bundle: Path, ecg: np.ndarray) -> None:
    """hop_s = the step block: a window every second, all embedded by the step model; its
    windows on the bundle's 5 s grid equal those of a stateful stream at the bundle's hop
    (the step model's output depends on the blocks fed, not on the hop)."""
    p, every_s = run(lru_bundle, [(ecg, None)], hop_s=1.0)
    _, every_5s = run(lru_bundle, [(ecg, None)], stateful=True)
    assert p.step_stream is not None and p.hop == 128
    assert len(every_s) == (len(ecg) - 1280) // 128 + 1
    assert all(e.stateful for e in every_s)
    assert np.allclose(np.diff([e.start_s for e in every_s]), 1.0)
    on_grid = [e for e in every_s if round(e.start_s) % 5 == 0]
    assert len(on_grid) == len(every_5s)
    assert np.max(np.abs(probs(on_grid) - probs(every_5s))) < PROBA_TOL


def test_episode_smoothing_keeps_its_time_constant_at_another_hop(lru_bundle: Path) -> None:
    five, one = StreamPipeline(lru_bundle, fs_in=FS), StreamPipeline(lru_bundle, fs_in=FS, hop_s=1)
    assert five.episodes.alpha == pytest.approx(0.5)
    assert (1 - one.episodes.alpha) ** 5 == pytest.approx(1 - five.episodes.alpha)


@pytest.mark.parametrize("hop_s", [0.0, -1.0, 10.5, 1.0 / 3.0])
def test_hop_must_be_whole_samples_within_the_window(lru_bundle: Path, hop_s: float) -> None:
    with pytest.raises(ConfigError, match="hop_s") as info:
        StreamPipeline(lru_bundle, fs_in=FS, hop_s=hop_s)
    assert info.value.field == "hop_s"


def test_stateful_at_a_hop_off_the_block_grid_is_refused(lru_bundle: Path) -> None:
    with pytest.raises(ConfigError, match="not a multiple of the step model's hop"):
        StreamPipeline(lru_bundle, fs_in=FS, hop_s=1.5, stateful=True)
    assert StreamPipeline(lru_bundle, fs_in=FS, hop_s=1.5).step_stream is None


def test_cli_streams_with_the_step_model_and_refuses_when_it_cannot(lru_bundle: Path) -> None:
    from tests.test_demo import run_cli

    args = ("stream", "--simulate", "--speed", "0", "--seconds", "25", "--bundle", str(lru_bundle))
    out = run_cli(*args, "--hop", "1")
    assert out.returncode == 0, out.stderr
    windows = [line for line in out.stdout.splitlines() if " HR " in line]
    assert len(windows) >= 10 and all(" step" in line for line in windows)
    assert "windows by the step model" in out.stdout
    off = run_cli(*args, "--hop", "1", "--stateful", "off")
    assert off.returncode == 0, off.stderr
    assert not any(" step" in line for line in off.stdout.splitlines() if " HR " in line)
    refused = run_cli(*args, "--hop", "1.5", "--stateful", "on")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "not a multiple of the step model's hop" in refused.stderr


def test_bench_stream_compares_whole_windows_with_the_step_model(
    lru_bundle: Path, tmp_path: Path
) -> None:
    from trainer.bench.stream import run as bench_stream

    result = bench_stream(
        lru_bundle,
        tmp_path,
        minutes=1.0,
        peers=False,
        repeats=1,
        hop_s=1.0,
        report="s",
        paced_minutes=0.0,
    )
    rows = result["sdk"]
    assert set(rows) == {"fp32", "fp32-step"}
    assert rows["fp32-step"]["stateful"] and not rows["fp32"]["stateful"]
    assert rows["fp32"]["windows"] == rows["fp32-step"]["windows"] >= 50  # one per second
    assert result["hop_s"] == 1.0
    md = (tmp_path / "s.md").read_text()
    assert "FP32, step model" in md and "FP32, whole windows" in md
    assert "--hop 1 --no-peers --paced-minutes 0 --report s`" in md
    # the step model it ran counts in the device's bundle (it lies beside the manifest's files)
    step = json.loads((lru_bundle / "manifest.json").read_text())["streaming"]["path"]
    assert result["bundle_bytes"][step] == (lru_bundle / step).stat().st_size
    assert result["device_bundle_bytes"] == sum(result["bundle_bytes"].values())


def test_a_bad_second_does_not_reach_later_windows_through_the_state(
    lru_bundle: Path, ecg: np.ndarray
) -> None:
    """One second of a 900 mV artifact at 60 s. The windows it spoils are flagged; the step
    model restarts after the last of them, so every later window is either a re-encode (equal
    to the whole-window pipeline's) or stateful from a fresh start (the first equal to the
    whole-window pipeline's): none carries the artifact unflagged."""
    x = ecg.copy()
    x[60 * 128 : 61 * 128] = 900.0
    p, step = run(lru_bundle, [(x, None)], stateful=True, hop_s=1.0)
    _, whole = run(lru_bundle, [(x, None)], stateful=False, hop_s=1.0)
    assert [e.start_s for e in step] == [e.start_s for e in whole]
    last_bad = max(i for i, e in enumerate(step) if e.flagged)
    assert step[last_bad].end_s > 61.0 and p.step_stream is not None
    later = list(zip(step[last_bad + 1 :], whole[last_bad + 1 :]))
    assert later and not any(a.flagged for a, _ in later)
    re_encoded = [(a, b) for a, b in later if not a.stateful]
    first_stateful = next(i for i, (a, _) in enumerate(later) if a.stateful)
    assert re_encoded and first_stateful == len(re_encoded)  # re-encodes until a fresh window
    for a, b in [*re_encoded, later[first_stateful]]:
        assert (
            max(abs(a.probabilities[c] - b.probabilities[c]) for c in b.probabilities) < PROBA_TOL
        )


def test_the_first_window_after_an_off_grid_gap_equals_the_whole_window_one(
    lru_bundle: Path, ecg: np.ndarray
) -> None:
    """At the bundle's 5 s hop a gap that does not fall on the hop grid restarts the step
    model at the next window start, so the first stateful window after it is a fresh one."""
    cut = int(42.3 * 128)
    parts = [(ecg[:cut], 0.0), (ecg[cut:], cut / FS + 3.0)]
    _, step = run(lru_bundle, parts, stateful=True)
    _, whole = run(lru_bundle, parts, stateful=False)
    assert [e.start_s for e in step] == [e.start_s for e in whole]
    after = [(a, b) for a, b in zip(step, whole) if a.start_s > cut / FS and a.stateful]
    a, b = after[0]
    assert max(abs(a.probabilities[c] - b.probabilities[c]) for c in b.probabilities) < PROBA_TOL


def test_a_gap_keeps_the_step_embeddings_of_the_windows_before_it(
    lru_bundle: Path, ecg: np.ndarray
) -> None:
    """Windows that end before a gap were computed by the step model before it; the gap's
    reset must not drop them while they wait for their R-peaks (2.5 s)."""
    cut = 40 * 128
    parts = [(ecg[:cut], 0.0), (ecg[cut:], cut / FS + 5.0)]
    _, events = run(lru_bundle, parts, stateful=True, hop_s=1.0)
    before = [e for e in events if e.end_s <= cut / FS + 1e-9]
    assert len(before) == 31 and all(e.stateful for e in before)


def test_a_bad_window_analysed_after_a_gap_drops_the_kept_embeddings_after_it(
    lru_bundle: Path, ecg: np.ndarray
) -> None:
    """Half a second of 900 mV at 38 s, a gap at 40 s: the windows ending at 39 and 40 s wait
    for their R-peaks past the gap, so the gap's reset keeps their step embeddings; the bad
    one (ending at 39 s) must not let the next one be served from state that went through it."""
    x = ecg.copy()
    x[38 * 128 : 38 * 128 + 64] = 900.0
    cut = 40 * 128
    parts = [(x[:cut], 0.0), (x[cut:], cut / FS + 5.0)]
    _, events = run(lru_bundle, parts, stateful=True, hop_s=1.0)
    first_bad = next(e for e in events if e.flagged)
    assert first_bad.end_s == 39.0
    after_bad = [e for e in events if first_bad.end_s < e.end_s <= cut / FS + 1e-9]
    assert after_bad and not any(e.stateful for e in after_bad)
