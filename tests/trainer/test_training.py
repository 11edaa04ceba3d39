"""Smoke pretraining on synthetic data (single process, DDP, CUDA), checkpoints, DDPM maths."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer.checkpoint import FORMAT_VERSION, load_checkpoint, save_checkpoint
from trainer.config import load_preset
from trainer.diffusion import add_noise, alphas_cumprod, linear_betas
from trainer.errors import CheckpointError, ConfigError
from trainer.models.unet1d import UNet1d
from trainer.train_diffusion import train

REPO = Path(__file__).resolve().parents[2]


def _smoke(out_dir: Path, **extra: str):
    # threads=1: the default two intra-op threads fight the machine's other jobs (10x slower)
    overrides = {"data.source": "synthetic", "train.out_dir": str(out_dir), "train.threads": "1"}
    return load_preset("smoke", {**overrides, **extra})


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory):
    cfg = _smoke(tmp_path_factory.mktemp("smoke"))
    return cfg, train(cfg)


def test_smoke_training_finishes_with_finite_loss(smoke_run) -> None:
    cfg, result = smoke_run
    assert result.steps == cfg.train.steps == 4
    assert math.isfinite(result.final_loss) and result.final_loss > 0
    assert result.windows_seen == 4 * cfg.train.batch_size
    assert result.checkpoint == Path(cfg.train.out_dir) / "diffecg.pt"
    assert result.checkpoint.is_file()


def test_smoke_checkpoint_loads_into_fresh_unet(smoke_run) -> None:
    cfg, result = smoke_run
    loaded_cfg, state, payload = load_checkpoint(result.checkpoint)
    assert loaded_cfg == cfg
    assert payload["step"] == 4 and payload["format_version"] == FORMAT_VERSION
    assert math.isfinite(payload["extra"]["loss"])
    model = UNet1d(loaded_cfg.model)
    model.load_state_dict(state, strict=True)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, state[name]), name
    x = torch.randn(2, 1, cfg.data.window)
    with torch.no_grad():
        y = model(x, torch.tensor([0, 99]))
    assert y.shape == x.shape and torch.isfinite(y).all()


# --- checkpoint files ---------------------------------------------------------------------


class _NotATensor:
    """A pickled object that ``weights_only=True`` must refuse."""


@pytest.fixture
def good_checkpoint(tmp_path: Path) -> Path:
    cfg = _smoke(tmp_path)
    torch.manual_seed(0)
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, UNet1d(cfg.model), cfg, step=3, extra={"loss": 0.5}, complete=True)
    return path


def test_checkpoint_round_trip(good_checkpoint: Path) -> None:
    cfg, state, payload = load_checkpoint(good_checkpoint)
    assert cfg.preset == "smoke" and payload["step"] == 3 and payload["extra"] == {"loss": 0.5}
    UNet1d(cfg.model).load_state_dict(state, strict=True)
    assert [p.name for p in good_checkpoint.parent.iterdir()] == ["ckpt.pt"]  # no temporary


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_checkpoint_raises(good_checkpoint: Path, damage: str) -> None:
    data = good_checkpoint.read_bytes()
    good_checkpoint.write_bytes(
        {"truncate": data[: len(data) // 2], "garbage": b"not a checkpoint\n" * 9, "empty": b""}[
            damage
        ]
    )
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(good_checkpoint)
    assert str(good_checkpoint) in str(err.value)
    assert "pickled Python objects" not in str(err.value)  # said of any unreadable file


def test_missing_checkpoint_raises(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "absent.pt")


def test_checkpoint_of_other_format_raises(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"format_version": FORMAT_VERSION + 1, "state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="format"):
        load_checkpoint(path)
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_checkpoint_with_arbitrary_objects_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pickled.pt"
    torch.save({"format_version": FORMAT_VERSION, "config": _NotATensor()}, path)
    with pytest.raises(
        CheckpointError, match="cannot read.*pickled Python objects.*arbitrary code"
    ):
        load_checkpoint(path)


def test_a_checkpoint_of_an_interrupted_run_is_refused_until_the_run_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trainer.train_diffusion as td
    from trainer.probe import run_probe

    real_save = td.save_checkpoint

    def save_then_stop(*args, complete, **kw):  # noqa: ANN002, ANN003, ANN202
        real_save(*args, complete=complete, **kw)
        if not complete:
            raise KeyboardInterrupt  # ^C right after the first checkpoint of the run

    monkeypatch.setattr(td, "save_checkpoint", save_then_stop)
    cfg = _smoke(tmp_path, **{"train.ckpt_every": "2"})
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    path = tmp_path / "diffecg.pt"
    assert torch.load(path, weights_only=True)["step"] == 2  # what the interrupt left
    with pytest.raises(CheckpointError, match=r"did not finish \(saved at step 2 while"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="did not finish"):
        run_probe(path, tmp_path)
    monkeypatch.setattr(td, "save_checkpoint", real_save)
    train(cfg)  # the run trained again to its end
    assert load_checkpoint(path)[2]["step"] == 4
    payload = torch.load(path, weights_only=True)
    del payload["complete"]  # as an older ecgedge wrote it
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="from before checkpoints recorded whether"):
        load_checkpoint(path)


@pytest.mark.parametrize("missing", ["config", "state_dict", "config.model"])
def test_checkpoint_missing_fields_raises(good_checkpoint: Path, missing: str) -> None:
    """A payload of the right version but without its parts is corrupt, not a KeyError."""
    payload = torch.load(good_checkpoint, weights_only=True)
    if missing == "config.model":
        del payload["config"]["model"]
    else:
        del payload[missing]
    torch.save(payload, good_checkpoint)
    with pytest.raises(CheckpointError):
        load_checkpoint(good_checkpoint)


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [("model", "dims", [16, 32]), ("model", "groups", 0), ("train", "steps", "4")],
)
def test_checkpoint_config_that_does_not_fit_its_weights_raises(
    good_checkpoint: Path, section: str, key: str, value
) -> None:
    """Weights of another geometry or a config no model can be built from: CheckpointError."""
    payload = torch.load(good_checkpoint, weights_only=True)
    payload["config"][section][key] = value
    torch.save(payload, good_checkpoint)
    with pytest.raises(CheckpointError, match="invalid checkpoint"):
        load_checkpoint(good_checkpoint)


def test_retrained_checkpoint_refuses_the_old_head(tmp_path: Path) -> None:
    """Training removes the previous probe's files; a head kept from it is refused."""
    from trainer.probe import load_head, run_probe

    cfg = _smoke(tmp_path)
    ckpt = train(cfg).checkpoint
    run_probe(ckpt, tmp_path)
    load_head(tmp_path / "head.npz")  # the pair matches
    old_head = (tmp_path / "head.npz").read_bytes()
    train(_smoke(tmp_path, **{"train.seed": "1", "train.steps": "2"}))
    assert not (tmp_path / "head.npz").exists() and not (tmp_path / "probe.json").exists()
    (tmp_path / "head.npz").write_bytes(old_head)
    with pytest.raises(CheckpointError, match=f"ecgedge probe {ckpt}"):
        load_head(tmp_path / "head.npz")


