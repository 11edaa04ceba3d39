"""Simulated sensor → session → sink: every sample at its true time, every gap flagged.

The simulated sensor plays on virtual time (speed 0), so each run, and so each count below,
repeats exactly whatever the host's load; only the tests of ``stop()`` interrupting a real
wait run on wall time, with generous bounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools

import numpy as np
import pytest

from firmware_bridge.assembler import DecodedFrame, FrameAssembler
from firmware_bridge.hrs import HEART_RATE_MEASUREMENT_UUID, encode_hr_measurement
from firmware_bridge.open_profile import (
    FLAG_LEAD_OFF,
    FLAG_UNIX_EPOCH,
    OPEN_ECG_DATA_UUID,
    encode_open_frame,
)
from firmware_bridge.polar_pmd import (
    MAX_ECG_FRAME_SAMPLES,
    PMD_DATA_UUID,
    decode_ecg_frame,
    encode_ecg_delta,
    encode_ecg_raw,
    parse_frame_header,
)
from firmware_bridge.profiles import OpenEcgDevice, PolarH10
from firmware_bridge.session import Backoff, SensorSession, SessionStats
from firmware_bridge.sim_transport import SimulatedTransport
from firmware_bridge.simulator import H10_START_NS, Impairments, VirtualH10, VirtualOpenDevice
from sdk.synthetic import synthetic_ecg
from tests.firmware_bridge.fake_link import FakeLink


class RecordingSink:
    """Keeps every pushed block with its stream timestamp."""

    def __init__(self) -> None:
        self.blocks: list[tuple[float, np.ndarray]] = []

    def push(self, samples, *, timestamp_s=None, fs=None):
        self.blocks.append((float(timestamp_s), np.asarray(samples).copy()))
        return []

    def placed(self, fs: float) -> dict[int, float]:
        """Stream sample index → value (lead 0), checking blocks never overlap."""
        out: dict[int, float] = {}
        for ts, block in self.blocks:
            start = int(round(ts * fs))
            assert abs(start - ts * fs) < 1e-6, "timestamps must be sample-accurate"
            for i, v in enumerate(block[:, 0]):
                assert start + i not in out, "a sample was placed twice"
                out[start + i] = float(v)
        return out


def run_session(
    sensor,
    profile,
    impairments,
    seconds_cap: float = 1000.0,
    *,
    transport_type=SimulatedTransport,
    backoff: Backoff | None = None,
) -> tuple:
    """Play ``sensor`` through a session on virtual time (speed 0): the run repeats exactly
    whatever the host's load. ``seconds_cap`` is simulated seconds (a hang fails the test)."""
    sink = RecordingSink()
    transport = transport_type(sensor, impairments, speed=0)
    backoff = backoff or Backoff(initial_s=0.25, max_s=2.0)
    session = SensorSession(transport, profile, sink, backoff=backoff)
    stats = transport.run(asyncio.wait_for(session.run(), timeout=seconds_cap))
    return sink, stats, transport


def first_received(sink, sensor) -> int:
    """The sensor's index of the stream's first sample (the stream starts at the first
    frame received, so this is 0 unless frames were lost before any arrived)."""
    start_ts, first = min(sink.blocks, key=lambda b: b[0])
    assert start_ts == 0.0, "the stream starts at time 0"
    truth = sensor.samples_uv[:, 0] / 1000.0
    n = first.shape[0]
    found = [
        f.first_index
        for f in sensor.frames()
        if f.first_index + n <= truth.size
        and np.allclose(truth[f.first_index : f.first_index + n], first[:, 0], atol=1e-6)
    ]
    assert len(found) == 1, f"the first block matches frames at {found}"
    return found[0]


def check_placement(sink, sensor, stats, *, first: int | None = 0) -> int:
    """Every received sample sits at its true index: stream sample i is the sensor's sample
    ``first + i``, where ``first`` is the first sample received (0: the first frame arrived;
    None: whichever it was). Returns how many of the sensor's samples are missing."""
    start = first_received(sink, sensor)
    if first is not None:
        assert start == first, f"the stream starts at sensor sample {start}, not {first}"
    truth = sensor.samples_uv[:, 0] / 1000.0
    placed = sink.placed(sensor.fs)
    idx = np.fromiter(placed, dtype=np.int64)
    vals = np.fromiter(placed.values(), dtype=np.float64)
    assert idx.min() == 0 and start + idx.max() < truth.size
    np.testing.assert_allclose(vals, truth[start + idx], atol=1e-6)  # zero misplaced samples
    missing = truth.size - idx.size
    assert stats.assembly.samples_lost == idx.max() + 1 - idx.size  # every hole counted
    return missing


@pytest.fixture(scope="module")
def ecg():
    return synthetic_ecg((("sinus", 60.0), ("af", 60.0)), fs=250.0, seed=2)


@pytest.mark.parametrize("compressed", [False, True])
def test_clean_link_delivers_every_sample_in_place(ecg, compressed):
    sensor = VirtualH10(ecg.signal, ecg.fs, compressed=compressed)
    sink, stats, _ = run_session(sensor, PolarH10(), Impairments())
    assert check_placement(sink, sensor, stats) == 0
    from sdk.resample import resample

    received = np.concatenate([b[:, 0] for _, b in sink.blocks])
    original = resample(ecg.signal, ecg.fs, sensor.fs)
    assert np.max(np.abs(received - original)) <= 0.0005 + 1e-7  # within the 1 µV quantization
    assert stats.assembly.gaps == 0 and stats.malformed == 0 and stats.reconnects == 0


def test_loss_jitter_duplicates_and_disconnects_flag_every_gap(ecg):
    imp = Impairments(
        loss=0.05, jitter_ms=50.0, duplicate=0.02, disconnect_every_s=30.0, outage_s=1.5, seed=4
    )
    sensor = VirtualH10(ecg.signal, ecg.fs)
    sink, stats, transport = run_session(sensor, PolarH10(), imp)
    missing = check_placement(sink, sensor, stats)
    # deterministic on virtual time: the link drops at 30, 60, 90 and 120 s (with the last,
    # 51-sample frame); 9 frames are lost on the air and 15 while the link is down
    assert stats.reconnects == 4 and stats.assembly.duplicates == 7
    assert (transport.lost_on_air, transport.lost_while_down) == (9, 15)
    lost_frames = transport.lost_on_air + transport.lost_while_down
    # every missing sample is in a flagged gap, but the last frame's, which is the lost tail
    assert stats.assembly.gaps == 11 and stats.assembly.samples_lost == (lost_frames - 1) * 73
    assert stats.samples_lost_at_end == 51
    assert missing == stats.assembly.samples_lost + stats.samples_lost_at_end
    assert stats.assembly.frames == transport.delivered - stats.assembly.duplicates


