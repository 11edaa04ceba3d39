"""ClockAligner: drift and sample-time mapping under exponential jitter, resets."""

from __future__ import annotations

import numpy as np
import pytest

from firmware_bridge.clock import ClockAligner
from firmware_bridge.errors import ClockError
from firmware_bridge.polar_pmd import H10_DEFAULT_TIME_NS

FS = 130.0
PERIOD_S = 73 / FS  # an H10 raw ECG frame holds 73 samples
START_NS = H10_DEFAULT_TIME_NS + 5_000_000_000
HOST0 = 1000.0


def stream(ppm: float, seconds: float, seed: int, jitter_s: float = 0.05):
    """Frames of a sensor whose clock runs ``ppm`` fast; arrivals with exponential delay."""
    rng = np.random.default_rng(seed)
    sensor_s = np.arange(int(seconds / PERIOD_S)) * PERIOD_S
    sensor_ns = START_NS + np.rint(sensor_s * 1e9).astype(np.int64)
    arrival = HOST0 + sensor_s / (1 + ppm * 1e-6) + rng.exponential(jitter_s, sensor_s.size)
    return sensor_ns, arrival


def true_host(sensor_ns: np.ndarray, ppm: float) -> np.ndarray:
    return HOST0 + (sensor_ns - START_NS) / 1e9 / (1 + ppm * 1e-6)


@pytest.mark.parametrize(("ppm", "seed"), [(100.0, 1), (-100.0, 2), (0.0, 3), (37.5, 4)])
def test_drift_and_mapping_converge(ppm, seed):
    sensor_ns, arrival = stream(ppm, seconds=900, seed=seed)
    clock = ClockAligner()
    offsets = np.rint(np.arange(72, -1, -1) * 1e9 / FS).astype(np.int64)
    worst_err, worst_drift = 0.0, 0.0
    for i, (s, h) in enumerate(zip(sensor_ns, arrival)):
        assert clock.update(int(s), float(h)) is False
        converged = (s - START_NS) / 1e9 >= 450
        if converged and i % 5 == 0:
            samples = s - offsets  # the 73 sample times of this frame
            err = np.abs(clock.to_host(samples) - true_host(samples, ppm)).max()
            worst_err = max(worst_err, float(err))
            worst_drift = max(worst_drift, abs(clock.drift_ppm - ppm))
    assert worst_drift < 5.0
    assert worst_err < 0.005
    assert clock.resets == 0
    assert clock.ready


def test_scalar_and_array_agree():
    sensor_ns, arrival = stream(50.0, seconds=120, seed=9)
    clock = ClockAligner()
    for s, h in zip(sensor_ns, arrival):
        clock.update(int(s), float(h))
    probe = sensor_ns[-10:]
    np.testing.assert_allclose(
        clock.to_host(probe), [clock.to_host(int(p)) for p in probe], rtol=0, atol=1e-9
    )


def test_not_ready_uses_unit_slope_below_the_arrivals():
    clock = ClockAligner()
    with pytest.raises(ClockError) as info:
        clock.to_host(START_NS)
    assert info.value.pairs == 0
    clock.update(START_NS, 10.2)
    clock.update(START_NS + 1_000_000_000, 11.05)
    assert not clock.ready
    assert clock.drift_ppm == 0.0
    assert clock.to_host(START_NS) == pytest.approx(10.05)


def test_backward_reset_is_detected_and_recovers():
    sensor_ns, arrival = stream(80.0, seconds=200, seed=5)
    clock = ClockAligner()
    for s, h in zip(sensor_ns, arrival):
        clock.update(int(s), float(h))
    # power cycle: the sensor restarts from its default time 70 s later
    new_start = H10_DEFAULT_TIME_NS + 2_000_000_000
    late = arrival[-1] + 70.0
    assert clock.update(new_start, late) is True
    assert (clock.resets, clock.last_reset_reason, clock.pairs) == (1, "backward", 1)
    assert clock.to_host(new_start) == pytest.approx(late)
    for k in range(1, 200):
        assert clock.update(new_start + round(k * PERIOD_S * 1e9), late + k * PERIOD_S) is False
    assert clock.resets == 1


