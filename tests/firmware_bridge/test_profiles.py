"""Profiles: starting a Polar H10 stream reads the sensor's answer."""

from __future__ import annotations

import asyncio

import pytest

from firmware_bridge.errors import ProtocolError, TransportError
from firmware_bridge.profiles import PolarH10
from tests.firmware_bridge.fake_link import FakeLink


def start(link: FakeLink, timeout_s: float = 5.0) -> None:
    async def main() -> None:
        await link.connect()
        profile = PolarH10()
        profile.response_timeout_s = timeout_s
        await profile.start(link)

    asyncio.run(main())


@pytest.mark.parametrize("status", [0, 6])  # success, "already in state"
def test_h10_start_succeeds_on_success_or_already_streaming(status):
    start(FakeLink(pmd_status=status))


def test_h10_start_refused_raises_protocol_error_with_the_status():
    with pytest.raises(ProtocolError) as err:
        start(FakeLink(pmd_status=13))  # "device in charger"
    assert err.value.code == 13 and err.value.op_code == 0x02


def test_h10_start_without_an_answer_times_out_as_a_transport_error():
    with pytest.raises(TransportError, match="no answer"):
        start(FakeLink(pmd_status=None), timeout_s=0.05)
