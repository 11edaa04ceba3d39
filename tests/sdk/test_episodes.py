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
        e = tracker.update(p, i * HOP_S, i * HOP_S + WINDOW_S)
        if e is not None:
            events.append((e.phase, e.time_s))
    e = tracker.close((len(probs) - 1) * HOP_S + WINDOW_S)
    if e is not None:
        events.append((e.phase, e.time_s))
    return events


def test_default_minimum_is_the_clinical_30_s():
    assert EpisodeTracker().min_duration_s == AF_EPISODE_MIN_S == 30.0


def test_without_a_minimum_an_onset_is_reported_when_the_smoother_crosses_on():
    events = _feed(EpisodeTracker(alpha=1.0, min_duration_s=0.0), [0, 1, 1, 0, 0])
    assert events == [("onset", 5.0), ("offset", 20.0)]  # offset: middle of the first low


def test_a_run_shorter_than_the_minimum_is_dropped_onset_and_offset():
    t = EpisodeTracker(alpha=1.0, min_duration_s=30.0)
    assert _feed(t, [0, 1, 1, 0, 0, 0]) == []  # 15 s of AF
    assert t.episodes == [] and not t.active


def test_a_long_run_is_reported_once_it_lasted_the_minimum_with_its_real_onset():
    t = EpisodeTracker(alpha=1.0, min_duration_s=30.0)
    probs = [0, 1, 1, 1, 1, 1, 1, 0, 0]
    reported_at = []
    for i, p in enumerate(probs):
        if t.update(p, i * HOP_S, i * HOP_S + WINDOW_S) is not None:
            reported_at.append(i * HOP_S + WINDOW_S)
    # onset at 5 s; the window ending at 35 s is the first with 30 s behind the onset
    assert reported_at[0] == 35.0
    assert t.episodes[0].onset_s == 5.0 and t.episodes[0].offset_s == 40.0


@pytest.mark.parametrize("seed", range(5))
def test_the_minimum_reports_exactly_the_long_episodes_of_the_unfiltered_tracker(seed):
    """With a hop of half a window, the reported episodes are those the tracker without a
    minimum finds that last at least the minimum (same onsets and offsets)."""
    rng = np.random.default_rng(seed)
    runs = rng.integers(1, 12, size=30)
    probs = np.concatenate([np.full(n, float(i % 2)) for i, n in enumerate(runs)])
    probs = np.clip(probs + rng.normal(0, 0.2, probs.size), 0, 1).tolist()
    plain, gated = EpisodeTracker(min_duration_s=0.0), EpisodeTracker(min_duration_s=30.0)
    _feed(plain, probs)
    _feed(gated, probs)
    long = [(e.onset_s, e.offset_s) for e in plain.episodes if e.duration_s >= 30.0]
    assert [(e.onset_s, e.offset_s) for e in gated.episodes] == long
    assert len(long) < len(plain.episodes)  # the case has short episodes to drop


def test_a_gap_drops_an_episode_not_yet_long_enough():
    t = EpisodeTracker(alpha=1.0, min_duration_s=30.0)
    t.update(1.0, 0.0, 10.0)
    t.update(1.0, 5.0, 15.0)
    assert t.interrupt(15.0) is None and t.episodes == []
    assert t.update(1.0, 100.0, 110.0) is None  # a new run starts from its own onset
    t.update(1.0, 105.0, 115.0)
    t.update(1.0, 110.0, 120.0)
    assert t.update(1.0, 115.0, 125.0) is None
    event = t.update(1.0, 120.0, 130.0)
    assert event is not None and event.time_s == 100.0


def test_a_negative_or_infinite_minimum_is_refused():
    for bad in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ConfigError, match="min_duration_s"):
            EpisodeTracker(min_duration_s=bad)