# --- diffusion forward process --------------------------------------------------------------


@pytest.mark.parametrize("n_steps", [100, 1000])
def test_alpha_bar_strictly_decreasing_in_unit_interval(n_steps: int) -> None:
    betas = linear_betas(n_steps)
    abar = alphas_cumprod(betas)
    assert abar.shape == (n_steps,) and abar.dtype == np.float64
    assert np.all((abar > 0) & (abar < 1))
    assert np.all(np.diff(abar) < 0)
    assert abar[-1] < 1e-3  # almost pure noise at the last step
    assert betas.sum() == pytest.approx(linear_betas(1000).sum())  # same total noise for any T


def test_add_noise_endpoints() -> None:
    abar = torch.from_numpy(alphas_cumprod(linear_betas(1000))).float()
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 1, 512, generator=gen)
    noise = torch.randn(3, 1, 512, generator=gen)
    x_t = add_noise(x0, torch.tensor([0, 0, 999]), noise, abar)
    # t = 0: sqrt(abar_0) = sqrt(0.9999) ~ 0.99995 and sqrt(1 - abar_0) = 0.01
    assert (x_t[:2] - x0[:2]).pow(2).mean().sqrt() < 0.02
    expected = abar[0].sqrt() * x0[:2] + (1 - abar[0]).sqrt() * noise[:2]
    torch.testing.assert_close(x_t[:2], expected)
    # t = T-1: nearly all noise
    corr = np.corrcoef(x_t[2].ravel().numpy(), noise[2].ravel().numpy())[0, 1]
    assert corr > 0.999


