"""A sensor session: connect, stream, survive the radio, hand samples to the SDK.

Notification handlers only enqueue ``(host_time_s, payload)``; one consumer task decodes,
aligns clocks and assembles. A dropped link is reconnected with exponential backoff and the
stream resumes; what was lost in between becomes a flagged gap, never silently joined.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from firmware_bridge.assembler import AssemblyStats, DecodedFrame, FrameAssembler, SampleSink
from firmware_bridge.clock import ClockAligner
from firmware_bridge.errors import BridgeError, DecodeError, ProtocolError
from firmware_bridge.hrs import HeartRateMeasurement, parse_hr_measurement
from firmware_bridge.profiles import Profile
from firmware_bridge.timestamp_guard import TimestampGuard
from firmware_bridge.transport import Transport

_log = logging.getLogger(__name__)

#: RR intervals a session keeps (about 3 h at 60 bpm)
RR_HISTORY = 10_000


@dataclass
class Backoff:
    """Exponential backoff between reconnection attempts, with ±``jitter`` spread."""

    initial_s: float = 0.5
    factor: float = 2.0
    max_s: float = 30.0
    jitter: float = 0.1
    seed: int = 0
    _attempt: int = 0
    _rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not (0 < self.initial_s <= self.max_s and self.factor >= 1 and 0 <= self.jitter < 1):
            raise ValueError("0 < initial_s <= max_s, factor >= 1 and 0 <= jitter < 1 must hold")
        self._rng = np.random.default_rng(self.seed)

    def next_delay_s(self) -> float:
        """The next delay in seconds: ``initial_s * factor**attempt``, at most ``max_s``."""
        delay = min(self.max_s, self.initial_s * self.factor**self._attempt)
        if delay < self.max_s:  # past the cap, factor**attempt would only grow to overflow
            self._attempt += 1
        return float(delay * (1.0 + self.jitter * self._rng.uniform(-1.0, 1.0)))

    def reset(self) -> None:
        """Start again from ``initial_s`` (after a successful connection)."""
        self._attempt = 0


@dataclass
class SessionStats:
    """Everything a session counts."""

    #: ECG data notifications received, and their bytes
    packets: int = 0
    bytes: int = 0
    #: Heart Rate Measurement notifications decoded
    hr_notifications: int = 0
    #: ECG data notifications that did not decode, incl. frames of more samples than the
    #: protocol allows (``Profile.max_frame_samples``); a share of ``packets``
    malformed: int = 0
    #: ECG frames the sensor flagged lead-off (open profile ``LEAD_OFF``): their samples
    #: reach the sink as NaN, which the SDK flags as invalid (a share of ``packets``)
    lead_off_frames: int = 0
    #: Heart Rate Measurement notifications that did not decode
    hr_malformed: int = 0
    #: Heart Rate Measurement notifications with a heart rate of 0, i.e. none (``bpm=None``)
    hr_no_value: int = 0
    #: heart rates outside :data:`~firmware_bridge.hrs.BPM_RANGE` (``bpm=None``,
    #: ``bpm_rejected`` holds the value)
    hr_rejected: int = 0
    #: RR intervals outside :data:`~firmware_bridge.hrs.RR_RANGE_S`, kept out of
    #: ``rr_intervals_s`` (which breaks there)
    rr_rejected: int = 0
    #: Heart Rate Measurement notifications whose last RR interval was cut (one byte left):
    #: their heart rate and whole intervals kept, ``rr_intervals_s`` broken after them
    rr_cut: int = 0
    #: connections ended because no ECG notification came for ``stall_timeout_s`` (the sensor
    #: stopped streaming, e.g. a PMD "measurement stopped" indication, or went silent);
    #: each is followed by a reconnection
    stalls: int = 0
    #: connections that streamed
    connects: int = 0
    #: attempts that failed to connect or to start the stream (incl. a sensor refusing it)
    connect_failures: int = 0
    #: notifications whose handling raised unexpectedly (incl. the ``on_heart_rate`` callback)
    handler_errors: int = 0
    reconnects: int = 0
    #: PMD frames whose corrupted timestamp was rewritten (:mod:`firmware_bridge.timestamp_guard`)
    timestamps_repaired: int = 0
    #: PMD frames dropped because their timestamp was implausible and nothing vouched for it
    timestamps_rejected: int = 0
    #: PMD frames that arrived swapped and were placed in their timestamps' order
    timestamps_reordered: int = 0
    drift_ppm: float = 0.0
    #: samples the source produced after the last one it delivered, so in no gap: the
    #: session ended during an outage, the last frames were lost, or it stopped before the
    #: source's end; ``None`` where the source cannot tell (a live sensor)
    samples_lost_at_end: int | None = None
    assembly: AssemblyStats = field(default_factory=AssemblyStats)

    @property
    def sink_errors(self) -> int:
        """Blocks the sink refused: ``assembly.sink_errors`` (the stream went on)."""
        return self.assembly.sink_errors

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class SensorSession:
    """Stream one sensor into ``sink`` (e.g. a :class:`sdk.pipeline.StreamPipeline`).

    ``sink.push`` receives (n, leads) millivolt blocks at the profile's rate with
    sample-accurate stream timestamps (seconds from the first sample; gaps advance it).

    ``repair_timestamps`` (default on): frames without sequence numbers (Polar PMD) go
    through a :class:`~firmware_bridge.timestamp_guard.TimestampGuard`, which rewrites an
    isolated corrupted sensor timestamp (counted in ``stats.timestamps_repaired``) at the cost
    of holding a frame after each discontinuity until the next frame arrives; ``False``
    places every frame as its timestamp claims.

    ``stall_timeout_s`` (default 10 s; ``None``: never): a connection over which no ECG
    notification arrived for that long is ended and reconnected (counted in
    ``stats.stalls``): a sensor may stop streaming on its own (the H10 indicates "measurement
    stopped" on its control point) or go silent with the link up. Blocks the sink refuses are
    counted in ``stats.assembly.sink_errors``.
    """

    def __init__(
        self,
        transport: Transport,
        profile: Profile,
        sink: SampleSink,
        *,
        backoff: Backoff | None = None,
        on_heart_rate: Callable[[float, HeartRateMeasurement], None] | None = None,
        repair_timestamps: bool = True,
        stall_timeout_s: float | None = 10.0,
    ) -> None:
        if stall_timeout_s is not None and not 0.0 < stall_timeout_s < math.inf:
            raise ValueError(f"stall_timeout_s must be positive and finite, got {stall_timeout_s}")
        self.transport, self.profile, self.sink = transport, profile, sink
        self.stall_timeout_s = stall_timeout_s
        self.backoff = backoff or Backoff()
        self.assembler = FrameAssembler(sink, profile.fs, reorder_depth=profile.reorder_depth)
        self.clock = ClockAligner()
        self.timestamps = (
            TimestampGuard(plausible=self._timestamp_plausible) if repair_timestamps else None
        )
        self.stats = SessionStats(assembly=self.assembler.stats)
        self._failures_in_row = 0  # connection attempts failed since the last stream
        self.on_heart_rate = on_heart_rate
        #: RR intervals (s) from the Heart Rate Service, in arrival order: the RR/Lorenz input;
        #: the most recent ``RR_HISTORY`` only, and NaN where a reconnection or an interval
        #: rejected (out of :data:`~firmware_bridge.hrs.RR_RANGE_S`) broke the series.
        self.rr_intervals_s: deque[float] = deque(maxlen=RR_HISTORY)
        self._queue: asyncio.Queue[tuple[str, float, bytes] | None] = asyncio.Queue()
        self._stopping = False
        self._stop_requested = asyncio.Event()
        self._last_arrival: float | None = None
        self._last_data_s = 0.0  # transport time of the last ECG notification (or of the start)
        self._fresh_link = True  # no frame placed since the link came up

    def stop(self) -> None:
        """Ask :meth:`run` to end now, also while it connects, starts the stream or backs off
        before reconnecting."""
        self._stopping = True
        self._stop_requested.set()

    def _on_notify(self, host_time_s: float, payload: bytes) -> None:
        self._last_data_s = self.transport.now()
        self._queue.put_nowait(("ecg", host_time_s, payload))

    def _on_hr(self, host_time_s: float, payload: bytes) -> None:
        self._queue.put_nowait(("hr", host_time_s, payload))

    async def run(self) -> SessionStats:
        """Connect, stream and reconnect until :meth:`stop` or the source is exhausted.

        At the end, also when cancelled, the sensor is asked to stop streaming and the link
        is closed (best effort), what was received is placed, and the transport is closed
        (which re-raises an error that ended a simulated playback); then
        ``stats.samples_lost_at_end`` takes what the source says it lost at the end.
        """
        consumer = asyncio.create_task(self._consume())
        try:
            while not self._stopping and not self.transport.exhausted:
                dropped = await self._connected_phase()
                if self._stopping or self.transport.exhausted:
                    break
                if dropped:
                    self.stats.reconnects += 1
                    self._queue.put_nowait(("flush", 0.0, b""))  # place frames held for order
                await self._until_stopped(self.transport.sleep(self.backoff.next_delay_s()))
        finally:
            await self._end_link(stop_sensor=True)
            self._queue.put_nowait(None)
            await consumer
            self._handle_safely("flush", 0.0, b"")  # place what is held for order or time
            await self.transport.close()
            self.stats.samples_lost_at_end = self.transport.samples_lost_at_end
        return self.stats

    async def _connected_phase(self) -> bool:
        """One connection: True if it was established and then dropped."""
        lost = asyncio.Event()
        self.transport.set_disconnected_callback(lost.set)
        try:
            started = await self._until_stopped(self._open_stream())
        except BridgeError as exc:
            self.stats.connect_failures += 1
            self._failures_in_row += 1
            # said out loud: a refusal (e.g. "device in charger"), the first failure of a run
            # and every tenth after it; the retries in between at info level
            loud = isinstance(exc, ProtocolError) or self._failures_in_row % 10 == 1
            _log.log(
                logging.WARNING if loud else logging.INFO,
                "no stream (attempt %d in a row): %s",
                self._failures_in_row,
                exc,
            )
            await self._end_link(stop_sensor=False)  # a half-open link must not linger
            return False
        if not started:  # stop() during connect or start: run() ends the link
            return False
        self.stats.connects += 1
        self._failures_in_row = 0
        self.backoff.reset()
        self._last_data_s = self.transport.now()
        await self._until_stopped(self._streaming(lost))
        return lost.is_set()

    async def _streaming(self, lost: asyncio.Event) -> None:
        """Until the link drops; a connection silent for ``stall_timeout_s`` is ended here (and
        so counts as dropped)."""
        while not lost.is_set():
            if self.stall_timeout_s is None:
                await lost.wait()
                return
            silent = self.transport.now() - self._last_data_s
            if silent >= self.stall_timeout_s and not self.transport.exhausted:
                self.stats.stalls += 1
                _log.warning(
                    "no ECG from the sensor for %.1f s with the link up: reconnecting", silent
                )
                await self._end_link(stop_sensor=True)
                lost.set()
                return
            pause = max(self.stall_timeout_s - silent, 0.05)
            waits = (
                asyncio.ensure_future(lost.wait()),
                asyncio.ensure_future(self.transport.sleep(pause)),
            )
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in waits:
                    task.cancel()
                await asyncio.gather(*waits, return_exceptions=True)

    async def _open_stream(self) -> None:
        """Connect, subscribe and ask the sensor to stream."""
        await self.transport.connect()
        self._queue.put_nowait(("link", 0.0, b""))  # ahead of every notification it brings
        await self.transport.start_notify(self.profile.data_uuid, self._on_notify)
        if self.profile.hr_uuid is not None:
            await self.transport.start_notify(self.profile.hr_uuid, self._on_hr)
        await self.profile.start(self.transport)

    async def _until_stopped(self, aw: Awaitable[object]) -> bool:
        """Await ``aw`` unless :meth:`stop` comes first (then ``aw`` is cancelled): True if it
        completed (its exception, if any, is raised). Leaves no task behind."""
        work = asyncio.ensure_future(aw)
        stopper = asyncio.ensure_future(self._stop_requested.wait())
        try:
            await asyncio.wait({work, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            work.cancel()
            stopper.cancel()
            await asyncio.gather(work, stopper, return_exceptions=True)
        if work.cancelled():
            return False
        work.result()
        return True

    async def _end_link(self, *, stop_sensor: bool) -> None:
        """Best effort: ask the sensor to stop streaming (if connected), then disconnect."""
        if stop_sensor and self.transport.is_connected:
            await _quietly(self.profile.stop(self.transport), "stopping the stream")
        await _quietly(self.transport.disconnect(), "disconnecting")

    async def _consume(self) -> None:
        while (item := await self._queue.get()) is not None:
            self._handle_safely(*item)
        while not self._queue.empty():  # drain what arrived before the end
            item = self._queue.get_nowait()
            if item is not None:
                self._handle_safely(*item)

    def _handle_safely(self, kind: str, host_time_s: float, payload: bytes) -> None:
        """One notification; whatever it raises is counted and logged, and the stream goes on
        (a dead consumer would let the queue grow for as long as the sensor streams)."""
        try:
            self._handle(kind, host_time_s, payload)
        except Exception:
            self.stats.handler_errors += 1
            n = self.stats.handler_errors
            if n == 1 or n % 1000 == 0:
                _log.exception("%s notification not handled (%d so far)", kind, n)

    def _handle(self, kind: str, host_time_s: float, payload: bytes) -> None:
        if kind in ("flush", "link"):  # frames held for order or time will not complete
            if self.timestamps is not None:
                self._place_all(self.timestamps.flush())
            self.assembler.reset_sequence()  # a new link may restart or skip sequence numbers
            if kind == "flush":  # the link dropped
                return
            self.clock.new_link()  # a clock that fell behind over the outage restarted
            self._fresh_link = True  # and its first frame may be on a restarted clock
            self._break_rr()  # no RR interval spans a new link
            return
        if kind == "hr":
            self._handle_hr(host_time_s, payload)
            return
        self.stats.packets += 1
        self.stats.bytes += len(payload)
        try:
            frame = self.profile.decode(payload)
            if frame.n > self.profile.max_frame_samples:
                raise DecodeError(
                    f"frame of {frame.n} samples, the protocol allows "
                    f"{self.profile.max_frame_samples}",
                    reason="frame_size",
                )
        except DecodeError:
            self.stats.malformed += 1
            return
        self.stats.lead_off_frames += frame.lead_off
        if self.timestamps is None:
            self._place(frame, host_time_s)
            return
        self._place_all(self.timestamps.push(frame, host_time_s))

    def _timestamp_plausible(self, frame: DecodedFrame, host_time_s: float) -> bool:
        return self.clock.plausible(_last_ns(frame), host_time_s)

    def _place_all(self, frames: list[tuple[DecodedFrame, float]]) -> None:
        for frame, host_time_s in frames:
            self._place(frame, host_time_s)
        if self.timestamps is not None:
            self.stats.timestamps_repaired = self.timestamps.repaired
            self.stats.timestamps_rejected = self.timestamps.rejected
            self.stats.timestamps_reordered = self.timestamps.reordered

    def _place(self, frame: DecodedFrame, host_time_s: float) -> None:
        """Clock alignment and assembly of one frame, in stream order.

        After a sensor clock reset the gap is the host time since the last frame placed, less
        this frame's duration: both frames are stamped at their last sample, so the gap is
        exact when both took the same link delay, and off by the difference otherwise."""
        if not self._fresh_link and self.assembler.drop_stale(frame):
            return  # a repeat or a late frame, counted: its old timestamp is no clock restart
        self._fresh_link = False
        last_ns = _last_ns(frame)
        reset_gap = None
        if self.clock.update(last_ns, host_time_s):
            since = 0.0 if self._last_arrival is None else host_time_s - self._last_arrival
            reset_gap = max(0.0, since - frame.n / frame.fs)
        self._last_arrival = host_time_s
        self.assembler.add(frame, clock_reset_gap_s=reset_gap)
        self.stats.drift_ppm = self.clock.drift_ppm

    def _handle_hr(self, host_time_s: float, payload: bytes) -> None:
        try:
            measurement = parse_hr_measurement(payload)
        except DecodeError:
            self.stats.hr_malformed += 1
            return
        self.stats.hr_notifications += 1
        self.stats.hr_no_value += measurement.bpm is None and measurement.bpm_rejected is None
        self.stats.hr_rejected += measurement.bpm_rejected is not None
        self.stats.rr_rejected += len(measurement.rr_rejected_s)
        self.stats.rr_cut += measurement.rr_cut
        for rr in measurement.rr_in_order():  # the series breaks where one was rejected
            if math.isnan(rr):
                self._break_rr()
            else:
                self.rr_intervals_s.append(rr)
        if self.on_heart_rate is not None:
            self.on_heart_rate(host_time_s, measurement)

    def _break_rr(self) -> None:
        """Mark a break in ``rr_intervals_s`` (one NaN, never two in a row, none first)."""
        if self.rr_intervals_s and not math.isnan(self.rr_intervals_s[-1]):
            self.rr_intervals_s.append(math.nan)


#: Longest wait for one clean-up step (stop the sensor, disconnect) on a half-dead link.
CLEANUP_TIMEOUT_S = 5.0


async def _quietly(aw: Awaitable[object], what: str) -> None:
    """Await a clean-up step for at most :data:`CLEANUP_TIMEOUT_S`; a failure or a timeout is
    logged, never raised (the link may be gone)."""
    try:
        await asyncio.wait_for(aw, CLEANUP_TIMEOUT_S)
    except Exception as exc:  # any backend error or the timeout: nothing is left to do
        _log.info("%s failed: %r", what, exc)


def _last_ns(frame: DecodedFrame) -> int:
    """Sensor time of a frame's last sample (what a PMD frame is stamped with)."""
    return frame.first_ns + int(round((frame.n - 1) * 1e9 / frame.fs))
