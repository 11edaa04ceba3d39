"""Tests of sdk.ringbuffer.RingBuffer."""

from __future__ import annotations

import numpy as np
import pytest

from sdk.errors import BlockError, BufferOverflowError, ConfigError
from sdk.ringbuffer import GAP_BEFORE, INVALID, RingBuffer

FS = 128.0


def _block(start: int, n: int, n_leads: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Samples whose value encodes (index, lead) and timestamps index / FS."""
    idx = np.arange(start, start + n, dtype=np.float64)
    samples = idx[:, None] * 10.0 + np.arange(n_leads)[None, :]
    return samples, idx / FS


def test_write_and_latest_simple() -> None:
    rb = RingBuffer(8, 2)
    samples, times = _block(0, 5)
    assert rb.write(samples, times) == 5
    assert (rb.size, rb.total_written, rb.overwritten) == (5, 5, 0)
    data, t, flags = rb.latest(3)
    assert data.dtype == np.float32 and t.dtype == np.float64 and flags.dtype == np.uint8
    np.testing.assert_array_equal(data, samples[2:].astype(np.float32))
    np.testing.assert_array_equal(t, times[2:])
    np.testing.assert_array_equal(flags, 0)


def test_wraparound_random_blocks_match_reference() -> None:
    rng = np.random.default_rng(0)
    cap = 37
    rb = RingBuffer(cap, 2)
    written = 0
    for _ in range(200):
        n = int(rng.integers(0, 20))
        samples, times = _block(written, n)
        rb.write(samples, times)
        written += n
        assert rb.total_written == written
        assert rb.size == min(written, cap)
        assert rb.overwritten == max(0, written - cap)
        ref, ref_t = _block(written - rb.size, rb.size)
        data, t, _ = rb.latest(rb.size)
        np.testing.assert_array_equal(data, ref.astype(np.float32))
        np.testing.assert_array_equal(t, ref_t)
        if rb.size >= 5:
            start = written - rb.size + 2
            data, t, _ = rb.read_range(start, 3)
            np.testing.assert_array_equal(data[:, 0], np.arange(start, start + 3) * 10.0)


def test_block_larger_than_capacity_keeps_tail() -> None:
    rb = RingBuffer(4, 1)
    rb.write(np.arange(3.0), np.arange(3.0))
    rb.write(np.arange(3.0, 13.0), np.arange(3.0, 13.0))
    assert rb.total_written == 13 and rb.size == 4
    assert rb.overwritten == 9  # 3 evicted + 6 never stored
    data, t, _ = rb.latest(4)
    np.testing.assert_array_equal(data[:, 0], [9.0, 10.0, 11.0, 12.0])
    np.testing.assert_array_equal(t, [9.0, 10.0, 11.0, 12.0])


def test_one_d_block_accepted_only_for_one_lead() -> None:
    rb = RingBuffer(4, 1)
    assert rb.write(np.array([1.0, 2.0]), np.array([0.0, 1.0])) == 2
    with pytest.raises(BlockError) as err:
        RingBuffer(4, 2).write(np.array([1.0, 2.0]), np.array([0.0, 1.0]))
    assert err.value.reason == "lead_count"


def test_raise_policy_and_release() -> None:
    rb = RingBuffer(6, 1, overflow="raise")
    rb.write(np.zeros(4), np.arange(4.0))
    with pytest.raises(BufferOverflowError) as err:
        rb.write(np.ones(3), np.arange(4.0, 7.0))
    assert err.value.capacity == 6 and err.value.pending == 4
    assert rb.total_written == 4 and rb.last_timestamp == 3.0  # nothing written
    rb.release(2)
    assert rb.write(np.ones(3), np.arange(4.0, 7.0)) == 3
    assert (rb.pending, rb.overwritten) == (5, 1)
    data, _, _ = rb.read_range(2, 5)
    np.testing.assert_array_equal(data[:, 0], [0, 0, 1, 1, 1])
    with pytest.raises(ConfigError):
        rb.release(1)  # backwards
    with pytest.raises(ConfigError):
        rb.release(8)  # past total_written


def test_overwrite_policy_never_raises() -> None:
    rb = RingBuffer(3, 1)
    for i in range(10):
        rb.write(np.array([float(i)]), np.array([float(i)]))
    assert rb.overwritten == 7
    np.testing.assert_array_equal(rb.latest(3)[0][:, 0], [7.0, 8.0, 9.0])


def test_gap_flag_set_and_carried_over_empty_block() -> None:
    rb = RingBuffer(10, 1)
    rb.write(np.zeros(3), np.arange(3.0))
    rb.write(np.zeros(2), np.array([10.0, 11.0]), gap_before=True)
    rb.write(np.zeros(0), np.zeros(0), gap_before=True)
    rb.write(np.zeros(2), np.array([20.0, 21.0]))
    _, _, flags = rb.latest(7)
    np.testing.assert_array_equal(flags & GAP_BEFORE, [0, 0, 0, 1, 0, 1, 0])


@pytest.mark.parametrize(
    "times",
    [np.array([5.0, 4.0, 6.0]), np.array([5.0, 5.0, 6.0]), np.array([0.5, 6.0, 7.0])],
)
def test_non_monotonic_rejected_nothing_written(times: np.ndarray) -> None:
    rb = RingBuffer(10, 1)
    rb.write(np.ones(2), np.array([0.0, 1.0]))
    before = rb.latest(2)
    with pytest.raises(BlockError) as err:
        rb.write(np.full(3, 9.0), times)
    assert err.value.reason == "non_monotonic_timestamps"
    assert rb.total_written == 2 and rb.last_timestamp == 1.0
    after = rb.latest(2)
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)


def test_malformed_blocks() -> None:
    rb = RingBuffer(10, 2)
    with pytest.raises(BlockError) as err:
        rb.write(np.zeros((3, 3)), np.arange(3.0))
    assert err.value.reason == "lead_count"
    with pytest.raises(BlockError) as err:
        rb.write(np.zeros((3, 2)), np.arange(4.0))
    assert err.value.reason == "timestamp_shape"
    with pytest.raises(BlockError) as err:
        rb.write(np.zeros((2, 2)), np.array([0.0, np.nan]))
    assert err.value.reason == "nonfinite_timestamps"
    assert rb.total_written == 0


def test_nonfinite_samples_stored_as_zero_and_flagged() -> None:
    rb = RingBuffer(4, 2)
    samples = np.array([[1.0, np.nan], [2.0, 3.0], [np.inf, 1e300]])
    rb.write(samples, np.arange(3.0))
    data, _, flags = rb.latest(3)
    np.testing.assert_array_equal(data, [[1.0, 0.0], [2.0, 3.0], [0.0, 0.0]])
    np.testing.assert_array_equal(flags & INVALID, [INVALID, 0, INVALID])


def test_read_range_errors() -> None:
    rb = RingBuffer(4, 1)
    rb.write(np.arange(6.0), np.arange(6.0))
    with pytest.raises(BlockError) as err:
        rb.read_range(1, 2)
    assert err.value.reason == "overwritten"
    with pytest.raises(ConfigError):
        rb.read_range(4, 3)  # not yet written
    with pytest.raises(ConfigError):
        rb.latest(5)
    assert rb.read_range(6, 0)[0].shape == (0, 1)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"capacity": 0, "n_leads": 1}, "capacity"),
        ({"capacity": 4, "n_leads": 0}, "n_leads"),
        ({"capacity": 4, "n_leads": 1, "overflow": "drop"}, "overflow"),
    ],
)
def test_invalid_config(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        RingBuffer(**kwargs)  # type: ignore[arg-type]
    assert err.value.field == field
