"""DiffAE-LRU presets, checkpoint round trip and the probe helper."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from trainer.errors import CheckpointError, ConfigError
from trainer.train_diffae import CHECKPOINT, load, load_diffae_preset, save, train


def test_presets_load_with_overrides() -> None:
    cfg = load_diffae_preset("cpu", {"train.steps": "7", "lru.layers": "2"})
    assert cfg.train.steps == 7 and cfg.lru.layers == 2
    assert cfg.data.window % cfg.lru.block_samples == 0


def test_preset_rejects_unknown_key_and_bad_block() -> None:
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['nope'\] in \[lru\]") as err:
        load_diffae_preset("smoke", {"lru.nope": "1"})
    assert err.value.key == "nope"
    with pytest.raises(ConfigError, match="must divide by lru block 132") as err:
        load_diffae_preset("smoke", {"lru.chunk": "33"})  # 1280 % (4 * 33) != 0
    assert err.value.key == "lru.chunk"


def test_train_save_load_round_trip(tmp_path: Path) -> None:
    cfg = load_diffae_preset(
        "smoke",
        {"train.out_dir": str(tmp_path), "train.steps": "2", "data.source": "synthetic"},
    )
    windows = np.random.default_rng(0).standard_normal((8, 1, 1280)).astype(np.float32)
    path = train(cfg, windows)
    cfg2, model, payload = load(path)
    assert payload["step"] == 2 and cfg2.lru == cfg.lru
    x = torch.from_numpy(windows[:2])
    with torch.no_grad():
        assert model.encoder(x).shape == (2, cfg.lru.emb_dim)
    save(tmp_path / "again.pt", model, cfg2, 2, {})
    assert load(tmp_path / "again.pt")[2]["step"] == 2


def test_load_rejects_other_checkpoints(tmp_path: Path) -> None:
    torch.save({"format_version": 1, "kind": "other"}, tmp_path / CHECKPOINT)
    with pytest.raises(CheckpointError):
        load(tmp_path / CHECKPOINT)