# --- distributed and CUDA -------------------------------------------------------------------


@pytest.mark.slow
def test_ddp_smoke_run_two_processes(tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    # two CPU processes with gloo, also on a machine with one GPU (rank 1 would have none)
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="")
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "ecgedge", "train", "--preset", "smoke", "--data-source", "synthetic",
        "--no-probe", f"--train.out_dir={out}",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stderr[-3000:]
    done = dict(re.findall(r"rank (\d): pretrained 4 steps, weights ([0-9a-f]{12})", proc.stdout))
    assert set(done) == {"0", "1"} and done["0"] == done["1"]  # every step, replicas in step
    cfg, state, payload = load_checkpoint(out / "diffecg.pt")
    assert payload["step"] == 4 and cfg.data.source == "synthetic"
    UNet1d(cfg.model).load_state_dict(state, strict=True)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_amp_smoke_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, grad_scalers: list
) -> None:
    import trainer.train_diffusion as train_diffusion

    forwards = []

    class RecordingUNet(UNet1d):
        """Records where each forward pass ran and the dtype autocast gave its output."""

        def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            out = super().forward(x_t, t)
            forwards.append((x_t.device.type, out.dtype))
            return out

    monkeypatch.setattr(train_diffusion, "UNet1d", RecordingUNet)
    cfg = _smoke(tmp_path, **{"train.steps": "1", "train.amp": "true", "train.ckpt_every": "1"})
    result = train(cfg)
    assert result.steps == 1 and math.isfinite(result.final_loss)
    # the step ran on the GPU under float16 autocast, with loss scaling on
    assert forwards == [("cuda", torch.float16)]
    assert len(grad_scalers) == 1 and grad_scalers[0].is_enabled()
    _, state, _ = load_checkpoint(result.checkpoint)
    assert all(t.device.type == "cpu" for t in state.values())


def test_more_ranks_than_gpus_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from trainer import distributed

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(ConfigError, match="nproc_per_node"):
        distributed.setup()


def test_short_schedules_keep_every_beta_below_one() -> None:
    from trainer.diffusion import MAX_BETA

    for steps in (5, 10, 20, 50, 1000):
        betas = linear_betas(steps)
        abar = alphas_cumprod(betas)
        assert betas.max() <= MAX_BETA and abar[-1] > 0 and np.all(np.diff(abar) < 0)
    assert np.allclose(linear_betas(1000)[[0, -1]], [1e-4, 0.02])  # DDPM's own, uncapped


def test_a_diverged_run_saves_nothing_and_says_so(tmp_path: Path) -> None:
    """lr 1e6 without clipping: the weights go non-finite; no checkpoint is written (an
    earlier good one would stay) and the error names the step and what to lower."""
    import pytest

    from trainer.config import load_preset
    from trainer.errors import DivergedError
    from trainer.train_diffusion import train

    cfg = load_preset(
        "smoke",
        {
            "data.source": "synthetic",
            "train.out_dir": str(tmp_path),
            "train.lr": "1e6",
            "train.grad_clip": "1e9",
            "train.steps": "8",
            "train.ckpt_every": "4",
        },
    )
    with pytest.raises(DivergedError, match=r"diverged by step \d+: .*lower train.lr"):
        train(cfg)
    assert not (tmp_path / "diffecg.pt").exists()


