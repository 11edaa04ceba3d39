"""Rhythm episodes (onset/offset) smoothed from per-window results.

A class's episode starts when its smoothed probability rises above ``on`` and ends when it
falls below ``off`` (hysteresis), so one doubtful window neither opens nor closes an
episode. Flagged windows (poor quality) do not move the smoother.

An episode is reported only once it has lasted ``min_duration_s`` (by the end of a window);
its onset event then carries the time it began. The default, :data:`AF_EPISODE_MIN_S` = 30 s,
is the clinical definition of an AF episode: AF documented on ECG for at least 30 s (the
2017 HRS/EHRA/ECAS/APHRS/SOLAECE expert consensus statement on AF ablation). Shorter runs are
dropped, onset and offset alike.
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
    ) -> EpisodeEvent | None:
        """Feed one window's probability of ``label``; return an event when the state flips.

        ``weight`` in (0, 1]: the share of a full hop of new data the window brings (the tail
        window at the end of a stream overlaps its predecessor by more than a hop); the
        window then counts as that fraction of a step, ``1 - (1 - alpha) ** weight``.
        """
        if not 0.0 < weight <= 1.0:
            raise ConfigError(f"weight must lie in (0, 1], got {weight}", field="weight")
        alpha = 1.0 - (1.0 - self.alpha) ** weight
        self.smoothed = alpha * probability + (1.0 - alpha) * self.smoothed
        if probability >= self.on and self._pending_onset_s is None:
            self._pending_onset_s = start_s
        if probability < self.on and not self.active and self._candidate_s is None:
            self._pending_onset_s = None
        if not self.active and self._candidate_s is None and self.smoothed >= self.on:
            onset = self._pending_onset_s if self._pending_onset_s is not None else start_s
            self._candidate_s = onset
        if self._candidate_s is not None:
            onset = self._candidate_s
            if self.smoothed < self.off:  # ended before it lasted min_duration_s: dropped
                self._candidate_s = None
                self._pending_onset_s = start_s if probability >= self.on else None
            elif end_s - onset >= self.min_duration_s:
                self._candidate_s = None
                self.episodes.append(Episode(self.label, onset))
                return EpisodeEvent(self.label, "onset", onset)
            return None
        if self.active and self.smoothed < self.off:
            episode = self.episodes[-1]
            episode.offset_s = start_s + (end_s - start_s) / 2.0
            self._pending_onset_s = None
            return EpisodeEvent(self.label, "offset", episode.offset_s, episode.duration_s)
        return None

    def close(self, end_s: float) -> EpisodeEvent | None:
        """End an open episode at the end of the stream (one not yet ``min_duration_s`` long
        is dropped)."""
        self._candidate_s = None
        if not self.active:
            return None
        episode = self.episodes[-1]
        episode.offset_s = end_s
        return EpisodeEvent(self.label, "offset", end_s, episode.duration_s)

    def interrupt(self, last_s: float) -> EpisodeEvent | None:
        """A gap in the data after ``last_s``: end an open episode there and forget the
        smoothing and any pending onset, so nothing carries across the gap."""
        event = self.close(last_s)
        self.smoothed = 0.0
        self._pending_onset_s = None
        return event

    def total_s(self) -> float:
        return sum(e.duration_s or 0.0 for e in self.episodes)
