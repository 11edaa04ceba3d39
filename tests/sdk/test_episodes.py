"""EpisodeTracker: hysteresis, the minimum episode duration (the clinical AF definition) and
the shortest interruption that ends an episode."""

from __future__ import annotations

import numpy as np
import pytest

from sdk.episodes import AF_EPISODE_MIN_S, EpisodeTracker
from sdk.errors import ConfigError

WINDOW_S, HOP_S = 10.0, 5.0


def _feed(tracker: EpisodeTracker, probs: list[float]) -> list[tuple[str, float]]:
    """Windows every HOP_S; the (phase, time) of every event, close() included."""
    events = []
    for i, p in enumerate(probs):
        events += tracker.update(p, i * HOP_S, i * HOP_S + WINDOW_S)
    events += tracker.close((len(probs) - 1) * HOP_S + WINDOW_S)
    return [(e.phase, e.time_s) for e in events]


def test_default_minimum_is_the_clinical_30_s():
    assert EpisodeTracker().min_duration_s == AF_EPISODE_MIN_S == 30.0


def test_without_a_minimum_an_onset_is_reported_when_the_smoother_crosses_on():
    events = _feed(EpisodeTracker(alpha=1.0, min_duration_s=0.0, min_gap_s=0.0), [0, 1, 1, 0, 0])
    assert events == [("onset", 5.0), ("offset", 20.0)]  # offset: middle of the first low


def test_a_run_shorter_than_the_minimum_is_dropped_onset_and_offset():
    t = EpisodeTracker(alpha=1.0, min_duration_s=30.0, min_gap_s=0.0)
    assert _feed(t, [0, 1, 1, 0, 0, 0]) == []  # 5 s … 20 s: 15 s of AF
    assert t.episodes == [] and not t.active


def test_a_long_run_is_reported_once_it_lasted_the_minimum_with_its_real_onset():
    t = EpisodeTracker(alpha=1.0, min_duration_s=30.0, min_gap_s=0.0)
    reported_at = []
    for i, p in enumerate([0, 1, 1, 1, 1, 1, 1, 1, 0, 0]):
        if t.update(p, i * HOP_S, i * HOP_S + WINDOW_S):
            reported_at.append(i * HOP_S + WINDOW_S)
    # onset 5 s; the window 30-40 s is the first whose middle lies 30 s after it
    assert reported_at == [40.0, 50.0]  # the onset, then the offset
    assert (t.episodes[0].onset_s, t.episodes[0].offset_s) == (5.0, 45.0)


def test_an_episode_reaching_the_minimum_as_it_ends_is_reported_whole():
    t = EpisodeTracker(alpha=1.0, min_duration_s=30.0, min_gap_s=0.0)
    events = []
    for i, p in enumerate([0, 1, 1, 1, 1, 1]):  # onset 5 s, middles up to 30 s: not yet 30 s
        events += t.update(p, i * HOP_S, i * HOP_S + WINDOW_S)
    assert events == []
    events += t.update(0.0, 30.0, 40.0)  # ends at 35 s: 30 s long
    assert [(e.phase, e.time_s) for e in events] == [("onset", 5.0), ("offset", 35.0)]
    assert events[1].duration_s == 30.0