def test_an_out_dir_that_is_a_file_is_refused_before_any_training(tmp_path: Path) -> None:
    """train / train-diffae / train-denoiser / train-dacl / train-fusion trained to the end and
    then failed on a file in place of their output folder (an hour lost at the cpu preset)."""
    import pytest

    from trainer.config import load_preset
    from trainer.dacl import load_dacl_preset, train_dacl
    from trainer.denoise_config import load_denoise_preset
    from trainer.errors import ConfigError
    from trainer.fusion import run_fusion
    from trainer.train_denoiser import train_denoiser
    from trainer.train_diffae import load_diffae_preset
    from trainer.train_diffae import train as train_diffae
    from trainer.train_diffusion import train

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    runs = [
        lambda: train(load_preset("smoke", {"train.out_dir": str(blocker)})),
        lambda: train_diffae(load_diffae_preset("smoke", {"train.out_dir": str(blocker)})),
        lambda: train_denoiser(load_denoise_preset("smoke", {"train.out_dir": str(blocker)})),
        lambda: train_dacl(load_dacl_preset("smoke", {"run.out_dir": str(blocker)})),
        lambda: run_fusion({"raw": tmp_path}, blocker),
    ]
    for run in runs:
        with pytest.raises(ConfigError, match="is a file; give a folder"):
            run()
    with pytest.raises(ConfigError, match="is the raw run the fusion reads"):
        run_fusion({"raw": tmp_path / "raw"}, tmp_path / "raw")
    blocker.chmod(0o755)  # an executable file is still no folder to create a run in
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        train(load_preset("smoke", {"train.out_dir": str(blocker / "run")}))


def test_every_trainer_refuses_a_folder_of_another_kind_of_run(tmp_path: Path) -> None:
    """Training into a fusion run (or a bundle...) would delete or overwrite what makes it one."""
    from trainer.dacl import load_dacl_preset, train_dacl
    from trainer.denoise_config import load_denoise_preset
    from trainer.fusion import run_fusion
    from trainer.train_denoiser import train_denoiser
    from trainer.train_diffae import load_diffae_preset
    from trainer.train_diffae import train as train_diffae

    def folder(marker: str) -> Path:
        path = tmp_path / marker.replace(".", "-")
        path.mkdir(exist_ok=True)
        (path / marker).write_text("{}")
        (path / "head.npz").write_text("the run's head")
        return path

    runs = {
        "diffecg.pt": lambda out: train(load_preset("smoke", {"train.out_dir": str(out)})),
        "diffae.pt": lambda out: train_diffae(
            load_diffae_preset("smoke", {"train.out_dir": str(out)})
        ),
        "denoiser.pt": lambda out: train_denoiser(
            load_denoise_preset("smoke", {"train.out_dir": str(out)})
        ),
        "dacl.json": lambda out: train_dacl(load_dacl_preset("smoke", {"run.out_dir": str(out)})),
        "modalities.json": lambda out: run_fusion({"raw": tmp_path / "raw"}, out),
    }
    for own, run in runs.items():
        for other in [*runs, "manifest.json"]:
            if other != own:
                target = folder(other)
                with pytest.raises(ConfigError, match=f"holds {other} of another kind"):
                    run(target)
                assert sorted(p.name for p in target.iterdir()) == sorted([other, "head.npz"])
                assert (target / "head.npz").read_text() == "the run's head"
    # its own kind is accepted: a fusion over an older fusion gets as far as reading its inputs
    with pytest.raises(CheckpointError, match="not found"):
        run_fusion(
            {m: tmp_path / "raw" for m in ("raw", "spectrogram", "lorenz")},
            folder("modalities.json"),
        )
