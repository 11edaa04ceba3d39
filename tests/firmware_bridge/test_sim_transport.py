"""SimulatedTransport and the virtual sensors: a playback that fails ends the session;
speed 0 plays on virtual time; what is lost at the end of a playback is counted."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from firmware_bridge.open_profile import FORMAT_INT16
from firmware_bridge.profiles import OpenEcgDevice, PolarH10
from firmware_bridge.session import Backoff, SensorSession, SessionStats
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
    transport = SimulatedTransport(BrokenH10(np.zeros(130 * 20), 130.0), speed=0.0)
    session = SensorSession(transport, PolarH10(), Sink())
    with pytest.raises(RuntimeError, match="encoder bug"):  # not a timeout (simulated seconds)
        transport.run(asyncio.wait_for(session.run(), timeout=1000))
    assert transport.exhausted and not transport.is_connected


def test_an_open_device_clock_reset_at_a_rate_off_the_microsecond_grid_plays_to_the_end():
    sensor = VirtualOpenDevice(np.sin(np.arange(130 * 60) / 10.0), 130.0, fs=130.0, frame_samples=7)
    imp = Impairments(disconnect_every_s=10.0, outage_s=1.0, time_reset_on_reconnect=True)
    transport = SimulatedTransport(sensor, imp, speed=0.0)
    session = SensorSession(
        transport, OpenEcgDevice(fs=130.0), Sink(), backoff=Backoff(initial_s=0.25, max_s=1.0)
    )
    stats = transport.run(asyncio.wait_for(session.run(), timeout=1000))  # simulated seconds
    assert transport.sent == -(-sensor.samples_uv.shape[0] // 7)  # every frame was played
    # deterministic on virtual time: a drop every 10 s, each but the last (at the end) followed
    # by a clock reset
    assert stats.reconnects == 6 and stats.assembly.time_resets == 5
    assert _accounted(stats) == sensor.samples_uv.shape[0]


def test_virtual_sensors_refuse_signals_their_frames_cannot_carry():
    spike = np.zeros(130 * 5)
    spike[365] = 9.0  # mV: beyond the 14 bits of a compressed H10 frame
    with pytest.raises(ValueError, match="-8192 to 8191 µV"):
        VirtualH10(spike, 130.0, compressed=True)
    VirtualH10(spike, 130.0)  # raw frames carry 24 bits
    with pytest.raises(ValueError, match="-32768 to 32767 µV"):
        VirtualOpenDevice(spike * 4, 130.0, fs=130.0, sample_format=FORMAT_INT16)


class SlowSink(Sink):
    """Takes ``seconds`` of wall time per block, as a pipeline's inference does."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def push(self, samples, *, timestamp_s=None, fs=None):
        time.sleep(self.seconds)
        return []


def _accounted(stats: SessionStats) -> int:
    """Samples placed, in flagged gaps, or lost at the end."""
    a = stats.assembly
    assert stats.samples_lost_at_end is not None
    return a.samples + a.samples_lost + stats.samples_lost_at_end


def test_the_virtual_time_loop_jumps_over_waits_and_not_over_computing():
    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await asyncio.sleep(3600.0)
        slept = loop.time() - t0
        time.sleep(0.05)  # computing
        return slept, loop.time() - t0 - slept

    wall = time.perf_counter()
    slept, computed = SimulatedTransport(VirtualH10(np.zeros(130), 130.0), speed=0.0).run(main())
    assert slept == pytest.approx(3600.0) and computed == 0.0
    assert time.perf_counter() - wall < 60.0  # far from the hour slept, even on a loaded host


