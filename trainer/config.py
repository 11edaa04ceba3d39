"""Configuration dataclasses and TOML presets (``smoke``, ``cpu``, ``gpu``).

A preset is a TOML file with ``[data]``, ``[model]`` and ``[train]`` tables; ``--key=value``
overrides address ``section.field``. Unknown sections or keys are errors.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10 (JetPack 6): the same parser, installed by [train]
    import tomli as tomllib

from sdk.modalities import MODALITIES
from trainer.checks import DIFFUSION_TRAIN_POSITIVE, check_data_range, check_range
from trainer.data.records import ECG_READERS
from trainer.errors import ConfigError
from trainer.models.unet1d import UNetConfig

PRESET_DIR = Path(__file__).parent / "presets"
#: File-name prefixes of the presets of other commands (train-denoiser, train-diffae,
#: train-dacl).
OTHER_COMMAND_PREFIXES = ("denoise_", "lru_", "dacl_")


def preset_names(prefix: str = "") -> tuple[str, ...]:
    """Preset names of one command: files ``<prefix><name>.toml``; without a prefix, the
    ``train`` presets (files without any of :data:`OTHER_COMMAND_PREFIXES`)."""
    stems = sorted(p.stem for p in PRESET_DIR.glob("*.toml"))
    if prefix:
        return tuple(s.removeprefix(prefix) for s in stems if s.startswith(prefix))
    return tuple(s for s in stems if not s.startswith(OTHER_COMMAND_PREFIXES))


PRESETS = preset_names()


def check_band(low_hz: float, high_hz: float, fs: float) -> None:
    """``0 < low_hz < high_hz < fs / 2`` (the band-pass of the device representation)."""
    if not 0 < low_hz < high_hz < fs / 2:
        raise ConfigError(
            f"0 < low_hz ({low_hz}) < high_hz ({high_hz}) < fs / 2 ({fs / 2}) must hold",
            key="data.high_hz",
        )


def check_fraction(val_fraction: float) -> None:
    """``0 < val_fraction < 1``: both the training and the validation side get records."""
    if not 0 < val_fraction < 1:
        raise ConfigError(
            f"data.val_fraction must lie in (0, 1), got {val_fraction}", key="data.val_fraction"
        )


@dataclass
class DataConfig:
    """Which windows the models see."""

    source: str = "shared"  # "shared" (data root) or "synthetic" (no data needed)
    fs: float = 128.0
    window_s: float = 10.0
    hop_s: float = 5.0
    low_hz: float = 0.5
    high_hz: float = 40.0
    pretrain_databases: tuple[str, ...] = ("cinc2017", "mitdb", "cpsc2021")
    max_records: int = 0  # 0 = all; a cap keeps smoke runs fast
    val_fraction: float = 0.2
    split_seed: int = 2017
    modality: str = "raw"  # "raw", "spectrogram" or "lorenz": what the U-Net is trained on

    def __post_init__(self) -> None:
        self.pretrain_databases = tuple(self.pretrain_databases)
        if self.modality not in MODALITIES:
            raise ConfigError(
                f"data.modality must be one of {list(MODALITIES)}, got {self.modality!r}",
                key="data.modality",
            )
        if self.source not in ("shared", "synthetic"):
            raise ConfigError(
                f"data.source must be 'shared' or 'synthetic', got {self.source!r}",
                key="data.source",
            )
        if not 0 < self.hop_s <= self.window_s:
            raise ConfigError(
                f"0 < hop_s ({self.hop_s}) <= window_s ({self.window_s}) must hold",
                key="data.hop_s",
            )
        check_data_range(self, nonnegative=("max_records",))
        check_band(self.low_hz, self.high_hz, self.fs)
        check_fraction(self.val_fraction)
        unknown = [d for d in self.pretrain_databases if d not in ECG_READERS]
        if unknown or not self.pretrain_databases:
            raise ConfigError(
                f"data.pretrain_databases must be from {sorted(ECG_READERS)}, "
                f"got {list(self.pretrain_databases)}",
                key="data.pretrain_databases",
            )

    @property
    def window(self) -> int:
        return int(round(self.window_s * self.fs))

    @property
    def hop(self) -> int:
        return int(round(self.hop_s * self.fs))


@dataclass
class TrainConfig:
    """How the diffusion pretraining runs."""

    steps: int = 1000
    batch_size: int = 64
    lr: float = 2e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    grad_clip: float = 1.0
    diffusion_steps: int = 1000
    seed: int = 0
    amp: bool = True  # used only on CUDA
    threads: int = 0  # torch intra-op threads on CPU; 0 = torch's default
    log_every: int = 20
    ckpt_every: int = 500
    max_minutes: float = 0.0  # 0 = no wall-clock limit; otherwise stop early and save
    out_dir: str = "runs/diffecg"
    probe_t: tuple[int, ...] = (1, 10, 20, 50, 100)

    def __post_init__(self) -> None:
        self.probe_t = tuple(int(t) for t in self.probe_t)
        check_range(
            "train",
            self,
            positive=(*DIFFUSION_TRAIN_POSITIVE, "ckpt_every"),
            nonnegative=("weight_decay", "warmup_steps", "threads", "max_minutes"),
            seeds=("seed",),
        )
        if not self.probe_t or any(not 0 <= t < self.diffusion_steps for t in self.probe_t):
            raise ConfigError(
                f"train.probe_t needs values in [0, {self.diffusion_steps})", key="train.probe_t"
            )


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: UNetConfig = field(default_factory=UNetConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    preset: str = "custom"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_SECTIONS = {"data": DataConfig, "model": UNetConfig, "train": TrainConfig}


def _coerce(cls: type, key: str, raw: str) -> Any:
    """Convert an override string to the field's type; unknown keys pass through unchanged."""
    if key not in {f.name for f in dataclasses.fields(cls)}:
        return raw  # build_config reports it as unknown, with the known keys
    default = getattr(cls(), key)
    try:
        if isinstance(default, bool):
            if raw.lower() not in ("true", "false", "1", "0"):
                raise ValueError(raw)
            return raw.lower() in ("true", "1")
        if isinstance(default, tuple):
            inner = type(default[0]) if default else str
            return tuple(inner(v) for v in raw.split(",") if v)
        return type(default)(raw)
    except ValueError as exc:
        raise ConfigError(
            f"{cls.__name__}.{key}: cannot read {raw!r} as {type(default).__name__}", key=key
        ) from exc