class SwappingTransport(SimulatedTransport):
    """The simulated link, which delivers data notifications in the order sent whatever the
    jitter, made to reorder them: now and then an intact one is held back and handed on
    right after the next one."""

    SWAP = 0.1

    def __init__(self, sensor, impairments, *, speed):
        super().__init__(sensor, impairments, speed=speed)
        self.rng = np.random.default_rng(impairments.seed + 1)
        self.intact = {f.payload: f for f in sensor.frames()}  # the bytes the sensor sends
        self.held: bytes | None = None
        self.swapped = 0  # intact frames handed on after a later intact frame
        self.handed_on: set[int] = set()  # sample indices of the intact frames handed on

    async def start_notify(self, uuid, handler):
        if uuid == self.sensor.data_uuid:
            handler = functools.partial(self._swap, handler)
        await super().start_notify(uuid, handler)

    def _swap(self, handler, host_time_s: float, payload: bytes) -> None:
        held, self.held = self.held, None
        if held is None and payload in self.intact and self.rng.random() < self.SWAP:
            self.held = payload
            return
        self._hand_on(handler, host_time_s, payload)
        if held is not None:
            self.swapped += payload != held and payload in self.intact  # not a repeat of it
            self._hand_on(handler, host_time_s, held)

    def _hand_on(self, handler, host_time_s: float, payload: bytes) -> None:
        if payload in self.intact:
            f = self.intact[payload]
            self.handed_on.update(range(f.first_index, f.first_index + f.n))
        handler(host_time_s, payload)


def test_open_profile_reorders_and_rejects_corrupt_frames(ecg):
    imp = Impairments(loss=0.03, corrupt=0.03, duplicate=0.03, jitter_ms=20.0, seed=9)
    sensor = VirtualOpenDevice(ecg.signal, ecg.fs, fs=250.0)
    sink, stats, transport = run_session(
        sensor, OpenEcgDevice(fs=250.0), imp, transport_type=SwappingTransport
    )
    check_placement(sink, sensor, stats)  # every sample placed sits at its true index
    # deterministic on virtual time: 11 frames corrupted, 49 swapped
    assert stats.malformed == 11  # CRC catches corruption: counted and skipped
    assert stats.assembly.reordered == transport.swapped == 49
    # every intact frame handed on was placed, also those that came after a later frame;
    # what is missing was lost on the air, corrupted, or held back at the very end
    assert set(sink.placed(sensor.fs)) == transport.handed_on
    assert stats.assembly.late == 0


def test_sensor_clock_reset_on_reconnect_is_detected_and_flagged(ecg):
    imp = Impairments(disconnect_every_s=40.0, outage_s=2.0, time_reset_on_reconnect=True, seed=1)
    sensor = VirtualH10(ecg.signal, ecg.fs)
    sink, stats, transport = run_session(sensor, PolarH10(), imp)
    # deterministic on virtual time: the drops at 40 and 80 s each end in a clock reset (the
    # one at 120 s ends the recording); 10 frames are sent while the link is down
    assert stats.assembly.time_resets == 2
    # no loss on the air: the only gaps are the outages, and each ended in a clock reset
    assert stats.assembly.gaps == stats.assembly.time_resets
    assert transport.lost_on_air == 0 and transport.lost_while_down == 10
    starts = [ts for ts, _ in sink.blocks]
    assert starts == sorted(starts)  # the stream clock never goes back
    # the gap across each reset is sized by the host clock: whole frames, the outage at least
    n = sensor.frame_samples
    jumps = []
    for (ts, block), (next_ts, _) in zip(sink.blocks, sink.blocks[1:]):
        jump = round((next_ts - ts) * sensor.fs) - block.shape[0]
        if jump:
            jumps.append(jump)
    assert len(jumps) == stats.assembly.time_resets
    assert all(j % n == 0 and j / sensor.fs >= imp.outage_s for j in jumps), jumps
    assert sum(jumps) == stats.assembly.samples_lost
    # and so every sample after a reset sits at its true index; only lost frames are missing
    missing = check_placement(sink, sensor, stats)
    assert missing == stats.assembly.samples_lost + stats.samples_lost_at_end


def test_flipped_pmd_timestamp_bits_move_no_sample(ecg):
    # PMD frames have no CRC: a flipped timestamp bit decodes as a valid frame
    imp = Impairments(timestamp_glitch=0.1, jitter_ms=30.0, duplicate=0.02, seed=5)
    sensor = VirtualH10(ecg.signal, ecg.fs)
    sink, stats, transport = run_session(sensor, PolarH10(), imp)
    assert transport.timestamp_glitches == 23  # deterministic on virtual time
    # bits below 2**22 ns stay within half a sample and need no repair
    assert stats.timestamps_repaired == 16
    assert check_placement(sink, sensor, stats) == 0  # every sample delivered, in place
    assert stats.assembly.gaps == 0 and stats.assembly.time_resets == 0


def test_flipped_pmd_timestamp_bits_with_loss_and_disconnects_keep_the_stream_going(ecg):
    imp = Impairments(
        timestamp_glitch=0.05, loss=0.05, disconnect_every_s=30.0, outage_s=1.5, seed=6
    )
    sensor = VirtualH10(ecg.signal, ecg.fs)
    sink, stats, transport = run_session(sensor, PolarH10(), imp)
    # deterministic on virtual time: drops at 30, 60, 90 and 120 s (with the last frame)
    assert stats.timestamps_repaired == 2 and stats.reconnects == 4
    missing = check_placement(sink, sensor, stats)  # dropped, never misplaced
    lost_frames = transport.lost_on_air + transport.lost_while_down + stats.timestamps_rejected
    assert lost_frames == 26
    # only the frames lost are missing: 25 whole ones and the last (51 samples), the lost tail
    assert missing == stats.assembly.samples_lost + stats.samples_lost_at_end
    assert stats.assembly.samples_lost == (lost_frames - 1) * 73
    assert stats.samples_lost_at_end == 51


@pytest.mark.parametrize(
    ("seed", "repaired"),
    [(2, 4), (4, 9), (5, 9), (6, 3), (7, 3)],  # deterministic: virtual time
)
def test_flipped_bits_next_to_lost_and_repeated_frames_move_no_sample(ecg, seed, repaired):
    imp = Impairments(timestamp_glitch=0.05, loss=0.1, duplicate=0.05, jitter_ms=30.0, seed=seed)
    sensor = VirtualH10(ecg.signal, ecg.fs)
    sink, stats, _ = run_session(sensor, PolarH10(), imp)
    assert stats.timestamps_repaired == repaired
    check_placement(sink, sensor, stats)


