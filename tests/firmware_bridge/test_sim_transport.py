"""SimulatedTransport and the virtual sensors: a playback that fails ends the session."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from firmware_bridge.open_profile import FORMAT_INT16
from firmware_bridge.profiles import OpenEcgDevice, PolarH10
from firmware_bridge.session import Backoff, SensorSession
from firmware_bridge.sim_transport import SimulatedTransport
from firmware_bridge.simulator import Impairments, VirtualH10, VirtualOpenDevice


class Sink:
    def push(self, samples, *, timestamp_s=None, fs=None):
        return []


class BrokenH10(VirtualH10):
    """Its encoder fails on frame 3."""

    def encode(self, k, first_index, chunk, epoch_ns):
        if k == 3:
            raise RuntimeError("encoder bug")
        return super().encode(k, first_index, chunk, epoch_ns)


def test_a_failing_playback_ends_the_session_with_its_error():
    transport = SimulatedTransport(BrokenH10(np.zeros(130 * 20), 130.0), speed=100.0)
    session = SensorSession(transport, PolarH10(), Sink())
    with pytest.raises(RuntimeError, match="encoder bug"):
        asyncio.run(asyncio.wait_for(session.run(), timeout=5))
    assert transport.exhausted and not transport.is_connected


def test_an_open_device_clock_reset_at_a_rate_off_the_microsecond_grid_plays_to_the_end():
    sensor = VirtualOpenDevice(np.sin(np.arange(130 * 60) / 10.0), 130.0, fs=130.0, frame_samples=7)
    imp = Impairments(disconnect_every_s=10.0, outage_s=1.0, time_reset_on_reconnect=True)
    transport = SimulatedTransport(sensor, imp, speed=200.0)
    session = SensorSession(
        transport, OpenEcgDevice(fs=130.0), Sink(), backoff=Backoff(initial_s=0.25, max_s=1.0)
    )
    stats = asyncio.run(asyncio.wait_for(session.run(), timeout=10))
    assert transport.sent == -(-sensor.samples_uv.shape[0] // 7)  # every frame was played
    assert stats.reconnects >= 4 and stats.assembly.time_resets >= 1


def test_virtual_sensors_refuse_signals_their_frames_cannot_carry():
    spike = np.zeros(130 * 5)
    spike[365] = 9.0  # mV: beyond the 14 bits of a compressed H10 frame
    with pytest.raises(ValueError, match="-8192 to 8191 µV"):
        VirtualH10(spike, 130.0, compressed=True)
    VirtualH10(spike, 130.0)  # raw frames carry 24 bits
    with pytest.raises(ValueError, match="-32768 to 32767 µV"):
        VirtualOpenDevice(spike * 4, 130.0, fs=130.0, sample_format=FORMAT_INT16)
