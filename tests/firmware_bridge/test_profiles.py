"""Profiles: starting a Polar H10 stream reads the sensor's answer."""

from __future__ import annotations

import asyncio

import pytest

from firmware_bridge.errors import ProtocolError, TransportError
from firmware_bridge.polar_pmd import PMD_CONTROL_POINT_UUID
from firmware_bridge.profiles import PolarH10
from tests.firmware_bridge.fake_link import FakeLink


def start(link: FakeLink, timeout_s: float = 5.0) -> None:
    async def main() -> None:
        await link.connect()
        profile = PolarH10()
        profile.response_timeout_s = timeout_s
        await profile.start(link)

    asyncio.run(main())


class WriteRecordingLink(FakeLink):
    """A :class:`FakeLink` that also keeps every write: (characteristic, bytes)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.writes: list[tuple[str, bytes]] = []

    async def write(self, uuid: str, data: bytes, *, response: bool = True) -> None:
        self.writes.append((uuid, bytes(data)))
        await super().write(uuid, data, response=response)


#: the H10 ECG start request: op 0x02, type ECG, 130 Hz, 14 bits (Polar's polar-ble-sdk)
H10_ECG_START = bytes.fromhex("02 00 00 01 82 00 01 01 0e 00")


@pytest.mark.parametrize("status", [0, 6])  # success, "already in state"
def test_h10_start_succeeds_on_success_or_already_streaming(status):
    link = WriteRecordingLink(pmd_status=status)
    start(link)  # returns: the answer was read and accepted
    assert link.events == ["connect", "start"]  # one start request, no stop
    assert link.writes == [(PMD_CONTROL_POINT_UUID, H10_ECG_START)]
    assert PMD_CONTROL_POINT_UUID in link.handlers  # the answer comes as an indication


def test_h10_start_refused_raises_protocol_error_with_the_status():
    with pytest.raises(ProtocolError) as err:
        start(FakeLink(pmd_status=13))  # "device in charger"
    assert err.value.code == 13 and err.value.op_code == 0x02


def test_h10_start_without_an_answer_times_out_as_a_transport_error():
    with pytest.raises(TransportError, match="no answer"):
        start(FakeLink(pmd_status=None), timeout_s=0.05)
