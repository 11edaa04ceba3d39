"""Repair an isolated corrupted sensor timestamp before it shifts the stream.

Polar PMD frames carry no checksum beyond the radio's own, and a frame is placed by the
sensor time it claims. One wrong timestamp (a flipped bit, a firmware fault) is therefore
placed as a gap or an overlap, and the frame after it, back on the true time base, is trimmed
or opens a clock "reset"; measured on the simulated strap, one flipped bit misplaced up to
three quarters of a two-minute stream (gaps sized by host arrival times shift every later
sample). A check of the timestamp alone cannot tell such a frame from a real gap (frames
lost on the air), a duplicate or a sensor clock restart, and arrival times are too jittery
to decide it within a frame.

:class:`TimestampGuard` decides by looking ahead. A frame that does not continue the
previous one (more than half a sample period away) is held, and so is every following frame
that continues neither the last held frame nor the stream, until a frame arrives that
continues one of them:

- it continues the stream as if every held frame had come back to back: if the held
  frames' own timestamps tile that stretch in another order, they arrived swapped and are
  released in timestamp order (counted in :attr:`TimestampGuard.reordered`); otherwise the
  held frames that do not fit were wrong; they are rewritten to their contiguous times,
  counted in :attr:`TimestampGuard.repaired`, and all are released (one or several wrong
  frames in a row);
- it continues the stream as if every held frame had come back to back, and the held frames
  and it, in timestamp order, tile a stretch that starts whole frames after the expected
  place: a frame was lost and the ones after it arrived swapped (4, 7, 6 with 5 lost); it and
  the held frames before it in time are released as they claim (counted in
  :attr:`TimestampGuard.reordered`; the assembler flags the gap), and the held frames after
  it wait for the next frame, now that they continue the stream (so a frame stamped whole
  frames ahead, 4 stamped as 6 before 5, is dropped when the real 6 contradicts it);
- it continues the LAST held frame: that frame's timestamp was right (lost frames, a
  duplicate, a clock restart); earlier held frames are rewritten only if that frame starts
  where they would end back to back.

A held frame that no later frame vouches for (the next frame continues neither it nor the
stream, :data:`MAX_HELD` frames are already waiting, or the link drops) is placed as it
claims only if its timestamp could be real: frames are lost whole, so with equal frame
sizes its gaps to the last placed frame (and to the confirmed frame after it) must be whole
numbers of frames, and it must be plausible against the clock mapping
(:meth:`~firmware_bridge.clock.ClockAligner.plausible`: no clock reset implied, i.e. at most
0.5 s back and 2 s ahead of the last frame, and not sampled more than 0.25 s after it
arrived). Otherwise it is dropped and counted in :attr:`TimestampGuard.rejected`; its
samples then lie in a flagged gap. Until a frame is released after a reconnection nothing is
checked against the frames before it: the H10 restarts its clock (and its frame grid) when it
reconnects, and the first frames on the new clock would all look wrong. The first frame
after a reconnection must still lie on the grid of the confirmed frame that follows it (same
clock); a flipped bit there would otherwise pass as a clock restart and shift every later
sample by the host clock's error. Frames released with that first one (in the
same :meth:`~TimestampGuard.push` or :meth:`~TimestampGuard.flush`) are checked against the
grid only: the clock mapping behind ``plausible`` learns of the restart only when the caller
places that frame, and would take the new clock for a wrong one. A wrong timestamp that
passes these checks (a shift by whole frames, or frames of differing sizes) is placed as
claimed; it misplaces that frame only, since the next frame is placed by its own timestamp.

A repeat of one of the last :data:`RECENT_FRAMES` released frames (same timestamp and
samples as it arrived) passes straight through as that frame was released (the assembler
drops it as a duplicate), so a repeat is never rewritten into the place of a lost frame.

At most :data:`MAX_HELD` frames wait (1.7 s on the H10), and only after a discontinuity
(including the first frame after a reconnection); a gapless stream is never held.
:meth:`TimestampGuard.flush` releases every held frame when the link drops or the stream
ends. A repeat of a held notification (same timestamp and samples) waits
with it and is released right after it with the same timestamp, so the assembler still drops
it as a duplicate. Frames with sequence numbers (the open profile, which also has a CRC)
pass through unchanged: their order and loss come from the sequence numbers.

Limits: a wrong timestamp on the very first frame of a session is not checked; one next to
a lost frame is not repaired (dropped if implausible, else placed as claimed); a frame that
arrives more than one frame early (BLE delivers a link's notifications in order) is dropped
into a flagged gap; a swap between two lost frames (4, 8, 6 with 5 and 7 lost) puts the early
frame in the first hole (2 of the 544 orderings of frames 5-8 lost, repeated or swapped by
adjacent pairs; none without swaps).
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable

import numpy as np

from firmware_bridge.assembler import DecodedFrame

__all__ = ["TimestampGuard"]

#: (frame, host arrival time in seconds), in the order the session should place them
Released = list[tuple[DecodedFrame, float]]
#: a held frame, its arrival time and the arrival times of repeats of it
_Held = tuple[DecodedFrame, float, list[float]]

#: frames held at most; beyond, the oldest is released unconfirmed
MAX_HELD = 3
#: released frames remembered, so that a repeat of one is recognised as such
RECENT_FRAMES = 8


class TimestampGuard:
    """Frame lookahead that rewrites isolated wrong sensor timestamps.

    Parameters
    ----------
    tolerance_samples
        Largest distance, in sample periods, between a frame's first sample and the sample
        expected after the previous frame for the two to count as contiguous (the
        assembler's own rounding threshold).
    plausible
        ``(frame, host arrival s) → bool``: whether a timestamp fits the clock mapping
        (:meth:`firmware_bridge.clock.ClockAligner.plausible`) of the frames placed so far
        (the caller places what each call returns before the next). Asked only for frames no
        later frame vouches for; a frame it rejects is dropped and counted in
        :attr:`rejected`, and its samples become part of the gap the assembler flags.
    """

    def __init__(
        self,
        tolerance_samples: float = 0.5,
        plausible: Callable[[DecodedFrame, float], bool] | None = None,
    ) -> None:
        if not 0.0 < tolerance_samples < 1.0:
            raise ValueError(f"tolerance_samples must lie in (0, 1), got {tolerance_samples}")
        self.tolerance_samples = float(tolerance_samples)
        self.plausible = plausible
        #: frames whose timestamp was rewritten to continue the previous frame
        self.repaired = 0
        #: frames no later frame vouched for, dropped: off the frame grid or not ``plausible``
        self.rejected = 0
        #: frames held because they did not continue the previous one
        self.held = 0
        #: held frames released in another order than they arrived (swapped on the way,
        #: each timestamp right)
        self.reordered = 0
        self._next_ns: int | None = None  # where a frame continuing the last released one starts
        # the frames released last, (as they arrived, as released): a repeat of one is never
        # moved into the place of a lost frame
        self._recent: deque[tuple[DecodedFrame, DecodedFrame]] = deque(maxlen=RECENT_FRAMES)
        self._pending: list[_Held] = []  # oldest first
        self._reconnected = False  # flushed, nothing released since
        self._restart_unplaced = False  # released in this call after a reconnection

    @property
    def waiting(self) -> int:
        """Frames held now."""
        return len(self._pending)

    def push(self, frame: DecodedFrame, host_time_s: float) -> Released:
        """Accept one decoded frame; return the frames to place now, in stream order."""
        self._restart_unplaced = False  # the caller placed what the last call returned
        if frame.seq is not None:
            return [(frame, host_time_s)]
        placed = next((out for came, out in self._recent if _same_frame(frame, came)), None)
        if placed is not None:  # a repeat of a released frame, as released: the assembler
            return [(placed, host_time_s)]  # drops it (a rewritten timestamp stays rewritten)
        pending = self._pending
        original = next((held for held in pending if _same_frame(frame, held[0])), None)
        if original is not None:  # a repeat waits with its original
            original[2].append(host_time_s)
            return []
        if not pending:
            if self._next_ns is None or self._continues(frame, self._next_ns):
                return self._release([], frame, host_time_s)
            self._hold(frame, host_time_s)
            return []
        assert self._next_ns is not None
        out: Released = []
        period = self._period_ns(frame)
        back_to_back = self._next_ns + round(sum(p[0].n for p in pending) * period)
        if self._continues(frame, back_to_back):  # every held frame lies in between
            arriving: _Held = (frame, host_time_s, [])
            early = self._early(pending, arriving)
            if early is not None:  # after a lost frame, as they claim, up to this one; the
                cut = next(i for i, h in enumerate(early) if h is arriving) + 1  # later ones
                self.reordered += sum(a is not b for a, b in zip(early, [*pending, arriving]))
                for held in early[:cut]:  # wait for the next frame to vouch for them (or not:
                    self._release(out, *held)  # a frame stamped ahead then conflicts with it)
                pending[:] = early[cut:]
                return out
            self._release_back_to_back(out, pending)
        elif self._continues(frame, self._end_ns(pending[-1][0])):  # the last one was right
            last = pending.pop()
            if pending and self._continues(last[0], back_to_back - round(last[0].n * period)):
                self._release_back_to_back(out, pending)
            for held in pending:  # no evidence either way
                self._release_unconfirmed(out, held, before_ns=last[0].first_ns)
            self._release(out, *last)
        else:
            self._hold(frame, host_time_s)
            if len(pending) > MAX_HELD:
                self._release_unconfirmed(out, pending.pop(0))
            return out
        pending.clear()
        return self._release(out, frame, host_time_s)

    def flush(self) -> Released:
        """Release held frames as they claim (link drop, end of stream); the first frame after
        a reconnection is then checked against the last one released, like any other."""
        self._restart_unplaced = False  # the caller placed what the last call returned
        out: Released = []
        by_time = sorted(self._pending, key=lambda h: h[0].first_ns)
        if len(by_time) > 1 and not self._reconnected and self._tiles(by_time):
            self._release_back_to_back(out, self._pending)  # swapped just before the drop
        for held in self._pending:
            self._release_unconfirmed(out, held)
        self._pending.clear()
        self._reconnected = True
        return out

    def _hold(self, frame: DecodedFrame, host_time_s: float) -> None:
        self._pending.append((frame, host_time_s, []))
        self.held += 1

    def _release_unconfirmed(
        self, out: Released, held: _Held, before_ns: int | None = None
    ) -> None:
        """Release a frame no later frame vouches for as it claims, unless its timestamp is
        off the frame grid or ``plausible`` rejects it: it is then dropped (with its repeats)
        and counted. ``before_ns``: the start of the confirmed frame that follows it.
        ``plausible`` is not asked while the first frame released after a reconnection awaits
        placing (the clock mapping still predates a restart it may bring)."""
        frame, host_time_s, copies = held
        if not self._reconnected:
            on_grid = self._on_grid(frame, before_ns)
            plausible = None if self._restart_unplaced else self.plausible
            if not on_grid or (plausible is not None and not plausible(frame, host_time_s)):
                self.rejected += 1
                return
        elif before_ns is not None and not self._whole_frames(
            frame, before_ns - self._end_ns(frame)
        ):
            # the first frame after a reconnection, contradicted by the confirmed frame that
            # follows it on the same (possibly restarted) clock: a wrong timestamp
            self.rejected += 1
            return
        self._release(out, frame, host_time_s, copies)

    def _on_grid(self, frame: DecodedFrame, before_ns: int | None) -> bool:
        """Whether ``frame`` could be real: with equal frame sizes, frames are lost whole, so
        the gap from the last placed frame (and to ``before_ns``) is a whole number of
        frames. ``True`` when sizes differ (no grid to check)."""
        if not self._recent or self._next_ns is None or frame.n != self._recent[-1][1].n:
            return True
        ok = self._whole_frames(frame, frame.first_ns - self._next_ns)
        return ok and (
            before_ns is None or self._whole_frames(frame, before_ns - self._end_ns(frame))
        )

    def _whole_frames(self, frame: DecodedFrame, gap_ns: float) -> bool:
        """Whether ``gap_ns`` is a whole number (>= 0) of frames of ``frame``'s size."""
        period = self._period_ns(frame)
        size, tol = frame.n * period, self.tolerance_samples * period
        return gap_ns > -tol and abs(gap_ns - round(gap_ns / size) * size) <= tol

    def _release_back_to_back(self, out: Released, held: list[_Held]) -> None:
        """Release ``held`` (emptied) each starting where the previous one ends, counting the
        rewritten timestamps. Frames that arrived swapped, whose own timestamps tile the
        stretch in another order, are released in that order and keep their timestamps
        (counted in :attr:`reordered`): their samples are not exchanged."""
        by_time = sorted(held, key=lambda h: h[0].first_ns)
        moved = sum(a is not b for a, b in zip(by_time, held))
        if moved and self._tiles(by_time):
            self.reordered += moved
            held[:] = by_time
        for frame, host_time_s, copies in held:
            assert self._next_ns is not None
            if self._continues(frame, self._next_ns):
                self._release(out, frame, host_time_s, copies)
                continue
            self.repaired += 1
            moved_frame = dataclasses.replace(frame, first_ns=self._next_ns)
            self._release(out, moved_frame, host_time_s, copies, arrived=frame)
        held.clear()

    def _early(self, pending: list[_Held], arriving: _Held) -> list[_Held] | None:
        """The held frames and the arriving one in timestamp order, if they arrived swapped
        after a lost frame: in that order they tile a stretch (each on the grid, starting
        where the one before ends) that starts whole frames after the expected place. Else
        ``None``: their count, not their timestamps, says where they go. A single flipped
        timestamp bit cannot pass this (no power of two nanoseconds is a whole number of
        frames of 72 or 73 samples at 130 Hz, within the tolerance)."""
        assert self._next_ns is not None
        ordered = sorted([*pending, arriving], key=lambda h: h[0].first_ns)
        first = ordered[0][0]
        if self._continues(first, self._next_ns) or not self._on_grid(first, None):
            return None
        expected = self._end_ns(first)
        for frame, _, _ in ordered[1:]:
            if frame.n != first.n or not self._continues(frame, expected):
                return None
            expected = self._end_ns(frame)
        return ordered

    def _tiles(self, held: list[_Held]) -> bool:
        """Whether ``held`` continue the stream and one another, each as it claims."""
        expected = self._next_ns
        for frame, _, _ in held:
            if expected is None or not self._continues(frame, expected):
                return False
            expected = self._end_ns(frame)
        return True

    def _release(
        self,
        out: Released,
        frame: DecodedFrame,
        host_time_s: float,
        copies: list[float] | tuple[()] = (),
        arrived: DecodedFrame | None = None,
    ) -> Released:
        """Append ``frame`` and its repeated notifications (same, possibly rewritten,
        timestamp: the assembler drops them as duplicates) to ``out``. ``arrived``: the frame
        as it came, when ``frame`` is it with its timestamp rewritten."""
        out.append((frame, host_time_s))
        out.extend((frame, t) for t in copies)
        self._next_ns = self._end_ns(frame)
        self._recent.append((frame if arrived is None else arrived, frame))
        self._restart_unplaced = self._restart_unplaced or self._reconnected
        self._reconnected = False
        return out

    def _continues(self, frame: DecodedFrame, expected_ns: float) -> bool:
        return abs(frame.first_ns - expected_ns) <= self.tolerance_samples * self._period_ns(frame)

    @staticmethod
    def _period_ns(frame: DecodedFrame) -> float:
        return 1e9 / frame.fs

    @classmethod
    def _end_ns(cls, frame: DecodedFrame) -> int:
        """Sensor time of the sample after the frame's last (integer ns: timestamps near
        1e18 ns are beyond float64's nanosecond resolution)."""
        return int(frame.first_ns) + round(frame.n * cls._period_ns(frame))


def _same_frame(a: DecodedFrame, b: DecodedFrame) -> bool:
    """A repeated notification: same timestamp and the same samples."""
    return a.first_ns == b.first_ns and np.array_equal(a.samples_mv, b.samples_mv)