def test_forward_jump_is_a_reset():
    clock = ClockAligner()
    t = 0.0
    for k in range(20):
        t = k * PERIOD_S
        clock.update(START_NS + round(t * 1e9), 50.0 + t)
    # the host set the sensor's time: it jumps years ahead
    assert clock.update(START_NS + 10**17, 50.0 + t + PERIOD_S) is True
    assert clock.last_reset_reason == "forward"


def test_lag_is_a_reset_but_a_gap_is_not():
    clock = ClockAligner()
    clock.update(START_NS, 100.0)
    clock.update(START_NS + 1_000_000_000, 101.0)
    # disconnected 60 s, sensor clock kept running: not a reset
    assert clock.update(START_NS + 61_000_000_000, 161.3) is False
    # disconnected 90 s, sensor restarted and shows only 20 s more: a reset
    assert clock.update(START_NS + 81_000_000_000, 251.3) is True
    assert clock.last_reset_reason == "lag"


def test_a_clock_falling_behind_over_a_reconnection_is_a_reset():
    def clock_at(sensor_s: float, host_s: float) -> ClockAligner:
        clock = ClockAligner()
        clock.update(START_NS + round(sensor_s * 1e9), host_s)
        return clock

    # within a link, 20 s more on the host than on the sensor may be a delivery stall
    assert clock_at(20.0, 120.0).update(START_NS + 20_500_000_000, 140.5) is False
    # over a new link it is not: the sensor restarted and its clock caught up with the old one
    clock = clock_at(20.0, 120.0)
    clock.new_link()
    assert clock.update(START_NS + 20_500_000_000, 140.5) is True
    assert clock.last_reset_reason == "lag"
    assert clock.update(START_NS + 21_000_000_000, 160.5) is False  # the next pair: a stall
    # arrival jitter over a new link is not a reset
    clock = clock_at(20.0, 120.0)
    clock.new_link()
    assert clock.update(START_NS + 80_000_000_000, 181.5) is False
    with pytest.raises(ValueError):
        ClockAligner(lag_s=1.0, relink_lag_s=2.0)


def test_small_backward_step_and_jitter_are_not_resets():
    clock = ClockAligner()
    clock.update(START_NS, 100.0)
    assert clock.update(START_NS - 100_000_000, 100.5) is False
    assert clock.update(START_NS + 1_500_000_000, 101.0) is False


def test_manual_reset_counts():
    clock = ClockAligner()
    clock.update(START_NS, 1.0)
    clock.reset()
    assert (clock.resets, clock.last_reset_reason, clock.pairs) == (1, "manual", 0)
    with pytest.raises(ClockError):
        clock.to_host(START_NS)


def test_window_slides():
    clock = ClockAligner(window_s=30.0, max_pairs=40)
    for k in range(200):
        clock.update(START_NS + k * 1_000_000_000, float(k))
    assert clock.pairs <= 40
    assert clock.span_s <= 30.0


def test_plausible_refuses_timestamps_from_the_future_or_implying_a_reset():
    clock = ClockAligner()
    assert clock.plausible(123, 0.0)  # nothing observed yet
    for k in range(200):  # 0.5 s frames, 10 ms link delay
        clock.update(k * 500_000_000, 100.0 + k * 0.5 + 0.01)
    now_ns, host = 200 * 500_000_000, 100.0 + 200 * 0.5 + 0.03
    assert clock.plausible(now_ns, host)
    assert not clock.plausible(now_ns + 400_000_000, host)  # sampled 0.4 s after it arrived
    assert not clock.plausible(now_ns + 10**12, host)  # a forward jump: a reset
    assert not clock.plausible(now_ns - 10**10, host)  # backward by 10 s: a reset
    assert clock.resets == 0  # nothing recorded
