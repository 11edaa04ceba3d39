"""StreamPipeline: streaming equals offline, bad input is flagged, never crashes the stream."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from sdk.bundle import default_bundle_path, load_bundle
from sdk.classifier import WindowClassifier, WindowInputs
from sdk.errors import BlockError, ConfigError, SampleRateError
from sdk.events import EpisodeEvent, WindowEvent
from sdk.pipeline import StreamPipeline
from sdk.synthetic import synthetic_ecg
from sdk.windowing import record_windows

FS = 250.0
#: streaming vs offline window probabilities (FP32 embedder), max relative difference
STREAM_TOL = 1e-4


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(default_bundle_path())


@pytest.fixture(scope="module")
def ecg():
    return synthetic_ecg((("sinus", 40.0), ("af", 40.0)), fs=FS, seed=3)


def windows_of(events):
    return [e for e in events if isinstance(e, WindowEvent)]


def stream(bundle, x, block_sizes, **kwargs):
    p = StreamPipeline(bundle, fs_in=FS, precision="fp32", **kwargs)
    events, i, k = [], 0, 0
    while i < len(x):
        n = block_sizes[k % len(block_sizes)]
        events += p.push(x[i : i + n])
        i, k = i + n, k + 1
    return p, events + p.close()


def offline_probabilities(bundle, x):
    """The trainer's way: preprocess the whole record, cut aligned windows, classify."""
    m = bundle.manifest
    rw = record_windows(x, FS, m.preprocess, m.window_samples, m.hop_samples)
    clf = WindowClassifier(bundle, precision="fp32")
    return clf.classify(WindowInputs(rw.windows, rw.rr, rw.lorenz))


def probs(events):
    return np.array([list(e.probabilities.values()) for e in windows_of(events)])


def test_streaming_equals_offline_for_any_block_split(bundle, ecg):
    reference = offline_probabilities(bundle, ecg.signal)  # the trainer's path has no denoiser
    for sizes in ([len(ecg.signal)], [1, 7, 250, 3], [64]):
        _, events = stream(bundle, ecg.signal, sizes, denoise=False)
        got = probs(events)
        assert got.shape == reference.shape
        assert np.max(np.abs(got - reference)) <= STREAM_TOL * np.max(np.abs(reference))


def test_window_timing_and_heart_rate(bundle, ecg):
    _, events = stream(bundle, ecg.signal, [125])
    wins = windows_of(events)
    m = bundle.manifest
    hop_s = m.hop_samples / m.fs
    assert [w.index for w in wins] == list(range(len(wins)))
    assert np.allclose(np.diff([w.start_s for w in wins])[:-1], hop_s)
    true_hr = 60.0 / np.median(np.diff(ecg.r_peaks[ecg.r_peaks < 40 * FS]) / FS)
    assert abs(wins[0].heart_rate_bpm - true_hr) < 5.0
    assert all(not w.flagged for w in wins)


def test_nan_block_is_flagged_and_stream_survives(bundle, ecg):
    x = ecg.signal.copy()
    x[int(20 * FS) : int(21 * FS)] = np.nan
    p, events = stream(bundle, x, [100])
    wins = windows_of(events)
    assert p.stats.nonfinite_samples == int(FS)
    hit = [w for w in wins if w.start_s <= 20.5 < w.end_s]
    assert hit and all("nonfinite" in w.quality.flags and w.flagged for w in hit)
    assert all(np.isfinite(list(w.probabilities.values())).all() for w in wins)
    clean = [w for w in wins if w.end_s < 19.0 or w.start_s > 22.0]
    assert clean and not any(w.flagged for w in clean)


def test_flatline_and_saturation_are_flagged(bundle, ecg):
    x = ecg.signal.copy()
    x[int(5 * FS) : int(15 * FS)] = 0.0
    lim = 0.4
    x[int(50 * FS) : int(60 * FS)] = np.clip(x[int(50 * FS) : int(60 * FS)] * 4, -lim, lim)
    _, events = stream(bundle, x, [250])
    wins = windows_of(events)
    assert any("flatline" in w.quality.flags for w in wins if w.start_s < 10)
    assert any("saturated" in w.quality.flags for w in wins if 45 <= w.start_s <= 55)


def test_bad_blocks_are_refused_and_nothing_is_lost(bundle, ecg):
    p = StreamPipeline(bundle, fs_in=FS, precision="fp32")
    x = ecg.signal
    p.push(x[:500], timestamp_s=0.0)
    with pytest.raises(SampleRateError):
        p.push(x[500:600], fs=360.0)
    with pytest.raises(BlockError) as err:
        p.push(x[500:600], timestamp_s=1.0)  # before the next expected sample (2.0 s)
    assert err.value.reason == "non_monotonic_timestamps"
    with pytest.raises(BlockError):
        p.push(np.zeros((10, 3)))
    with pytest.raises(BlockError):
        p.push(np.array(["a", "b"]))
    assert p.push(np.zeros(0)) == []
    events = p.push(x[500:], timestamp_s=2.0) + p.close()
    assert p.stats.blocks_rejected == 4
    assert p.stats.samples_in == len(x)
    reference = probs(stream(bundle, x, [len(x)])[1])
    assert np.allclose(probs(events), reference[-len(windows_of(events)) :])