def _typed(cls: type, section: str, key: str, value: Any) -> Any:
    """``value`` as the type of the field's default (ints pass as floats, lists as tuples);
    :class:`ConfigError` naming ``section.key`` otherwise. Unknown keys pass unchanged."""
    if key not in {f.name for f in dataclasses.fields(cls)}:
        return value  # build_sections reports it as unknown, with the known keys
    default = getattr(cls(), key)
    if isinstance(default, tuple):
        inner = type(default[0]) if default else str
        if isinstance(value, list | tuple) and all(_fits(v, inner) for v in value):
            return tuple(inner(v) for v in value)
        expected = f"a list of {inner.__name__}"
    elif _fits(value, type(default)):
        return type(default)(value)
    else:
        expected = type(default).__name__
    raise ConfigError(f"{section}.{key} must be {expected}, got {value!r}", key=f"{section}.{key}")


def _fits(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def build_sections(
    table: dict[str, Any], overrides: dict[str, str] | None, sections: dict[str, type]
) -> dict[str, Any]:
    """Validate a nested dict (as from TOML or a checkpoint) plus ``section.key`` overrides
    into dataclasses: every value must have its field's type, then each dataclass checks
    ranges."""
    merged: dict[str, dict[str, Any]] = {name: {} for name in sections}
    for section, values in table.items():
        if section not in sections:
            raise ConfigError(
                f"unknown section [{section}]; expected one of {sorted(sections)}", key=section
            )
        if not isinstance(values, dict):
            raise ConfigError(f"[{section}] must be a table, got {values!r}", key=section)
        merged[section].update(values)
    for dotted, raw in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        if section not in sections or not key:
            raise ConfigError(
                f"override {dotted!r} must be section.key with section in {sorted(sections)}",
                key=dotted,
            )
        merged[section][key] = _coerce(sections[section], key, raw)
    built = {}
    for section, cls in sections.items():
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(merged[section]) - known)
        if unknown:
            raise ConfigError(
                f"unknown key(s) {unknown} in [{section}]; known: {sorted(known)}", key=unknown[0]
            )
        typed = {k: _typed(cls, section, k, v) for k, v in merged[section].items()}
        built[section] = cls(**typed)
    return built


