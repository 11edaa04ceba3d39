"""Replay a WFDB record (or any array) through the SDK in real time or faster."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sdk.errors import ConfigError
from sdk.events import Event
from sdk.pipeline import StreamPipeline
from sdk.preprocess import PreprocessSpec, check_input_rate


@dataclass(frozen=True)
class Recording:
    """One lead to replay: (n,) millivolts at ``fs`` Hz.

    ``gaps``: (first sample, samples) the link lost, from a saved session's ``.gap``
    annotation (``ecgedge stream --save``); a replay skips them, so the pipeline sees a gap in
    the timestamps, as it did live.
    """

    name: str
    signal: np.ndarray
    fs: float
    rhythm: list[tuple[int, int, str]]
    gaps: tuple[tuple[int, int], ...] = ()


def read_wfdb(path: Path, lead: int = 0) -> Recording:
    """One lead of a WFDB record, with its rhythm episodes if an ``.atr`` file exists.

    Reads through :mod:`trainer.data.records` (wfdb; torch-free), so replay and training see
    the same signal and the same episode boundaries.
    """
    try:
        from trainer.data.records import read_annotations, read_signal
    except ImportError as exc:
        raise ImportError(
            "replaying WFDB records needs wfdb: pip install 'ecgedge[replay]'"
        ) from exc
    record = read_signal(path, database=path.parent.name)
    if not 0 <= lead < record.signal.shape[1]:
        raise ValueError(
            f"lead {lead} out of range: the record has leads {list(record.lead_names)}"
        )
    rhythm = []
    if Path(f"{path}.atr").is_file():
        rhythm = read_annotations(path, "atr", record.signal.shape[0]).rhythm
    gaps = read_gaps(path, record.signal.shape[0])
    return Recording(path.name, record.signal[:, lead], record.fs, rhythm, gaps)


def check_playable(path: Path, fs: float, spec: PreprocessSpec) -> None:
    """Refuse (:class:`ValueError` naming the header) a record at a rate the SDK would not
    take (:func:`sdk.preprocess.check_input_rate`): a virtual strap resamples it to its own
    130 Hz, which would hide the refusal and play nothing like ECG."""
    try:
        check_input_rate(fs, spec, field="fs")
    except ConfigError as exc:
        raise ValueError(f"{path}.hea: {exc}") from None


def read_gaps(path: Path, n_samples: int) -> tuple[tuple[int, int], ...]:
    """The (first sample, samples) of a saved session's ``.gap`` annotation, if it has one.

    Raises ValueError for an annotation that is not one ``stream --save`` writes.
    """
    if not Path(f"{path}.gap").is_file():
        return ()
    import wfdb

    from trainer.data.records import check_annotation_end

    try:
        check_annotation_end(Path(f"{path}.gap"))
        ann = wfdb.rdann(str(path), "gap")
    except Exception as exc:  # wfdb raises what numpy raises on a damaged file
        raise ValueError(f"{path}.gap: not a readable WFDB annotation file ({exc})") from exc
    gaps = []
    for start, note in zip(ann.sample, ann.aux_note or []):
        found = re.fullmatch(r"gap (\d+) samples", str(note).strip())
        if found is None or not 0 <= int(start) < n_samples:
            raise ValueError(f"{path}.gap: not a saved session's gap: {int(start)} {note!r}")
        gaps.append((int(start), min(int(found.group(1)), n_samples - int(start))))
    return tuple(sorted(gaps))


def blocks(recording: Recording, block_s: float = 0.25) -> Iterator[tuple[float, np.ndarray]]:
    """(timestamp of first sample, block) pairs of ``block_s`` seconds; the samples of
    ``recording.gaps`` are skipped (the next block's timestamp says how long they were)."""
    step = max(1, int(round(block_s * recording.fs)))
    start = 0
    for gap_start, length in (*recording.gaps, (recording.signal.size, 0)):
        for a in range(start, gap_start, step):
            yield a / recording.fs, recording.signal[a : min(a + step, gap_start)]
        start = max(start, gap_start + length)


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
