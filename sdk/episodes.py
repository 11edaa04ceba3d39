"""Rhythm episodes (onset/offset) smoothed from per-window results.

A class's episode starts when its smoothed probability rises above ``on`` and ends when it
falls below ``off`` (hysteresis), so one doubtful window neither opens nor closes an
episode. Flagged windows (poor quality) do not move the smoother.

An episode is reported only once it has lasted ``min_duration_s`` (see
:meth:`EpisodeTracker.update`); its onset event then carries the time it began. The default,
:data:`AF_EPISODE_MIN_S` = 30 s, is the clinical definition of an AF episode: AF documented on
ECG for at least 30 s (the 2017 HRS/EHRA/ECAS/APHRS/SOLAECE expert consensus statement on AF
ablation). Shorter runs are dropped, onset and offset alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sdk.errors import ConfigError
from sdk.events import EpisodeEvent

#: Shortest episode reported (s): the clinical definition of an AF episode
AF_EPISODE_MIN_S = 30.0


@dataclass
class Episode:
    label: str
    onset_s: float
    offset_s: float | None = None

    @property
    def duration_s(self) -> float | None:
        return None if self.offset_s is None else self.offset_s - self.onset_s


@dataclass
class EpisodeTracker:
    """Hysteresis on an exponentially smoothed class probability.

    ``alpha`` is the weight of the newest window (1 = no smoothing); ``min_duration_s`` the
    shortest episode reported (0 reports an onset as soon as the smoothed probability
    crosses ``on``). ``episodes`` holds the reported episodes.
    """

    label: str = "A"
    on: float = 0.6
    off: float = 0.4
    alpha: float = 0.5
    min_duration_s: float = AF_EPISODE_MIN_S
    smoothed: float = 0.0
    episodes: list[Episode] = field(default_factory=list)
    _pending_onset_s: float | None = None
    _candidate_s: float | None = None  # onset of an episode not yet min_duration_s long

    def __post_init__(self) -> None:
        if not 0.0 <= self.off < self.on <= 1.0:
            raise ConfigError(f"0 <= off ({self.off}) < on ({self.on}) <= 1 must hold", field="on")
        if not 0.0 < self.alpha <= 1.0:
            raise ConfigError(f"alpha must lie in (0, 1], got {self.alpha}", field="alpha")
        if not (0.0 <= self.min_duration_s < float("inf")):
            raise ConfigError(
                f"min_duration_s must be finite and >= 0, got {self.min_duration_s}",
                field="min_duration_s",
            )

    @property
    def active(self) -> bool:
        return bool(self.episodes) and self.episodes[-1].offset_s is None

    def update(
        self, probability: float, start_s: float, end_s: float, weight: float = 1.0
    ) -> list[EpisodeEvent]:
        """Feed one window's probability of ``label``; return the events it causes (none, an
        onset, an offset, or both for an episode that reached ``min_duration_s`` as it
        ended).

        ``weight`` in (0, 1]: the share of a full hop of new data the window brings (the tail
        window at the end of a stream overlaps its predecessor by more than a hop); the
        window then counts as that fraction of a step, ``1 - (1 - alpha) ** weight``.

        An episode ends at the middle of the window whose smoothed probability falls below
        ``off``. It is reported when the middle of a window lies ``min_duration_s`` after its
        onset (any later end lies later still) or, if it ends first, when it ends having lasted
        that long: the reported episodes are exactly those the tracker without a minimum
        finds that last at least ``min_duration_s``.
        """
        if not 0.0 < weight <= 1.0:
            raise ConfigError(f"weight must lie in (0, 1], got {weight}", field="weight")
        alpha = 1.0 - (1.0 - self.alpha) ** weight
        self.smoothed = alpha * probability + (1.0 - alpha) * self.smoothed
        middle = start_s + (end_s - start_s) / 2.0
        if probability >= self.on and self._pending_onset_s is None:
            self._pending_onset_s = start_s
        open_ = self.active or self._candidate_s is not None
        if probability < self.on and not open_:
            self._pending_onset_s = None
        if not open_ and self.smoothed >= self.on:
            onset = self._pending_onset_s if self._pending_onset_s is not None else start_s
            self._candidate_s = onset
        if self.smoothed < self.off and (self.active or self._candidate_s is not None):
            return self._end(middle)
        if self._candidate_s is not None and middle - self._candidate_s >= self.min_duration_s:
            return [self._report()]
        return []

    def _report(self) -> EpisodeEvent:
        """The candidate has lasted ``min_duration_s``: it becomes a reported episode."""
        assert self._candidate_s is not None
        onset, self._candidate_s = self._candidate_s, None
        self.episodes.append(Episode(self.label, onset))
        return EpisodeEvent(self.label, "onset", onset)

    def _end(self, offset_s: float) -> list[EpisodeEvent]:
        """End the open episode or candidate at ``offset_s``; a candidate is reported if it
        lasted ``min_duration_s``, else dropped."""
        self._pending_onset_s = None
        events = []
        if self._candidate_s is not None:
            if offset_s - self._candidate_s < self.min_duration_s:
                self._candidate_s = None
                return []
            events.append(self._report())
        if not self.active:
            return events
        episode = self.episodes[-1]
        episode.offset_s = offset_s
        return [*events, EpisodeEvent(self.label, "offset", offset_s, episode.duration_s)]

    def close(self, end_s: float) -> list[EpisodeEvent]:
        """End an open episode at the end of the stream (one shorter than ``min_duration_s``
        is dropped)."""
        return self._end(end_s)

    def interrupt(self, last_s: float) -> list[EpisodeEvent]:
        """A gap in the data after ``last_s``: end an open episode there and forget the
        smoothing and any pending onset, so nothing carries across the gap."""
        events = self._end(last_s)
        self.smoothed = 0.0
        return events

    def total_s(self) -> float:
        return sum(e.duration_s or 0.0 for e in self.episodes)
