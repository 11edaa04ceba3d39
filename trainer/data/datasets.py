"""Model-ready windows from the shared databases, cached on disk.

Every record goes through :func:`sdk.preprocess.preprocess_record` (the device's own code),
then R-peaks are found by :func:`sdk.rpeaks.detect_rpeaks` on the whole preprocessed
record, exactly as a stream would find them, and windows are cut and standardized.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from sdk.modalities import MODALITIES, spectrogram
from sdk.preprocess import PreprocessSpec
from sdk.synthetic import synthetic_ecg
from sdk.windowing import RecordWindows, record_windows
from trainer.config import DataConfig
from trainer.data import records as rec
from trainer.data.root import require_folder
from trainer.data.splits import stratified_split
from trainer.errors import ConfigError

CACHE_VERSION = 2


@dataclass
class WindowSet:
    """Windows (N, 1, L) float32 standardized, their record index, RR features (N, K) and
    Lorenz images (N, G, G) of the window's beats."""

    windows: np.ndarray
    record_index: np.ndarray
    rr: np.ndarray
    names: list[str]
    labels: list[str]  # per record; "" when the database has no record label
    lorenz: np.ndarray

    def subset(self, names: list[str]) -> WindowSet:
        keep_names = set(names)
        keep_rec = np.array([n in keep_names for n in self.names], dtype=bool)
        mask = keep_rec[self.record_index]
        old_to_new = np.cumsum(keep_rec) - 1
        return WindowSet(
            self.windows[mask],
            old_to_new[self.record_index[mask]].astype(np.int32),
            self.rr[mask],
            [n for n, k in zip(self.names, keep_rec) if k],
            [lab for lab, k in zip(self.labels, keep_rec) if k],
            self.lorenz[mask],
        )

    def modality(self, name: str) -> np.ndarray:
        """The model input of one modality: (N, C, L) float32."""
        if name == "raw":
            return self.windows
        if name == "spectrogram":
            return spectrogram(self.windows[:, 0])
        if name == "lorenz":
            return self.lorenz
        raise ConfigError(
            f"modality {name!r} unknown; expected one of {list(MODALITIES)}", key="modality"
        )

    @property
    def window_labels(self) -> np.ndarray:
        return np.asarray(self.labels)[self.record_index]


def spec_of(cfg: DataConfig) -> PreprocessSpec:
    return PreprocessSpec(fs=cfg.fs, low_hz=cfg.low_hz, high_hz=cfg.high_hz)


