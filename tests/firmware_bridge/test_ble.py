"""BleakTransport wiring, against a stand-in for bleak's public API.

A test against a software BLE peripheral (Bumble) is not possible here: bleak's Linux
backend talks to BlueZ over D-Bus, which needs a kernel HCI device (/dev/vhci), and this
machine has no Bluetooth subsystem. The stand-in checks what our code does with bleak:
allow-list, callbacks, errors, and that a reconnect never doubles notifications.
"""

from __future__ import annotations

import asyncio
import sys
import types

import pytest

from firmware_bridge.ble import BleakTransport, scan
from firmware_bridge.errors import ConnectError, TransportError


class FakeDevice:
    def __init__(self, address, name):
        self.address, self.name = address, name


class FakeAdv:
    def __init__(self, name, rssi, uuids):
        self.local_name, self.rssi, self.service_uuids = name, rssi, uuids


DEVICES = {"AA:BB": FakeDevice("AA:BB", "Polar H10 1234"), "CC:DD": FakeDevice("CC:DD", "Kettle")}


class FakeScanner:
    @staticmethod
    async def discover(timeout, return_adv):
        return {
            "AA:BB": (
                DEVICES["AA:BB"],
                FakeAdv("Polar H10 1234", -60, ["0000180d-0000-1000-8000-00805f9b34fb"]),
            ),
            "CC:DD": (DEVICES["CC:DD"], FakeAdv("Kettle", -40, [])),
        }

    @staticmethod
    async def find_device_by_filter(filterfunc, timeout):
        found = await FakeScanner.discover(timeout, True)
        return next((d for d, adv in found.values() if filterfunc(d, adv)), None)


class FakeClient:
    instances: list[FakeClient] = []

    def __init__(self, device, disconnected_callback):
        self.device, self.on_disc = device, disconnected_callback
        self.is_connected, self.mtu_size, self.notify = False, 232, {}
        self.writes: list[tuple[str, bytes, bool]] = []
        FakeClient.instances.append(self)

    async def connect(self, timeout):
        self.is_connected = True

    async def disconnect(self):
        self.is_connected = False
        self.on_disc(self)

    async def start_notify(self, uuid, callback):
        self.notify[uuid] = callback

    async def stop_notify(self, uuid):
        self.notify.pop(uuid)

    async def write_gatt_char(self, uuid, data, response):
        if uuid == "broken":
            raise OSError("ATT error 0x0e")
        self.writes.append((uuid, bytes(data), response))

    async def read_gatt_char(self, uuid):
        return bytearray(b"\x55")


@pytest.fixture(autouse=True)
def fake_bleak(monkeypatch):
    module = types.ModuleType("bleak")
    module.BleakScanner = FakeScanner
    module.BleakClient = FakeClient
    monkeypatch.setitem(sys.modules, "bleak", module)
    FakeClient.instances.clear()


def test_scan_filters_by_service_and_sorts_by_signal():
    found = asyncio.run(scan(1.0, service_uuids=["0000180D-0000-1000-8000-00805F9B34FB"]))
    assert [d.address for d in found] == ["AA:BB"]
    assert len(asyncio.run(scan(1.0))) == 2


def test_connect_by_name_honours_the_allow_list():
    with pytest.raises(ConnectError):
        asyncio.run(BleakTransport("Kettle", allow_list={"AA:BB"}).connect(1.0))
    t = BleakTransport("Polar H10 1234", allow_list={"AA:BB"})
    asyncio.run(t.connect(1.0))
    assert t.is_connected and t.mtu_size == 232
    with pytest.raises(ConnectError) as err:
        asyncio.run(BleakTransport("EE:FF").connect(1.0))
    assert err.value.address == "EE:FF"
    for target in ("polar h10 1234", "aa:bb"):  # names and addresses in any letter case
        t = BleakTransport(target)
        asyncio.run(t.connect(1.0))
        assert t.is_connected


def test_notifications_writes_and_disconnect_callback():
    async def main():
        t = BleakTransport("AA:BB")
        dropped = []
        t.set_disconnected_callback(lambda: dropped.append(True))
        got = []
        await t.connect(1.0)
        await t.start_notify("data", lambda ts, b: got.append((ts, b)))
        FakeClient.instances[-1].notify["data"](None, bytearray(b"\x01\x02"))
        await t.write("cp", b"\x02\x00", response=True)
        with pytest.raises(TransportError):
            await t.write("broken", b"\x00")
        assert await t.read("bat") == b"\x55"
        await t.disconnect()
        return got, dropped, FakeClient.instances[-1].writes

    got, dropped, writes = asyncio.run(main())
    assert [b for _, b in got] == [b"\x01\x02"] and isinstance(got[0][0], float)
    assert writes == [("cp", b"\x02\x00", True)] and dropped == [True]


