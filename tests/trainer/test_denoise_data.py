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


def test_record_split_is_disjoint_and_covering(tmp_data_root: Path) -> None:
    _mitdb(tmp_data_root, "100\n101\n102\n103\n104\n118\n")
    train, val = record_split("mitdb", 0.4, 0)
    assert len(val) == 2 and sorted(train + val) == ["100", "101", "102", "103", "104"]
