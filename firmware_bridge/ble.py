"""BLE transport on bleak: scan with filters, connect by address or by name from an allow-list.

bleak is imported only here, and only when used: ``pip install 'ecgedge[ble]'``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Collection
from typing import Any

from firmware_bridge.errors import ConnectError, TransportError
from firmware_bridge.transport import FoundDevice, NotifyHandler, Transport

#: What to check when the platform's Bluetooth fails (not the sensor).
BLUETOOTH_HINT = (
    "is Bluetooth on and reachable (Linux: BlueZ running, its D-Bus socket present, this user "
    "allowed to use it; macOS: Bluetooth permission for the terminal)?"
)


def _bleak() -> Any:
    try:
        import bleak
    except ImportError as exc:
        raise ImportError("BLE needs bleak: pip install 'ecgedge[ble]'") from exc
    return bleak


async def scan(
    timeout_s: float = 5.0, *, name_prefix: str | None = None, service_uuids: Collection[str] = ()
) -> list[FoundDevice]:
    """Devices advertising within ``timeout_s``, filtered by name prefix and/or service UUIDs.

    Raises :class:`ConnectError` when the platform's Bluetooth cannot scan (bleak's backend
    errors wrapped, with what to check).
    """
    bleak = _bleak()
    try:
        found = await bleak.BleakScanner.discover(timeout=timeout_s, return_adv=True)
    except Exception as exc:  # bleak raises backend-specific types (a bare OSError on Linux
        # without BlueZ's D-Bus socket)
        raise ConnectError(f"scanning failed: {exc!r}; {BLUETOOTH_HINT}") from exc
    wanted = {u.lower() for u in service_uuids}
    out = []
    for device, adv in found.values():
        name = adv.local_name or device.name
        uuids = tuple(u.lower() for u in adv.service_uuids)
        if name_prefix and not (name or "").startswith(name_prefix):
            continue
        if wanted and not wanted & set(uuids):
            continue
        out.append(FoundDevice(device.address, name, adv.rssi, uuids))
    return sorted(out, key=lambda d: -(d.rssi or -999))


class BleakTransport(Transport):
    """A sensor reached over BLE.

    Parameters
    ----------
    target : a MAC address / platform identifier, or a device name.
    allow_list : if given, only these addresses or names may be connected (a strap in a
        shared room must not be picked up by accident); compared case-insensitively.
    """

    def __init__(self, target: str, *, allow_list: Collection[str] | None = None) -> None:
        super().__init__()
        self.target = target
        self.allow_list = {a.upper() for a in allow_list} if allow_list is not None else None
        self._client: Any = None
        self._local_name: str | None = None  # advertised by the device the last scan found

    @property
    def is_connected(self) -> bool:
        return bool(self._client is not None and self._client.is_connected)

    @property
    def mtu_size(self) -> int:
        return int(self._client.mtu_size) if self.is_connected else 23

    def _allowed(self, address: str, *names: str | None) -> bool:
        """Whether the address or one of the names (the device's, the advertised local
        name) is in the allow-list, in any letter case."""
        seen = {address.upper()} | {n.upper() for n in names if n}  # MACs in either case
        return self.allow_list is None or bool(seen & self.allow_list)

    async def connect(self, timeout_s: float = 10.0) -> None:
        """Find the target and connect; a previous client is disconnected first.

        Raises
        ------
        ConnectError
            Not found, not in the allow-list, or scanning or connecting failed (bleak's
            backend errors are wrapped).
        """
        bleak = _bleak()
        await self._drop_client()  # its handlers and callbacks must not outlive it
        try:
            await self._connect(bleak, timeout_s)
        except ConnectError:
            raise
        except Exception as exc:  # bleak raises backend-specific types
            raise ConnectError(
                f"connecting to {self.target} failed: {exc!r}; {BLUETOOTH_HINT}",
                address=self.target,
            ) from exc

    def _is_target(self, device: Any, adv: Any) -> bool:
        """Whether an advertiser is the target: its address or name, in any letter case (the
        advertised local name is kept for the allow-list: some backends give the device
        none)."""
        names = (device.address, device.name, getattr(adv, "local_name", None))
        found = self.target.upper() in {n.upper() for n in names if n}
        if found:
            self._local_name = getattr(adv, "local_name", None)
        return found

    async def _connect(self, bleak: Any, timeout_s: float) -> None:
        # one scan for the address or the name (two scans took twice the time for a name)
        self._local_name = None
        device = await bleak.BleakScanner.find_device_by_filter(self._is_target, timeout=timeout_s)
        if device is None:
            raise ConnectError(
                f"no device {self.target!r} found within {timeout_s} s", address=self.target
            )
        if not self._allowed(device.address, device.name, self._local_name):
            raise ConnectError(
                f"{device.name} ({device.address}) is not in the allow-list", address=device.address
            )
        self._client = bleak.BleakClient(device, disconnected_callback=self._on_client_lost)
        await self._client.connect(timeout=timeout_s)

    def _on_client_lost(self, client: Any) -> None:
        if client is self._client:  # a replaced client's late callback must not end this link
            self._notify_disconnected()

    async def _drop_client(self) -> None:
        """Forget the current client, disconnecting it (best effort) if it is still up."""
        client, self._client = self._client, None
        if client is not None and client.is_connected:
            with contextlib.suppress(Exception):  # it is being replaced: nothing left to do
                await client.disconnect()

    async def disconnect(self) -> None:
        """Disconnect (the disconnected callback fires); a failure raises TransportError."""
        if self._client is not None:
            try:
                await self._client.disconnect()
            except Exception as exc:
                raise TransportError(
                    f"disconnecting from {self.target} failed: {exc}", address=self.target
                ) from exc

    async def start_notify(self, uuid: str, handler: NotifyHandler) -> None:
        def on_data(_sender: Any, data: bytearray) -> None:
            handler(time.monotonic(), bytes(data))

        await self._call("start_notify", uuid, on_data)

    async def stop_notify(self, uuid: str) -> None:
        await self._call("stop_notify", uuid)

    async def write(self, uuid: str, data: bytes, *, response: bool = True) -> None:
        await self._call("write_gatt_char", uuid, data, response=response)

    async def read(self, uuid: str) -> bytes:
        return bytes(await self._call("read_gatt_char", uuid))

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if not self.is_connected:
            raise TransportError(f"{method}: not connected to {self.target}", address=self.target)
        try:
            return await getattr(self._client, method)(*args, **kwargs)
        except Exception as exc:
            raise TransportError(
                f"{method} on {self.target} failed: {exc}", address=self.target
            ) from exc
