"""FrameAssembler: sequence numbers across reorderings, give-ups and new links."""

from __future__ import annotations

import numpy as np
import pytest

from firmware_bridge.assembler import DecodedFrame, FrameAssembler

FS, N = 250.0, 50


class CountingSink:
    def __init__(self) -> None:
        self.starts: list[int] = []
        self.frames: list[int] = []  # which frame each block came from (its sample value)

    def push(self, samples, *, timestamp_s=None, fs=None):
        self.starts.append(round(timestamp_s * FS))
        self.frames.append(int(samples[0, 0]))


def frame(index: int, seq: int) -> DecodedFrame:
    """Frame ``index`` of the stream; every sample holds ``index``."""
    samples = np.full((N, 1), index, np.float32)
    return DecodedFrame(round(index * N * 1e9 / FS), samples, FS, seq)


@pytest.mark.parametrize(
    ("order", "reordered"),
    [
        ([0, 2, 1, 3], 1),  # frame 1 one frame late
        ([0, 3, 2, 1, 4], 2),  # frames 2 and 1 each arrive after a later one
        ([0, 1, 5, 2, 3, 4, 6], 3),  # frame 5 four frames early: the window holds it
    ],
)
def test_frames_arriving_out_of_order_within_the_window_are_put_back_in_order(order, reordered):
    sink = CountingSink()
    asm = FrameAssembler(sink, FS, reorder_depth=4)
    for k in order:
        asm.add(frame(k, k))
    asm.flush()
    n = len(order)
    assert sink.frames == list(range(n))  # placed in sequence order, none dropped
    assert sink.starts == [k * N for k in range(n)]  # each at its own place, no gap
    stats = asm.stats
    assert stats.reordered == reordered and stats.frames == n
    assert stats.samples_lost == stats.gaps == stats.late == stats.duplicates == 0


def test_a_frame_arriving_after_the_reorder_window_gave_up_is_late_not_a_duplicate():
    asm = FrameAssembler(CountingSink(), FS, reorder_depth=4)
    for k in [0, 2, 3, 4, 5, 6, 1, 1]:  # frame 1 six frames late, then repeated
        asm.add(frame(k, k))
    asm.flush()
    stats = asm.stats
    assert stats.samples_lost == N and stats.gaps == 1  # given up on: counted lost once
    assert stats.late == 1 and stats.duplicates == 1  # the repeat is a duplicate


def test_reset_sequence_takes_the_next_frame_as_it_comes_and_timestamps_size_the_gap():
    sink = CountingSink()
    asm = FrameAssembler(sink, FS, reorder_depth=4)
    for k in range(3):
        asm.add(frame(k, 100 + k))
    asm.reset_sequence()  # a new link: the sensor restarted its counter
    for k in range(5, 8):
        asm.add(frame(k, k - 5))
    asm.flush()
    assert sink.starts == [0, N, 2 * N, 5 * N, 6 * N, 7 * N]
    assert asm.stats.duplicates == 0 and asm.stats.samples_lost == 2 * N


def test_a_sequence_counter_that_steps_back_while_time_goes_on_is_a_restart_not_duplicates():
    """Ten new frames were dropped as duplicates (500 samples in a flagged gap) when the
    counter went back by 10 and the timestamps carried on."""
    sink = CountingSink()
    asm = FrameAssembler(sink, FS, reorder_depth=4)
    seqs = [*range(20), *range(10, 20)]  # frame 20 carries sequence number 10 again
    for k, seq in enumerate(seqs):
        asm.add(frame(k, seq))
    asm.add(frame(25, 15))  # a true repeat of an earlier frame after the restart
    asm.flush()
    stats = asm.stats
    assert sink.frames == list(range(30)) and sink.starts == [k * N for k in range(30)]
    assert stats.seq_resets == 1 and stats.duplicates == 1
    assert stats.samples_lost == stats.gaps == 0


def test_a_counter_restart_onto_numbers_given_up_as_lost_is_still_a_restart():
    """Frames 10 and 11 lost, then the counter restarts at 10: the new frames were dropped
    as late ones."""
    sink = CountingSink()
    asm = FrameAssembler(sink, FS, reorder_depth=4)
    arrived = [k for k in range(20) if k not in (10, 11)]
    for k in arrived:
        asm.add(frame(k, k))
    for k in range(20, 24):  # new frames, numbered from 10 again
        asm.add(frame(k, k - 10))
    asm.flush()
    stats = asm.stats
    assert sink.frames == [*arrived, 20, 21, 22, 23]
    assert stats.seq_resets == 1 and stats.late == 0 and stats.duplicates == 0
    assert stats.samples_lost == 2 * N and stats.gaps == 1
