"""The window cache is keyed by the data root and its files, and survives a damaged file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from trainer.config import DataConfig
from trainer.data import records
from trainer.data.datasets import load_windows

NAMES = ("A00001", "A00002", "A00003", "A00004")
CFG = DataConfig(max_records=4, pretrain_databases=("cinc2017",))


def _write_cinc2017(root: Path, seed: int) -> None:
    """Four 30 s synthetic 300 Hz records laid out like CinC 2017 (WFDB + REFERENCE-v3.csv)."""
    wfdb = pytest.importorskip("wfdb")
    from sdk.synthetic import synthetic_ecg

    folder = root / "cinc2017"
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(NAMES):
        ecg = synthetic_ecg((("sinus", 30.0),), fs=300.0, seed=seed + i)
        wfdb.wrsamp(
            name,
            fs=300,
            units=["mV"],
            sig_name=["ECG"],
            p_signal=ecg.signal.astype(np.float64)[:, None],
            fmt=["16"],
            adc_gain=[1000.0],
            baseline=[0],
            write_dir=str(folder),
        )
    (folder / "REFERENCE-v3.csv").write_text("".join(f"{n},N\n" for n in NAMES))


def _use_root(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    monkeypatch.setenv("ECGEDGE_DATA", str(root))
    records._labels_of.cache_clear()


def test_another_data_root_does_not_reuse_cached_windows(monkeypatch, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    for i, root in enumerate((tmp_path / "root1", tmp_path / "root2")):
        _write_cinc2017(root, seed=10 * i)
    _use_root(monkeypatch, tmp_path / "root1")
    first = load_windows("cinc2017", CFG, cache_dir=cache)
    _use_root(monkeypatch, tmp_path / "root2")
    second = load_windows("cinc2017", CFG, cache_dir=cache)
    fresh = load_windows("cinc2017", CFG, cache_dir=tmp_path / "fresh")
    assert first.names == second.names
    assert np.array_equal(second.windows, fresh.windows)
    assert not np.array_equal(second.windows, first.windows)


def test_an_updated_record_does_not_reuse_cached_windows(monkeypatch, tmp_path: Path) -> None:
    cache, root = tmp_path / "cache", tmp_path / "root"
    _write_cinc2017(root, seed=0)
    _use_root(monkeypatch, root)
    first = load_windows("cinc2017", CFG, cache_dir=cache)
    _write_cinc2017(root, seed=5)  # same names and sizes, new samples
    for f in (root / "cinc2017").iterdir():
        os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    second = load_windows("cinc2017", CFG, cache_dir=cache)
    assert not np.array_equal(second.windows, first.windows)


@pytest.mark.parametrize("damage", [b"", b"not a zip file", b"PK\x03\x04truncated"])
def test_a_damaged_cache_file_is_rebuilt(monkeypatch, tmp_path: Path, damage: bytes) -> None:
    cache, root = tmp_path / "cache", tmp_path / "root"
    _write_cinc2017(root, seed=0)
    _use_root(monkeypatch, root)
    first = load_windows("cinc2017", CFG, cache_dir=cache)
    (path,) = cache.glob("*.npz")
    path.write_bytes(damage)
    again = load_windows("cinc2017", CFG, cache_dir=cache)
    assert np.array_equal(again.windows, first.windows) and np.load(path)["windows"].size
