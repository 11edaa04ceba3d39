"""Presets load; ``section.key`` overrides are typed; every bad key or value is a ConfigError."""

from __future__ import annotations

from pathlib import Path

import pytest

import trainer
from trainer.config import PRESETS, RunConfig, load_preset, parse_overrides, preset_names
from trainer.errors import ConfigError


def test_presets_are_listed_per_command() -> None:
    folder = Path(trainer.__file__).parent / "presets"
    on_disk = {p.stem for p in folder.glob("*.toml")}
    denoise = {f"denoise_{n}" for n in preset_names("denoise_")}
    lru = {f"lru_{n}" for n in preset_names("lru_")}
    dacl = {f"dacl_{n}" for n in preset_names("dacl_")}
    assert set(PRESETS) | denoise | lru | dacl == on_disk
    assert set(PRESETS) == {"smoke", "cpu", "gpu", "cpu-spectrogram", "cpu-lorenz"}
    for prefix in ("denoise_", "lru_", "dacl_"):
        assert set(preset_names(prefix)) == {"smoke", "cpu", "gpu"}


@pytest.mark.parametrize("modality", ["spectrogram", "lorenz"])
def test_modality_presets_match_their_inputs(modality: str) -> None:
    from sdk.modalities import LorenzSpec, SpectrogramSpec

    cfg = load_preset(f"cpu-{modality}")
    channels = SpectrogramSpec().n_bins if modality == "spectrogram" else LorenzSpec().grid
    assert cfg.data.modality == modality and cfg.model.in_channels == channels


def test_smoke_preset() -> None:
    cfg = load_preset("smoke")
    assert isinstance(cfg, RunConfig) and cfg.preset == "smoke"
    assert cfg.model.dims == (8, 16) and cfg.model.groups == 4 and cfg.model.attn_heads == 2
    assert cfg.train.steps == 4 and cfg.train.diffusion_steps == 100
    assert cfg.train.probe_t == (1, 10)
    assert cfg.data.max_records == 24 and cfg.data.pretrain_databases == ("cinc2017",)
    assert cfg.data.window == 1280 and cfg.data.hop == 640  # 10 s / 5 s at 128 Hz


def test_cpu_preset() -> None:
    cfg = load_preset("cpu")
    assert cfg.preset == "cpu" and cfg.train.out_dir == "runs/cpu"
    assert cfg.train.steps == 1400 and cfg.train.lr == pytest.approx(4e-4)
    assert cfg.train.max_minutes == 35
    assert cfg.train.probe_t == (1, 20, 50, 100, 200)
    assert cfg.data.pretrain_databases == ("cinc2017", "mitdb", "cpsc2021")


def test_gpu_preset() -> None:
    cfg = load_preset("gpu")
    assert cfg.preset == "gpu" and cfg.model.dims == (32, 64, 128, 256)
    assert cfg.train.batch_size == 256 and cfg.train.steps == 100000
    assert "challenge2021" in cfg.data.pretrain_databases
    assert max(cfg.train.probe_t) < cfg.train.diffusion_steps


@pytest.mark.parametrize(
    ("override", "attr", "expected"),
    [
        ({"train.steps": "7"}, ("train", "steps"), 7),
        ({"train.lr": "1e-3"}, ("train", "lr"), 1e-3),
        ({"train.max_minutes": "3"}, ("train", "max_minutes"), 3.0),
        ({"data.hop_s": "2.5"}, ("data", "hop_s"), 2.5),
        ({"train.amp": "false"}, ("train", "amp"), False),
        ({"train.amp": "TRUE"}, ("train", "amp"), True),
        ({"train.amp": "0"}, ("train", "amp"), False),
        ({"model.dims": "8,16,32"}, ("model", "dims"), (8, 16, 32)),
        ({"train.probe_t": "2,3"}, ("train", "probe_t"), (2, 3)),
        (
            {"data.pretrain_databases": "mitdb,cpsc2021"},
            ("data", "pretrain_databases"),
            ("mitdb", "cpsc2021"),
        ),
        ({"data.source": "synthetic"}, ("data", "source"), "synthetic"),
        ({"train.out_dir": "/tmp/x"}, ("train", "out_dir"), "/tmp/x"),
    ],
)
def test_typed_overrides(override: dict[str, str], attr: tuple[str, str], expected) -> None:
    cfg = load_preset("smoke", override)
    value = getattr(getattr(cfg, attr[0]), attr[1])
    assert value == expected and type(value) is type(expected)
    assert cfg.train.batch_size == 8  # the rest of the preset is kept


def test_parse_overrides() -> None:
    assert parse_overrides(["--train.steps=10", "--model.dims=8,16", "--train.out_dir=a=b"]) == {
        "train.steps": "10",
        "model.dims": "8,16",
        "train.out_dir": "a=b",
    }
    cfg = load_preset("smoke", parse_overrides(["--train.steps=10"]))
    assert cfg.train.steps == 10