def test_a_gap_ends_the_window_grid_and_restarts_it_after(bundle, ecg):
    """Windows spanning a gap were flagged, so up to a hop of signal on each side of it was
    never analysed clean; now the signal before the gap ends with a window aligned to its end
    and the grid restarts at the first sample after it."""
    p = StreamPipeline(bundle, fs_in=FS)
    x = ecg.signal
    half = int(32 * FS)  # not on the 5 s grid
    events = p.push(x[:half], timestamp_s=100.0)
    events += p.push(x[half:], timestamp_s=100.0 + 32.0 + 5.0)  # 5 s lost on the radio
    events += p.close()
    assert p.stats.gaps == 1 and abs(p.stats.gap_s - 5.0) < 1e-9
    wins = windows_of(events)
    assert wins[0].start_s == pytest.approx(100.0)
    assert not any(w.start_s < 132.0 < w.end_s - 1e-6 for w in wins)  # none spans the gap
    before = [w for w in wins if w.end_s <= 132.0 + 1e-6]
    after = [w for w in wins if w.start_s >= 137.0 - 1e-6]
    assert len(before) + len(after) == len(wins)
    assert before[-1].end_s == pytest.approx(132.0, abs=1.0 / bundle.manifest.fs)
    assert after[0].start_s == pytest.approx(137.0, abs=1.0 / bundle.manifest.fs)
    assert not any("gap" in w.quality.flags for w in wins)


def test_samples_before_a_gap_keep_their_times(bundle, ecg):
    """Small packets staged before a gap are stamped before it, not after (the gap's shift
    applies from the first sample after it)."""
    p = StreamPipeline(bundle, fs_in=FS)
    x = ecg.signal
    events: list = []
    step = int(0.25 * FS)
    before = int(25.5 * FS)  # 0.5 s still staged when the gap comes; a window starts at 25 s
    for i in range(0, before, step):  # packets as a sensor sends them; batches are 1 s
        events += p.push(x[i : i + step], timestamp_s=i / FS)
    events += p.push(x[before:], timestamp_s=100.0)
    events += p.close()
    m = bundle.manifest
    hop_s = m.hop_samples / m.fs
    wins = windows_of(events)
    starts_before = [w for w in wins if w.start_s < 100.0 - 0.05]
    assert [w.start_s for w in starts_before[:-1]] == pytest.approx(
        [w.index * hop_s for w in starts_before[:-1]], abs=0.02
    )
    last = starts_before[-1]  # aligned to the end of the signal before the gap
    pushed_s = len(range(0, before, step)) * step / FS
    assert last.end_s == pytest.approx(pushed_s, abs=0.02) and "gap" not in last.quality.flags
    assert min(w.start_s for w in wins if w.start_s >= 100.0) == pytest.approx(100.0, abs=0.02)


def test_an_empty_block_opens_no_gap(bundle, ecg):
    p = StreamPipeline(bundle, fs_in=FS)
    n = int(12 * FS)
    p.push(ecg.signal[:n], timestamp_s=0.0)
    assert p.push(ecg.signal[:0], timestamp_s=50.0) == []
    p.push(ecg.signal[n : 2 * n])  # contiguous with what came before
    assert p.stats.gaps == 0 and p.stats.blocks_in == 3


def test_an_episode_ends_at_a_gap(bundle, ecg, monkeypatch):
    """40 s of AF, an hour without data, 40 s of AF: two episodes, none across the hour."""
    p = StreamPipeline(bundle, fs_in=FS)
    classes = bundle.manifest.classes
    af = np.eye(len(classes))[classes.index("A")]
    monkeypatch.setattr(p, "_probabilities", lambda seg, peaks, step: af)
    n = int(40 * FS)
    events = p.push(ecg.signal[:n], timestamp_s=0.0)
    events += p.push(ecg.signal[n : 2 * n], timestamp_s=3600.0)
    events += p.close()
    eps = p.episodes.episodes
    assert len(eps) == 2
    assert eps[0].onset_s < 40.0 and eps[0].offset_s == pytest.approx(40.0)
    assert eps[1].onset_s >= 3600.0 and eps[1].offset_s == pytest.approx(3640.0, abs=0.1)
    offsets = [e for e in events if isinstance(e, EpisodeEvent) and e.phase == "offset"]
    assert [round(e.time_s, 1) for e in offsets] == [40.0, round(eps[1].offset_s, 1)]
    after = [e for e in events if isinstance(e, WindowEvent) and e.start_s >= 3600.0]
    assert events.index(offsets[0]) < events.index(after[0])  # ended before the next window


def test_the_tail_window_moves_the_episode_smoother_by_its_new_data_only(bundle, ecg, monkeypatch):
    p = StreamPipeline(bundle, fs_in=FS)
    weights = []
    update = p.episodes.update

    def spy(probability, start_s, end_s, weight=1.0):
        weights.append(weight)
        return update(probability, start_s, end_s, weight=weight)

    monkeypatch.setattr(p.episodes, "update", spy)
    p.push(ecg.signal[: int(27 * FS)], timestamp_s=0.0)  # windows end at 10, 15, 20, 25 s
    p.close()  # the tail window ends at 27 s: 2 s of a 5 s hop are new
    assert weights[:-1] == [1.0] * (len(weights) - 1)
    assert weights[-1] == pytest.approx(2.0 / 5.0, abs=0.01)


