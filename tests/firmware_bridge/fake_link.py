"""A scripted sensor link for session tests: what the session asks, in order, and a script
of what the sensor sends back (Polar PMD or the open profile)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from firmware_bridge import open_profile, polar_pmd
from firmware_bridge.errors import ConnectError, TransportError
from firmware_bridge.transport import NotifyHandler, Transport

#: ``script(link, connection)``: runs as a task once connection ``connection`` (from 1)
#: started the stream; it sends notifications and ends with ``drop`` or ``end``.
Script = Callable[["FakeLink", int], Awaitable[None]]


class FakeLink(Transport):
    """A sensor that answers at once; ``events`` records what the session did.

    ``pmd_status``: status of the PMD answer to a start request (None: no answer);
    ``fail_starts``: how many start requests fail with a TransportError;
    ``during_start(link, connection)``: runs inside the start request, before its answer;
    ``reachable``: False makes every connect fail; ``sleep`` backs off on the real clock
    only when ``real_sleep`` is set.
    """

    def __init__(
        self,
        script: Script | None = None,
        *,
        pmd_status: int | None = 0,
        fail_starts: int = 0,
        during_start: Callable[[FakeLink, int], None] | None = None,
        reachable: bool = True,
        real_sleep: bool = False,
    ) -> None:
        super().__init__()
        self.script, self.pmd_status, self.fail_starts = script, pmd_status, fail_starts
        self.during_start, self.reachable, self.real_sleep = during_start, reachable, real_sleep
        self.handlers: dict[str, NotifyHandler] = {}
        self.events: list[str] = []
        self.connections = 0
        self.up = False
        self.tasks: list[asyncio.Task[None]] = []  # referenced, so never garbage-collected

    @property
    def is_connected(self) -> bool:
        return self.up

    async def connect(self, timeout_s: float = 10.0) -> None:
        if not self.reachable:
            raise ConnectError("not found")
        self.up = True
        self.connections += 1
        self.events.append("connect")

    async def disconnect(self) -> None:
        self.up = False
        self.events.append("disconnect")

    async def start_notify(self, uuid: str, handler: NotifyHandler) -> None:
        self.handlers[uuid] = handler

    async def stop_notify(self, uuid: str) -> None:
        self.handlers.pop(uuid, None)

    async def read(self, uuid: str) -> bytes:
        return b""

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds if self.real_sleep else 0.0)

    async def write(self, uuid: str, data: bytes, *, response: bool = True) -> None:
        if _is_stop(uuid, data):
            self.events.append("stop")
            return
        if not _is_start(uuid, data):
            return
        if self.fail_starts:
            self.fail_starts -= 1
            self.events.append("start failed")
            raise TransportError("ATT error 0x0e")
        self.events.append("start")
        if self.during_start is not None:
            self.during_start(self, self.connections)
            await asyncio.sleep(0.001)  # the write's round trip: the session's consumer runs
        if uuid == polar_pmd.PMD_CONTROL_POINT_UUID and self.pmd_status is not None:
            self.notify(uuid, bytes((0xF0, data[0], data[1], self.pmd_status, 0)))
        if self.script is not None and self.pmd_status in (0, 6):
            task = asyncio.get_running_loop().create_task(self.script(self, self.connections))
            self.tasks.append(task)

    def notify(self, uuid: str, payload: bytes, host_time_s: float = 0.0) -> None:
        """The sensor sends one notification (or indication)."""
        self.handlers[uuid](host_time_s, payload)

    def drop(self) -> None:
        """The link drops."""
        self.up = False
        self._notify_disconnected()

    def end(self) -> None:
        """The link drops and the sensor is gone for good."""
        self.exhausted = True
        self.drop()


def _is_start(uuid: str, data: bytes) -> bool:
    if uuid == polar_pmd.PMD_CONTROL_POINT_UUID:
        return data[:1] == bytes((polar_pmd.OpCode.REQUEST_MEASUREMENT_START,))
    return uuid == open_profile.OPEN_ECG_CONTROL_UUID and data == open_profile.start_command()


def _is_stop(uuid: str, data: bytes) -> bool:
    if uuid == polar_pmd.PMD_CONTROL_POINT_UUID:
        return data[:1] == bytes((polar_pmd.OpCode.STOP_MEASUREMENT,))
    return uuid == open_profile.OPEN_ECG_CONTROL_UUID and data == open_profile.stop_command()