@pytest.mark.parametrize("ppm", [100.0, -100.0])
def test_drift_of_100_ppm_is_tracked(ecg, ppm):
    imp = Impairments(drift_ppm=ppm, jitter_ms=30.0, seed=3)
    sensor = VirtualH10(ecg.signal, ecg.fs)
    sink, stats, _ = run_session(sensor, PolarH10(), imp)
    assert abs(stats.drift_ppm - ppm) < 5.0  # positive = sensor clock fast
    assert check_placement(sink, sensor, stats) == 0  # drift never moves a sample


def pipeline_windows(events):
    from sdk.events import WindowEvent

    return [e for e in events if isinstance(e, WindowEvent)]


def test_simulated_strap_into_the_sdk_gives_the_same_events_as_the_record(ecg):
    from sdk.bundle import default_bundle_path
    from sdk.pipeline import StreamPipeline

    sensor = VirtualH10(ecg.signal, ecg.fs)
    # FP32: quantized layers round, so a 1e-7 difference in input may move an INT8 output
    direct = StreamPipeline(default_bundle_path(), fs_in=sensor.fs, precision="fp32")
    expected = direct.push(sensor.samples_uv / 1000.0) + direct.close()
    bridged = StreamPipeline(default_bundle_path(), fs_in=sensor.fs, precision="fp32")
    seen = []
    bridged.add_callback(seen.append)
    transport = SimulatedTransport(sensor, Impairments(jitter_ms=50.0, seed=5), speed=0)
    transport.run(SensorSession(transport, PolarH10(), bridged).run())
    bridged.close()  # its events reach the callback too
    got, want = pipeline_windows(seen), pipeline_windows(expected)
    assert [w.label for w in got] == [w.label for w in want]
    assert [w.start_s for w in got] == pytest.approx([w.start_s for w in want])
    p_got = np.array([list(w.probabilities.values()) for w in got])
    p_want = np.array([list(w.probabilities.values()) for w in want])
    np.testing.assert_allclose(p_got, p_want, rtol=1e-4, atol=1e-6)


def test_windows_over_radio_gaps_are_flagged(ecg):
    from sdk.bundle import default_bundle_path
    from sdk.pipeline import StreamPipeline

    sensor = VirtualH10(ecg.signal, ecg.fs)
    pipeline = StreamPipeline(default_bundle_path(), fs_in=sensor.fs)
    events: list = []
    pipeline.add_callback(events.append)
    imp = Impairments(loss=0.05, jitter_ms=50.0, disconnect_every_s=30.0, seed=6)
    transport = SimulatedTransport(sensor, imp, speed=0)
    stats = transport.run(SensorSession(transport, PolarH10(), pipeline).run())
    pipeline.close()
    assert pipeline.stats.gaps == stats.assembly.gaps == 14  # deterministic on virtual time
    assert abs(pipeline.stats.gap_s - stats.assembly.samples_lost / sensor.fs) < 1e-6
    flagged = [w for w in pipeline_windows(events) if "gap" in w.quality.flags]
    assert flagged and all(w.flagged for w in flagged)


def test_heart_rate_service_rr_intervals_reach_the_session(ecg):
    sensor = VirtualH10(ecg.signal, ecg.fs)
    seen = []
    transport = SimulatedTransport(sensor, Impairments(), speed=0)
    session = SensorSession(
        transport, PolarH10(), RecordingSink(), on_heart_rate=lambda t, m: seen.append(m)
    )
    stats = transport.run(session.run())
    assert stats.hr_notifications == len(seen) == 120  # one a second for 2 minutes
    true_rr = np.diff(ecg.r_peaks) / ecg.fs
    assert abs(len(session.rr_intervals_s) - true_rr.size) <= 3
    assert abs(np.median(session.rr_intervals_s) - np.median(true_rr)) < 0.02
    assert all(m.contact for m in seen)


def test_a_raising_heart_rate_callback_does_not_stop_the_stream(ecg):
    sensor = VirtualH10(ecg.signal, ecg.fs)
    sink = RecordingSink()

    def broken(t, m):
        raise RuntimeError("app bug")

    transport = SimulatedTransport(sensor, Impairments(), speed=0)
    session = SensorSession(transport, PolarH10(), sink, on_heart_rate=broken)
    stats = transport.run(session.run())
    assert stats.handler_errors == stats.hr_notifications == 120
    assert check_placement(sink, sensor, stats) == 0  # every ECG sample still delivered


def test_rr_intervals_are_broken_at_a_reconnection(ecg):
    sensor = VirtualH10(ecg.signal, ecg.fs)
    imp = Impairments(disconnect_every_s=30.0, seed=4)
    transport = SimulatedTransport(sensor, imp, speed=0)
    session = SensorSession(
        transport, PolarH10(), RecordingSink(), backoff=Backoff(initial_s=0.25, max_s=2.0)
    )
    stats = transport.run(session.run())
    rr = np.asarray(session.rr_intervals_s)
    assert stats.connects == 4  # at 0, after the drops at 30, 60 and 90 s (virtual time)
    assert np.isnan(rr).sum() == stats.connects - 1  # one break per reconnection
    assert np.all((rr[~np.isnan(rr)] > 0.25) & (rr[~np.isnan(rr)] < 2.0))


class RefusingSink(RecordingSink):
    """Refuses the pushes whose index is in ``refuse`` (as the SDK refuses a bad block)."""

    def __init__(self, refuse: set[int]) -> None:
        super().__init__()
        self.refuse, self.calls = refuse, 0

    def push(self, samples, *, timestamp_s=None, fs=None):
        self.calls += 1
        if self.calls - 1 in self.refuse:
            raise ValueError("refused")
        return super().push(samples, timestamp_s=timestamp_s, fs=fs)


def test_a_refused_block_after_a_gap_becomes_one_gap_and_later_times_stay_right():
    fs, n = 130.0, 73
    period = 1e9 / fs
    frames = [
        DecodedFrame(int(round(k * n * period)), np.full((n, 1), k, np.float32), fs)
        for k in (0, 2, 3)  # frame 1 lost on the radio
    ]
    sink = RefusingSink({1})  # and the SDK refuses frame 2
    asm = FrameAssembler(sink, fs)
    for frame in frames:
        asm.add(frame)  # the refusal is counted, not raised: the stream goes on
    assert [round(ts * fs) for ts, _ in sink.blocks] == [0, 3 * n]  # frame 3 at its place
    assert asm.stats.samples_lost == n and asm.stats.gaps == 1
    assert asm.stats.sink_errors == 1 and asm.stats.frames == 3