def test_a_stream_shorter_than_a_window_moves_the_smoother_a_full_step(bundle, ecg, monkeypatch):
    p = StreamPipeline(bundle, fs_in=FS)
    weights = []
    update = p.episodes.update
    monkeypatch.setattr(
        p.episodes, "update", lambda *a, weight=1.0: weights.append(weight) or update(*a)
    )
    p.push(ecg.signal[: int(3 * FS)], timestamp_s=0.0)
    p.close()
    assert weights == [1.0]  # all of its data is new


def test_a_partial_window_counts_as_that_fraction_of_a_step():
    from sdk.episodes import EpisodeTracker

    tracker = EpisodeTracker(alpha=0.5)
    tracker.update(1.0, 0.0, 10.0, weight=0.25)
    assert tracker.smoothed == pytest.approx(1.0 - 0.5**0.25)
    tracker.update(1.0, 5.0, 15.0, weight=0.25)
    assert tracker.smoothed == pytest.approx(1.0 - 0.5**0.5)  # two quarter steps = half
    with pytest.raises(ConfigError, match="weight"):
        tracker.update(1.0, 5.0, 15.0, weight=0.0)


def test_short_stream_gives_one_padded_window(bundle, ecg):
    _, events = stream(bundle, ecg.signal[: int(6 * FS)], [100])
    wins = windows_of(events)
    assert len(wins) == 1 and wins[0].end_s - wins[0].start_s == pytest.approx(6.0, abs=0.02)


def test_callbacks_and_async_iterator_see_the_same_events(bundle, ecg, caplog):
    seen = []

    def broken(_event):
        raise RuntimeError("consumer bug")

    async def main():
        p = StreamPipeline(bundle, fs_in=FS, on_event=seen.append)
        p.add_callback(broken)
        got = []

        async def consume():
            async for event in p.events():
                got.append(event)

        task = asyncio.create_task(consume())
        await asyncio.sleep(0)
        for i in range(0, len(ecg.signal), 500):
            p.push(ecg.signal[i : i + 500])
            await asyncio.sleep(0)
        p.close()
        await task
        return p, got

    with caplog.at_level("DEBUG", logger="sdk.pipeline"):
        p, got = asyncio.run(main())
    assert got == seen and len(windows_of(got)) > 0
    assert p.stats.callback_errors == len(seen)
    failures = [r for r in caplog.records if "callback" in r.getMessage()]
    assert len(failures) == len(seen) and all(r.exc_info for r in failures)
    assert [r.levelname for r in failures] == ["WARNING"] + ["DEBUG"] * (len(seen) - 1)


def test_a_callback_may_close_the_stream(bundle):
    """close() from a callback ended the stream mid-window: the window was analysed twice, the
    second time failing inside (counted as a callback error), and an open episode never
    ended."""
    ecg = synthetic_ecg((("af", 120.0),), fs=FS, seed=4)
    p = StreamPipeline(bundle, fs_in=FS)
    seen: list = []

    def stop_at_the_fifth_window(event):
        seen.append(event)
        if isinstance(event, WindowEvent) and event.index == 4:
            p.close()

    p.add_callback(stop_at_the_fifth_window)
    returned = []
    for i in range(0, ecg.signal.size, 500):
        if p._closed:
            with pytest.raises(BlockError, match="closed"):
                p.push(ecg.signal[i : i + 500])
            break
        returned += p.push(ecg.signal[i : i + 500])
    assert returned == seen  # the deferred close's events are the push's
    assert p.stats.callback_errors == 0
    starts = [e.start_s for e in windows_of(seen)]
    assert starts == sorted(set(starts)) and len(starts) >= 5  # no window twice
    phases = [e.phase for e in seen if isinstance(e, EpisodeEvent)]
    assert phases and phases.count("onset") == phases.count("offset")  # each one that began ended
    assert p.close() == []


def test_events_reach_an_iterator_in_another_threads_event_loop(bundle, ecg):
    """The queue was filled from the pushing thread (asyncio queues are not thread-safe): the
    consumer saw nothing and never ended."""
    import threading

    p = StreamPipeline(bundle, fs_in=FS)
    got: list = []
    started = threading.Event()

    async def consume():
        iterator = p.events()
        first = asyncio.ensure_future(iterator.__anext__())
        await asyncio.sleep(0)  # the iterator is registered
        started.set()
        try:
            got.append(await first)
            async for event in iterator:
                got.append(event)
        except StopAsyncIteration:
            pass

    consumer = threading.Thread(target=lambda: asyncio.run(consume()))
    consumer.start()
    assert started.wait(10)
    returned = []
    for i in range(0, len(ecg.signal), 500):
        returned += p.push(ecg.signal[i : i + 500])
    returned += p.close()
    consumer.join(10)
    assert not consumer.is_alive() and got == returned and len(windows_of(got)) > 0


def test_events_started_after_close_end_at_once(bundle, ecg):
    p = StreamPipeline(bundle, fs_in=FS)
    p.push(ecg.signal[: int(20 * FS)])
    p.close()

    async def drain():
        return [event async for event in p.events()]

    assert asyncio.run(asyncio.wait_for(drain(), timeout=5.0)) == []