def test_a_reconnect_uses_a_fresh_client_so_callbacks_never_double():
    async def main():
        t = BleakTransport("AA:BB")
        got = []
        for _ in range(2):
            await t.connect(1.0)
            await t.start_notify("data", lambda ts, b: got.append(b))
            await t.disconnect()
        FakeClient.instances[-1].notify["data"](None, bytearray(b"\x07"))
        return got

    assert asyncio.run(main()) == [b"\x07"]
    with pytest.raises(TransportError):
        asyncio.run(BleakTransport("AA:BB").write("cp", b"\x00"))


def test_the_allow_list_takes_the_advertised_name_when_the_device_has_none(monkeypatch):
    """Some backends give ``device.name`` None and only advertise a local name; the
    allow-list looked at ``device.name`` alone and refused the strap it found by name."""
    monkeypatch.setitem(DEVICES, "AA:BB", FakeDevice("AA:BB", None))
    t = BleakTransport("Polar H10 1234", allow_list={"polar h10 1234"})
    asyncio.run(t.connect(1.0))
    assert t.is_connected
    with pytest.raises(ConnectError, match="not in the allow-list"):
        asyncio.run(BleakTransport("AA:BB", allow_list={"Kettle"}).connect(1.0))


def test_the_allow_list_ignores_the_case_of_addresses():
    t = BleakTransport("AA:BB", allow_list=["aa:bb"])
    asyncio.run(t.connect(1.0))
    assert t.is_connected


def test_scanner_and_client_errors_become_connect_errors(monkeypatch):
    class AdapterOff(Exception):
        pass

    async def failing_scan(address, timeout):
        raise AdapterOff("Bluetooth device is turned off")

    monkeypatch.setattr(FakeScanner, "find_device_by_filter", staticmethod(failing_scan))
    with pytest.raises(ConnectError) as err:
        asyncio.run(BleakTransport("AA:BB").connect(1.0))
    assert isinstance(err.value.__cause__, AdapterOff) and err.value.address == "AA:BB"
    monkeypatch.undo()

    def failing_client(device, disconnected_callback):
        raise AdapterOff("no adapter")

    fake = types.SimpleNamespace(BleakScanner=FakeScanner, BleakClient=failing_client)
    monkeypatch.setitem(sys.modules, "bleak", fake)
    with pytest.raises(ConnectError):
        asyncio.run(BleakTransport("AA:BB").connect(1.0))


def test_a_new_connect_closes_the_previous_client_and_ignores_its_callbacks():
    async def main():
        t = BleakTransport("AA:BB")
        dropped = []
        t.set_disconnected_callback(lambda: dropped.append(True))
        await t.connect(1.0)
        await t.connect(1.0)  # e.g. after a stream that failed to start
        old, new = FakeClient.instances
        assert not old.is_connected and new.is_connected and dropped == []
        old.on_disc(old)  # the stale link's late disconnection must not end the new one
        assert dropped == []
        new.on_disc(new)
        return dropped

    assert asyncio.run(main()) == [True]


def test_a_failed_start_over_ble_leaves_one_connected_client(monkeypatch):
    from firmware_bridge.profiles import OpenEcgDevice
    from firmware_bridge.session import Backoff, SensorSession

    writes = {"failed": False}
    write = FakeClient.write_gatt_char

    async def fail_first_start(self, uuid, data, response):
        if not writes["failed"]:
            writes["failed"] = True
            raise OSError("ATT error 0x0e")
        await write(self, uuid, data, response)

    monkeypatch.setattr(FakeClient, "write_gatt_char", fail_first_start)

    class Sink:
        def push(self, samples, *, timestamp_s=None, fs=None):
            return []

    async def main():
        t = BleakTransport("AA:BB")
        session = SensorSession(t, OpenEcgDevice(), Sink(), backoff=Backoff(initial_s=0.01))
        task = asyncio.create_task(session.run())
        while session.stats.connects == 0:
            await asyncio.sleep(0.005)
        connected = [c.is_connected for c in FakeClient.instances]
        session.stop()
        stats = await task
        return connected, stats, [c.is_connected for c in FakeClient.instances]

    during, stats, after = asyncio.run(asyncio.wait_for(main(), timeout=5))
    assert during == [False, True] and stats.connect_failures == 1
    assert after == [False, False]  # the end of the run closes the link


def test_a_scan_the_platform_cannot_run_says_what_to_check(monkeypatch):
    """Linux without BlueZ's D-Bus socket: bleak raises a bare FileNotFoundError."""

    async def no_dbus(timeout, return_adv):
        raise FileNotFoundError(2, "No such file or directory")

    monkeypatch.setattr(FakeScanner, "discover", staticmethod(no_dbus))
    with pytest.raises(ConnectError, match="scanning failed: .*BlueZ running") as err:
        asyncio.run(scan(1.0))
    assert isinstance(err.value.__cause__, FileNotFoundError)
