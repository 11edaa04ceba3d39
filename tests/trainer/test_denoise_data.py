"""The denoiser's record split keeps both sides non-empty or says why it cannot."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer.data.denoise_data import record_split
from trainer.errors import ConfigError


def _mitdb(root: Path, names: str) -> None:
    (root / "mitdb").mkdir()
    (root / "mitdb" / "RECORDS").write_text(names)


@pytest.mark.parametrize("fraction", [1.0, 0.0, -0.5, 1.5])
def test_record_split_rejects_fractions_outside_0_1(tmp_data_root: Path, fraction: float) -> None:
    _mitdb(tmp_data_root, "100\n101\n102\n103\n")
    with pytest.raises(ConfigError, match="val_fraction"):
        record_split("mitdb", fraction, 0)


def test_record_split_refuses_an_empty_training_side(tmp_data_root: Path) -> None:
    _mitdb(tmp_data_root, "100\n118\n119\n")  # one record left after the noise-stress ones
    with pytest.raises(ConfigError, match="1 records give 0 for training"):
        record_split("mitdb", 0.2, 0)


def test_record_split_needs_a_record_on_each_of_three_sides(tmp_data_root: Path) -> None:
    _mitdb(tmp_data_root, "100\n101\n102\n")
    split = record_split("mitdb", 0.2, 0, select_fraction=0.1)
    assert [len(s) for s in (split.train, split.select, split.eval)] == [1, 1, 1]
    _mitdb_records = tmp_data_root / "mitdb" / "RECORDS"
    _mitdb_records.write_text("100\n101\n")
    with pytest.raises(ConfigError, match="0 for training, 1 for checkpoint selection"):
        record_split("mitdb", 0.2, 0, select_fraction=0.1)


@pytest.mark.parametrize("fraction", [-0.1, 1.0])
def test_record_split_rejects_select_fractions_outside_0_1(
    tmp_data_root: Path, fraction: float
) -> None:
    _mitdb(tmp_data_root, "100\n101\n102\n103\n")
    with pytest.raises(ConfigError, match="select_fraction"):
        record_split("mitdb", 0.2, 0, select_fraction=fraction)


def test_record_split_is_disjoint_and_covering(tmp_data_root: Path) -> None:
    names = [str(n) for n in range(100, 110)]
    _mitdb(tmp_data_root, "\n".join([*names, "118"]) + "\n")
    split = record_split("mitdb", 0.2, 0, select_fraction=0.3)
    assert (len(split.train), len(split.select), len(split.eval)) == (5, 3, 2)
    assert sorted(split.train + split.select + split.eval) == names


def test_selection_records_leave_the_evaluation_side_unchanged(tmp_data_root: Path) -> None:
    """Runs with and without selection records are benchmarked on the same records."""
    _mitdb(tmp_data_root, "\n".join(str(n) for n in range(100, 120)) + "\n")
    without, with_select = record_split("mitdb", 0.2, 3), record_split("mitdb", 0.2, 3, 0.15)
    assert with_select.eval == without.eval and not without.select
    assert sorted(with_select.train + with_select.select) == without.train