@pytest.mark.parametrize("reconnect_s", [None, 19.0])
def test_timestamp_repair_moves_no_sample_under_loss_duplicates_and_clock_restarts(
    ecg, reconnect_s
):
    """On virtual time, so the run repeats exactly. Reconnecting 19 s after each drop (what a
    loaded host did at speed 400), the sensor's restarted clock has nearly caught up with
    where the old one stopped: only the host clock tells the outage from a short gap."""
    imp = Impairments(
        loss=0.3,
        duplicate=0.05,
        disconnect_every_s=20.0,
        outage_s=1.0,
        time_reset_on_reconnect=True,
        seed=1,
    )
    sensor = VirtualH10(ecg.signal, ecg.fs)
    backoff = None if reconnect_s is None else Backoff(reconnect_s, max_s=reconnect_s, jitter=0)
    sink, stats, _ = run_session(sensor, PolarH10(), imp, backoff=backoff)
    assert stats.timestamps_repaired == 0 and stats.timestamps_rejected == 0  # no bit flipped
    assert stats.assembly.time_resets == 5  # every drop but that at the end (deterministic)
    starts = [ts for ts, _ in sink.blocks]
    assert starts == sorted(starts)
    # every sample at its true index, every missing one counted (a hole or the lost tail)
    missing = check_placement(sink, sensor, stats)
    assert missing == stats.assembly.samples_lost + stats.samples_lost_at_end > 0


@pytest.mark.parametrize("shift", [0, -30, 150])  # where the restarted clock lands (samples)
@pytest.mark.parametrize("repair", [True, False])
def test_a_clock_restart_that_lands_near_the_old_clock_is_still_a_reset(shift, repair):
    """The H10 restarts its clock during an outage about as long as it had been counting: its
    new time picks up near where the old one stopped (``shift`` samples on), so it neither
    goes back nor lags by a delivery stall. The host clock says 30 frames went by."""
    n, fs, before, missed, after = 73, 130.0, 30, 30, 20

    def arrival(k: int) -> float:  # frame k's last sample, plus 8 ms on the air
        return (k * n + n) / fs + 0.008

    def stamp(k: int) -> int:  # sensor time of frame k's last sample; lost time after 29
        first = k * n if k < before else before * n + shift + (k - before - missed) * n
        return H10_START_NS + round((first + n - 1) * 1e9 / fs)

    async def script(link: FakeLink, connection: int) -> None:
        first = 0 if connection == 1 else before + missed
        for k in range(first, first + (before if connection == 1 else after)):
            link.notify(PMD_DATA_UUID, encode_ecg_raw(stamp(k), np.full(n, k)), arrival(k))
            await asyncio.sleep(0)
        link.drop() if connection == 1 else link.end()

    sink = RecordingSink()
    session = SensorSession(FakeLink(script), PolarH10(), sink, repair_timestamps=repair)
    stats = asyncio.run(asyncio.wait_for(session.run(), timeout=10))
    assert stats.assembly.time_resets == 1 and stats.timestamps_rejected == 0
    assert stats.assembly.samples_lost == missed * n and stats.assembly.samples_trimmed == 0
    placed = sink.placed(fs)
    received = [*range(before), *range(before + missed, before + missed + after)]
    assert sorted(placed) == [k * n + i for k in received for i in range(n)]  # true indices
    assert [placed[k * n] for k in received] == pytest.approx([k / 1000.0 for k in received])


@pytest.mark.parametrize(("before_ms", "after_ms"), [(0.0, 0.0), (0.0, 40.0), (40.0, 0.0)])
def test_a_gap_across_a_clock_restart_is_off_by_the_difference_in_link_delay(before_ms, after_ms):
    """Only the host clock can size the gap of a sensor clock restart: the samples after it
    move by the extra link delay of the first frame after it less that of the last frame
    before it, rounded to samples (none when the two match)."""
    n, fs = 73, 130.0
    frames = {1: [*range(10)], 2: [*range(20, 30)]}  # the clock restarts with frame 20

    async def script(link: FakeLink, connection: int) -> None:
        for k in frames[connection]:
            first = k * n if k < 20 else (k - 20) * n
            payload = encode_ecg_raw(H10_START_NS + round((first + n - 1) * 1e9 / fs), [k] * n)
            late = {9: before_ms, 20: after_ms}.get(k, 0.0) / 1000.0
            link.notify(PMD_DATA_UUID, payload, (k * n + n) / fs + 0.008 + late)
            await asyncio.sleep(0)
        link.drop() if connection == 1 else link.end()

    sink = RecordingSink()
    stats = asyncio.run(
        asyncio.wait_for(SensorSession(FakeLink(script), PolarH10(), sink).run(), timeout=10)
    )
    assert stats.assembly.time_resets == 1
    shift = round((after_ms - before_ms) / 1000.0 * fs)  # ±5 samples
    assert stats.assembly.samples_lost == 10 * n + shift
    placed = sink.placed(fs)
    assert placed[20 * n + shift] == pytest.approx(0.020) and 20 * n + shift - 1 not in placed


def test_frames_held_after_a_clock_restart_are_all_placed_when_the_link_drops():
    """After a reconnection the H10's clock restarts; the first frame and one after a lost
    frame are both held when the link ends. Both are real: the second must not be judged
    against the clock mapping from before the restart, which only placing the first updates."""
    n, fs = 73, 130.0
    frames = {1: [*range(10)], 2: [20, 22]}  # frames 10-19 in the outage, 21 lost on the air

    def stamp(k: int) -> int:  # the clock restarts with frame 20 at its first frame's time
        first = k * n if k < 20 else (k - 20) * n
        return H10_START_NS + round((first + n - 1) * 1e9 / fs)

    async def script(link: FakeLink, connection: int) -> None:
        for k in frames[connection]:
            payload = encode_ecg_raw(stamp(k), np.full(n, k))
            link.notify(PMD_DATA_UUID, payload, (k * n + n) / fs + 0.008)
            await asyncio.sleep(0)
        link.drop() if connection == 1 else link.end()

    sink = RecordingSink()
    stats = asyncio.run(
        asyncio.wait_for(SensorSession(FakeLink(script), PolarH10(), sink).run(), timeout=10)
    )
    assert stats.assembly.time_resets == 1 and stats.timestamps_rejected == 0
    received = frames[1] + frames[2]
    assert sorted(sink.placed(fs)) == [k * n + i for k in received for i in range(n)]
    assert stats.assembly.samples_lost == 11 * n


# -- link life cycle, against a scripted sensor ------------------------------------------------
OPEN_FS, OPEN_N = 250.0, 50


