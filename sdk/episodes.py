"""Rhythm episodes (onset/offset) smoothed from per-window results.

A class's episode starts when its smoothed probability rises above ``on`` and ends when it
falls below ``off`` (hysteresis), so one doubtful window neither opens nor closes an
episode. Flagged windows (poor quality) do not move the smoother.

An episode is reported only once it has lasted ``min_duration_s`` (see
:meth:`EpisodeTracker.update`); its onset event then carries the time it began. The default,
:data:`AF_EPISODE_MIN_S` = 30 s, is the clinical definition of an AF episode: AF documented on
ECG for at least 30 s (the 2017 HRS/EHRA/ECAS/APHRS/SOLAECE expert consensus statement on AF
ablation). Shorter runs are dropped, onset and offset alike.

Runs separated by less than ``min_gap_s`` of another rhythm are one episode: by default the
same 30 s, so an episode ends only once another rhythm has lasted as long as the AF that
starts one. The minimum duration counts AF time, the sum of an episode's runs, never the
interruptions between them. The offset event carries the time the last run ended and comes
once a window starts ``min_gap_s`` after it, so it is emitted ``min_gap_s`` plus a window
(or more, while an earlier window's high probability may still start a run) after that
time. A gap in the data always ends an episode.
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
    crosses ``on``); ``min_gap_s`` the shortest interruption that ends one (0: the first
    window whose smoothed probability falls below ``off``). ``episodes`` holds the reported
    episodes.
    """

    label: str = "A"
    on: float = 0.6
    off: float = 0.4
    alpha: float = 0.5
    min_duration_s: float = AF_EPISODE_MIN_S
    min_gap_s: float = AF_EPISODE_MIN_S
    smoothed: float = 0.0
    episodes: list[Episode] = field(default_factory=list)
    _pending_onset_s: float | None = None  # start of the first window at or above ``on``
    _run_open: bool = False  # a run (hysteresis above ``off``) is going on
    _onset_s: float | None = None  # onset of the episode being built (runs merged)
    _end_s: float | None = None  # end of its last run, while no newer run has started
    _run_onset_s: float = 0.0  # onset of its current (or last) run
    _af_s: float = 0.0  # AF time of its finished runs
    _reported: bool = False  # whether that episode's onset has been reported

    def __post_init__(self) -> None:
        if not 0.0 <= self.off < self.on <= 1.0:
            raise ConfigError(f"0 <= off ({self.off}) < on ({self.on}) <= 1 must hold", field="on")
        if not 0.0 < self.alpha <= 1.0:
            raise ConfigError(f"alpha must lie in (0, 1], got {self.alpha}", field="alpha")
        for name in ("min_duration_s", "min_gap_s"):
            value = getattr(self, name)
            if not (0.0 <= value < float("inf")):
                raise ConfigError(f"{name} must be finite and >= 0, got {value}", field=name)

    @property
    def active(self) -> bool:
        """A reported episode has not ended (its last run may have; the offset waits for
        ``min_gap_s`` without a new run)."""
        return bool(self.episodes) and self.episodes[-1].offset_s is None

    def update(
        self, probability: float, start_s: float, end_s: float, weight: float = 1.0
    ) -> list[EpisodeEvent]:
        """Feed one window's probability of ``label``; return the events it causes: none, an
        onset, an offset, both for an episode that reached ``min_duration_s`` as it ended,
        or the previous episode's offset and a new episode's onset.

        ``weight`` in (0, 1]: the share of a full hop of new data the window brings (the tail
        window at the end of a stream overlaps its predecessor by more than a hop); the
        window then counts as that fraction of a step, ``1 - (1 - alpha) ** weight``.

        A run starts at the start of the first window at or above ``on`` once the smoothed
        probability reaches ``on``, and ends at the middle of the window whose smoothed
        probability falls below ``off``. Runs whose gap (next onset − end) is shorter than
        ``min_gap_s`` form one episode; it is reported once its AF time (its runs, the current
        one up to this window's middle) reaches ``min_duration_s``; it ends when no run can
        start within ``min_gap_s`` of its last run's end (a window starting that late, and no
        earlier window at or above ``on`` waiting). The reported episodes are exactly the runs
        of the tracker without a minimum and gap, joined across gaps shorter than
        ``min_gap_s`` (> 0), whose runs add up to at least ``min_duration_s``.
        """
        if not 0.0 < weight <= 1.0:
            raise ConfigError(f"weight must lie in (0, 1], got {weight}", field="weight")
        alpha = 1.0 - (1.0 - self.alpha) ** weight
        self.smoothed = alpha * probability + (1.0 - alpha) * self.smoothed
        middle = start_s + (end_s - start_s) / 2.0
        if probability >= self.on and self._pending_onset_s is None:
            self._pending_onset_s = start_s
        if probability < self.on and not self._run_open:
            self._pending_onset_s = None
        events: list[EpisodeEvent] = []
        if not self._run_open and self.smoothed >= self.on:
            onset = self._pending_onset_s if self._pending_onset_s is not None else start_s
            events += self._run_started(onset)
        elif self._run_open and self.smoothed < self.off:
            self._end_run(middle)
            self._pending_onset_s = None
        return events + self._settle(start_s, middle)

    def _end_run(self, end_s: float) -> None:
        self._run_open, self._end_s = False, end_s
        self._af_s += end_s - self._run_onset_s

    def _run_started(self, onset_s: float) -> list[EpisodeEvent]:
        """A run starts at ``onset_s``: it continues the episode being built if it follows its
        last run by less than ``min_gap_s``, else it starts a new one."""
        self._run_open, self._run_onset_s = True, onset_s
        if self._end_s is not None and self._joins(onset_s):
            self._end_s = None
            return []
        events = self._finish()
        self._onset_s, self._end_s, self._reported, self._af_s = onset_s, None, False, 0.0
        return events

    def _joins(self, onset_s: float) -> bool:
        """Whether a run starting at ``onset_s`` joins the episode whose last run ended."""
        assert self._end_s is not None
        return self.min_gap_s > 0 and onset_s - self._end_s < self.min_gap_s

    def _settle(self, start_s: float, middle_s: float) -> list[EpisodeEvent]:
        """Report the episode being built once long enough; end it once no run can join it."""
        if self._onset_s is None:
            return []
        events = []
        af = self._af_s + (middle_s - self._run_onset_s if self._run_open else 0.0)
        if not self._reported and af >= self.min_duration_s:
            self._reported = True
            self.episodes.append(Episode(self.label, self._onset_s))
            events.append(EpisodeEvent(self.label, "onset", self._onset_s))
        if self._end_s is not None:
            # a run could still join: one waiting for the smoother, or from a later window
            waiting = self._pending_onset_s is not None and self._joins(self._pending_onset_s)
            if not (waiting or self._joins(start_s)):
                events += self._finish()
        return events

    def _finish(self) -> list[EpisodeEvent]:
        """End the episode being built at the end of its last run (reported: an offset;
        shorter than ``min_duration_s``: dropped)."""
        if self._onset_s is None:
            return []
        assert self._end_s is not None, "an episode ends only after its last run ended"
        onset, end, reported, af = self._onset_s, self._end_s, self._reported, self._af_s
        self._onset_s = self._end_s = None
        self._reported, self._af_s = False, 0.0
        if not reported and af >= self.min_duration_s:
            self.episodes.append(Episode(self.label, onset))
            reported = True
            events = [EpisodeEvent(self.label, "onset", onset)]
        else:
            events = []
        if not reported:
            return events
        episode = self.episodes[-1]
        episode.offset_s = end
        return [*events, EpisodeEvent(self.label, "offset", end, episode.duration_s)]

    def close(self, end_s: float) -> list[EpisodeEvent]:
        """End the stream at ``end_s``: a run still going ends there, and the episode being
        built ends with it (one shorter than ``min_duration_s`` is dropped)."""
        if self._run_open:
            self._end_run(end_s)
        self._pending_onset_s = None
        return self._finish()

    def interrupt(self, last_s: float) -> list[EpisodeEvent]:
        """A gap in the data after ``last_s``: end the episode being built (a run still going
        ends at ``last_s``) and forget the smoothing and any pending onset, so nothing carries
        across the gap."""
        events = self.close(last_s)
        self.smoothed = 0.0
        return events

    def total_s(self) -> float:
        return sum(e.duration_s or 0.0 for e in self.episodes)