@pytest.mark.parametrize("seed", range(8))
def test_the_minimum_reports_exactly_the_long_episodes_of_the_unfiltered_tracker(seed):
    """Any hop, tail windows (weight < 1), skipped (flagged) windows and gaps: the reported
    episodes are those the tracker without a minimum finds that last at least the minimum,
    never one shorter."""
    rng = np.random.default_rng(seed)
    hop = float(rng.choice([2.5, 5.0, 7.5, 10.0]))
    runs = rng.integers(1, int(50 / hop) + 3, size=30)  # runs of 1 window … 60 s
    probs = np.concatenate([np.full(n, float(i % 2)) for i, n in enumerate(runs)])
    probs = np.clip(probs + rng.normal(0, 0.2, probs.size), 0, 1)
    plain = EpisodeTracker(alpha=0.8, min_duration_s=0.0, min_gap_s=0.0)
    gated = EpisodeTracker(alpha=0.8, min_duration_s=30.0, min_gap_s=0.0)
    n_events = {id(plain): 0, id(gated): 0}
    for tracker in (plain, gated):
        start = 0.0
        for i, p in enumerate(probs):
            if i % 37 == 36:  # a gap
                n_events[id(tracker)] += len(tracker.interrupt(start + WINDOW_S - hop))
                start += 100.0
            if i % 11 == 5:  # a flagged window: the tracker does not see it
                start += hop
                continue
            weight = 0.4 if i % 13 == 12 else 1.0  # a tail-like window
            events = tracker.update(float(p), start, start + WINDOW_S, weight=weight)
            start += hop * weight
            n_events[id(tracker)] += len(events)
        n_events[id(tracker)] += len(tracker.close(start - hop + WINDOW_S))
    long = [(e.onset_s, e.offset_s) for e in plain.episodes if e.duration_s >= 30.0]
    assert [(e.onset_s, e.offset_s) for e in gated.episodes] == long
    assert all(e.duration_s >= 30.0 for e in gated.episodes)
    assert 0 < len(long) < len(plain.episodes)  # the case has short episodes to drop
    assert n_events[id(gated)] == 2 * len(long)  # one onset and one offset each


def test_a_gap_drops_an_episode_not_yet_long_enough():
    t = EpisodeTracker(alpha=1.0, min_duration_s=30.0, min_gap_s=0.0)
    t.update(1.0, 0.0, 10.0)
    t.update(1.0, 5.0, 15.0)
    assert t.interrupt(15.0) == [] and t.episodes == []
    events = []
    for k in range(6):  # a new run from its own onset at 100 s
        events += t.update(1.0, 100.0 + 5 * k, 110.0 + 5 * k)
    assert [(e.phase, e.time_s) for e in events] == [("onset", 100.0)]  # middle 130 s


def test_a_negative_or_infinite_minimum_is_refused():
    for bad in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ConfigError, match="min_duration_s"):
            EpisodeTracker(min_duration_s=bad)


def _merged(episodes, gap_s: float, boundaries: list[float]) -> list[tuple[float, float, float]]:
    """Offline: runs closer than ``gap_s`` joined, never across a data gap (``boundaries``);
    (onset, offset, AF time = the sum of the runs)."""
    out: list[list[float]] = []
    for e in episodes:
        crossed = out and any(out[-1][1] <= b <= e.onset_s for b in boundaries)
        if out and not crossed and e.onset_s - out[-1][1] < gap_s:
            out[-1][1] = e.offset_s
            out[-1][2] += e.duration_s
        else:
            out.append([e.onset_s, e.offset_s, e.duration_s])
    return [(a, b, af) for a, b, af in out]


def test_default_gap_is_the_same_30_s():
    assert EpisodeTracker().min_gap_s == AF_EPISODE_MIN_S


def test_a_short_interruption_does_not_end_an_episode():
    t = EpisodeTracker(alpha=1.0, min_duration_s=30.0, min_gap_s=30.0)
    probs = [1] * 8 + [0] * 4 + [1] * 8 + [0] * 10  # AF, 15 s of another rhythm, AF, sinus
    events = _feed(t, probs)
    # one episode: from 0 s to the middle of the first low window after the second run
    assert events == [("onset", 0.0), ("offset", 105.0)]
    assert [(e.onset_s, e.offset_s) for e in t.episodes] == [(0.0, 105.0)]


def test_the_offset_comes_once_no_run_can_join_and_carries_the_runs_end():
    t = EpisodeTracker(alpha=1.0, min_duration_s=30.0, min_gap_s=30.0)
    emitted = []
    for i, p in enumerate([1] * 8 + [0] * 12):
        for e in t.update(p, i * HOP_S, i * HOP_S + WINDOW_S):
            emitted.append((e.phase, e.time_s, i * HOP_S))  # phase, time, window start
    # the run ends at 45 s (middle of the window starting at 40 s); the offset is emitted at
    # the first window starting 30 s later
    assert emitted == [("onset", 0.0, 25.0), ("offset", 45.0, 75.0)]


