"""Replay a WFDB record (or any array) through the SDK in real time or faster."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sdk.events import Event
from sdk.pipeline import StreamPipeline


@dataclass(frozen=True)
class Recording:
    """One lead to replay: (n,) millivolts at ``fs`` Hz."""

    name: str
    signal: np.ndarray
    fs: float
    rhythm: list[tuple[int, int, str]]


def read_wfdb(path: Path, lead: int = 0) -> Recording:
    """Read one lead (and rhythm annotations if an ``.atr`` exists) with wfdb."""
    try:
        import wfdb
    except ImportError as exc:
        raise ImportError(
            "replaying WFDB records needs wfdb: pip install 'ecgedge[train]'"
        ) from exc
    if not path.with_suffix(".hea").is_file() and not Path(f"{path}.hea").is_file():
        raise FileNotFoundError(
            f"{path}.hea: no WFDB header (give the record path without extension)"
        )
    rec = wfdb.rdrecord(str(path))
    if not 0 <= lead < rec.n_sig:
        raise ValueError(
            f"lead {lead} out of range: the record has {rec.n_sig} leads {rec.sig_name}"
        )
    rhythm: list[tuple[int, int, str]] = []
    if Path(f"{path}.atr").is_file():
        ann = wfdb.rdann(str(path), "atr")
        marks = [
            (int(s), (a or "").rstrip("\x00").lstrip("("))
            for s, a, sym in zip(ann.sample, ann.aux_note, ann.symbol)
            if sym == "+" and a
        ]
        ends = [s for s, _ in marks[1:]] + [rec.sig_len]
        rhythm = [(s, e, label) for (s, label), e in zip(marks, ends)]
    return Recording(
        path.name, np.asarray(rec.p_signal[:, lead], dtype=np.float32), float(rec.fs), rhythm
    )


def blocks(recording: Recording, block_s: float = 0.25) -> Iterator[tuple[float, np.ndarray]]:
    """(timestamp of first sample, block) pairs of ``block_s`` seconds."""
    step = max(1, int(round(block_s * recording.fs)))
    for start in range(0, recording.signal.size, step):
        yield start / recording.fs, recording.signal[start : start + step]


def play(
    recording: Recording,
    pipeline: StreamPipeline,
    *,
    speed: float = 1.0,
    seconds: float = 0.0,
    block_s: float = 0.25,
    on_tick: Callable[[float], None] | None = None,
) -> list[Event]:
    """Push the recording block by block; ``speed`` 0 = as fast as possible, 1 = real time."""
    events: list[Event] = []
    wall0 = time.perf_counter()
    for t0, block in blocks(recording, block_s):
        if seconds and t0 >= seconds:
            break
        if speed > 0:
            delay = t0 / speed - (time.perf_counter() - wall0)
            if delay > 0:
                time.sleep(delay)
        events += pipeline.push(block, timestamp_s=t0)
        if on_tick is not None:
            on_tick(t0 + block.size / recording.fs)
    events += pipeline.close()
    return events