@pytest.mark.parametrize("arg", ["train.steps=10", "--train.steps", "-train.steps=1"])
def test_parse_overrides_malformed(arg: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_overrides([arg])
    assert err.value.key == arg and arg in str(err.value)


def _raises_naming(key: str, override: str) -> ConfigError:
    """``load_preset("smoke", {section.key: value})`` raises a ConfigError naming ``key``."""
    dotted, _, value = override.partition("=")
    with pytest.raises(ConfigError) as err:
        load_preset("smoke", {dotted: value})
    assert isinstance(err.value, ValueError)
    assert err.value.key is not None and err.value.key.split(".")[-1] == key, err.value.key
    assert key in str(err.value)
    return err.value


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("nosuch.steps=1", "steps"),  # unknown section: the key is the whole override
        ("train=1", "train"),
        ("train.nonexistent=3", "nonexistent"),  # unknown key
        ("model.nonexistent=3", "nonexistent"),
    ],
)
def test_unknown_section_or_key(override: str, key: str) -> None:
    _raises_naming(key, override)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("train.steps=abc", "steps"),
        ("train.steps=2.5", "steps"),
        ("train.lr=fast", "lr"),
        ("train.amp=maybe", "amp"),
        ("model.dims=8,x", "dims"),
        ("train.probe_t=1,ten", "probe_t"),
    ],
)
def test_malformed_override_value(override: str, key: str) -> None:
    _raises_naming(key, override)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("data.hop_s=20", "hop_s"),  # hop_s > window_s
        ("data.hop_s=0", "hop_s"),
        ("data.source=cloud", "source"),
        ("data.max_records=-1", "max_records"),
        ("model.groups=3", "dims"),  # dims (8, 16) not divisible by groups
        ("model.dims=8", "dims"),  # one level only
        ("model.kernel_size=4", "kernel_size"),
        ("model.attn_heads=3", "attn_heads"),
        ("train.steps=0", "steps"),
        ("train.batch_size=-8", "batch_size"),
        ("train.probe_t=1,100", "probe_t"),  # smoke has 100 diffusion steps
    ],
)
def test_invalid_values(override: str, key: str) -> None:
    error = _raises_naming(key, override)
    if override.startswith("model.groups"):
        assert "groups" in str(error)


def test_unknown_preset_name() -> None:
    with pytest.raises(ConfigError) as err:
        load_preset("turbo")
    assert err.value.key == "preset" and "turbo" in str(err.value)


def test_preset_from_toml_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(
        '[data]\nsource = "synthetic"\n\n[model]\ndims = [8, 16]\ngroups = 4\n'
        "attn_heads = 2\n\n[train]\nsteps = 3\nprobe_t = [1, 2]\n"
    )
    cfg = load_preset(str(path), {"train.batch_size": "4"})
    assert cfg.preset == "mine"
    assert cfg.data.source == "synthetic" and cfg.model.dims == (8, 16)
    assert cfg.train.steps == 3 and cfg.train.probe_t == (1, 2) and cfg.train.batch_size == 4
    assert cfg.train.lr == pytest.approx(2e-4)  # a default, untouched


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[trian]\nsteps = 3\n", "trian"),
        ("[train]\nstepz = 3\n", "stepz"),
        ("[train\nsteps = 3\n", "preset"),  # invalid TOML
        ('[train]\nsteps = "4"\n', "train.steps"),  # values of the wrong type
        ("[model]\ndims = 16\n", "model.dims"),
        ('[data]\nfs = "128"\n', "data.fs"),
        ("[data]\nmax_records = 4.5\n", "data.max_records"),
        ('[train]\namp = "false"\n', "train.amp"),
        ('[data]\nmodality = ["raw"]\n', "data.modality"),
        ("[train]\nprobe_t = [1, 2.5]\n", "train.probe_t"),
        ("data = 3\n", "data"),
    ],
)
def test_bad_toml_file(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_preset(str(path))
    assert err.value.key == key


def test_a_preset_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    path = tmp_path / "bom.toml"
    path.write_bytes("[train]\nsteps = 3\n".encode("utf-8-sig"))
    assert load_preset(str(path)).train.steps == 3


@pytest.mark.parametrize("name", ["presets", "presets.toml"])
def test_a_folder_given_as_preset_is_named_a_folder(tmp_path: Path, name: str) -> None:
    (tmp_path / name).mkdir()
    with pytest.raises(ConfigError, match="is a folder; give a .toml file") as err:
        load_preset(str(tmp_path / name))
    assert err.value.key == "preset"


def test_a_preset_name_wins_over_a_folder_of_that_name(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "smoke").mkdir()
    assert load_preset("smoke").preset == "smoke"


def test_a_preset_that_is_not_utf8_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "latin.toml"
    path.write_bytes(b"# caf\xe9\n[train]\nsteps = 3\n")
    with pytest.raises(ConfigError, match="cannot read it as UTF-8 text"):
        load_preset(str(path))


def test_missing_toml_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_preset(str(tmp_path / "absent.toml"))
    assert err.value.key == "preset" and "absent.toml" in str(err.value)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model.groups=0", "groups"),
        ("model.attn_heads=0", "attn_heads"),
        ("model.kernel_size=-3", "kernel_size"),
        ("model.dims=-8,-16", "dims"),
        ("model.time_dim=0", "time_dim"),
        ("model.time_dim=15", "time_dim"),
        ("data.fs=nan", "fs"),
        ("data.val_fraction=1", "val_fraction"),
        ("data.high_hz=80", "high_hz"),  # above fs / 2
        ("data.pretrain_databases=nstdb", "pretrain_databases"),
        ("data.pretrain_databases=afdb_rr", "pretrain_databases"),
        ("data.pretrain_databases=bogus", "pretrain_databases"),
        ("data.pretrain_databases=", "pretrain_databases"),
        ("train.probe_t=", "probe_t"),
        ("train.max_minutes=-1", "max_minutes"),
        ("train.threads=-2", "threads"),
        ("train.lr=0", "lr"),
        # these raised OverflowError, or failed deep inside numpy/torch with no key named
        ("train.warmup_steps=1" + "0" * 400, "warmup_steps"),
        ("train.steps=1" + "0" * 400, "steps"),
        ("data.fs=1e308", "fs"),
        ("data.window_s=1e9", "window_s"),
        ("train.seed=-1", "seed"),
        ("train.seed=99999999999", "seed"),
        ("data.split_seed=-3", "split_seed"),
    ],
)
def test_out_of_range_overrides_are_config_errors(override: str, key: str) -> None:
    _raises_naming(key, override)


