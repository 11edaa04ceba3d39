"""Transports: one small interface over backends (BLE through bleak, or in-process simulation).

As in bleak, the facade is thin and the backend is chosen by the caller; a notification
handler only receives ``(host_time_s, payload)`` and must return quickly (sessions just
enqueue it and decode in a consumer task).
"""

from __future__ import annotations

import abc
import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

#: ``handler(host_time_s, payload)``: host monotonic time of arrival and the notification bytes.
NotifyHandler = Callable[[float, bytes], None]

T = TypeVar("T")


@dataclass(frozen=True)
class FoundDevice:
    """A sensor seen in a scan."""

    address: str
    name: str | None
    rssi: int | None
    service_uuids: tuple[str, ...] = ()


class Transport(abc.ABC):
    """A connection to one sensor's GATT server. Not thread-safe; use from one event loop."""

    #: True once a finite source (a simulated recording) has nothing more to send.
    exhausted: bool = False
    #: Once a finite source has ended: the samples it produced after the last one it
    #: delivered (the link was down or lost them at the end, or the session stopped before
    #: the source's end). ``None`` where the source cannot tell (a live sensor).
    samples_lost_at_end: int | None = None

    def __init__(self) -> None:
        self._on_disconnect: Callable[[], None] | None = None

    def now(self) -> float:
        """The transport's clock in seconds (host monotonic; virtual for a simulation)."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """Sleep on the transport's clock (sessions back off with it)."""
        await asyncio.sleep(seconds)

    def run(self, main: Coroutine[Any, Any, T]) -> T:
        """Run ``main`` (e.g. a session over this transport) to completion on a new event
        loop whose clock suits the transport: :func:`asyncio.run` here."""
        return asyncio.run(main)

    @property
    @abc.abstractmethod
    def is_connected(self) -> bool: ...

    @property
    def mtu_size(self) -> int:
        """ATT MTU in bytes (23 until negotiated)."""
        return 23

    @abc.abstractmethod
    async def connect(self, timeout_s: float = 10.0) -> None:
        """Connect; raise :class:`~firmware_bridge.errors.ConnectError` on failure."""

    @abc.abstractmethod
    async def disconnect(self) -> None: ...

    @abc.abstractmethod
    async def start_notify(self, uuid: str, handler: NotifyHandler) -> None: ...

    @abc.abstractmethod
    async def stop_notify(self, uuid: str) -> None: ...

    @abc.abstractmethod
    async def write(self, uuid: str, data: bytes, *, response: bool = True) -> None: ...

    @abc.abstractmethod
    async def read(self, uuid: str) -> bytes: ...

    async def close(self) -> None:
        """Release what outlives a link (the disconnected callback; a simulation's playback).

        Sessions call it last, after disconnecting.
        """
        self._on_disconnect = None

    def set_disconnected_callback(self, callback: Callable[[], None] | None) -> None:
        """Called once per unexpected or requested disconnection."""
        self._on_disconnect = callback

    def _notify_disconnected(self) -> None:
        if self._on_disconnect is not None:
            self._on_disconnect()