def test_af_episode_is_found_on_synthetic_af(bundle):
    ecg = synthetic_ecg((("sinus", 60.0), ("af", 90.0), ("sinus", 60.0)), fs=FS, seed=11)
    _, events = stream(bundle, ecg.signal, [250])
    episodes = [e for e in events if isinstance(e, EpisodeEvent)]
    # the event protocol: onsets and offsets alternate and are ordered
    phases = [e.phase for e in episodes]
    assert phases == ["onset", "offset"] * (len(phases) // 2)
    times = [e.time_s for e in episodes]
    assert times == sorted(times)
    # exactly one AF episode, bracketing the AF at 60-150 s. Measured: onset 60.0 s, offset
    # 155.0 s (one 5 s hop after the AF ends); the bounds leave the smoother a few hops
    # either way but accept neither a missed nor a split episode.
    assert [(e.label, e.phase) for e in episodes] == [("A", "onset"), ("A", "offset")]
    onset, offset = times
    assert 55.0 <= onset <= 75.0 and 145.0 <= offset <= 170.0


def test_a_timestamp_float64_cannot_resolve_is_refused_and_the_stream_goes_on(bundle, ecg):
    p = StreamPipeline(bundle, fs_in=FS)
    n = int(4 * FS)
    with pytest.raises(BlockError) as err:
        p.push(ecg.signal[:n], timestamp_s=1.7e15)  # epoch microseconds, not seconds
    assert err.value.reason == "timestamp_range" and p.stats.blocks_rejected == 1
    assert p.stats.samples_in == 0
    p.push(ecg.signal[:n], timestamp_s=1.7e9)  # epoch seconds are fine
    p.push(ecg.signal[n : 4 * n])
    assert len(windows_of(p.close())) >= 1 and p.stats.samples_in == 4 * n


def test_values_no_front_end_produces_are_held_like_nan(bundle):
    sinus = synthetic_ecg((("sinus", 90.0),), fs=FS, seed=5).signal
    clean = windows_of(stream(bundle, sinus, [250])[1])
    for spike in (1e30, 1e39):
        x = sinus.astype(np.float64)
        x[int(30 * FS) : int(31 * FS)] = spike
        p, events = stream(bundle, x, [250])
        assert p.stats.nonfinite_samples == int(FS)
        assert not [e for e in events if isinstance(e, EpisodeEvent)]  # no false episode
        wins = windows_of(events)
        assert all(np.isfinite(list(w.probabilities.values())).all() for w in wins)
        far = [(a, b) for a, b in zip(wins, clean) if a.start_s >= 45.0]  # filters settled
        assert far and all(a.label == b.label for a, b in far)


def test_a_dead_lead_the_model_does_not_use_flags_nothing(bundle, ecg):
    x = np.stack([ecg.signal, ecg.signal, np.full_like(ecg.signal, np.nan)], axis=1)
    p = StreamPipeline(bundle, fs_in=FS, n_leads=3, lead=1)
    events = p.push(x) + p.close()
    wins = windows_of(events)
    assert wins and not any("nonfinite" in w.quality.flags for w in wins)
    p0 = StreamPipeline(bundle, fs_in=FS, n_leads=3, lead=2)  # the dead lead itself is flagged
    assert all(w.flagged for w in windows_of(p0.push(x) + p0.close()))


def test_malformed_rates_timestamps_and_pushes_after_close_are_refused_and_counted(bundle, ecg):
    p = StreamPipeline(bundle, fs_in=FS)
    with pytest.raises(SampleRateError):
        p.push(ecg.signal[:250], fs=float("nan"))
    with pytest.raises(BlockError) as err:
        p.push(ecg.signal[:250], timestamp_s="soon")
    assert err.value.reason == "timestamp_type"
    p.close()
    with pytest.raises(BlockError, match="closed"):
        p.push(ecg.signal[:250])
    assert p.stats.blocks_rejected == 3 and p.stats.samples_in == 0


def test_filters_restart_settled_after_a_gap_so_an_offset_jump_changes_nothing(bundle, ecg):
    """Across a gap the baseline may jump (electrode reconnected): the band-pass restarts in
    the steady state of the first sample after it, so a shifted copy of the signal after the
    gap gives the same windows as the unshifted one."""
    x, half = ecg.signal, int(30 * FS)

    def run(offset_mv):
        p = StreamPipeline(bundle, fs_in=FS, precision="fp32")
        events = p.push(x[:half], timestamp_s=0.0)
        events += p.push(x[half:] + offset_mv, timestamp_s=30.0 + 3.0)
        return windows_of(events + p.close())

    same, shifted = run(0.0), run(8.0)
    after = [i for i, w in enumerate(same) if w.start_s >= 33.0]
    assert after
    for i in after:
        assert not shifted[i].flagged
        for c, p in same[i].probabilities.items():
            assert shifted[i].probabilities[c] == pytest.approx(p, abs=0.01)


def test_a_window_right_after_an_in_range_artefact_is_flagged_settling(bundle, ecg):
    """A 20 mV jump without a gap rings through the band-pass for seconds: the first window
    starting at it is flagged, windows long after it are not."""
    x = ecg.signal.copy()
    hop = bundle.manifest.hop_samples / bundle.manifest.fs
    at = int(4 * hop * FS)  # a window starts here
    x[at:] += 20.0
    _, events = stream(bundle, x, [250])
    wins = windows_of(events)
    starting = [w for w in wins if w.start_s == pytest.approx(at / FS)]
    assert starting and starting[0].quality.flags == ("settling",)
    assert all(not w.flagged for w in wins if w.start_s >= at / FS + 5.0)


@pytest.mark.model_failure
@pytest.mark.parametrize("failure", ["nan", "raises"])
def test_a_window_the_model_fails_on_is_flagged_counted_and_the_stream_goes_on(
    bundle, ecg, failure, caplog
):
    p = StreamPipeline(bundle, fs_in=FS, precision="fp32")
    real, calls = p.classifier.classify, []

    def classify(*args, **kwargs):
        calls.append(1)
        out = real(*args, **kwargs)
        if len(calls) == 2 and failure == "raises":  # e.g. ONNX Runtime on a broken graph
            raise RuntimeError("onnxruntime: invalid input")
        return np.full_like(out, np.nan) if len(calls) == 2 else out

    p.classifier.classify = classify
    events = windows_of(p.push(ecg.signal) + p.close())
    assert p.stats.model_failures == 1 and len(events) == len(calls) > 2
    failed = events[1]
    assert failed.flagged and failed.label == "" and failed.quality.ok
    assert all(np.isnan(v) for v in failed.probabilities.values())
    assert all(e.label in bundle.manifest.classes and not e.flagged for e in events[2:])
    warned = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and "window 1" in warned[0].getMessage()
    assert (warned[0].exc_info is not None) == (failure == "raises")  # the cause, traceback


def test_close_ends_the_event_iterators_even_when_it_raises(bundle, ecg):
    import asyncio

    p = StreamPipeline(bundle, fs_in=FS, precision="fp32")

    def broken(*args, **kwargs):
        raise RuntimeError("a bug at the end of the stream")

    async def consume():
        got = []
        async for event in p.events():
            got.append(event)
        return got

    async def main():
        task = asyncio.ensure_future(consume())
        await asyncio.sleep(0)
        p.push(ecg.signal[: int(20 * FS)])
        p._drain = broken  # what close() calls after flushing
        with pytest.raises(RuntimeError, match="a bug at the end"):
            p.close()
        return await asyncio.wait_for(task, timeout=5)

    assert len(windows_of(asyncio.run(main()))) > 0


def test_settling_sees_what_the_filters_saw_through_dropouts_and_at_the_start(bundle, ecg):
    """The look-back holds invalid samples as the filters do: a dropout inside a steady 8 mV
    offset flags nothing, a 300 mV pop held through a dropout flags the window where the
    signal comes back; a stream starting at 20 mV is a jump from the filters' zero state."""
    hop = bundle.manifest.hop_samples / bundle.manifest.fs
    at = int(5 * hop * FS)  # a window starts here

    def flags_at(x, start):
        _, events = stream(bundle, x, [250])
        return next(w for w in windows_of(events) if w.start_s == pytest.approx(start))

    steady = ecg.signal + 8.0
    steady[at - 250 : at - 247] = np.nan
    assert not flags_at(steady, at / FS).flagged
    popped = ecg.signal.copy()
    popped[at - 6 * 250 : at - 5 * 250] = 300.0
    popped[at - 5 * 250 : at - 125] = np.nan  # held at 300 mV, back 0.5 s before the window
    assert flags_at(popped, at / FS).quality.flags == ("settling",)
    assert flags_at(ecg.signal + 20.0, 0.0).quality.flags == ("settling",)
    assert not flags_at(ecg.signal, 0.0).flagged


def test_a_lead_resumes_after_a_gap_at_its_first_valid_value(bundle, ecg):
    """An invalid first sample after a gap is held at the post-gap level, not the pre-gap
    one, so the filters settle where the signal resumes. A one-sample difference at a
    window's start still moves the probabilities a little (up to 0.06 over five synthetic
    records); resuming at the pre-gap level moves them by 0.36-0.91."""
    x, half = ecg.signal, int(30 * FS)

    def run(first: str):
        post = x[half:] - 8.0
        if first != "clean":
            post = post.copy()
            post[0] = np.nan if first == "nan" else x[half - 1]  # "pre-gap": the old level
        p = StreamPipeline(bundle, fs_in=FS, precision="fp32")
        events = p.push(x[:half], timestamp_s=0.0)
        events += p.push(post, timestamp_s=33.0)
        return [w for w in windows_of(events + p.close()) if w.start_s >= 33.0]

    clean, first_nan, pre_gap = run("clean"), run("nan"), run("pre-gap")
    assert len(clean) == len(first_nan) == len(pre_gap) > 0  # zip would hide a missing window
    assert all(not b.flagged or "nonfinite" in b.quality.flags for b in first_nan)

    def change(events) -> float:
        return max(
            abs(b.probabilities[c] - p)
            for a, b in zip(clean, events, strict=True)
            for c, p in a.probabilities.items()
        )

    assert change(first_nan) <= 0.06
    assert change(first_nan) <= 0.1 * change(pre_gap)


def test_auto_backend_reaches_the_denoiser_and_the_calibrator(bundle):
    from sdk.calibration import Calibrator

    p = StreamPipeline(bundle, fs_in=FS, backend="auto")
    assert p.denoiser is not None and p.classifier.backend == "cpu"
    cal = Calibrator(bundle, backend="auto")
    assert cal.denoiser is not None


def test_label_time_adds_each_windows_new_signal_and_skips_flagged_windows():
    """Every second of signal the windows analysed counts once, under its window's label; a
    flagged window adds nothing (its signal is then not in the total)."""
    bundle = load_bundle(default_bundle_path())
    ecg = synthetic_ecg((("sinus", 40.0), ("af", 40.0)), fs=FS, seed=4)
    p = StreamPipeline(bundle, fs_in=FS)
    events = p.push(ecg.signal) + p.close()
    windows = [e for e in events if isinstance(e, WindowEvent)]
    assert not any(w.flagged for w in windows)
    total = sum(p.stats.label_s.values())
    # the windows cover the stream's model samples once: 80 s, up to resampling rounding
    assert total == pytest.approx(80.0, abs=0.05)
    assert p.stats.share("A") == pytest.approx(p.stats.label_s.get("A", 0.0) / total)
    assert 0.3 < p.stats.share("A") < 0.7  # half the record is AF
    # a flat stretch gets flagged windows: their signal is not counted
    flat = np.r_[ecg.signal[: int(30 * FS)], np.zeros(int(30 * FS))]
    q = StreamPipeline(bundle, fs_in=FS)
    flagged = [e for e in q.push(flat) + q.close() if isinstance(e, WindowEvent) and e.flagged]
    assert flagged and sum(q.stats.label_s.values()) < 60.0 - 5.0
    assert StreamPipeline(bundle, fs_in=FS).stats.share("A") is None


@pytest.mark.parametrize(
    "kw, field, message",
    [
        ({"fs_in": 0}, "fs_in", "fs_in must be a finite positive number"),
        ({"fs_in": float("nan")}, "fs_in", "fs_in must be a finite positive number"),
        ({"fs_in": float("inf")}, "fs_in", "fs_in must be a finite positive number"),
        ({"fs_in": "250"}, "fs_in", "fs_in must be a finite positive number"),
        ({"fs_in": 10.0}, "fs_in", "below 80 Hz, twice the bundle's 40 Hz band-pass high edge"),
        ({"fs_in": 129.98}, "fs_in", "cannot resample 129.98 Hz to 128 Hz"),
        ({"fs_in": 250.0, "buffer_s": float("nan")}, "buffer_s", "buffer_s must be a number"),
        ({"fs_in": 250.0, "buffer_s": float("inf")}, "buffer_s", "buffer_s must be a number"),
        # ceilings: these raised OverflowError or numpy's MemoryError (477 GiB) from deep inside
        ({"fs_in": 250.0, "buffer_s": 1e9}, "buffer_s", r"in \(0, 3600\]"),
        ({"fs_in": 250.0, "hop_s": 1e307}, "hop_s", "must be > 0 and <= the window"),
        ({"fs_in": 250.0, "hop_s": -1.0}, "hop_s", "must be > 0 and <= the window"),
        ({"fs_in": 250.0, "n_leads": 10**9}, "n_leads", "n_leads must be an integer from 1 to 12"),
        ({"fs_in": 250.0, "n_leads": 2.0}, "n_leads", "n_leads must be an integer"),
        ({"fs_in": 250.0, "lead": True}, "lead", "0 <= lead"),
        ({"fs_in": 250.0, "threads": 10**6}, "threads", "threads must be an integer from 0"),
        ({"fs_in": 250.0, "threads": -3}, "threads", "threads must be an integer from 0"),
        ({"fs_in": 250.0, "threads": "2"}, "threads", "threads must be an integer from 0"),
        ({"fs_in": 250.0, "denoise": "no"}, "denoise", "denoise must be True or False"),
        ({"fs_in": 250.0, "t": 2.5}, "t", "t must be an integer or a {modality: t} mapping"),
        ({"fs_in": 250.0, "t": {"raw": 2.5}}, "t", "t must be an integer diffusion step"),
        ({"fs_in": 250.0, "t": True}, "t", "t must be an integer or a {modality: t} mapping"),
    ],
)
def test_unusable_rates_buffers_and_steps_are_config_errors(bundle, kw, field, message):
    with pytest.raises(ConfigError, match=message) as err:
        StreamPipeline(bundle, **kw)
    assert err.value.field == field


def test_a_block_whose_rate_is_not_a_number_is_refused_and_counted(bundle):
    pipe = StreamPipeline(bundle, fs_in=250.0)
    with pytest.raises(SampleRateError):
        pipe.push(np.zeros(250, np.float32), fs="250")  # type: ignore[arg-type]
    assert pipe.stats.blocks_rejected == 1
    pipe.push(np.zeros(250, np.float32), fs=250.0)  # the stream goes on
    assert pipe.stats.blocks_rejected == 1


def test_numpy_scalars_are_rates_like_any_number(bundle):
    assert StreamPipeline(bundle, fs_in=np.float32(130.0)).fs_in == 130.0
    pipe = StreamPipeline(bundle, fs_in=np.int64(250), buffer_s=np.float32(60))
    pipe.push(np.zeros(250, np.float32), fs=np.float32(250.0))
    assert pipe.stats.blocks_rejected == 0
    with pytest.raises(ConfigError, match="finite positive"):
        StreamPipeline(bundle, fs_in=np.bool_(True))


@pytest.mark.parametrize("denoise", [True, False])
def test_windows_without_signal_report_no_beats_and_no_heart_rate(bundle, ecg, denoise):
    """25 s lost (NaN, held) or a flat line: the windows inside report no beat and no heart
    rate (the thresholds sank with the signal and took its ripples for beats at 240 bpm);
    the windows around them keep their real beats."""
    for hole in (np.nan, 0.3):
        x = ecg.signal.copy()
        x[int(20 * FS) : int(45 * FS)] = hole
        _, events = stream(bundle, x, [250], denoise=denoise)
        wins = windows_of(events)
        inside = [w for w in wins if w.start_s >= 20.0 and w.end_s <= 45.0]
        # at most the beat the hole's first instant cut into; none deeper in
        assert inside and all(w.n_beats <= 1 and w.heart_rate_bpm is None for w in inside)
        assert all(w.n_beats == 0 for w in inside if w.start_s >= 25.0)
        before = [w for w in wins if w.end_s <= 20.0 and w.start_s >= 5.0]
        assert before and all(w.n_beats >= 8 and w.heart_rate_bpm for w in before)


def test_masked_samples_are_missing_samples_and_a_string_is_no_timestamp(bundle):
    """A masked array's mask was ignored (the masked values analysed as ECG); a timestamp
    '1.0' was parsed as a number."""
    pipe = StreamPipeline(bundle, fs_in=FS)
    mask = np.zeros(250, bool)
    mask[:10] = True
    pipe.push(np.ma.masked_array(np.full(250, 0.3), mask=mask))
    assert pipe.stats.nonfinite_samples == 10
    with pytest.raises(BlockError, match="samples must be numeric, got dtype complex"):
        pipe.push(np.ma.masked_array(np.zeros(250, complex), mask=mask))
    with pytest.raises(BlockError, match="timestamp '1.0' is not a number"):
        pipe.push(np.zeros(250), timestamp_s="1.0")  # type: ignore[arg-type]
    assert pipe.stats.blocks_rejected == 2 and pipe.stats.samples_in == 250


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"episode_gap_s": "x"}, "episode_gap_s"),
        ({"episode_min_s": -5}, "episode_min_s"),
        ({"episode_min_s": float("inf")}, "episode_min_s"),
        ({"backend": "gpu"}, "backend"),
    ],
)
def test_bad_pipeline_arguments_are_config_errors_naming_them(bundle, kwargs, field):
    """A raw ValueError, or an error naming the episode tracker's field, before."""
    with pytest.raises(ConfigError, match=field) as err:
        StreamPipeline(bundle, fs_in=FS, **kwargs)
    assert err.value.field == field


