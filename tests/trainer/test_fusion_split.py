"""train-fusion refuses extractor runs whose split or windows differ from the raw run's."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer.checkpoint import save_checkpoint
from trainer.config import load_preset
from trainer.errors import ConfigError
from trainer.fusion import run_fusion, train_fusion
from trainer.models.unet1d import UNet1d


def _run(folder: Path, modality: str, **extra: str) -> Path:
    cfg = load_preset("smoke", {"data.modality": modality, **extra})
    save_checkpoint(folder / "diffecg.pt", UNet1d(cfg.model), cfg, step=0, complete=True)
    return folder


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"data.split_seed": "1"}, "data.split_seed"),
        ({"data.val_fraction": "0.3"}, "data.val_fraction"),
        ({"data.max_records": "0"}, "data.max_records"),
        ({"data.hop_s": "2.5"}, "data.hop_s"),
    ],
)
def test_runs_with_another_split_are_refused(tmp_path: Path, override, key: str) -> None:
    runs = {
        "raw": _run(tmp_path / "raw", "raw"),
        "spectrogram": _run(tmp_path / "spec", "spectrogram", **override),
        "lorenz": _run(tmp_path / "lor", "lorenz"),
    }
    with pytest.raises(ConfigError) as err:
        run_fusion(runs, tmp_path / "out")
    assert err.value.key == key and "spectrogram" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_zero_epochs_are_refused() -> None:
    with pytest.raises(ConfigError, match="epochs"):
        train_fusion({}, None, epochs=0)  # type: ignore[arg-type]
