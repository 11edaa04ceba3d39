"""WFDB readers for every database folder of the data root.

Each reader returns :class:`Record` objects with signals in millivolts and the
database's labels and annotations; a missing or unreadable file raises
:class:`~trainer.errors.DataError` naming the file and the problem.

:func:`read_signal` keeps invalid samples as NaN (a session saved by ``ecgedge stream --save``
marks lost samples so, and the SDK counts and flags them); the per-database readers, which
feed training, replace non-finite samples by 0.0 mV so every window is finite.
"""

from __future__ import annotations

import csv
import functools
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trainer.data.root import require_folder
from trainer.errors import DataError

CINC2017_CLASSES = ("N", "A", "O", "~")
NSTDB_SNR_DB = (24, 18, 12, 6, 0, -6)
BEAT_SYMBOLS = frozenset("NLRBAaJSVrFejnE/fQ?")


@dataclass
class Annotations:
    """Beat and rhythm annotations of one record, in samples at the record's rate."""

    beat_samples: np.ndarray  # (n_beats,) int64
    beat_symbols: tuple[str, ...]
    rhythm: list[tuple[int, int, str]] = field(default_factory=list)  # (start, end, label)


@dataclass
class Record:
    """One ECG record: ``signal`` (n_samples, n_leads) float32 millivolts at ``fs`` Hz."""

    name: str
    database: str
    fs: float
    signal: np.ndarray
    lead_names: tuple[str, ...]
    label: str | None = None
    annotations: Annotations | None = None
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return self.signal.shape[0] / self.fs


def _wfdb():
    try:
        import wfdb
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "wfdb is not installed: pip install 'ecgedge[replay]' (or [train])"
        ) from exc
    return wfdb


def read_signal(path: Path, *, database: str) -> Record:
    """Read one WFDB record (``path`` without extension) into a :class:`Record`.

    Invalid samples (WFDB's missing-sample value) stay NaN in ``Record.signal``.
    """
    if not path.with_suffix(".hea").is_file():
        raise DataError(
            "header file not found", path=str(path.with_suffix(".hea")), reason="missing"
        )
    wfdb = _wfdb()  # not installed: an ImportError, not a damaged record
    try:
        rec = wfdb.rdrecord(str(path))
    except Exception as exc:  # wfdb raises many types for corrupt files
        short = _short_signal_file(wfdb, path)
        raise DataError(
            f"cannot read WFDB record: {short or exc}", path=str(path), reason="corrupt"
        ) from exc
    _check_header_fs(path, float(rec.fs))
    signal = np.asarray(rec.p_signal, dtype=np.float32)
    if signal.ndim != 2 or signal.shape[0] == 0:
        raise DataError("record holds no samples", path=str(path), reason="empty")
    units = [str(u).strip() for u in rec.units or ["mV"] * signal.shape[1]]
    unknown = sorted({u for u in units if u not in TO_MV})
    if unknown:
        raise DataError(
            f"signal units {unknown} are not a voltage this reader converts ({sorted(TO_MV)})",
            path=str(path),
            reason="units",
        )
    signal *= np.array([TO_MV[u] for u in units], dtype=np.float32)
    meta = {}
    for line in rec.comments or []:
        key, _, value = line.partition(":")
        if value:
            meta[key.strip()] = value.strip()
    return Record(
        name=path.name,
        database=database,
        fs=float(rec.fs),
        signal=signal,
        lead_names=tuple(rec.sig_name),
        meta=meta,
    )


#: Bytes per sample of the WFDB signal formats a size check knows
_FORMAT_BYTES = {
    "8": 1.0,
    "16": 2.0,
    "24": 3.0,
    "32": 4.0,
    "61": 2.0,
    "80": 1.0,
    "160": 2.0,
    "212": 1.5,
    "310": 4 / 3,
    "311": 4 / 3,
}


def _short_signal_file(wfdb: Any, path: Path) -> str | None:
    """Which signal file of a record holds fewer bytes than its header implies (a truncated
    copy), said plainly, or ``None`` when the header cannot say or every file is whole."""
    try:
        header = wfdb.rdheader(str(path))
        files: dict[str, list[str]] = {}
        for name, fmt in zip(header.file_name, header.fmt):
            files.setdefault(name, []).append(str(fmt))
        for name, fmts in files.items():
            if header.sig_len is None or not all(f in _FORMAT_BYTES for f in fmts):
                continue
            need = math.ceil(header.sig_len * sum(_FORMAT_BYTES[f] for f in fmts))
            have = (path.parent / name).stat().st_size
            if have < need:
                return (
                    f"{name} holds {have} of the {need} bytes its header implies (truncated?): "
                    "copy the record again"
                )
    except Exception:  # the header itself is damaged: the caller's error says so
        return None
    return None