def build_config(
    table: dict[str, Any], overrides: dict[str, str] | None = None, preset: str = "custom"
) -> RunConfig:
    """Validate a nested dict (as from TOML) plus ``section.key`` string overrides."""
    return RunConfig(**build_sections(table, overrides, _SECTIONS), preset=preset)


def read_preset(name_or_path: str, prefix: str = "") -> tuple[dict[str, Any], str]:
    """The TOML table of a command's preset and its name: a name (file
    ``trainer/presets/<prefix><name>.toml``) or a path to a ``.toml`` file (name: its stem
    without ``prefix``). Raises :class:`ConfigError` for an unknown name, a missing file or
    invalid TOML."""
    path, names = Path(name_or_path), preset_names(prefix)
    if path.is_dir() and name_or_path not in names:  # a preset's name wins over a folder's
        raise ConfigError(f"preset {path} is a folder; give a .toml file", key="preset")
    if path.suffix != ".toml":
        if name_or_path not in names:
            raise ConfigError(
                f"unknown preset {name_or_path!r}; expected one of {list(names)} or a .toml path",
                key="preset",
            )
        path = PRESET_DIR / f"{prefix}{name_or_path}.toml"
    if not path.is_file():
        raise ConfigError(f"preset file not found: {path}", key="preset")
    name = path.stem.removeprefix(prefix)
    try:  # utf-8-sig: a byte-order mark some editors write is not TOML's first key
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"preset {path}: cannot read it as UTF-8 text ({exc})", key="preset"
        ) from exc
    try:
        return tomllib.loads(text), name
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"preset {name}: invalid TOML: {exc}", key="preset") from exc


def _listed(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def command_with_overrides(
    command: str, preset: str, values: dict[str, Any], base: dict[str, Any]
) -> str:
    """``command --preset PRESET`` plus a ``--section.key=value`` for every value of
    ``values`` (``{section: {key: value}}``, as a config's ``asdict``) that differs from
    ``base`` (the preset's): the command line that rebuilds ``values``."""
    parts = [f"{command} --preset {preset}"]
    for section, table in values.items():
        if not isinstance(table, dict):
            continue
        for key, value in table.items():
            if _listed(base.get(section, {}).get(key)) != _listed(value):  # JSON has no tuples
                text = ",".join(map(str, value)) if isinstance(value, list | tuple) else value
                parts.append(f"--{section}.{key}={text}")
    return " ".join(parts)


def load_preset(name_or_path: str, overrides: dict[str, str] | None = None) -> RunConfig:
    """Load a preset by name (``smoke``, ``cpu``, ``gpu``) or from a TOML file path."""
    table, name = read_preset(name_or_path)
    return build_config(table, overrides, preset=name)


def train_command(cfg: RunConfig) -> str:
    """The ``ecgedge train`` command that rebuilds ``cfg``: its preset (``cpu`` for a config
    from a file or none) plus an override for every value that differs from it."""
    preset = cfg.preset if cfg.preset in PRESETS else "cpu"
    base = load_preset(preset).to_dict()
    return command_with_overrides("ecgedge train", preset, cfg.to_dict(), base)


def parse_overrides(args: list[str]) -> dict[str, str]:
    """``["--train.steps=10", ...]`` → ``{"train.steps": "10"}``."""
    out = {}
    for arg in args:
        if not arg.startswith("--") or "=" not in arg:
            raise ConfigError(f"override {arg!r} must look like --section.key=value", key=arg)
        key, _, value = arg[2:].partition("=")
        out[key] = value
    return out
