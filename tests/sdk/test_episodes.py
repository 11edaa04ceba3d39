"""EpisodeTracker: hysteresis, and the minimum episode duration (the clinical AF definition)."""

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
    events = _feed(EpisodeTracker(alpha=1.0, min_duration_s=0.0), [0, 1, 1, 0, 0])
    assert events == [("onset", 5.0), ("offset", 20.0)]  # offset: middle of the first low


def test_a_run_shorter_than_the_minimum_is_dropped_onset_and_offset():
    t = EpisodeTracker(alpha=1.0, min_duration_s=30.0)
    assert _feed(t, [0, 1, 1, 0, 0, 0]) == []  # 5 s … 20 s: 15 s of AF
    assert t.episodes == [] and not t.active


def test_a_long_run_is_reported_once_it_lasted_the_minimum_with_its_real_onset():
    t = EpisodeTracker(alpha=1.0, min_duration_s=30.0)
    reported_at = []
    for i, p in enumerate([0, 1, 1, 1, 1, 1, 1, 1, 0, 0]):
        if t.update(p, i * HOP_S, i * HOP_S + WINDOW_S):
            reported_at.append(i * HOP_S + WINDOW_S)
    # onset 5 s; the window 30-40 s is the first whose middle lies 30 s after it
    assert reported_at == [40.0, 50.0]  # the onset, then the offset
    assert (t.episodes[0].onset_s, t.episodes[0].offset_s) == (5.0, 45.0)


def test_an_episode_reaching_the_minimum_as_it_ends_is_reported_whole():
    t = EpisodeTracker(alpha=1.0, min_duration_s=30.0)
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
    plain = EpisodeTracker(alpha=0.8, min_duration_s=0.0)
    gated = EpisodeTracker(alpha=0.8, min_duration_s=30.0)
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
    t = EpisodeTracker(alpha=1.0, min_duration_s=30.0)
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
