"""An in-process transport that plays a :class:`~firmware_bridge.simulator.VirtualSensor`.

Time is virtual: ``now()`` runs ``speed`` times faster than the event loop's clock, and
notification handlers receive the virtual arrival time, so a run is deterministic for a
given seed whatever the speed.
"""

from __future__ import annotations

import asyncio
import math

import numpy as np

from firmware_bridge.errors import ConnectError, TransportError
from firmware_bridge.simulator import Impairments, VirtualSensor
from firmware_bridge.transport import NotifyHandler, Transport

#: How long a connection attempt takes to fail while the sensor is out of reach (s).
CONNECT_TIMEOUT_S = 0.5


class SimulatedTransport(Transport):
    """Notifications of ``sensor`` over an impaired link; ``speed`` × real time (> 0)."""

    def __init__(
        self, sensor: VirtualSensor, impairments: Impairments | None = None, *, speed: float = 1.0
    ) -> None:
        super().__init__()
        if not speed > 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self.sensor, self.imp, self.speed = sensor, impairments or Impairments(), float(speed)
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
        return (asyncio.get_running_loop().time() - self._t0) * self.speed

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.speed)

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
            self._t0 = asyncio.get_running_loop().time()
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
        """Send the recording at the sensor's pace; however it ends, the link goes down and
        the source counts as exhausted (an error stays in the task for :meth:`close`)."""
        try:
            await self._send_all()
        finally:
            self.exhausted = True
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
            await asyncio.sleep(max(0.0, send - self.now()) / self.speed)  # the sensor's pace
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
            await asyncio.sleep(max(0.0, arrival - self.now()) / self.speed)
            copies = 2 if rng.random() < imp.duplicate else 1
            for _ in range(copies):
                self._deliver(arrival, payload, self.sensor.data_uuid)

    def _drop_link(self, at: float) -> None:
        was_up = self._connected
        self._connected = self._streaming = False
        self._outage_until = at + self.imp.outage_s
        if was_up:
            self._notify_disconnected()

    def _deliver(self, arrival: float, payload: bytes, uuid: str) -> None:
        handler = self._handlers.get(uuid)
        if handler is not None and self._connected:
            self.delivered += int(uuid == self.sensor.data_uuid)
            handler(arrival, payload)

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
