"""Configuration of denoiser training: TOML presets ``denoise_{smoke,cpu,gpu}.toml``.

Sections ``[data]`` (:class:`DenoiseDataConfig`), ``[model]``
(:class:`~trainer.models.cdecgnet.CDConfig`) and ``[train]`` (:class:`DenoiseTrainConfig`);
``--section.key=value`` overrides as for the diffusion presets (lead count is
``--model.leads``, the clean database ``--data.databases``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from trainer.checks import check_data_range, check_range
from trainer.config import (
    build_sections,
    check_band,
    check_fraction,
    command_with_overrides,
    preset_names,
    read_preset,
)
from trainer.data.denoise_data import DATABASE_LEADS
from trainer.errors import ConfigError
from trainer.models.cdecgnet import CDConfig


@dataclass
class DenoiseDataConfig:
    """Clean data, the device representation, and how noise is drawn."""

    databases: tuple[str, ...] = ("mitdb",)
    fs: float = 128.0
    window_s: float = 10.0
    context_s: float = 5.0  # band-pass warm-up before each window
    low_hz: float = 0.5
    high_hz: float = 40.0
    val_fraction: float = 0.2  # evaluation records (the benchmarks score them)
    select_fraction: float = 0.1  # records that choose the checkpoint (with "select" noise)
    split_seed: int = 2017
    p_noisy: float = 0.6  # probability that a lead of X carries noise
    p_snr_mode: float = 0.5  # fixed-SNR level vs amplitude factor

    def __post_init__(self) -> None:
        self.databases = tuple(self.databases)
        unknown = [d for d in self.databases if d not in DATABASE_LEADS]
        if unknown or not self.databases:
            raise ConfigError(
                f"data.databases must be from {sorted(DATABASE_LEADS)}, got {self.databases}",
                key="data.databases",
            )
        check_data_range(self, nonnegative=("context_s",))
        check_band(self.low_hz, self.high_hz, self.fs)
        check_fraction(self.val_fraction)
        if not 0.0 < self.select_fraction < 1.0 - self.val_fraction:
            raise ConfigError(
                "data.select_fraction must lie in (0, 1 - val_fraction), got "
                f"{self.select_fraction}",
                key="data.select_fraction",
            )
        if not 0.0 <= self.p_noisy <= 1.0 or not 0.0 <= self.p_snr_mode <= 1.0:
            raise ConfigError("data.p_noisy and data.p_snr_mode are probabilities", key="data")

    @property
    def window(self) -> int:
        return int(round(self.window_s * self.fs))

    @property
    def context(self) -> int:
        return int(round(self.context_s * self.fs))


@dataclass
class DenoiseTrainConfig:
    steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-3
    lr_dis: float = 2e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    grad_clip: float = 1.0
    lambda_cons: float = 0.5  # λ of L_cons
    temperature: float = 0.5  # σ of L_cont
    w_noise: float = 1.0  # weight of the E_noise reconstruction term (an addition)
    seed: int = 0
    threads: int = 1
    log_every: int = 10
    ckpt_every: int = 200
    val_batches: int = 8
    max_minutes: float = 0.0
    amp: bool = True  # float16 autocast with loss scaling, used only on CUDA
    out_dir: str = "runs/denoise"

    def __post_init__(self) -> None:
        check_range(
            "train",
            self,
            positive=(
                "lr",
                "lr_dis",
                "grad_clip",
                "temperature",
                "steps",
                "batch_size",
                "log_every",
                "ckpt_every",
                "val_batches",
            ),
            seeds=("seed",),
            nonnegative=(
                "weight_decay",
                "warmup_steps",
                "lambda_cons",
                "w_noise",
                "threads",
                "max_minutes",
            ),
        )


@dataclass
class DenoiseRunConfig:
    data: DenoiseDataConfig = field(default_factory=DenoiseDataConfig)
    model: CDConfig = field(default_factory=CDConfig)
    train: DenoiseTrainConfig = field(default_factory=DenoiseTrainConfig)
    preset: str = "custom"

    def __post_init__(self) -> None:
        if self.model.window != self.data.window:
            raise ConfigError(
                f"model.window ({self.model.window}) must equal the data window "
                f"({self.data.window} samples)",
                key="model.window",
            )
        for db in self.data.databases:
            if self.model.leads > DATABASE_LEADS[db]:
                raise ConfigError(
                    f"{db} has {DATABASE_LEADS[db]} leads; model.leads is {self.model.leads}",
                    key="model.leads",
                )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SECTIONS = {"data": DenoiseDataConfig, "model": CDConfig, "train": DenoiseTrainConfig}


def build_denoise_config(
    table: dict[str, Any], overrides: dict[str, str] | None = None, preset: str = "custom"
) -> DenoiseRunConfig:
    return DenoiseRunConfig(**build_sections(table, overrides, SECTIONS), preset=preset)


def load_denoise_preset(
    name_or_path: str, overrides: dict[str, str] | None = None
) -> DenoiseRunConfig:
    """``smoke``/``cpu``/``gpu`` (``trainer/presets/denoise_<name>.toml``) or a TOML path."""
    table, name = read_preset(name_or_path, "denoise_")
    return build_denoise_config(table, overrides, preset=name)


def train_command(cfg: DenoiseRunConfig) -> str:
    """The ``ecgedge train-denoiser`` command that rebuilds ``cfg``: its preset (``cpu`` for a
    config from a file or none) plus an override for every value that differs from it."""
    preset = cfg.preset if cfg.preset in preset_names("denoise_") else "cpu"
    base = load_denoise_preset(preset).to_dict()
    return command_with_overrides("ecgedge train-denoiser", preset, cfg.to_dict(), base)