def open_frame(index: int, sequence: int) -> bytes:
    """Open-profile frame ``index`` of a recording; its samples hold ``index % 1000`` µV."""
    return encode_open_frame(
        np.full(OPEN_N, index % 1000),
        sequence=sequence % 65536,
        timestamp_us=index * OPEN_N * 4000,
        sample_rate_hz=int(OPEN_FS),
    )


@pytest.mark.parametrize(
    ("skipped", "sequence_after"),
    [(10, 0), (40_000, 20 + 40_000)],  # the counter restarts / counts on through 40 000 frames
)
def test_open_profile_frames_after_a_reconnect_are_placed_whatever_their_sequence(
    skipped, sequence_after
):
    async def script(link: FakeLink, connection: int) -> None:
        first, seq0 = (0, 0) if connection == 1 else (20 + skipped, sequence_after)
        for k in range(20):
            link.notify(OPEN_ECG_DATA_UUID, open_frame(first + k, seq0 + k), (first + k) * 0.2)
            await asyncio.sleep(0)
        link.drop() if connection == 1 else link.end()

    sink = RecordingSink()
    session = SensorSession(FakeLink(script), OpenEcgDevice(fs=OPEN_FS), sink)
    stats = asyncio.run(asyncio.wait_for(session.run(), timeout=10))
    placed = sink.placed(OPEN_FS)
    assert len(placed) == 40 * OPEN_N and stats.assembly.duplicates == 0
    assert stats.assembly.gaps == 1 and stats.assembly.samples_lost == skipped * OPEN_N
    first_after = (20 + skipped) * OPEN_N  # the first frame of the new link, at its true place
    assert placed[first_after] == pytest.approx((20 + skipped) % 1000 / 1000.0)


def test_backoff_stops_growing_at_its_cap():
    backoff = Backoff(initial_s=0.5, max_s=30.0, jitter=0.0)
    delays = [backoff.next_delay_s() for _ in range(5000)]  # ~40 h of an unreachable sensor
    assert delays[:4] == [0.5, 1.0, 2.0, 4.0] and delays[-1] == 30.0
    backoff.reset()
    assert backoff.next_delay_s() == 0.5


def test_a_stream_that_fails_to_start_closes_its_link_before_the_next_attempt():
    async def script(link: FakeLink, connection: int) -> None:
        link.notify(OPEN_ECG_DATA_UUID, open_frame(0, 0))
        link.end()

    link = FakeLink(script, fail_starts=1)
    stats = asyncio.run(SensorSession(link, OpenEcgDevice(fs=OPEN_FS), RecordingSink()).run())
    assert link.events[:5] == ["connect", "start failed", "disconnect", "connect", "start"]
    assert stats.connect_failures == 1 and stats.connects == 1 and stats.assembly.frames == 1


def test_a_refused_h10_start_is_counted_and_retried():
    async def main():
        link = FakeLink(pmd_status=13)  # F0 02 00 0D: "device in charger"
        session = SensorSession(link, PolarH10(), RecordingSink())
        task = asyncio.create_task(session.run())
        while link.connections < 3:
            await asyncio.sleep(0.001)
        session.stop()
        return link, await task

    link, stats = asyncio.run(asyncio.wait_for(main(), timeout=5))
    assert stats.connects == 0 and stats.connect_failures >= 2
    assert link.events[:4] == ["connect", "start", "disconnect", "connect"]


@pytest.mark.parametrize("how", ["stop", "cancel"])
def test_the_end_of_a_run_stops_the_sensor_and_leaves_no_task_behind(how):
    sensor = VirtualH10(np.zeros(130 * 600), 130.0)
    transport = SimulatedTransport(sensor, speed=0)  # virtual time: 10 s in, exactly

    async def main():
        session = SensorSession(transport, PolarH10(), RecordingSink())
        task = asyncio.create_task(session.run())
        await asyncio.sleep(10.0)
        if how == "stop":
            session.stop()
        else:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        return left, session.stats

    left, stats = transport.run(main())
    assert left == [] and stats.connects == 1
    assert stats.packets == 17  # the frames of the first 10 s, all handled (deterministic)
    assert not transport.is_connected and transport.exhausted  # playback ended


def test_stop_asks_the_sensor_to_stop_streaming_then_disconnects():
    async def main():
        link = FakeLink()
        session = SensorSession(link, PolarH10(), RecordingSink())
        task = asyncio.create_task(session.run())
        while "start" not in link.events:
            await asyncio.sleep(0.001)
        session.stop()
        await task
        return link.events

    assert asyncio.run(asyncio.wait_for(main(), timeout=5)) == [
        "connect",
        "start",
        "stop",
        "disconnect",
    ]


def test_stop_during_the_backoff_returns_at_once():
    """On wall time: stop() must interrupt a real wait. The bound only has to tell "at once"
    from "after the hour-long backoff", so it is generous for a loaded host."""

    async def main():
        link = FakeLink(reachable=False, real_sleep=True)
        backoff = Backoff(initial_s=3600.0, max_s=3600.0, jitter=0.0)
        session = SensorSession(link, PolarH10(), RecordingSink(), backoff=backoff)
        task = asyncio.create_task(session.run())
        while session.stats.connect_failures == 0:  # then it backs off
            await asyncio.sleep(0.001)
        session.stop()
        return await task

    stats = asyncio.run(asyncio.wait_for(main(), timeout=30.0))  # not after the 1 h backoff
    assert stats.connect_failures == 1


def test_the_rr_break_of_a_reconnection_precedes_the_new_links_heart_rate():
    def during_start(link: FakeLink, connection: int) -> None:  # before the start is answered
        rr = [1.0] if connection == 1 else [0.5]
        link.notify(HEART_RATE_MEASUREMENT_UUID, encode_hr_measurement(60, rr_s=rr))

    async def script(link: FakeLink, connection: int) -> None:
        if connection == 1:
            link.drop()
            return
        link.notify(HEART_RATE_MEASUREMENT_UUID, encode_hr_measurement(120, rr_s=[0.5]))
        link.end()

    link = FakeLink(script, during_start=during_start)
    session = SensorSession(link, PolarH10(), RecordingSink())
    asyncio.run(asyncio.wait_for(session.run(), timeout=5))
    rr = list(session.rr_intervals_s)
    assert rr[0] == 1.0 and np.isnan(rr[1]) and rr[2:] == [0.5, 0.5]