def test_a_close_asked_by_a_callback_holds_when_the_push_then_fails(bundle, ecg, monkeypatch):
    p = StreamPipeline(bundle, fs_in=FS)
    p.add_callback(lambda event: p.close())
    real = p._ingest

    def ingest_then_fail(*args, **kwargs):
        real(*args, **kwargs)  # dispatches a window: the callback asks to close
        if p._close_requested:
            raise RuntimeError("a failure after the callback")

    monkeypatch.setattr(p, "_ingest", ingest_then_fail)
    with pytest.raises(RuntimeError, match="after the callback"):
        for i in range(0, len(ecg.signal), 500):
            p.push(ecg.signal[i : i + 500])
    with pytest.raises(BlockError, match="closed"):
        p.push(ecg.signal[:500])


def _mitdb(record: str, seconds: float) -> tuple[np.ndarray, float]:
    wfdb = pytest.importorskip("wfdb")
    from trainer.data import root

    rec = wfdb.rdrecord(str(root.data_root() / "mitdb" / record), channels=[0])
    return rec.p_signal[: int(seconds * rec.fs), 0], float(rec.fs)


@pytest.mark.data("mitdb")
def test_the_rpeak_detector_starts_afresh_after_a_gap() -> None:
    """Thresholds learnt on a large ECG before a gap missed beats of a smaller one after it
    (mitdb/203 after 101: 16 of 19 beats in the first window); after the gap the stream finds
    what a new stream finds."""
    from sdk.bundle import shipped_bundles

    plain = shipped_bundles()["dacl-cpu"]  # no denoiser: the stream's own detector
    a, fs = _mitdb("101", 40.0)
    b, _ = _mitdb("203", 30.0)
    b = 0.3 * b
    p = StreamPipeline(plain, fs_in=fs)
    events = p.push(a, timestamp_s=0.0) + p.push(b, timestamp_s=70.0) + p.close()
    fresh = StreamPipeline(plain, fs_in=fs)
    expected = fresh.push(b, timestamp_s=70.0) + fresh.close()
    after = [
        (e.start_s, e.n_beats, e.heart_rate_bpm) for e in windows_of(events) if e.start_s >= 70
    ]
    alone = [(e.start_s, e.n_beats, e.heart_rate_bpm) for e in windows_of(expected)]
    assert len(after) >= 3 and after == alone[: len(after)]


