"""Damaged training files (checkpoints, heads, DACL runs, reports) give a typed error that
names the file, never a bare traceback, and nothing is unpickled."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer.checkpoint import load_weights
from trainer.errors import CheckpointError


class _Boom:
    """Unpickling it creates ``marker``: a loader that unpickles leaves the file behind."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _marker(tmp_path: Path) -> Path:
    return tmp_path / "unpickled-marker"


def _damaged(tmp_path: Path, name: str) -> list[Path]:
    good = tmp_path / f"good-{name}"
    torch.save({"config": {}, "state_dict": {}}, good)
    raw = good.read_bytes()
    out = []
    for kind, data in [
        ("truncated", raw[: len(raw) // 2]),
        ("empty", b""),
        ("garbage", bytes(range(256)) * 4),
        ("pickled", pickle.dumps(_Boom(_marker(tmp_path)))),
    ]:
        path = tmp_path / f"{kind}-{name}"
        path.write_bytes(data)
        out.append(path)
    return out


def test_a_damaged_torch_file_is_a_checkpoint_error_naming_it(tmp_path: Path) -> None:
    for path in _damaged(tmp_path, "x.pt"):
        with pytest.raises(CheckpointError) as err:
            load_weights(path)
        assert err.value.path == str(path)
    assert not _marker(tmp_path).exists()
    with pytest.raises(CheckpointError, match="lacks \\['encoder'\\]"):
        torch.save({"vae": {}}, tmp_path / "enc.pt")
        load_weights(tmp_path / "enc.pt", "encoder")


def test_damaged_diffae_fusion_and_dacl_files_are_checkpoint_errors(tmp_path: Path) -> None:
    from export.dacl_bundle import load_embedder
    from trainer.fusion import load_fusion
    from trainer.train_diffae import load

    for path in _damaged(tmp_path, "m.pt"):
        for loader in (load, load_fusion):
            with pytest.raises(CheckpointError):
                loader(path)
        run = tmp_path / f"run-{path.name}"
        run.mkdir()
        (run / "vae.pt").write_bytes(path.read_bytes())
        torch.save({"encoder": {}}, run / "dacl.pt")  # a readable encoder beside it
        with pytest.raises(CheckpointError) as err:
            load_embedder(run, "dacl")
        assert err.value.path == str(run / "vae.pt")
    assert not _marker(tmp_path).exists()


@pytest.mark.parametrize("case", ["truncated", "garbage", "pickled", "no-weight", "shapes"])
def test_a_damaged_head_file_is_a_checkpoint_error(tmp_path: Path, case: str) -> None:
    from trainer.probe import load_head, read_head

    path = tmp_path / "head.npz"
    arrays = {
        "weight": np.zeros((5, 4)),
        "bias": np.zeros(4),
        "mean": np.zeros(5),
        "scale": np.ones(5),
        "classes": np.array(["N", "A", "O", "~"]),
        "t": np.asarray(1),
        "noise": np.zeros((1, 1, 8)),
    }
    if case == "no-weight":
        arrays.pop("weight")
    if case == "shapes":
        arrays["bias"] = np.zeros(3)
    np.savez(path, **arrays)
    if case == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    if case == "garbage":
        path.write_bytes(b"\x93NUMPY" + bytes(200))
    if case == "pickled":
        np.save(
            tmp_path / "obj.npy",
            np.array([_Boom(_marker(tmp_path))], dtype=object),
            allow_pickle=True,
        )
        path = tmp_path / "obj.npy"
    for loader in (read_head, load_head):
        with pytest.raises(CheckpointError) as err:
            loader(path)
        assert err.value.path == str(path)
    assert not _marker(tmp_path).exists()


@pytest.mark.parametrize("content", ["123", '"xdaclx"', "{not json"])
def test_a_dacl_results_file_that_is_no_object_is_refused(tmp_path: Path, content: str):
    from trainer.dacl import read_results
    from trainer.errors import ConfigError

    with pytest.raises(ConfigError, match="dacl.json: not found; --run must be"):
        read_results(tmp_path)
    (tmp_path / "dacl.json").write_text(content)
    with pytest.raises(ConfigError, match="dacl.json"):
        read_results(tmp_path)


def test_an_rpeak_report_with_a_non_string_denoiser_hash_is_refused(tmp_path: Path) -> None:
    from export.denoiser import set_rpeak_rule
    from sdk.bundle import default_bundle_path

    report = tmp_path / "r.json"
    report.write_text(
        json.dumps(
            {
                "chosen": [0.2, "nearest"],
                "signal_for_choice": "denoised",
                "records": [],
                "denoiser_sha256": 12345,
            }
        )
    )
    with pytest.raises(ValueError, match="denoiser_sha256 must be a SHA-256 string"):
        set_rpeak_rule(default_bundle_path(), report, tmp_path / "out")


def test_a_damaged_or_misshapen_feature_cache_is_rebuilt(tmp_path: Path, monkeypatch) -> None:
    from trainer import scattering

    windows = np.random.default_rng(0).standard_normal((3, 1, 1280)).astype(np.float32)
    calls = []
    real = scattering.scattering_features

    def counted(w, *a, **k):
        calls.append(len(w))
        return real(w, *a, **k)

    monkeypatch.setattr(scattering, "scattering_features", counted)
    first = scattering.cached_features(windows, tmp_path)
    (path,) = tmp_path.glob("scattering-*.npy")
    assert np.array_equal(scattering.cached_features(windows, tmp_path), first) and calls == [3]
    for damage in (path.read_bytes()[:60], b"", None):
        if damage is None:
            np.save(path, first[:2])  # a whole file of the wrong number of rows
        else:
            path.write_bytes(damage)
        assert np.array_equal(scattering.cached_features(windows, tmp_path), first)
    assert calls == [3, 3, 3, 3]
