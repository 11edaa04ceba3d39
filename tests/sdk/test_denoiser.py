"""The bundle's denoiser in the SDK: wiring, streaming equals offline, denoised flag."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from sdk.bundle import default_bundle_path, load_bundle
from sdk.denoiser import WindowDenoiser, denoise_signal
from sdk.errors import ConfigError
from sdk.events import WindowEvent
from sdk.pipeline import StreamPipeline
from sdk.preprocess import preprocess_record
from sdk.synthetic import synthetic_ecg

FS = 250.0
WINDOW = 1280
STREAM_TOL = 1e-4


def _denoiser_onnx(path, leads: int) -> None:
    """A small fixed filter ``y = x + Conv(x)`` standing in for CD-ECGNet (no torch needed)."""
    rng = np.random.default_rng(0)
    w = (0.05 * rng.standard_normal((leads, leads, 5))).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "W"], ["c"], pads=[2, 2]),
            helper.make_node("Add", ["x", "c"], ["y"]),
        ],
        "denoiser",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", leads, WINDOW])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", leads, WINDOW])],
        initializer=[numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def _bundle_without_denoiser(root):
    """A copy of the shipped bundle with its denoiser removed; returns its manifest dict."""
    shutil.copytree(default_bundle_path(), root)
    manifest = json.loads((root / "manifest.json").read_text())
    for f in [f for f in manifest["files"] if f["role"] == "denoiser"]:
        (root / f["path"]).unlink()
        manifest["files"].remove(f)
    (root / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def _bundle_with_denoiser(root, leads: int = 1):
    """The shipped bundle with a known linear filter as its denoiser."""
    manifest = _bundle_without_denoiser(root)
    _denoiser_onnx(root / "denoiser.fp32.onnx", leads)
    data = (root / "denoiser.fp32.onnx").read_bytes()
    shape = ["batch", leads, WINDOW]
    manifest["files"].append(
        {
            "path": "denoiser.fp32.onnx",
            "role": "denoiser",
            "precision": "fp32",
            "sha256": hashlib.sha256(data).hexdigest(),
            "inputs": [{"name": "x", "dtype": "float32", "shape": shape}],
            "outputs": [{"name": "y", "dtype": "float32", "shape": shape}],
        }
    )
    (root / "manifest.json").write_text(json.dumps(manifest))
    return load_bundle(root)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return _bundle_with_denoiser(tmp_path_factory.mktemp("b") / "bundle")


@pytest.fixture(scope="module")
def ecg():
    return synthetic_ecg((("sinus", 40.0), ("af", 30.0)), fs=FS, seed=5)


def _stream(bundle, x, sizes, **kw):
    p = StreamPipeline(bundle, fs_in=FS, precision="fp32", **kw)
    events, i, k = [], 0, 0
    while i < len(x):
        events += p.push(x[i : i + sizes[k % len(sizes)]])
        i, k = i + sizes[k % len(sizes)], k + 1
    return [e for e in events + p.close() if isinstance(e, WindowEvent)]


def _probs(events):
    return np.array([list(e.probabilities.values()) for e in events])


def test_streaming_with_denoiser_equals_offline(bundle, ecg):
    whole = _stream(bundle, ecg.signal, [len(ecg.signal)])
    for sizes in ([1], [37, 130, 7], [1000]):
        split = _stream(bundle, ecg.signal, sizes)
        assert len(split) == len(whole)
        np.testing.assert_allclose(_probs(split), _probs(whole), atol=STREAM_TOL)
    assert all(e.denoised for e in whole)


def test_a_denoising_pipeline_takes_each_windows_beats_from_the_denoised_window(
    bundle, ecg, monkeypatch
):
    from sdk import pipeline as pipeline_module
    from sdk.rpeaks import denoised_window_rpeaks, heart_rate_bpm
    from sdk.rr import rr_features
    from sdk.windowing import denoised_context, record_windows

    m = bundle.manifest
    events = _stream(bundle, ecg.signal, [500])
    rw = record_windows(
        ecg.signal,
        FS,
        m.preprocess,
        m.window_samples,
        m.hop_samples,
        denoiser=WindowDenoiser(bundle, threads=1),
    )
    assert len(events) == rw.windows.shape[0]
    prev = None
    for i, e in enumerate(events):
        start = int(rw.starts[i])
        context = denoised_context(prev, start)
        assert (context is None) == (i == 0)  # the previous window's first hop, from the 2nd on
        assert context is None or context.size == m.hop_samples
        peaks = denoised_window_rpeaks(rw.windows[i, 0], m.window_samples, m.fs, context)
        prev = (start, rw.windows[i, 0])
        assert e.n_beats == peaks.size > 5
        assert e.heart_rate_bpm == pytest.approx(heart_rate_bpm(peaks, m.fs))
        np.testing.assert_allclose(rw.rr[i], rr_features(peaks, m.fs), rtol=1e-6)
    # the events' beats are the denoised window's: a stand-in detector shows through, and it
    # gets the previous window's denoised samples before this window as context
    contexts: list = []

    def stand_in(x, n, fs, context=None, *, search_back_threshold, min_qrs_energy):  # noqa: ANN001, ANN202
        contexts.append(context)
        return np.array([10, 138, 266])

    monkeypatch.setattr(pipeline_module, "denoised_window_rpeaks", stand_in)
    fixed = _stream(bundle, ecg.signal[: int(30 * FS)], [500])
    assert fixed and all(e.n_beats == 3 and e.heart_rate_bpm == 60.0 for e in fixed)
    assert contexts[0] is None and all(c.shape == (m.hop_samples,) for c in contexts[1:])
    off = _stream(bundle, ecg.signal[: int(30 * FS)], [500], denoise=False)
    assert all(e.n_beats > 10 for e in off)  # without the denoiser: the stream's detector


def test_no_denoised_context_crosses_a_gap(bundle, ecg, monkeypatch):
    from sdk import pipeline as pipeline_module
    from sdk.rpeaks import denoised_window_rpeaks

    seen: list = []

    def spy(x, n, fs, context=None, **kw):  # noqa: ANN001, ANN003, ANN202
        seen.append(context)
        return denoised_window_rpeaks(x, n, fs, context, **kw)

    monkeypatch.setattr(pipeline_module, "denoised_window_rpeaks", spy)

    def context_free_starts(gap_at_s: float) -> list[float]:
        seen.clear()
        p = StreamPipeline(bundle, fs_in=FS, precision="fp32")
        cut = int(gap_at_s * FS)
        events = p.push(ecg.signal[:cut], timestamp_s=0.0)
        events += p.push(ecg.signal[cut:], timestamp_s=gap_at_s + 5.0)  # 5 s lost
        windows = [e for e in events + p.close() if isinstance(e, WindowEvent)]
        assert len(seen) == len(windows) > 8
        return [e.start_s for e, context in zip(windows, seen) if context is None]

    # at a hop boundary (30 s): the window starting at the gap (35 s on the stream clock; its
    # context would end before the gap) has none; the next ones have context after the gap
    assert context_free_starts(30.0) == pytest.approx([0.0, 35.0])
    # mid-hop (32.5 s): the signal before the gap ends with a window aligned to its end
    # (22.5-32.5 s, context from the window before it); the grid restarts at the gap (37.5 s
    # on the stream clock), whose window has none
    assert context_free_starts(32.5) == pytest.approx([0.0, 37.5])


@pytest.mark.parametrize("seconds", [67.3, 4.0])  # an end-aligned tail window; one short window
def test_window_beats_equal_record_windows_on_tail_and_short_streams(bundle, ecg, seconds):
    from sdk.rpeaks import denoised_window_rpeaks
    from sdk.rr import rr_features
    from sdk.windowing import denoised_context, record_windows

    m = bundle.manifest
    x = ecg.signal[: int(seconds * FS)]
    events = _stream(bundle, x, [500])
    rw = record_windows(
        x,
        FS,
        m.preprocess,
        m.window_samples,
        m.hop_samples,
        denoiser=WindowDenoiser(bundle, threads=1),
    )
    n_model = preprocess_record(x, FS, m.preprocess).shape[0]
    assert len(events) == rw.windows.shape[0]
    prev = None
    for i, e in enumerate(events):
        start = int(rw.starts[i])
        n = min(m.window_samples, n_model - start)
        peaks = denoised_window_rpeaks(rw.windows[i, 0], n, m.fs, denoised_context(prev, start))
        prev = (start, rw.windows[i, 0, :n])
        assert e.n_beats == peaks.size
        np.testing.assert_allclose(rw.rr[i], rr_features(peaks, m.fs), rtol=1e-6)
    assert e.end_s - e.start_s == pytest.approx(min(seconds, 10.0), abs=0.01)


@pytest.mark.parametrize("lead", [0, 1])
def test_a_multi_lead_denoising_pipeline_takes_beats_from_every_lead(tmp_path, lead):
    """The selected lead has noise bursts, the other is clean: the events' beats are those of
    both denoised leads (selected first), not the selected lead's alone."""
    from sdk.rpeaks import denoised_window_rpeaks, heart_rate_bpm
    from sdk.windowing import denoised_context, window_starts

    ecg = synthetic_ecg((("sinus", 40.0), ("af", 30.0)), fs=FS, seed=7).signal
    noisy = ecg + 0.5 * np.random.default_rng(3).standard_normal(ecg.size) * (
        (np.arange(ecg.size) // int(4 * FS)) % 2 == 1
    )  # noise in every other 4 s
    clean = -1.2 * ecg  # a lead with a larger QRS (weighs more in the summed slopes)
    x = np.stack([noisy, clean] if lead == 0 else [clean, noisy], axis=1)
    b2 = _bundle_with_denoiser(tmp_path / "b2", leads=2)
    m = b2.manifest
    den = WindowDenoiser(b2, threads=1)
    p = StreamPipeline(b2, fs_in=FS, n_leads=2, lead=lead, precision="fp32")
    events = [e for e in p.push(x) + p.close() if isinstance(e, WindowEvent)]
    y = preprocess_record(x, FS, m.preprocess)
    starts = window_starts(y.shape[0], m.window_samples, m.hop_samples, "align_end")
    assert len(events) == starts.size
    prev = prev_one = None
    differs = 0
    for e, s in zip(events, starts.tolist()):
        d = den.denoise_leads(y[s : s + m.window_samples], lead)
        window = den.denoise_window(y[s : s + m.window_samples], lead)
        np.testing.assert_array_equal(d.leads[:, 0], window[0, 0])
        leads = d.beat_signal()  # the leads back in mV: each weighs as its amplitude
        np.testing.assert_allclose(leads.std(axis=0), d.amplitude_mv, rtol=1e-3)
        n = leads.shape[0]
        both = denoised_window_rpeaks(leads, n, m.fs, denoised_context(prev, s))
        one = denoised_window_rpeaks(d.leads[:, 0], n, m.fs, denoised_context(prev_one, s))
        prev, prev_one = (s, leads), (s, d.leads[:, 0])
        assert e.n_beats == both.size
        assert e.heart_rate_bpm == pytest.approx(heart_rate_bpm(both, m.fs))
        differs += not np.array_equal(both, one)
    assert differs >= 3  # the selected lead alone gives other beats in its noisy windows


def test_a_denoising_pipeline_does_not_wait_for_the_streams_r_peaks(bundle, ecg):
    from sdk.pipeline import PEAK_LAG_S, PROCESS_BATCH_S

    x = ecg.signal[: int((10.0 + PROCESS_BATCH_S + 0.5) * FS)]  # one window, < PEAK_LAG_S more
    assert PROCESS_BATCH_S + 0.5 < PEAK_LAG_S
    for denoise, expected in ((True, 1), (False, 0)):
        p = StreamPipeline(bundle, fs_in=FS, precision="fp32", denoise=denoise)
        events = [e for i in range(0, len(x), 125) for e in p.push(x[i : i + 125])]
        assert len([e for e in events if isinstance(e, WindowEvent)]) == expected


def test_denoiser_changes_the_embedder_input_and_can_be_switched_off(bundle, ecg):
    on = _stream(bundle, ecg.signal, [500])
    off = _stream(bundle, ecg.signal, [500], denoise=False)
    assert not any(e.denoised for e in off)
    assert np.abs(_probs(on) - _probs(off)).max() > 1e-6  # the filter really ran


def test_bundle_without_denoiser_reports_not_denoised(ecg, tmp_path):
    _bundle_without_denoiser(tmp_path / "plain")
    events = _stream(load_bundle(tmp_path / "plain"), ecg.signal[: int(30 * FS)], [500])
    assert events and not any(e.denoised for e in events)


def test_shipped_bundle_denoises_every_window(ecg):
    bundle = load_bundle(default_bundle_path())
    assert WindowDenoiser.from_bundle(bundle, 1) is not None
    events = _stream(bundle, ecg.signal[: int(30 * FS)], [500])
    assert events and all(e.denoised for e in events)


def test_short_stream_window_is_denoised_and_padded(bundle, ecg):
    events = _stream(bundle, ecg.signal[: int(4 * FS)], [100])
    assert len(events) == 1 and events[0].denoised
    (e,) = events
    # one window of the 4 s there are (zero-padded to the model's 10 s), not a 10 s window
    assert e.end_s - e.start_s == pytest.approx(4.0, abs=1e-6)
    assert np.isfinite(list(e.probabilities.values())).all()
    assert sum(e.probabilities.values()) == pytest.approx(1.0, abs=1e-5)


def test_lead_count_mismatch_is_a_config_error(tmp_path):
    b2 = _bundle_with_denoiser(tmp_path / "b2", leads=2)
    with pytest.raises(ConfigError):
        StreamPipeline(b2, fs_in=FS, n_leads=3)
    den = WindowDenoiser.from_bundle(b2, 2)
    assert den is not None and den.leads == 2
    with pytest.raises(ConfigError):
        den.denoise(np.zeros((1, 1, WINDOW), np.float32))


def _reference_denoise_signal(den: WindowDenoiser, y: np.ndarray) -> np.ndarray:
    """Written sample by sample, independently of ``denoise_signal``: windows start at 0,
    w/2, w, 3w/2, ... plus one ending at the record's end; each is standardized, denoised and
    de-standardized, and each sample is taken from the window in which it lies farthest from
    an edge (ties go to the earlier window)."""
    n, w = len(y), den.window
    starts = sorted(set(range(0, max(n - w, 0) + 1, w // 2)) | {max(n - w, 0)})
    denoised = {}
    for s in starts:
        seg = y[s : s + w]
        mean, std = seg.mean(axis=0), seg.std(axis=0)  # std ~0.3 here: no floor, no clipping
        x = np.zeros((1, den.leads, w), np.float32)
        x[0, :, : len(seg)] = ((seg - mean) / std).T  # zero-padded when n < w
        denoised[s] = den.denoise(x)[0, :, : len(seg)].T * std + mean
    ref = np.empty_like(y)
    for i in range(n):
        best = max(
            (s for s in starts if s <= i < s + w),
            key=lambda s: min(i - s, min(s + w, n) - 1 - i),  # first of equal maxima wins
        )
        ref[i] = denoised[best][i - best]
    return ref


def test_denoise_signal_covers_the_record(bundle):
    den = WindowDenoiser(bundle)
    rng = np.random.default_rng(0)
    # shorter than a window (padded), exactly one window, and a tail needing the n - w window
    for n in (500, WINDOW, 3 * WINDOW + 77):
        y = rng.standard_normal((n, 1)) * 0.3 + 1.0
        out = denoise_signal(den, y)
        assert out.shape == y.shape and out.dtype == np.float32
        np.testing.assert_allclose(out, _reference_denoise_signal(den, y), atol=1e-5)
        assert np.abs(out - y).max() > 1e-3  # the filter ran: not the input handed back
        assert np.all(out[-77:] != 0)  # the record's tail is covered, not left at zero


@pytest.mark.parametrize("hop", [0, -5, 1281])
def test_denoise_signal_refuses_a_hop_that_leaves_samples_uncovered(hop):
    den = WindowDenoiser(load_bundle(default_bundle_path()))
    y = np.zeros((3 * den.window, den.leads))
    with pytest.raises(ConfigError, match="hop must be in 1"):
        denoise_signal(den, y, hop=hop)