def test_toml_ints_are_read_as_floats(tmp_path: Path) -> None:
    path = tmp_path / "ints.toml"
    path.write_text("[data]\nfs = 128\n[train]\nmax_minutes = 10\n")
    cfg = load_preset(str(path))
    assert isinstance(cfg.data.fs, float) and cfg.data.fs == 128.0
    assert isinstance(cfg.train.max_minutes, float) and cfg.train.max_minutes == 10.0


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model.se_reduction=0", "se_reduction"),
        ("model.stem=-8", "stem"),
        ("model.noise_dim=-4", "noise_dim"),
        ("data.context_s=-5", "context_s"),
        ("data.val_fraction=1", "val_fraction"),
        ("data.val_fraction=0", "val_fraction"),
        ("data.val_fraction=-0.5", "val_fraction"),
        ("train.threads=-2", "threads"),
        ("train.steps=1" + "0" * 400, "steps"),
        ("train.seed=-1", "seed"),
    ],
)
def test_denoiser_config_ranges(override: str, key: str) -> None:
    from trainer.denoise_config import load_denoise_preset

    dotted, _, value = override.partition("=")
    with pytest.raises(ConfigError) as err:
        load_denoise_preset("smoke", {dotted: value})
    assert err.value.key is not None and err.value.key.split(".")[-1] == key


def test_each_command_lists_only_its_presets() -> None:
    from trainer.denoise_config import load_denoise_preset

    with pytest.raises(ConfigError, match="unknown preset"):
        load_preset("denoise_smoke")
    with pytest.raises(ConfigError, match="unknown preset"):
        load_denoise_preset("cpu-lorenz")


def test_the_recorded_train_command_rebuilds_the_config() -> None:
    from trainer.config import train_command

    cfg = load_preset("cpu", {"train.steps": "7", "data.pretrain_databases": "cinc2017,mitdb"})
    command = train_command(cfg)
    assert command.startswith("ecgedge train --preset cpu ") and "--train.steps=7" in command
    assert load_preset("cpu", parse_overrides(command.split()[4:])) == cfg
    assert train_command(load_preset("smoke")) == "ecgedge train --preset smoke"


@pytest.mark.parametrize(
    ("loader", "section"),
    [
        ("trainer.train_diffae:load_diffae_preset", "train"),
        ("trainer.dacl:load_dacl_preset", "train"),
    ],
)
def test_lru_and_dacl_seeds_and_steps_are_range_checked(loader: str, section: str) -> None:
    """train-dacl trained its VAE before failing on a negative seed, leaving vae.pt."""
    import importlib

    module, _, name = loader.partition(":")
    load = getattr(importlib.import_module(module), name)
    for dotted, value in (("train.seed", "-1"), ("train.steps", "1" + "0" * 400)):
        with pytest.raises(ConfigError) as err:
            load("smoke", {dotted: value})
        assert err.value.key == dotted


def test_an_empty_out_dir_is_refused_not_the_working_folder(tmp_path: Path, monkeypatch) -> None:
    from trainer.train_diffusion import train

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="train.out_dir is empty"):
        train(load_preset("smoke", {"train.out_dir": ""}))
    assert list(tmp_path.iterdir()) == []