def test_two_short_runs_closer_than_the_gap_make_one_reported_episode():
    t = EpisodeTracker(alpha=1.0, min_duration_s=30.0, min_gap_s=30.0)
    # 20 s and 20 s of AF with 10 s between: each alone too short, together 45 s
    events = _feed(t, [0] + [1] * 3 + [0] * 2 + [1] * 3 + [0] * 10)
    assert events == [("onset", 5.0), ("offset", 50.0)]


def test_a_data_gap_ends_an_episode_at_its_last_runs_end():
    t = EpisodeTracker(alpha=1.0, min_duration_s=30.0, min_gap_s=30.0)
    for i, p in enumerate([1] * 8 + [0] * 2):  # the run ends at 45 s; 10 s later, a data gap
        t.update(p, i * HOP_S, i * HOP_S + WINDOW_S)
    events = t.interrupt(55.0)
    assert [(e.phase, e.time_s) for e in events] == [("offset", 45.0)]
    assert not t.active and t._onset_s is None


@pytest.mark.parametrize("seed", range(12))
def test_merging_and_the_minimum_report_exactly_the_offline_episodes(seed):
    _check_merging(seed)


def _check_merging(seed: int) -> bool:
    """Any hop (also under half a window), tail windows, skipped (flagged) windows and data
    gaps: the reported episodes are the unmerged, unfiltered tracker's runs joined across gaps
    shorter than the minimum gap (never across a data gap) whose runs add up to at least the
    minimum duration."""
    rng = np.random.default_rng(100 + seed)
    hop = float(rng.choice([2.5, 3.7, 5.0, 7.5, 10.0]))
    offset = float(rng.uniform(0, 1)) / 3.0  # timestamps off any round grid
    runs = rng.integers(1, int(50 / hop) + 3, size=40)
    probs = np.concatenate([np.full(n, float(i % 2)) for i, n in enumerate(runs)])
    probs = np.clip(probs + rng.normal(0, 0.2, probs.size), 0, 1)
    alpha = float(rng.choice([0.5, 0.8, 1.0]))
    plain = EpisodeTracker(alpha=alpha, min_duration_s=0.0, min_gap_s=0.0)
    merged = EpisodeTracker(alpha=alpha, min_duration_s=30.0, min_gap_s=30.0)
    n_events = {id(plain): 0, id(merged): 0}
    boundaries = []
    for tracker in (plain, merged):
        start, last_end = offset, offset
        for i, p in enumerate(probs):
            if i % 37 == 36:  # a short data gap: runs on both sides must still not join
                n_events[id(tracker)] += len(tracker.interrupt(last_end))
                if tracker is plain:
                    boundaries.append(last_end)
                start = last_end + 5.0
            if i % 11 == 5:  # a flagged window: the tracker does not see it
                start += hop
                continue
            weight = 0.4 if i % 13 == 12 else 1.0  # a tail-like window
            events = tracker.update(float(p), start, start + WINDOW_S, weight=weight)
            last_end = start + WINDOW_S
            start += hop * weight
            n_events[id(tracker)] += len(events)
        n_events[id(tracker)] += len(tracker.close(last_end))
    joined = _merged(plain.episodes, 30.0, boundaries)
    expected = [(a, b) for a, b, af in joined if af >= 30.0]
    assert [(e.onset_s, e.offset_s) for e in merged.episodes] == expected
    assert len(joined) < len(plain.episodes)  # the case has runs to join
    assert n_events[id(merged)] == 2 * len(expected)  # one onset and one offset each
    # the data gaps matter: joining across them would give other episodes in some cases
    across = [(a, b) for a, b, af in _merged(plain.episodes, 30.0, []) if af >= 30.0]
    return across != expected