def test_held_samples_are_not_judged_as_signal() -> None:
    """A lost sample is stored as 0 mV: on an ECG riding 300 mV of offset it read as a rail
    (``saturated``) and a 300 mV swing (``high_amplitude``)."""
    ecg = synthetic_ecg((("sinus", 40.0),), fs=250.0, seed=3)
    x = ecg.signal + 300.0
    x[int(12 * ecg.fs)] = np.nan
    p = StreamPipeline(default_bundle_path(), fs_in=ecg.fs)
    windows = windows_of(p.push(x) + p.close())
    with_nan = [w for w in windows if w.start_s <= 12.0 < w.start_s + 10.0]
    assert with_nan and all(w.quality.flags == ("nonfinite",) for w in with_nan)
    assert all(w.quality.score > 0.99 for w in with_nan)


def test_a_ragged_list_is_a_counted_block_error() -> None:
    p = StreamPipeline(default_bundle_path(), fs_in=250.0, n_leads=2)
    with pytest.raises(BlockError) as err:
        p.push([[0.1, 0.2], [0.3]])
    assert err.value.reason == "shape" and p.stats.blocks_rejected == 1
    assert p.push([[0.1, 0.2], [0.3, 0.4]]) == []  # the stream goes on


def _beats_ecg(beats_s: np.ndarray, fs: float = 250.0) -> np.ndarray:
    """Gaussian P-QRS-T complexes (mV) at ``beats_s``, with a little noise."""
    t = np.arange(int((beats_s[-1] + 1.0) * fs)) / fs
    x = np.zeros_like(t)
    for b in beats_s:
        for c, w, a in (
            (-0.2, 0.025, 0.15),
            (-0.03, 0.01, -0.12),
            (0.0, 0.011, 1.1),
            (0.03, 0.01, -0.25),
            (0.28, 0.05, 0.3),
        ):
            x += a * np.exp(-0.5 * ((t - b - c) / w) ** 2)
    return x + np.random.default_rng(0).normal(0.0, 0.01, t.size)


