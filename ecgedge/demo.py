"""``ecgedge demo``: stream ECG through the SDK and show rhythm, heart rate, quality and latency."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ecgedge.replay import Recording, play, read_wfdb
from sdk.events import EpisodeEvent, Event, WindowEvent
from sdk.pipeline import StreamPipeline
from sdk.synthetic import synthetic_ecg

DEMO_RECORD = ("mitdb", "201")  # MIT-BIH 201: atrial fibrillation episodes among sinus rhythm


def demo_recording(use_data: bool) -> tuple[Recording, str]:
    """A real record with AF episodes when the data root has one, else the synthetic ECG."""
    if use_data:
        try:
            from trainer.data.root import data_root

            path = data_root() / DEMO_RECORD[0] / DEMO_RECORD[1]
            if Path(f"{path}.hea").is_file():
                return read_wfdb(path), f"MIT-BIH Arrhythmia record {DEMO_RECORD[1]} ({path})"
        except ImportError:
            pass
    ecg = synthetic_ecg((("sinus", 90.0), ("af", 120.0), ("sinus", 90.0)), fs=250.0, seed=7)
    return Recording(
        "synthetic", ecg.signal, ecg.fs, ecg.rhythm
    ), "built-in synthetic ECG (sinus → AF → sinus)"


def _line(e: WindowEvent, af_active: bool) -> str:
    hr = f"{e.heart_rate_bpm:5.0f} bpm" if e.heart_rate_bpm else "   -- bpm"
    q = "ok " if e.quality.ok else ",".join(e.quality.flags)
    p = e.probabilities
    bar = "".join(f"{k}:{v:4.2f} " for k, v in p.items())
    return (
        f"{e.end_s / 60:6.2f} min  {e.label:>2}  {bar} HR {hr}  quality {q:<10} "
        f"{e.latency_ms:5.1f} ms  {'AF EPISODE' if af_active else ''}"
    )


def _summary(events: list[Event], stream_s: float, latencies: np.ndarray) -> str:
    windows = [e for e in events if isinstance(e, WindowEvent)]
    episodes = [e for e in events if isinstance(e, EpisodeEvent)]
    onsets = [e for e in episodes if e.phase == "onset"]
    af_s = sum(e.duration_s or 0.0 for e in episodes if e.phase == "offset")
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99]) if latencies.size else (np.nan,) * 3
    lines = [
        "",
        "Summary",
        f"  streamed        {stream_s / 60:.1f} min, {len(windows)} windows "
        f"({sum(w.flagged for w in windows)} flagged by quality)",
        f"  AF episodes     {len(onsets)}: "
        + ", ".join(
            f"{e.time_s / 60:.1f}–{(e.time_s + (o.duration_s or 0)) / 60:.1f} min"
            for e, o in zip(onsets, [x for x in episodes if x.phase == "offset"])
        ),
        f"  time in AF      {af_s / 60:.1f} min ({100 * af_s / max(stream_s, 1e-9):.0f}%)",
        f"  window latency  p50 {p50:.1f} ms, p95 {p95:.1f} ms, p99 {p99:.1f} ms (one thread)",
    ]
    return "\n".join(lines)


def run_demo(
    bundle: Path,
    *,
    fast: bool = False,
    seconds: float = 0.0,
    use_data: bool = True,
    speed: float = 20.0,
) -> int:
    """Stream the demo recording; print one line per window and a summary."""
    recording, source = demo_recording(use_data)
    pipeline = StreamPipeline(bundle, fs_in=recording.fs)
    print(
        f"ecgedge demo: {source}\n"
        f"  bundle {pipeline.bundle.manifest.name} ({pipeline.classifier.precision}), "
        f"t={pipeline.t}, {'as fast as possible' if fast else f'{speed:g}x real time'}"
    )
    if recording.rhythm:
        truth = [
            f"{lab} {s / recording.fs / 60:.1f}–{e / recording.fs / 60:.1f} min"
            for s, e, lab in recording.rhythm
            if lab.startswith("AF")
        ]
        print(f"  reference AF episodes: {', '.join(truth) or 'none'}")

    def show(event: Event) -> None:
        if isinstance(event, WindowEvent):
            print(_line(event, pipeline.episodes.active), flush=True)
        else:
            print(
                f"  >>> {event.label} episode {event.phase} at {event.time_s / 60:.2f} min",
                flush=True,
            )

    pipeline.add_callback(show)
    events = play(recording, pipeline, speed=0 if fast else speed, seconds=seconds)
    stream_s = min(recording.signal.size / recording.fs, seconds or np.inf)
    print(_summary(events, stream_s, np.asarray(pipeline.stats.latencies_ms)))
    sys.stdout.flush()
    return 0