def windows_of_signal(
    x: np.ndarray, fs_in: float, cfg: DataConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One lead (n,) in mV → standardized windows (W, 1, L), RR features (W, K), Lorenz
    images (W, G, G), cut by the SDK's :func:`~sdk.windowing.record_windows`."""
    rw = record_windows(x, fs_in, spec_of(cfg), cfg.window, cfg.hop, "align_end")
    return rw.windows, rw.rr, rw.lorenz


def _code_digest() -> str:
    """Digest of the SDK code that shapes cached windows, so a change invalidates the cache."""
    import sdk

    root = Path(sdk.__file__).parent
    h = hashlib.sha256()
    shaping = ("preprocess.py", "filters.py", "resample.py", "rpeaks.py", "rr.py")
    for name in (*shaping, "modalities.py", "windowing.py"):
        h.update((root / name).read_bytes())
    return h.hexdigest()


def _files_digest(folder: Path) -> str:
    """Digest of the name, size and modification time of every file in a database folder,
    so replaced or updated records (or labels) invalidate the cache."""
    h = hashlib.sha256()
    entries = sorted((e.name, e.stat()) for e in os.scandir(folder) if e.is_file())
    for name, st in entries:
        h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _key(database: str, cfg: DataConfig, names: list[str]) -> str:
    folder = require_folder(database).resolve()
    payload = json.dumps(
        [
            CACHE_VERSION,
            _code_digest(),
            database,
            str(folder),
            _files_digest(folder),
            cfg.fs,
            cfg.window,
            cfg.hop,
            cfg.low_hz,
            cfg.high_hz,
            names,
        ]
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _read_lead0(database: str, name: str) -> tuple[np.ndarray, float, str]:
    r = rec.ECG_READERS[database](name)
    lead = 1 if database == "challenge2021" else 0  # lead II for 12-lead records
    return r.signal[:, lead], r.fs, r.label if database == "cinc2017" else ""


def load_windows(database: str, cfg: DataConfig, cache_dir: Path = Path("runs/cache")) -> WindowSet:
    """All windows of ``database`` (first ``cfg.max_records`` records if capped), cached."""
    if cfg.source == "synthetic":
        return synthetic_windows(cfg)
    names = rec.list_records(database)
    if cfg.max_records:
        names = _stratified_head(database, names, cfg.max_records)
    path = cache_dir / f"{database}-{_key(database, cfg, names)}.npz"
    cached = _read_cache(path)
    if cached is not None:
        return cached
    wins, rrs, lors, idx, labels = [], [], [], [], []
    for i, name in enumerate(tqdm(names, desc=f"preprocess {database}", unit="rec", leave=False)):
        x, fs, label = _read_lead0(database, name)
        w, f, lor = windows_of_signal(x, fs, cfg)
        wins.append(w)
        rrs.append(f)
        lors.append(lor)
        idx.append(np.full(w.shape[0], i, dtype=np.int32))
        labels.append(label)
    ws = WindowSet(
        np.concatenate(wins),
        np.concatenate(idx),
        np.concatenate(rrs),
        names,
        labels,
        np.concatenate(lors),
    )
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")  # one per writer (DDP ranks)
    np.savez(
        tmp,
        windows=ws.windows,
        record_index=ws.record_index,
        rr=ws.rr,
        names=np.asarray(names),
        labels=np.asarray(labels),
        lorenz=ws.lorenz,
    )
    tmp.replace(path)
    return ws


def _read_cache(path: Path) -> WindowSet | None:
    """The cached windows, or None when the file is absent or unreadable (then rebuilt)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return WindowSet(
                z["windows"],
                z["record_index"],
                z["rr"],
                list(z["names"]),
                list(z["labels"]),
                z["lorenz"],
            )
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def _stratified_head(database: str, names: list[str], n: int) -> list[str]:
    """A small, class-balanced, deterministic subset (for smoke runs)."""
    if database != "cinc2017":
        return names[:n]
    labels = rec.cinc2017_labels_cached()
    by_class: dict[str, list[str]] = {}
    for name in names:
        by_class.setdefault(labels[name], []).append(name)
    picked: list[str] = []
    while len(picked) < n and any(by_class.values()):
        for cls in sorted(by_class):
            if by_class[cls] and len(picked) < n:
                picked.append(by_class[cls].pop(0))
    return sorted(picked)


def synthetic_windows(cfg: DataConfig, n_records: int = 24) -> WindowSet:
    """Labelled synthetic records (N = sinus, A = AF), for runs without the data root."""
    wins, rrs, lors, idx, names, labels = [], [], [], [], [], []
    for i in range(n_records):
        rhythm = "af" if i % 2 else "sinus"
        ecg = synthetic_ecg(((rhythm, 30.0),), fs=250.0, seed=i)
        w, f, lor = windows_of_signal(ecg.signal, ecg.fs, cfg)
        wins.append(w)
        rrs.append(f)
        lors.append(lor)
        idx.append(np.full(w.shape[0], i, dtype=np.int32))
        names.append(f"synthetic{i:03d}")
        labels.append("A" if rhythm == "af" else "N")
    return WindowSet(
        np.concatenate(wins),
        np.concatenate(idx),
        np.concatenate(rrs),
        names,
        labels,
        np.concatenate(lors),
    )


def cinc2017_record_names(split_seed: int, val_fraction: float) -> tuple[list[str], list[str]]:
    """(train, val) CinC 2017 record names of :func:`cinc2017_split`, without reading signals."""
    labels = rec.cinc2017_labels_cached()
    names = sorted(labels)
    return stratified_split(
        names, [labels[n] for n in names], val_fraction=val_fraction, seed=split_seed
    )


def head_split(training_data: dict) -> tuple[list[str], list[str]]:
    """(train, val) CinC 2017 records of a bundle's head, from its manifest's
    ``provenance.training_data``, checked against the record counts it was trained with.

    Raises
    ------
    ConfigError
        The head was not trained on CinC 2017, its split is not recorded, or this data root
        gives other split sizes (another root or copy of the database).
    """
    if not str(training_data.get("head", "")).startswith("cinc2017"):
        raise ConfigError(
            f"the bundle's head was not trained on CinC 2017 ({training_data.get('head')!r}); "
            "its training split is needed",
            key="provenance.training_data",
        )
    if int(training_data.get("max_records") or 0):
        raise ConfigError(
            f"the bundle's head was trained on the first {training_data['max_records']} CinC "
            "2017 records only (data.max_records, a smoke run): its split cannot be rebuilt; "
            "use a bundle trained on every record",
            key="provenance.training_data",
        )
    missing = [k for k in ("val_fraction", "split_seed") if k not in training_data]
    if missing:
        raise ConfigError(
            f"the bundle's provenance.training_data lacks {missing}: its head's split is unknown",
            key="provenance.training_data",
        )
    split = cinc2017_record_names(
        int(training_data["split_seed"]), float(training_data["val_fraction"])
    )
    for part, names in zip(("train", "val"), split):
        expected = training_data.get(f"{part}_records")
        if expected is not None and len(names) != int(expected):
            raise ConfigError(
                f"the data root gives {len(names)} CinC 2017 {part} records, the bundle's head "
                f"was trained with {expected}: another data root or another copy of the database",
                key="ECGEDGE_DATA",
            )
    return split


def cinc_record_windows(
    bundle: Any, names: list[str], denoiser: Any = None, *, progress: bool = False
) -> Iterator[tuple[int, rec.Record, RecordWindows]]:
    """Each CinC 2017 record of ``names`` (index, record, windows), lead 0 cut as the device
    cuts it for ``bundle`` (:func:`sdk.windowing.record_windows`, through ``denoiser``, a
    :class:`sdk.denoiser.WindowDenoiser`, if given)."""
    m = bundle.manifest
    for i, name in enumerate(
        tqdm(names, desc="CinC 2017 windows", unit="rec", disable=not progress)
    ):
        r = rec.read_cinc2017(name)
        yield (
            i,
            r,
            record_windows(
                r.signal[:, 0],
                r.fs,
                m.preprocess,
                m.window_samples,
                m.hop_samples,
                denoiser=denoiser,
            ),
        )


def cinc2017_split(cfg: DataConfig) -> tuple[WindowSet, WindowSet]:
    """(train, val) windows of CinC 2017, split by record, stratified by label, fixed seed."""
    ws = load_windows("cinc2017", cfg)
    train, val = stratified_split(
        ws.names, ws.labels, val_fraction=cfg.val_fraction, seed=cfg.split_seed
    )
    return ws.subset(train), ws.subset(val)


def pretrain_windows(cfg: DataConfig) -> np.ndarray:
    """Unlabelled inputs of ``cfg.modality`` for diffusion pretraining: the CinC 2017 train
    split plus the other databases, (N, C, L) float32."""
    if cfg.source == "synthetic":
        return synthetic_windows(cfg).modality(cfg.modality)
    parts = []
    for database in cfg.pretrain_databases:
        ws = cinc2017_split(cfg)[0] if database == "cinc2017" else load_windows(database, cfg)
        parts.append(ws.modality(cfg.modality))
    return np.concatenate(parts)