def test_a_pause_shows_in_the_longest_rr_although_the_heart_rate_looks_normal() -> None:
    beats = np.r_[0.5 + 0.8 * np.arange(60), 53.7 + 0.8 * np.arange(60)]  # 6 s without a beat
    p = StreamPipeline(default_bundle_path(), fs_in=250.0)
    windows = windows_of(p.push(_beats_ecg(beats)) + p.close())
    over = [w for w in windows if w.start_s <= 47.7 and 53.7 <= w.end_s]
    assert over and all(abs(w.longest_rr_s - 6.0) < 0.05 for w in over)
    assert all(abs(w.heart_rate_bpm - 75.0) < 2.0 for w in over)  # the median RR: 0.8 s
    clear = [w for w in windows if w.end_s < 47.0]
    assert clear and all(abs(w.longest_rr_s - 0.8) < 0.02 for w in clear)


def test_a_rhythm_below_30_bpm_has_no_heart_rate_but_its_rr_shows() -> None:
    p = StreamPipeline(default_bundle_path(), fs_in=250.0)
    windows = windows_of(p.push(_beats_ecg(0.5 + 2.4 * np.arange(50))) + p.close())[4:-2]
    assert windows and all(w.heart_rate_bpm is None for w in windows)  # 25 bpm: outside 30-240
    assert all(w.n_beats >= 4 and abs(w.longest_rr_s - 2.4) < 0.02 for w in windows)