def test_at_speed_0_outages_lose_the_same_signal_however_slow_the_host():
    """A drop every 10 s with a 1 s outage costs the outage, the reconnection backoff and the
    frames on either side, in simulated time, whether each block takes the sink no time or
    20 ms (which at 5000× was 100 s of simulated signal lost)."""
    signal = np.sin(np.arange(130 * 45) / 10.0)
    imp = Impairments(disconnect_every_s=10.0, outage_s=1.0)
    runs = []
    for sink in (Sink(), SlowSink(0.02)):
        transport = SimulatedTransport(VirtualH10(signal, 130.0), imp, speed=0.0)
        backoff = Backoff(initial_s=0.25, max_s=1.0)
        stats = transport.run(SensorSession(transport, PolarH10(), sink, backoff=backoff).run())
        runs.append(stats)
    fast, slow = runs
    assert slow == fast  # deterministic: the host's speed changes nothing
    a = fast.assembly
    assert fast.reconnects == a.gaps == 4
    assert a.samples_lost <= 4 * 3.0 * 130  # 1 s outage + < 0.5 s backoff + 2 frames each
    assert _accounted(fast) == signal.size


def test_speed_0_outside_the_virtual_time_loop_is_refused():
    transport = SimulatedTransport(VirtualH10(np.zeros(130 * 5), 130.0), speed=0.0)
    session = SensorSession(transport, PolarH10(), Sink())
    with pytest.raises(RuntimeError, match="virtual time"):
        asyncio.run(session.run())


@pytest.mark.parametrize("speed", [0.0, 200.0])  # virtual time, and wall time at 200×
def test_a_playback_ending_during_an_outage_counts_its_lost_tail(speed):
    """The link drops 2 s before the end and stays down past it: the frames after the drop
    are in no gap (no frame follows them), so they are counted as lost at the end.

    The same at both speeds: the drop falls on a frame's send time, and the outage outlasts
    the recording by far, so even a stalled host at 200× cannot reconnect before its end."""
    signal = np.sin(np.arange(130 * 30) / 10.0)
    imp = Impairments(disconnect_every_s=28.0, outage_s=3600.0)
    transport = SimulatedTransport(VirtualH10(signal, 130.0), imp, speed=speed)
    stats = transport.run(SensorSession(transport, PolarH10(), Sink()).run())
    assert stats.assembly.gaps == 0
    assert stats.samples_lost_at_end == signal.size - stats.assembly.samples
    # 2 s, to a frame: frame 49 (samples 3577-3649) is the first sent at or after 28 s
    assert 2 * 130 - 73 <= stats.samples_lost_at_end <= 2 * 130 + 73
    assert stats.samples_lost_at_end == signal.size - 49 * 73  # frames 49-53, exactly
    assert transport.lost_while_down == 5


def test_a_session_stopped_early_counts_the_rest_of_the_recording_as_lost_at_end():
    signal = np.sin(np.arange(130 * 30) / 10.0)
    transport = SimulatedTransport(VirtualH10(signal, 130.0), speed=0.0)
    session = SensorSession(transport, PolarH10(), Sink())

    async def stop_after_10_s() -> SessionStats:
        run = asyncio.create_task(session.run())
        await transport.sleep(10.0)
        session.stop()
        return await run

    stats = transport.run(stop_after_10_s())
    assert stats.assembly.samples == 17 * 73  # the frames sent in the first 10 s
    assert stats.samples_lost_at_end == signal.size - 17 * 73
    assert _accounted(stats) == signal.size


def test_a_clean_playback_loses_nothing_at_the_end():
    signal = np.sin(np.arange(130 * 10) / 10.0)
    transport = SimulatedTransport(VirtualH10(signal, 130.0), speed=0.0)
    stats = transport.run(SensorSession(transport, PolarH10(), Sink()).run())
    assert stats.samples_lost_at_end == 0 and stats.assembly.samples == signal.size


@pytest.mark.parametrize("name", ["jitter_ms", "disconnect_every_s", "outage_s"])
@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf")])
def test_impairment_durations_must_be_finite_and_not_negative(name, value):
    """--jitter nan passed the >= 0 check and was silently no jitter."""
    with pytest.raises(ValueError, match=f"{name} must be finite and >= 0"):
        Impairments(**{name: value})
