"""An in-process transport that plays a :class:`~firmware_bridge.simulator.VirtualSensor`.

Time is virtual: ``now()`` runs ``speed`` times faster than the event loop's clock, and
notification handlers receive the virtual arrival time, so a run is deterministic for a
given seed whatever the speed. Speed 0 plays as fast as possible on a
:class:`VirtualTimeLoop`, whose clock only moves when every task waits for a timer: the
host's computing then takes no simulated time, so an outage costs the signal it would in
real time (a large speed counts each millisecond the host computes, e.g. a pipeline's
inference, as ``speed`` milliseconds, and an outage goes on for as long).
"""

from __future__ import annotations

import asyncio
import math
import selectors
import sys
from collections.abc import Coroutine
from typing import Any

import numpy as np

from firmware_bridge.errors import ConnectError, TransportError
from firmware_bridge.simulator import Impairments, VirtualSensor
from firmware_bridge.transport import NotifyHandler, T, Transport

#: How long a connection attempt takes to fail while the sensor is out of reach (s).
CONNECT_TIMEOUT_S = 0.5


class _JumpingSelector(selectors.DefaultSelector):
    """Polls without blocking; when nothing is pending, advances :attr:`now` by the time the
    event loop would have waited for its next timer."""

    now = 0.0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:  # no timer: only I/O (a thread or a signal) can wake the loop
            return super().select(None)
        events = super().select(0)
        if not events:
            self.now += timeout
        return events


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on simulated time: whenever no callback is ready, its clock jumps to
    the next timer instead of waiting for it. Sleeps and timeouts take no wall time, and
    computing takes no loop time."""

    def __init__(self) -> None:
        self._jumping = _JumpingSelector()
        super().__init__(self._jumping)

    def time(self) -> float:
        return self._jumping.now


class SimulatedTransport(Transport):
    """Notifications of ``sensor`` over an impaired link at ``speed`` × real time, or with
    ``speed`` 0 as fast as possible on virtual time (run the session with :meth:`run`)."""

    def __init__(
        self, sensor: VirtualSensor, impairments: Impairments | None = None, *, speed: float = 1.0
    ) -> None:
        super().__init__()
        if not 0 <= speed < math.inf:
            raise ValueError(f"speed must be finite and >= 0, got {speed}")
        self.sensor, self.imp, self.speed = sensor, impairments or Impairments(), float(speed)
        #: simulated seconds per second of the event loop's clock (virtual itself at speed 0)
        self._scale = self.speed or 1.0
        self._delivered_end = 0  # sample index just past the last data frame delivered
        self._handlers: dict[str, NotifyHandler] = {}
        self._connected = False
        self._streaming = False
        self._outage_until = -math.inf
        self._t0: float | None = None
        self._task: asyncio.Task[None] | None = None
        self.sent = 0
        self.delivered = 0
        self.lost_on_air = 0
        self.lost_while_down = 0
        self.timestamp_glitches = 0

    # -- clock ---------------------------------------------------------------------------------
    def now(self) -> float:
        if self._t0 is None:
            return 0.0
        return (asyncio.get_running_loop().time() - self._t0) * self._scale

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self._scale)

    def run(self, main: Coroutine[Any, Any, T]) -> T:
        """Run ``main`` to completion as :func:`asyncio.run` does; at speed 0 on a new
        :class:`VirtualTimeLoop`."""
        if self.speed:
            return super().run(main)
        if sys.version_info >= (3, 11):  # Ctrl-C cancels main, as in asyncio.run
            with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
                return runner.run(main)
        loop = VirtualTimeLoop()  # Python 3.10 (as its asyncio.run: Ctrl-C raises where it hits)
        try:
            return loop.run_until_complete(main)
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    # -- Transport -----------------------------------------------------------------------------
    @property
    def is_connected(self) -> bool:
        return self._connected

    @property
    def mtu_size(self) -> int:
        return 247

    async def connect(self, timeout_s: float = 10.0) -> None:
        if self.exhausted:
            raise ConnectError("the simulated recording has ended")
        if self._t0 is None:
            loop = asyncio.get_running_loop()
            if not self.speed and not isinstance(loop, VirtualTimeLoop):
                raise RuntimeError("speed 0 plays on virtual time: run the session with run()")
            self._t0 = loop.time()
            self._task = asyncio.create_task(self._play())
        if self.now() < self._outage_until:
            await self.sleep(min(CONNECT_TIMEOUT_S, timeout_s))
            raise ConnectError("sensor out of reach (simulated outage)")
        self._connected = True

    async def disconnect(self) -> None:
        self._connected = self._streaming = False

    async def start_notify(self, uuid: str, handler: NotifyHandler) -> None:
        self._require_connected("start_notify")
        self._handlers[uuid] = handler  # replaces: a reconnect never doubles callbacks

    async def stop_notify(self, uuid: str) -> None:
        self._handlers.pop(uuid, None)

    async def write(self, uuid: str, data: bytes, *, response: bool = True) -> None:
        self._require_connected("write")
        if uuid == self.sensor.control_uuid:
            if self.sensor.is_start(data):
                self._streaming = True
            elif self.sensor.is_stop(data):
                self._streaming = False
            answer = self.sensor.answer(data)
            if answer is not None:
                self._deliver(self.now(), answer, uuid)

    async def read(self, uuid: str) -> bytes:
        self._require_connected("read")
        raise TransportError(f"characteristic {uuid} is not readable on the simulated sensor")

    async def close(self) -> None:
        """End the playback; re-raise the exception that ended it early, if one did."""
        await super().close()
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        await asyncio.wait({task})
        error = None if task.cancelled() else task.exception()
        if error is not None:
            raise error

    def _require_connected(self, what: str) -> None:
        if not self._connected:
            raise TransportError(f"{what}: not connected")

    # -- playback ------------------------------------------------------------------------------
    async def _play(self) -> None:
        """Send the recording at the sensor's pace; however it ends, the link goes down, the
        source counts as exhausted and the samples after the last frame delivered count as
        lost at the end (an error stays in the task for :meth:`close`)."""
        try:
            await self._send_all()
        finally:
            self.exhausted = True
            self.samples_lost_at_end = self.sensor.samples_uv.shape[0] - self._delivered_end
            self._connected = self._streaming = False
            self._notify_disconnected()

    async def _send_all(self) -> None:
        imp, fs = self.imp, self.sensor.fs
        rng = np.random.default_rng(imp.seed)
        rate = 1.0 + imp.drift_ppm * 1e-6
        next_drop = imp.disconnect_every_s or math.inf
        epoch_ns, last_arrival = 0, 0.0
        frames = list(self.sensor.frames())
        side = list(self.sensor.side_notifications())  # (sample index, uuid, payload), sorted
        for i, frame in enumerate(frames):
            send = (frame.first_index + frame.n) / fs / rate  # sensor clock → host clock
            while side and side[0][0] <= frame.first_index + frame.n:
                _, uuid, data = side.pop(0)
                if self._connected and rng.random() >= imp.loss:
                    self._deliver(send, data, uuid)
            if send >= next_drop:
                next_drop += imp.disconnect_every_s
                self._drop_link(send)
                if imp.time_reset_on_reconnect:  # the clock restarts near its start, in whole
                    epoch_ns = -round(frame.first_index * 1e6 / fs) * 1000  # µs (open profile)
            payload = frame.payload if epoch_ns == 0 else self.sensor.encode_at(i, frame, epoch_ns)
            self.sent += 1
            await asyncio.sleep(max(0.0, send - self.now()) / self._scale)  # the sensor's pace
            if not (self._connected and self._streaming):
                self.lost_while_down += 1
                continue
            if rng.random() < imp.loss:
                self.lost_on_air += 1
                continue
            delay = (
                imp.base_latency_ms / 1000.0 + rng.exponential(imp.jitter_ms / 1000.0)
                if imp.jitter_ms
                else imp.base_latency_ms / 1000.0
            )
            arrival = max(last_arrival, send + delay)
            last_arrival = arrival
            if rng.random() < imp.corrupt:
                payload = self._corrupt(payload, rng)
            if imp.timestamp_glitch and rng.random() < imp.timestamp_glitch:  # no draw at 0
                payload = self._flip_timestamp_bit(payload, int(rng.integers(0, 64)))
                self.timestamp_glitches += 1
            await asyncio.sleep(max(0.0, arrival - self.now()) / self._scale)
            copies = 2 if rng.random() < imp.duplicate else 1
            for _ in range(copies):
                if self._deliver(arrival, payload, self.sensor.data_uuid):
                    self._delivered_end = frame.first_index + frame.n

    def _drop_link(self, at: float) -> None:
        was_up = self._connected
        self._connected = self._streaming = False
        self._outage_until = at + self.imp.outage_s
        if was_up:
            self._notify_disconnected()

    def _deliver(self, arrival: float, payload: bytes, uuid: str) -> bool:
        """Hand ``payload`` to the handler of ``uuid`` if the link is up: True if it was."""
        handler = self._handlers.get(uuid)
        if handler is None or not self._connected:
            return False
        self.delivered += int(uuid == self.sensor.data_uuid)
        handler(arrival, payload)
        return True

    def _flip_timestamp_bit(self, payload: bytes, bit: int) -> bytes:
        data = bytearray(payload)
        field = self.sensor.timestamp_field
        if len(data) >= field.stop:
            stamp = int.from_bytes(data[field], "little") ^ (1 << bit)
            data[field] = stamp.to_bytes(8, "little")
        return bytes(data)

    @staticmethod
    def _corrupt(payload: bytes, rng: np.random.Generator) -> bytes:
        data = bytearray(payload)
        if rng.random() < 0.5:
            return bytes(data[: int(rng.integers(0, len(data)))])  # truncated
        pos = int(rng.integers(0, len(data)))
        data[pos] ^= int(rng.integers(1, 256))
        return bytes(data)
