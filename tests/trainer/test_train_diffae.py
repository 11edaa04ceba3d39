"""DiffAE-LRU presets, checkpoint round trip and the probe helper."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer.errors import CheckpointError, ConfigError
from trainer.models.diffae import DiffAE
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
    cfg = load_diffae_preset("smoke", {"train.out_dir": str(tmp_path)})
    save(tmp_path / CHECKPOINT, DiffAE(cfg.unet, cfg.lru), cfg, 1, {})  # loadable as is
    payload = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    torch.save({**payload, "kind": "diffecg"}, tmp_path / CHECKPOINT)  # complete, other kind
    with pytest.raises(CheckpointError, match="not a DiffAE-LRU checkpoint"):
        load(tmp_path / CHECKPOINT)


@pytest.mark.slow
def test_ddp_smoke_run_two_processes(tmp_path: Path) -> None:
    """Two CPU processes under torchrun (gloo): both take every step, rank 0 alone saves and
    records the world size, and its checkpoint loads."""
    repo = Path(__file__).resolve().parents[2]
    out = tmp_path / "ddp"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(repo), CUDA_VISIBLE_DEVICES="")
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "ecgedge", "train-diffae", "--preset", "smoke", "--data.source=synthetic",
        "--no-probe", f"--train.out_dir={out}",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stderr[-3000:]
    done = dict(re.findall(r"rank (\d): trained 4 steps, weights ([0-9a-f]{12})", proc.stdout))
    assert set(done) == {"0", "1"} and done["0"] == done["1"]  # replicas in step
    assert proc.stdout.count("trained ->") == 1  # rank 0 alone reports (and would probe)
    cfg, model, payload = load(out / CHECKPOINT)
    assert payload["step"] == 4 and cfg.data.source == "synthetic"
    assert payload["extra"]["world_size"] == 2
    assert payload["extra"]["windows_seen"] == 4 * cfg.train.batch_size * 2


def test_mixed_precision_training_step(tmp_path: Path, monkeypatch, grad_scalers) -> None:
    """The CUDA AMP path, run on the CPU (float16 autocast and a loss scaler there too): the
    U-Net runs in float16, the loss is scaled and the saved weights are float32 (that the LRU
    layers keep float32: tests/trainer/test_lru.py)."""
    from trainer import distributed
    from trainer.models.diffae import DiffAE

    monkeypatch.setattr(distributed.Runtime, "use_amp", property(lambda self: True))
    seen: set[torch.dtype] = set()
    unet_denoise = DiffAE.denoise

    def unet_spy(self, *args, **kwargs):
        out = unet_denoise(self, *args, **kwargs)
        seen.add(out.dtype)
        return out

    monkeypatch.setattr(DiffAE, "denoise", unet_spy)
    cfg = load_diffae_preset(
        "smoke", {"train.out_dir": str(tmp_path), "train.steps": "2", "data.source": "synthetic"}
    )
    windows = np.random.default_rng(1).standard_normal((8, 1, 1280)).astype(np.float32)
    _, _, payload = load(train(cfg, windows))
    assert seen == {torch.float16}
    assert len(grad_scalers) == 1 and grad_scalers[0].is_enabled()
    assert np.isfinite(payload["extra"]["final_loss"])
    assert all(
        v.dtype == torch.float32 for v in payload["state_dict"].values() if v.is_floating_point()
    )


def test_probe_takes_a_diffae_run_trained_without_its_probe(tmp_path: Path, capsys) -> None:
    """train-diffae --no-probe, then `ecgedge probe <run>/diffae.pt` fits its head (it failed
    with KeyError('model'), and export then found no head.npz)."""
    from ecgedge.cli import main

    cfg = load_diffae_preset(
        "smoke",
        {"train.out_dir": str(tmp_path), "train.steps": "2", "data.source": "synthetic"},
    )
    path = train(cfg, np.random.default_rng(0).standard_normal((8, 1, 1280)).astype(np.float32))
    assert not (tmp_path / "head.npz").exists()
    assert main(["probe", str(path)]) == 0, capsys.readouterr().err
    assert (tmp_path / "head.npz").is_file() and "probe: val" in capsys.readouterr().out
