"""Windowing tail policies and the stratified, seeded record split."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from sdk.errors import ConfigError as SdkConfigError
from sdk.windowing import cut_windows, window_starts
from trainer.data.splits import stratified_split
from trainer.errors import ConfigError

# (n_samples, window, hop) -> expected starts for align_end, pad, drop
STARTS = [
    # shorter than one window: one window at 0 (zero-padded), none when dropping
    ((7, 10, 5), [0], [0], []),
    # exactly one window
    ((10, 10, 5), [0], [0], [0]),
    # exact multiples of the hop: no tail under any policy
    ((20, 10, 5), [0, 5, 10], [0, 5, 10], [0, 5, 10]),
    ((25, 10, 5), [0, 5, 10, 15], [0, 5, 10, 15], [0, 5, 10, 15]),
    # a 3-sample tail after 0, 5, 10 (last covers 10..19 of 0..22)
    ((23, 10, 5), [0, 5, 10, 13], [0, 5, 10, 15], [0, 5, 10]),
    # hop == window with a 5-sample tail
    ((35, 10, 10), [0, 10, 20, 25], [0, 10, 20, 30], [0, 10, 20]),
    # hop not dividing the window
    ((11, 4, 3), [0, 3, 6, 7], [0, 3, 6, 9], [0, 3, 6]),
]


@pytest.mark.parametrize(("args", "align_end", "pad", "drop"), STARTS)
def test_window_starts_exact(args, align_end, pad, drop) -> None:
    for tail, expected in (("align_end", align_end), ("pad", pad), ("drop", drop)):
        got = window_starts(*args, tail=tail)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, expected, err_msg=f"{args} {tail}")


def test_window_starts_default_is_align_end() -> None:
    np.testing.assert_array_equal(window_starts(23, 10, 5), [0, 5, 10, 13])


@pytest.mark.parametrize("tail", ["align_end", "pad"])
def test_window_starts_cover_every_sample(tail: str) -> None:
    for n in range(1, 60):
        for window, hop in ((8, 3), (8, 8), (5, 2)):
            covered = np.zeros(n, dtype=bool)
            for s in window_starts(n, window, hop, tail):
                covered[s : s + window] = True
            assert covered.all(), (n, window, hop, tail)


def test_window_starts_drop_stays_inside() -> None:
    for n in range(0, 60):
        starts = window_starts(n, 8, 3, "drop")
        assert np.all(starts + 8 <= n)
        assert np.all(np.diff(starts) == 3)


@pytest.mark.parametrize(("window", "hop"), [(0, 5), (10, 0), (-1, 1), (10, -2)])
def test_window_starts_rejects_nonpositive(window: int, hop: int) -> None:
    with pytest.raises(SdkConfigError):
        window_starts(100, window, hop)


def test_cut_windows_pad_zero_fills_the_tail() -> None:
    x = np.arange(1, 24, dtype=np.float64)  # 23 samples, values 1..23
    w = cut_windows(x, 10, 5, "pad")
    assert w.shape == (4, 1, 10) and w.dtype == np.float32
    np.testing.assert_array_equal(w[0, 0], np.arange(1, 11))
    np.testing.assert_array_equal(w[3, 0], [16, 17, 18, 19, 20, 21, 22, 23, 0, 0])
    aligned = cut_windows(x, 10, 5, "align_end")
    np.testing.assert_array_equal(aligned[-1, 0], np.arange(14, 24))


def test_cut_windows_short_record_and_leads() -> None:
    x = np.stack([np.arange(1, 8), -np.arange(1, 8)], axis=1).astype(np.float32)  # (7, 2)
    w = cut_windows(x, 10, 5)
    assert w.shape == (1, 2, 10)
    np.testing.assert_array_equal(w[0, 0], [1, 2, 3, 4, 5, 6, 7, 0, 0, 0])
    np.testing.assert_array_equal(w[0, 1], [-1, -2, -3, -4, -5, -6, -7, 0, 0, 0])
    assert cut_windows(x, 10, 5, "drop").shape == (0, 2, 10)


# --- stratified_split -----------------------------------------------------------------------

CLASS_SIZES = {"N": 53, "A": 17, "O": 23, "~": 7}


def _dataset() -> tuple[list[str], list[str]]:
    names, labels = [], []
    for label, count in CLASS_SIZES.items():
        for i in range(count):
            names.append(f"{label}{i:03d}")
            labels.append(label)
    return names, labels


def test_split_deterministic_disjoint_and_covering() -> None:
    names, labels = _dataset()
    train, val = stratified_split(names, labels, val_fraction=0.2, seed=3)
    assert (train, val) == stratified_split(names, labels, val_fraction=0.2, seed=3)
    assert not set(train) & set(val)
    assert sorted(train + val) == sorted(names)
    assert train == sorted(train) and val == sorted(val)


def test_split_independent_of_input_order() -> None:
    names, labels = _dataset()
    perm = np.random.default_rng(0).permutation(len(names))
    shuffled = ([names[i] for i in perm], [labels[i] for i in perm])
    assert stratified_split(*shuffled, seed=11) == stratified_split(names, labels, seed=11)


@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.35, 0.5])
def test_split_keeps_class_proportions(fraction: float) -> None:
    names, labels = _dataset()
    label_of = dict(zip(names, labels))
    _, val = stratified_split(names, labels, val_fraction=fraction, seed=0)
    per_class = Counter(label_of[n] for n in val)
    for label, count in CLASS_SIZES.items():
        assert abs(per_class[label] - fraction * count) <= 1, (label, per_class[label])


def test_split_seeds_differ() -> None:
    names, labels = _dataset()
    vals = {tuple(stratified_split(names, labels, seed=s)[1]) for s in range(5)}
    assert len(vals) == 5


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_split_rejects_bad_fraction(fraction: float) -> None:
    names, labels = _dataset()
    with pytest.raises(ConfigError) as err:
        stratified_split(names, labels, val_fraction=fraction)
    assert isinstance(err.value, ValueError)
    assert err.value.key == "val_fraction"


def test_split_rejects_length_mismatch() -> None:
    with pytest.raises(ConfigError):
        stratified_split(["a", "b"], ["N"])