#: Factor from each WFDB unit this reader accepts to millivolts (WFDB's default is mV).
TO_MV = {"mV": 1.0, "uV": 1e-3, "µV": 1e-3, "V": 1e3}


def _check_header_fs(path: Path, fs: float) -> None:
    """wfdb reads an unparsable sampling frequency as its default, 250 Hz: a record whose
    header gives a rate that is not a positive number is refused instead (one that gives none
    is 250 Hz by the WFDB standard)."""
    fields = next(
        (
            line.split()
            for line in path.with_suffix(".hea").read_text(errors="replace").splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ),
        [],
    )
    if len(fields) < 3:
        return
    given = re.match(r"[^/(]*", fields[2]).group(0)  # fs[/counter freq[(base counter)]]
    try:
        value = float(given)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0 and math.isclose(value, fs)):
        raise DataError(
            f"header's sampling frequency {fields[2]!r} is not a positive number",
            path=str(path.with_suffix(".hea")),
            reason="corrupt",
        )


def _read_finite(path: Path, database: str) -> Record:
    """:func:`read_signal` with non-finite samples set to 0.0 mV, for training windows."""
    record = read_signal(path, database=database)
    if not np.isfinite(record.signal).all():
        record.signal = np.nan_to_num(record.signal, nan=0.0, posinf=0.0, neginf=0.0)
    return record


#: The rhythm label of atrial fibrillation in PhysioNet annotations (``(AFIB``; ``(AFL`` is
#: atrial flutter, which CinC 2017 and the bundles' class ``A`` do not include).
AF_RHYTHM = "AFIB"


def is_af(label: str) -> bool:
    """Whether a rhythm label (as :func:`read_annotations` returns it) is atrial fibrillation."""
    return label.strip().lstrip("(").upper() == AF_RHYTHM


def check_annotation_end(file: Path) -> None:
    """Refuse (:class:`DataError`) a WFDB annotation file without its end marker, a zero
    16-bit word: a copy cut short, which wfdb would read without a word, its last
    annotations (a rhythm episode) silently gone."""
    with file.open("rb") as fh:
        size = fh.seek(0, 2)
        fh.seek(max(0, size - 2))
        tail = fh.read(2)
    if tail != b"\x00\x00":
        raise DataError(
            "annotation file has no end marker (cut short?): copy it again",
            path=str(file),
            reason="corrupt",
        )


def read_annotations(
    path: Path, extension: str = "atr", n_samples: int | None = None
) -> Annotations:
    """Read beats (symbols in :data:`BEAT_SYMBOLS`) and rhythm episodes from an annotation file.

    The last rhythm episode runs to ``n_samples`` (the record's length) when given, else to
    just past the last annotation; episodes are clipped to the record and empty ones dropped.
    """
    file = path.with_name(f"{path.name}.{extension}")
    if not file.is_file():
        raise DataError("annotation file not found", path=str(file), reason="missing")
    check_annotation_end(file)
    wfdb = _wfdb()
    try:
        ann = wfdb.rdann(str(path), extension)
    except Exception as exc:
        raise DataError(
            f"cannot read annotations: {exc}", path=str(file), reason="corrupt"
        ) from exc
    samples = np.asarray(ann.sample, dtype=np.int64)
    symbols = list(ann.symbol)
    aux = [(a or "").rstrip("\x00").strip() for a in (ann.aux_note or [""] * len(symbols))]
    is_beat = np.array([s in BEAT_SYMBOLS for s in symbols], dtype=bool)
    rhythm: list[tuple[int, int, str]] = []
    changes = [
        (int(s), a.lstrip("(")) for s, sym, a in zip(samples, symbols, aux) if sym == "+" and a
    ]
    end_of_record = (
        n_samples if n_samples is not None else (int(samples[-1]) + 1 if samples.size else 0)
    )
    for i, (start, label) in enumerate(changes):
        end = min(changes[i + 1][0] if i + 1 < len(changes) else end_of_record, end_of_record)
        if end > start:
            rhythm.append((start, end, label))
    return Annotations(
        beat_samples=samples[is_beat],
        beat_symbols=tuple(s for s, b in zip(symbols, is_beat) if b),
        rhythm=rhythm,
    )


def _record_names(folder: Path) -> list[str]:
    listed = folder / "RECORDS"
    if listed.is_file():
        return [n.strip() for n in listed.read_text().split() if n.strip()]
    return sorted(p.stem for p in folder.glob("*.hea"))


# --- per-database readers -------------------------------------------------------------------