def test_bad_heart_rate_notifications_are_counted_apart_from_ecg_packets():
    async def script(link: FakeLink, connection: int) -> None:
        for k in range(3):
            stamp = H10_START_NS + round((k * 73 + 72) * 1e9 / 130.0)
            link.notify(PMD_DATA_UUID, encode_ecg_raw(stamp, np.zeros(73, int)), k * 73 / 130)
        for _ in range(5):  # flags say uint16 heart rate, one byte follows
            link.notify(HEART_RATE_MEASUREMENT_UUID, b"\x01\x3c")
        link.end()

    session = SensorSession(FakeLink(script), PolarH10(), RecordingSink())
    stats = asyncio.run(asyncio.wait_for(session.run(), timeout=5))
    assert stats.packets == 3 and stats.malformed == 0
    assert stats.hr_malformed == 5 and stats.hr_notifications == 0


def test_stop_while_the_sensor_has_not_answered_the_start_returns_at_once():
    """On wall time, as the test above: the bound tells "at once" from "when the start
    request times out", generously."""

    async def main():
        link = FakeLink(pmd_status=None)  # the H10 never answers: start waits for an hour
        profile = PolarH10()
        profile.response_timeout_s = 3600.0
        session = SensorSession(link, profile, RecordingSink())
        task = asyncio.create_task(session.run())
        while "start" not in link.events:  # then it waits for the answer
            await asyncio.sleep(0.001)
        session.stop()
        return await task, link

    stats, link = asyncio.run(asyncio.wait_for(main(), timeout=30.0))
    assert stats.connects == 0 and stats.connect_failures == 0
    assert link.events[-1] == "disconnect" and not link.up  # the half-open link is closed


# -- damaged frames, lead off, impossible heart rate values --------------------------------------
H10_N, H10_FS = 73, 130.0


def h10_frame(k: int, n: int = H10_N, *, start: int = 0) -> bytes:
    """Raw PMD frame ``k`` of ``n``-sample frames, sample ``i`` holding ``i % 1000`` µV,
    stamped (as PMD frames are) at its last sample; ``start``: index of frame 0's sample 0."""
    first = start + k * n
    stamp = H10_START_NS + round((first + n - 1) * 1e9 / H10_FS)
    return encode_ecg_raw(stamp, np.arange(first, first + n) % 1000)


def run_h10(frames_by_link: dict[int, list[bytes]]) -> tuple[RecordingSink, SessionStats]:
    """Play PMD payloads, one list per connection, through a session; each arrives 8 ms
    after the sample its timestamp names."""

    async def script(link: FakeLink, connection: int) -> None:
        for payload in frames_by_link[connection]:
            stamp = parse_frame_header(payload).timestamp_ns
            link.notify(PMD_DATA_UUID, payload, (stamp - H10_START_NS) / 1e9 + 0.008)
            await asyncio.sleep(0)
        link.drop() if connection < len(frames_by_link) else link.end()

    sink = RecordingSink()
    session = SensorSession(FakeLink(script), PolarH10(), sink, backoff=Backoff(initial_s=0.01))
    return sink, asyncio.run(asyncio.wait_for(session.run(), timeout=10))


def assert_in_place(sink: RecordingSink, *, start: int = 0) -> dict[int, float]:
    """Every placed sample holds its own sensor index (mod 1000, in µV)."""
    placed = sink.placed(H10_FS)
    for i, v in placed.items():
        assert round(v * 1000) == (start + i) % 1000, f"stream sample {i} misplaced"
    return placed


def test_pmd_frames_of_72_and_73_samples_in_any_order_are_all_placed():
    """The H10 sends 72- or 73-sample frames at one MTU (polar-ble-sdk issue #71): frames
    have no length field, so the session takes any size up to the protocol bound."""
    sizes = [73, 72, 72, 73, 72, 73, 73, 72, 73, 72]
    frames, first = [], 0
    for n in sizes:
        stamp = H10_START_NS + round((first + n - 1) * 1e9 / H10_FS)
        frames.append(encode_ecg_raw(stamp, np.arange(first, first + n) % 1000))
        first += n
    sink, stats = run_h10({1: frames})
    assert stats.malformed == 0 and stats.assembly.gaps == 0
    assert len(assert_in_place(sink)) == sum(sizes)


def test_an_inflated_pmd_delta_frame_is_refused():
    frames = [h10_frame(k) for k in range(20)]
    stamp = H10_START_NS + round((6 * H10_N - 1) * 1e9 / H10_FS)
    inflated = encode_ecg_delta(stamp, [5 * H10_N % 1000]) + bytes((0, 255)) * 100
    assert decode_ecg_frame(inflated).samples_uv.shape[0] == 25_501  # in 210 bytes
    frames[5] = inflated
    sink, stats = run_h10({1: frames})
    assert stats.malformed == 1 and stats.assembly.samples_trimmed == 0
    assert stats.assembly.gaps == 1 and stats.assembly.samples_lost == H10_N
    assert len(assert_in_place(sink)) == 19 * H10_N


def test_a_first_pmd_frame_above_the_protocol_bound_is_refused():
    n = MAX_ECG_FRAME_SAMPLES + 1  # more than the longest notification can carry raw
    sink, stats = run_h10({1: [h10_frame(0, n)] + [h10_frame(k, start=n) for k in range(5)]})
    assert stats.malformed == 1 and stats.assembly.frames == 5
    assert len(assert_in_place(sink, start=n)) == 5 * H10_N


def test_a_short_last_pmd_frame_and_a_new_frame_size_on_a_new_link_are_kept():
    """The sensor's last frame may be short (the simulated H10 sends the recording's tail);
    its timestamp then advances by its own samples. A new link may negotiate another MTU,
    so another frame size."""
    first = [h10_frame(k) for k in range(10)]
    stamp = H10_START_NS + round((10 * H10_N + 50 - 1) * 1e9 / H10_FS)
    first.append(encode_ecg_raw(stamp, np.arange(10 * H10_N, 10 * H10_N + 50) % 1000))
    first.append(first[-1])  # and a repeat of it: a duplicate, not a damaged frame
    start = 20 * H10_N
    second = [h10_frame(k, 57, start=start) for k in range(10)]  # MTU 185: 57 samples
    sink, stats = run_h10({1: first, 2: second})
    assert stats.malformed == 0 and stats.assembly.duplicates == 1
    placed = assert_in_place(sink)
    assert len(placed) == 10 * H10_N + 50 + 10 * 57


