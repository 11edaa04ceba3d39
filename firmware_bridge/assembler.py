"""Sensor frames → sample blocks on a sample-accurate stream clock, with every gap flagged.

Samples are placed by the sensor's own timestamps (and sequence numbers where the profile
has them), never by arrival times, so radio jitter cannot move a sample, with one exception:
across a sensor clock restart only the host clock can size the gap (``clock_reset_gap_s``),
so the samples after it are off by the difference in link delay between the frames either
side of the outage, rounded to samples (none on a link of constant delay). The stream clock
starts at 0 s with the first sample; a lost frame advances it by exactly the number of
samples lost and the next block is pushed with that timestamp, which the SDK ring buffer
records as a gap. Duplicates are dropped, overlaps trimmed, short reorderings undone.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from firmware_bridge.errors import BridgeError

_log = logging.getLogger(__name__)


class SampleSink(Protocol):
    """Where samples go: :meth:`sdk.pipeline.StreamPipeline.push` has this signature."""

    def push(
        self, samples: np.ndarray, *, timestamp_s: float | None = None, fs: float | None = None
    ) -> Any: ...


@dataclass(frozen=True)
class DecodedFrame:
    """One decoded sensor frame: ``samples_mv`` (n, leads) float32, sensor time of sample 0.

    ``lead_off``: the sensor flagged an electrode off during the frame; its samples are NaN.
    """

    first_ns: int
    samples_mv: np.ndarray
    fs: float
    seq: int | None = None
    lead_off: bool = False

    @property
    def n(self) -> int:
        return int(self.samples_mv.shape[0])


#: sequence numbers given up as lost that an assembler remembers, so that a frame arriving
#: after all is counted ``late`` rather than as a duplicate
LATE_MEMORY = 256

#: placed frames and flagged gaps an assembler remembers, so that a repeat of a frame or a
#: frame arriving into a gap after its successor is recognised (:meth:`FrameAssembler.drop_stale`)
STALE_MEMORY = 64


@dataclass
class AssemblyStats:
    """What a :class:`FrameAssembler` counts.

    ``frames`` / ``samples`` placed on the stream clock (pushed to the sink, including blocks
    it refused: ``sink_errors``); ``gaps`` and ``samples_lost`` between placed frames;
    ``duplicates`` dropped (already placed or already held); ``late`` frames that arrived
    after the reorder window gave up on them or, without sequence numbers, inside a gap
    already flagged (dropped: their samples are already in ``samples_lost``);
    ``samples_trimmed`` from overlapping frames; ``reordered`` frames that arrived after a
    later one; ``time_resets`` of the sensor clock; ``seq_resets`` of the
    sensor's sequence counter (a number behind the expected one on a frame whose timestamp
    lies after everything received: new samples, not a repeat); ``sink_errors``: blocks the
    sink refused (their samples still take their place on the stream clock).
    """

    frames: int = 0
    samples: int = 0
    gaps: int = 0
    samples_lost: int = 0
    duplicates: int = 0
    late: int = 0
    samples_trimmed: int = 0
    reordered: int = 0
    time_resets: int = 0
    seq_resets: int = 0
    sink_errors: int = 0


class FrameAssembler:
    """Orders frames and pushes their samples to ``sink`` with gap-aware timestamps.

    ``reorder_depth`` frames are held back when sequence numbers show a hole, in case the
    missing frame arrives late; 0 disables reordering (profiles without sequence numbers).
    """

    def __init__(
        self, sink: SampleSink, fs: float, *, reorder_depth: int = 0, seq_modulo: int = 1 << 16
    ) -> None:
        self.sink, self.fs = sink, float(fs)
        self.period_ns = 1e9 / self.fs
        self.reorder_depth, self.seq_modulo = reorder_depth, seq_modulo
        self.stats = AssemblyStats()
        self._next_ns: float | None = None  # sensor time of the next expected sample
        self._stream_samples = 0  # samples (received + lost) on the stream clock
        self._next_seq: int | None = None
        self._held: dict[int, DecodedFrame] = {}
        self._given_up: deque[int] = deque(maxlen=LATE_MEMORY)  # sequence numbers deemed lost
        # frames placed lately: (first sample on the grid, samples, their bytes); and the
        # sensor times [start, end) of gaps flagged lately
        self._placed: deque[tuple[int, int, bytes]] = deque(maxlen=STALE_MEMORY)
        self._gaps: deque[tuple[float, float]] = deque(maxlen=STALE_MEMORY)

    def add(self, frame: DecodedFrame, *, clock_reset_gap_s: float | None = None) -> None:
        """Accept a frame.

        ``clock_reset_gap_s``: set when the sensor clock was reset before this frame (the
        session's clock aligner saw it); the gap is then sized by the host clock, in seconds,
        rounded to whole samples (see the module docstring for its error).
        """
        if clock_reset_gap_s is not None:
            self.reset_sequence()
            self._placed.clear()  # a restarted clock may reuse the old one's times: frames
            self._gaps.clear()  # placed and gaps flagged on it say nothing of the new frames
            self.stats.time_resets += 1
            self._next_ns = (
                float(frame.first_ns) - round(clock_reset_gap_s * self.fs) * self.period_ns
            )
        if frame.seq is None or self.reorder_depth == 0:
            self._place(frame)
            return
        seq = frame.seq % self.seq_modulo
        if self._next_seq is None:
            self._next_seq = seq
        delta = self._seq_delta(seq)
        if delta < 0 and self._after_everything(frame):  # the counter restarted (a late or
            # repeated frame has an old timestamp)
            self.reset_sequence()
            self.stats.seq_resets += 1
            self._next_seq, delta = seq, 0
        if delta < 0 and seq in self._given_up:
            self._given_up.remove(seq)
            self.stats.late += 1  # its samples are already counted lost
            return
        if delta < 0 or seq in self._held:
            self.stats.duplicates += 1  # already placed, or already waiting
            return
        if self._held and delta < max(self._seq_delta(s) for s in self._held):
            self.stats.reordered += 1
        self._held[seq] = frame
        self._release(give_up=False)

    def drop_stale(self, frame: DecodedFrame) -> bool:
        """Drop ``frame`` (counted) if it brings nothing new: a repeat of a frame placed lately
        (``duplicates``), or a frame that arrives after its successor, into a gap already
        flagged (``late``: its samples are counted lost there). With sequence numbers: a
        number held, or behind the expected one on a frame that does not start after
        everything received (:meth:`add` counts it). Returns whether it was dropped. Such a
        frame says nothing of the sensor clock: the session asks before the clock aligner sees
        it, which would take its old timestamp for a restart."""
        if frame.seq is not None and self.reorder_depth > 0:
            if self._next_seq is None:
                return False
            seq = frame.seq % self.seq_modulo
            if seq in self._held or (
                self._seq_delta(seq) < 0 and not self._after_everything(frame)
            ):
                self.add(frame)  # counted there: late or duplicate
                return True
            return False
        if self._key(frame) in self._placed:
            self.stats.duplicates += 1
            return True
        first, end = float(frame.first_ns), float(frame.first_ns) + frame.n * self.period_ns
        half = 0.5 * self.period_ns
        if any(a - half <= first and end <= b + half for a, b in self._gaps):
            self.stats.late += 1
            return True
        return False

    def _key(self, frame: DecodedFrame) -> tuple[int, int, bytes]:
        """A frame's identity: its first sample on the sample grid, its samples."""
        grid = int(round(frame.first_ns / self.period_ns))
        return grid, frame.n, np.ascontiguousarray(frame.samples_mv).tobytes()

    def flush(self) -> None:
        """Place every held frame (end of stream or disconnection)."""
        self._release(give_up=True)

    def reset_sequence(self) -> None:
        """Place every held frame, then take the next frame's sequence number as it comes.

        For a new link: a sensor may restart its counter or count on through an outage, so
        sequence numbers say nothing across it; the next frame's timestamp sizes the gap.
        """
        self.flush()
        self._next_seq = None
        self._given_up.clear()

    def _after_everything(self, frame: DecodedFrame) -> bool:
        """Whether ``frame`` starts no earlier than the end of every frame placed or held
        (within half a sample): its samples are new."""
        ends = [self._next_ns] if self._next_ns is not None else []
        ends += [float(f.first_ns) + f.n * self.period_ns for f in self._held.values()]
        return bool(ends) and float(frame.first_ns) >= max(ends) - 0.5 * self.period_ns

    def _seq_delta(self, seq: int) -> int:
        """Signed distance from the next expected sequence number, modulo wrap."""
        d = (seq - (self._next_seq or 0)) % self.seq_modulo
        return d - self.seq_modulo if d >= self.seq_modulo // 2 else d

    def _release(self, *, give_up: bool) -> None:
        while self._held:
            if self._next_seq not in self._held:
                if not give_up and len(self._held) <= self.reorder_depth:
                    return  # keep waiting for the missing frame
                self._give_up(min(self._held, key=self._seq_delta))
            seq = self._next_seq
            assert seq is not None
            self._next_seq = (seq + 1) % self.seq_modulo
            self._place(self._held.pop(seq))

    def _give_up(self, next_seq: int) -> None:
        """Skip the missing frames before ``next_seq`` as lost; remember the latest of them."""
        first, skipped = self._next_seq or 0, self._seq_delta(next_seq)
        start = max(0, skipped - LATE_MEMORY)
        self._given_up.extend((first + i) % self.seq_modulo for i in range(start, skipped))
        self._next_seq = next_seq

    def _place(self, frame: DecodedFrame) -> None:
        samples, first_ns = frame.samples_mv, float(frame.first_ns)
        lost = 0
        if self._next_ns is not None:
            d = (first_ns - self._next_ns) / self.period_ns  # samples between expected and actual
            if d <= -frame.n + 0.5:
                self.stats.duplicates += 1
                return
            if d < -0.5:
                trim = int(round(-d))
                samples, first_ns = samples[trim:], first_ns + trim * self.period_ns
                self.stats.samples_trimmed += trim
            elif d >= 0.5:
                lost = int(round(d))
                self.stats.gaps += 1
                self.stats.samples_lost += lost
                self._gaps.append((self._next_ns, first_ns))
        self._placed.append(self._key(frame))
        try:
            stamp = (self._stream_samples + lost) / self.fs
            self.sink.push(samples, timestamp_s=stamp, fs=self.fs)
        except (BridgeError, ValueError) as exc:  # the SDK refused a block: the stream goes on
            self.stats.sink_errors += 1
            n = self.stats.sink_errors
            if n == 1 or n % 1000 == 0:
                _log.warning("block refused by the sink (%d so far): %s", n, exc)
        finally:  # a block the sink refuses still took its place on the stream clock
            self._stream_samples += lost + samples.shape[0]
            self._next_ns = first_ns + samples.shape[0] * self.period_ns
        self.stats.frames += 1
        self.stats.samples += samples.shape[0]