def cinc2017_labels() -> dict[str, str]:
    """Record name → label (N, A, O, ~) from ``cinc2017/REFERENCE-v3.csv``, for records present."""
    folder = require_folder("cinc2017")
    ref = folder / "REFERENCE-v3.csv"
    if not ref.is_file():
        raise DataError("label file not found", path=str(ref), reason="missing")
    labels: dict[str, str] = {}
    with ref.open(newline="") as fh:
        for row_no, row in enumerate(csv.reader(fh), start=1):
            if len(row) != 2 or row[1] not in CINC2017_CLASSES:
                raise DataError(
                    f"line {row_no} is not 'name,label': {row}", path=str(ref), reason="format"
                )
            if (folder / f"{row[0]}.hea").is_file():
                labels[row[0]] = row[1]
    if not labels:
        raise DataError(
            "no labelled record has a header beside it", path=str(folder), reason="empty"
        )
    return labels


def read_cinc2017(name: str) -> Record:
    """One CinC 2017 record (single lead, 300 Hz) with its label."""
    record = _read_finite(require_folder("cinc2017") / name, "cinc2017")
    record.label = cinc2017_labels_cached().get(name)
    return record


@functools.lru_cache(maxsize=4)
def _labels_of(folder: Path) -> dict[str, str]:
    return cinc2017_labels()


def cinc2017_labels_cached() -> dict[str, str]:
    """:func:`cinc2017_labels`, read once per data root."""
    return _labels_of(require_folder("cinc2017"))


def _read_annotated(database: str, name: str, extension: str = "atr") -> Record:
    path = require_folder(database) / name
    record = _read_finite(path, database)
    record.annotations = read_annotations(path, extension, record.signal.shape[0])
    return record


def read_mitdb(name: str) -> Record:
    """An MIT-BIH Arrhythmia record (2 leads, 360 Hz) with beats and rhythm episodes."""
    return _read_annotated("mitdb", name)


def read_nstdb(name: str) -> Record:
    """An NSTDB record: noise ``bw``/``ma`` (no annotations) or ``118eXX``/``119eXX`` (beats)."""
    if name in ("bw", "ma", "em"):
        return _read_finite(require_folder("nstdb") / name, "nstdb")
    return _read_annotated("nstdb", name)


def read_cpsc2021(name: str) -> Record:
    """A CPSC 2021 record (2 leads, 200 Hz) with beats and ``AFIB``/``N`` episodes."""
    return _read_annotated("cpsc2021", name)


def read_challenge2021(name: str) -> Record:
    """A 12-lead CinC 2021 record (500 Hz, 10 s); ``meta['Dx']`` holds SNOMED-CT codes."""
    record = _read_finite(require_folder("challenge2021") / name, "challenge2021")
    record.label = record.meta.get("Dx")
    return record


def read_afdb_rr(name: str) -> Annotations:
    """AFDB beat times (``.qrs``) and rhythm episodes (``.atr``) at 250 Hz; no signal exists."""
    folder = require_folder("afdb_rr")
    beats = read_annotations(folder / name, "qrs")
    end = int(beats.beat_samples[-1]) + 1 if beats.beat_samples.size else None
    rhythm = read_annotations(folder / name, "atr", end).rhythm
    return Annotations(beats.beat_samples, beats.beat_symbols, rhythm)


def read_single(database: str, name: str, extension: str | None = "atr") -> Record:
    """A record of the one-record folders: ``qtdb/sel100``, ``svdb/800``, ``ptbdb/s0010_re``."""
    if extension is None:
        return _read_finite(require_folder(database) / name, database)
    return _read_annotated(database, name, extension)


def ptbxl_statements() -> dict[str, str]:
    """PTB-XL SCP statement → diagnostic class (empty string where none)."""
    path = require_folder("ptbxl_meta") / "scp_statements.csv"
    if not path.is_file():
        raise DataError("statement file not found", path=str(path), reason="missing")
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "diagnostic_class" not in rows[0]:
        raise DataError("no 'diagnostic_class' column", path=str(path), reason="format")
    key = next(iter(rows[0]))
    return {row[key]: row["diagnostic_class"] for row in rows}


def list_records(database: str) -> list[str]:
    """Names of the records of ``database`` present in the data root."""
    folder = require_folder(database)
    if database == "cinc2017":
        return sorted(cinc2017_labels_cached())
    return _record_names(folder)


#: Readers of the databases whose records are ECG to cut windows from (the pretraining set).
ECG_READERS = {
    "cinc2017": read_cinc2017,
    "mitdb": read_mitdb,
    "cpsc2021": read_cpsc2021,
    "challenge2021": read_challenge2021,
}


def iter_records(database: str) -> Iterator[Record]:
    """Every signal record of a database with its annotations."""
    readers = {**ECG_READERS, "nstdb": read_nstdb}
    if database not in readers:
        raise ValueError(f"unknown database {database!r}; expected one of {sorted(readers)}")
    for name in list_records(database):
        yield readers[database](name)