def test_open_profile_lead_off_frames_reach_the_sink_as_nan_and_are_counted():
    async def script(link: FakeLink, connection: int) -> None:
        for k in range(10):
            flags = FLAG_UNIX_EPOCH | (FLAG_LEAD_OFF if 3 <= k <= 6 else 0)
            payload = encode_open_frame(
                np.full(OPEN_N, 500),
                sequence=k,
                timestamp_us=1_700_000_000_000_000 + k * OPEN_N * 4000,
                sample_rate_hz=int(OPEN_FS),
                flags=flags,
            )
            link.notify(OPEN_ECG_DATA_UUID, payload, 1.0 + k * 0.2)
            await asyncio.sleep(0)
        link.end()

    sink = RecordingSink()
    session = SensorSession(FakeLink(script), OpenEcgDevice(fs=OPEN_FS), sink)
    stats = asyncio.run(asyncio.wait_for(session.run(), timeout=10))
    assert stats.lead_off_frames == 4 and stats.malformed == 0
    values = np.array([v for _, v in sorted(sink.placed(OPEN_FS).items())])
    assert values.size == 10 * OPEN_N and stats.assembly.gaps == 0  # timing kept
    off = np.zeros(values.size, bool)
    off[3 * OPEN_N : 7 * OPEN_N] = True
    assert np.all(np.isnan(values[off])) and np.all(values[~off] == pytest.approx(0.5))


def test_impossible_heart_rate_values_are_counted_not_kept():
    async def script(link: FakeLink, connection: int) -> None:
        link.notify(HEART_RATE_MEASUREMENT_UUID, encode_hr_measurement(60, rr_s=[1.0, 0.875]))
        link.notify(HEART_RATE_MEASUREMENT_UUID, bytes([0x10, 0]) + b"\0\0" * 3)  # 0 bpm, RR 0
        link.notify(HEART_RATE_MEASUREMENT_UUID, encode_hr_measurement(61, rr_s=[0.75, 40.0]))
        link.notify(HEART_RATE_MEASUREMENT_UUID, encode_hr_measurement(62, rr_s=[0.625]))
        link.notify(HEART_RATE_MEASUREMENT_UUID, bytes([0x01, 0xFF, 0xFF]))  # 65535 bpm
        link.end()

    seen = []
    session = SensorSession(
        FakeLink(script), PolarH10(), RecordingSink(), on_heart_rate=lambda t, m: seen.append(m)
    )
    stats = asyncio.run(asyncio.wait_for(session.run(), timeout=5))
    assert stats.hr_notifications == 5 and stats.hr_malformed == 0
    assert stats.hr_no_value == 1 and stats.rr_rejected == 4 and stats.hr_rejected == 1
    assert [m.bpm for m in seen] == [60, None, 61, 62, None]
    assert [m.bpm_rejected for m in seen] == [None, None, None, None, 65535]
    rr = list(session.rr_intervals_s)
    # no successive difference spans an interval dropped: the series breaks (NaN) there
    assert rr[:2] == [1.0, 0.875] and np.isnan(rr[2])
    assert rr[3] == 0.75 and np.isnan(rr[4]) and rr[5] == 0.625 and len(rr) == 6


def test_a_cut_rr_interval_keeps_the_heart_rate_and_breaks_the_series():
    async def script(link: FakeLink, connection: int) -> None:
        link.notify(HEART_RATE_MEASUREMENT_UUID, encode_hr_measurement(60, rr_s=[1.0]))
        cut = encode_hr_measurement(66, rr_s=[0.875]) + b"\x03"  # one byte of a next interval
        link.notify(HEART_RATE_MEASUREMENT_UUID, cut)
        link.notify(HEART_RATE_MEASUREMENT_UUID, encode_hr_measurement(62, rr_s=[0.75]))
        link.end()

    seen = []
    session = SensorSession(
        FakeLink(script), PolarH10(), RecordingSink(), on_heart_rate=lambda t, m: seen.append(m)
    )
    stats = asyncio.run(asyncio.wait_for(session.run(), timeout=5))
    assert stats.hr_malformed == 0 and stats.rr_cut == 1 and [m.bpm for m in seen] == [60, 66, 62]
    rr = list(session.rr_intervals_s)
    assert rr[:2] == [1.0, 0.875] and np.isnan(rr[2]) and rr[3] == 0.75 and len(rr) == 4


def test_failed_connections_are_said_out_loud_once_per_run_and_every_tenth(caplog):
    """A sensor out of reach: the first failure and every tenth in a row at warning level
    (a user watching a silent terminal learns why), the retries between at info level."""

    async def main():
        link = FakeLink(reachable=False)
        backoff = Backoff(initial_s=0.001, max_s=0.001, jitter=0)
        session = SensorSession(link, PolarH10(), RecordingSink(), backoff=backoff)
        task = asyncio.create_task(session.run())
        while session.stats.connect_failures < 21:
            await asyncio.sleep(0.001)
        session.stop()
        return await task

    with caplog.at_level("INFO", logger="firmware_bridge.session"):
        stats = asyncio.run(asyncio.wait_for(main(), timeout=10))
    tries = [r for r in caplog.records if "no stream (attempt" in r.getMessage()]
    assert len(tries) == stats.connect_failures >= 21
    loud = [i + 1 for i, r in enumerate(tries) if r.levelname == "WARNING"]
    assert loud == [n for n in range(1, len(tries) + 1) if n % 10 == 1]
    assert "not found" in tries[0].getMessage()


# -- repeats and late frames, a sensor that stops streaming, refusals while flushing ----------
def run_open(
    orders: list[list[int]], sink: RecordingSink | None = None, **session_kw
) -> tuple[RecordingSink, SessionStats]:
    """Play open-profile frames ``orders[c - 1]`` (frame indices, sequence = index) over
    connection ``c``, each 0.2 s of sensor time after the previous frame index."""

    async def script(link: FakeLink, connection: int) -> None:
        for k in orders[connection - 1]:
            link.notify(OPEN_ECG_DATA_UUID, open_frame(k, k), k * 0.2 + 0.21)
            await asyncio.sleep(0)
        link.drop() if connection < len(orders) else link.end()

    sink = sink if sink is not None else RecordingSink()
    session = SensorSession(FakeLink(script), OpenEcgDevice(fs=OPEN_FS), sink, **session_kw)
    return sink, asyncio.run(asyncio.wait_for(session.run(), timeout=10))