def test_a_stretch_between_gaps_shorter_than_a_window_is_reported_flagged(bundle, ecg):
    p = StreamPipeline(bundle, fs_in=FS)
    x = ecg.signal
    a, b = int(20 * FS), int(26 * FS)  # 6 s of signal between two gaps
    events = p.push(x[:a], timestamp_s=0.0)
    events += p.push(x[a:b], timestamp_s=25.0)
    events += p.push(x[b:], timestamp_s=40.0)
    wins = windows_of(events + p.close())
    short = [w for w in wins if w.end_s == pytest.approx(31.0, abs=0.01)]
    assert len(short) == 1 and "gap" in short[0].quality.flags and short[0].flagged
    assert not any(w.start_s < 40.0 - 1e-6 < w.end_s - 1e-6 and w is not short[0] for w in wins)
    assert min(w.start_s for w in wins if w.start_s >= 31.0) == pytest.approx(40.0, abs=0.01)


def test_the_offline_path_refuses_nan_instead_of_spreading_it(ecg):
    """One NaN made every later preprocessed sample NaN (mitdb/101 with one at 12 s: windows
    2-10 all NaN), without an error; the stream holds it and flags two windows."""
    from sdk.preprocess import preprocess_record
    from sdk.windowing import record_windows

    bundle = load_bundle(default_bundle_path())
    m = bundle.manifest
    x = ecg.signal.copy()
    x[int(12 * FS)] = np.nan
    with pytest.raises(BlockError) as err:
        preprocess_record(x, FS, m.preprocess)
    assert err.value.reason == "nonfinite" and "1 non-finite" in str(err.value)
    with pytest.raises(BlockError):
        record_windows(x, FS, m.preprocess, m.window_samples, m.hop_samples)
    p = StreamPipeline(bundle, fs_in=FS)
    wins = windows_of(p.push(x) + p.close())
    assert sum(w.flagged for w in wins) == 2 and all(
        np.isfinite(w.probabilities["N"]) for w in wins
    )


@pytest.mark.parametrize("after_s", [8.0, 60.0])
def test_signal_before_a_first_gap_shorter_than_a_window_is_analysed(bundle, ecg, after_s):
    """6 s, a gap, then more: the first 6 s were in no window at all, and with 8 s after the
    gap close() analysed 14 s as one window, which every model failed on."""
    p = StreamPipeline(bundle, fs_in=FS)
    x = ecg.signal
    a = int(6 * FS)
    events = p.push(x[:a], timestamp_s=0.0)
    events += p.push(x[a : a + int(after_s * FS)], timestamp_s=9.0)
    wins = windows_of(events + p.close())
    assert p.stats.model_failures == 0 and all(w.label for w in wins)
    first = wins[0]  # zero-padded, as close() pads a stream shorter than a window
    assert first.start_s == 0.0 and first.end_s == pytest.approx(6.0, abs=0.01)
    assert min(w.start_s for w in wins[1:]) <= 9.0 + 1e-6  # the signal after the gap too