def test_the_random_streams_had_data_gaps_that_mattered():
    """In some of the streams of test_merging_…, a data gap split runs that would otherwise
    have been joined (so that test checks the gaps)."""
    assert any(_check_merging(seed) for seed in range(12))


def test_the_minimum_counts_af_time_not_the_interruptions():
    t = EpisodeTracker(alpha=1.0, min_duration_s=30.0, min_gap_s=30.0)
    # two runs of 20 s (0-20 s, 35-55 s: a run ends at the middle of its first low window),
    # 15 s apart: one episode with 40 s of AF
    probs = ([1] * 3 + [0] * 4) * 2 + [0] * 12
    assert _feed(t, probs) == [("onset", 0.0), ("offset", 55.0)]
    # two runs of 10 s (0-10 s, 25-35 s): 35 s from first onset to last end, but only 20 s
    # of AF: not an AF episode
    short = EpisodeTracker(alpha=1.0, min_duration_s=30.0, min_gap_s=30.0)
    assert _feed(short, [1] + [0] * 4 + [1] + [0] * 12) == []
    assert short.episodes == []


def _events(tracker: EpisodeTracker, probs: list[float]) -> list[tuple[str, float]]:
    out = []
    for i, p in enumerate(probs):
        out += [(e.phase, e.time_s) for e in tracker.update(p, i * HOP_S, i * HOP_S + WINDOW_S)]
    return out + [(e.phase, e.time_s) for e in tracker.close(len(probs) * HOP_S + WINDOW_S)]


def test_a_waiting_window_above_on_keeps_the_episode_open():
    """A window at or above ``on`` starting within the gap, whose smoothed probability
    crosses ``on`` only after a window starting past the gap, still joins the episode; a
    window below ``on`` in between clears it, and the episode ends."""
    # alpha 0.5: the run ends at 60 s (the middle of the window starting at 55 s); windows
    # starting at 85 s (0.7, waiting: 25 s after the end), 90 s (0.7: the smoother still
    # below on; this window starts 30 s after the end) and 95 s (1.0: the smoother crosses)
    lead = [1.0] * 10 + [0.0] * 7
    tail = [1.0] * 5 + [0.0] * 12
    joined = EpisodeTracker(alpha=0.5, min_duration_s=30.0, min_gap_s=30.0)
    events = _events(joined, lead + [0.7, 0.7, 1.0] + tail)
    assert [p for p, _ in events] == ["onset", "offset"] and events[0] == ("onset", 0.0)
    # the same with the waiting window followed by one below on: it ends at 60 s, and the
    # next run (from 95 s) is an episode of its own
    split = EpisodeTracker(alpha=0.5, min_duration_s=30.0, min_gap_s=30.0)
    events = _events(split, lead + [0.7, 0.5, 1.0] + tail)
    assert events[:2] == [("onset", 0.0), ("offset", 60.0)] and len(split.episodes) == 2


def test_a_gap_of_exactly_the_minimum_is_decided_one_way():
    """Floating-point timestamps: the join test and the end test agree at exactly 30 s."""
    base = 10.0 / 360.0
    t = EpisodeTracker(alpha=0.5, min_duration_s=30.0, min_gap_s=30.0)
    plain = EpisodeTracker(alpha=0.5, min_duration_s=0.0, min_gap_s=0.0)
    probs = [1] * 8 + [0] * 8 + [1] * 8 + [0] * 4
    for tracker in (t, plain):
        for i, p in enumerate(probs):
            tracker.update(p, base + i * HOP_S, base + i * HOP_S + WINDOW_S)
        tracker.close(base + len(probs) * HOP_S + WINDOW_S)
    gaps = [b.onset_s - a.offset_s for a, b in zip(plain.episodes, plain.episodes[1:])]
    assert gaps and abs(gaps[0] - 30.0) < 1e-9  # the case: a gap of 30 s up to rounding
    expected = [(a, b) for a, b, af in _merged(plain.episodes, 30.0, []) if af >= 30.0]
    assert [(e.onset_s, e.offset_s) for e in t.episodes] == expected