def assert_open_in_place(sink: RecordingSink) -> dict[int, float]:
    placed = sink.placed(OPEN_FS)
    for i, v in placed.items():
        assert round(v * 1000) == (i // OPEN_N) % 1000, f"stream sample {i} misplaced"
    return placed


@pytest.mark.parametrize(
    ("order", "duplicates", "late"),
    [
        ([*range(10), 5, *range(10, 60)], 1, 0),  # frame 5 again, 1 s old
        ([0, 1, 2, *range(5, 10), 3, 4, *range(10, 60)], 0, 2),  # 3 and 4 beyond the window
    ],
)
def test_a_repeated_or_late_frame_is_no_sensor_clock_restart(order, duplicates, late):
    """The clock aligner saw the old frame first and took its timestamp, 1 s back, for a
    restart: the frame was placed again as new and every later sample moved."""
    sink, stats = run_open([order])
    placed = assert_open_in_place(sink)
    assert stats.assembly.time_resets == 0
    assert stats.assembly.duplicates == duplicates and stats.assembly.late == late
    assert len(placed) == (60 - 2 * (late > 0)) * OPEN_N


@pytest.mark.parametrize(
    ("order", "duplicates", "late"),
    [([*range(8), 6, *range(8, 20)], 1, 0), ([0, 1, 2, 3, 4, 7, 6, 8, 9], 0, 1)],
)
def test_an_old_pmd_frame_without_repair_is_no_clock_restart(order, duplicates, late):
    """One H10 frame lasts 0.56 s, more than the 0.5 s a clock may go back: a repeat of the
    frame before last (or a swap) restarted the clock and shifted every later sample."""

    async def script(link: FakeLink, connection: int) -> None:
        for k in order:
            stamp = parse_frame_header(h10_frame(k)).timestamp_ns
            link.notify(PMD_DATA_UUID, h10_frame(k), (stamp - H10_START_NS) / 1e9 + 0.008)
            await asyncio.sleep(0)
        link.end()

    sink = RecordingSink()
    session = SensorSession(FakeLink(script), PolarH10(), sink, repair_timestamps=False)
    stats = asyncio.run(asyncio.wait_for(session.run(), timeout=10))
    placed = assert_in_place(sink)
    assert stats.assembly.time_resets == 0
    assert (stats.assembly.duplicates, stats.assembly.late) == (duplicates, late)
    assert max(placed) == (max(order) + 1) * H10_N - 1  # the last frame at its own place
    lost = stats.assembly.samples_lost  # a late frame's samples lie in the gap it missed
    assert len(placed) + lost == (max(order) + 1) * H10_N


def test_a_sensor_that_stops_streaming_is_reconnected_after_the_stall_timeout():
    """The H10 may end the stream itself (a "measurement stopped" indication on the PMD
    control point, then nothing): the session waited for a disconnection forever."""

    async def script(link: FakeLink, connection: int) -> None:
        frames = range(5) if connection == 1 else range(30, 40)
        for k in frames:
            link.notify(OPEN_ECG_DATA_UUID, open_frame(k, k), k * 0.2)
            await asyncio.sleep(0)
        if connection == 2:
            link.end()

    sink = RecordingSink()
    link = FakeLink(script, real_sleep=True)
    session = SensorSession(
        link, OpenEcgDevice(fs=OPEN_FS), sink, backoff=Backoff(initial_s=0.01), stall_timeout_s=0.2
    )
    stats = asyncio.run(asyncio.wait_for(session.run(), timeout=10))
    assert stats.stalls == 1 and stats.reconnects == 1 and stats.connects == 2
    assert link.events[:4] == ["connect", "start", "stop", "disconnect"]
    placed = assert_open_in_place(sink)
    assert len(placed) == 15 * OPEN_N and stats.assembly.gaps == 1


def test_stall_timeout_must_be_positive():
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="stall_timeout_s"):
            SensorSession(
                FakeLink(), OpenEcgDevice(fs=OPEN_FS), RecordingSink(), stall_timeout_s=bad
            )


def test_a_block_refused_while_frames_held_for_order_are_flushed_is_counted_there():
    """Refused outside the session's try, it counted as a handler error and skipped the rest
    of the reconnection's handling."""
    sink = RefusingSink({3})  # the first frame flushed at the drop (frame 4)
    orders = [[0, 1, 2, 4, 5], list(range(20, 30))]  # frame 3 lost: 4 and 5 wait for it
    _, stats = run_open(orders, sink=sink, backoff=Backoff(initial_s=0.01))
    assert stats.assembly.sink_errors == 1 and stats.handler_errors == 0
    assert stats.sink_errors == 1  # SessionStats' own name for it, as before
    placed = assert_open_in_place(sink)
    assert len(placed) == 14 * OPEN_N  # every frame but the refused one, each in its place


@pytest.mark.parametrize("repair", [True, False])
def test_frames_on_a_restarted_clock_are_not_taken_for_late_frames_of_the_old_one(repair):
    """After a reconnection the H10's clock restarts near where it began: frames on it fell
    into a gap flagged on the old clock and were dropped as late."""

    def frame(k: int, base: int) -> bytes:
        stamp = H10_START_NS + round((k * H10_N + H10_N - 1) * 1e9 / H10_FS)
        return encode_ecg_raw(stamp, np.full(H10_N, base + k))

    async def script(link: FakeLink, connection: int) -> None:
        for k in range(20):
            if connection == 1 and k == 3:
                continue  # lost: a gap on the old clock
            start = 0.0 if connection == 1 else 30.0
            link.notify(PMD_DATA_UUID, frame(k, 100 * connection), start + k * H10_N / H10_FS)
            await asyncio.sleep(0)
        link.drop() if connection == 1 else link.end()

    sink = RecordingSink()
    session = SensorSession(
        FakeLink(script),
        PolarH10(),
        sink,
        backoff=Backoff(initial_s=0.01),
        repair_timestamps=repair,
    )
    stats = asyncio.run(asyncio.wait_for(session.run(), timeout=10))
    values = {round(float(block[0, 0]) * 1000) for _, block in sink.blocks}
    assert values == {100 + k for k in range(20) if k != 3} | {200 + k for k in range(20)}
    assert stats.assembly.late == 0 and stats.assembly.time_resets == 1


def test_a_frame_stamped_whole_frames_ahead_is_dropped_not_put_in_a_real_frames_place():
    """Frame 4 stamped as frame 6 before frame 5 arrives reads like 5 lost and 6, 7 swapped:
    released at once, it took frame 6's place and the real frame 6 was dropped."""

    def frame(k: int, stamped_as: int) -> bytes:
        stamp = H10_START_NS + round((stamped_as * H10_N + H10_N - 1) * 1e9 / H10_FS)
        return encode_ecg_raw(stamp, np.full(H10_N, k))

    async def script(link: FakeLink, connection: int) -> None:
        for k in range(14):
            link.notify(PMD_DATA_UUID, frame(k, 6 if k == 4 else k), k * H10_N / H10_FS + 0.6)
            await asyncio.sleep(0)
        link.end()

    sink = RecordingSink()
    stats = asyncio.run(
        asyncio.wait_for(SensorSession(FakeLink(script), PolarH10(), sink).run(), timeout=10)
    )
    slots = {round(ts * H10_FS) // H10_N: round(float(b[0, 0]) * 1000) for ts, b in sink.blocks}
    assert slots == {k: k for k in range(14) if k != 4}  # slot 4 a flagged gap
    assert stats.timestamps_rejected == 1 and stats.assembly.gaps == 1
