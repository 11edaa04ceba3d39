"""``ecgedge demo``: ECG through a simulated Polar H10 → BLE bridge → SDK, shown live.

The recording is played by the virtual strap as real PMD frames, so the demo exercises the
same bytes a real strap sends, then the same session, assembler and pipeline as a live run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ecgedge.live import run_live, simulated
from ecgedge.replay import Recording, check_playable, read_wfdb
from firmware_bridge.session import SessionStats
from firmware_bridge.simulator import Impairments
from sdk.bundle import load_bundle
from sdk.events import EpisodeEvent, Event, WindowEvent
from sdk.pipeline import StreamStats
from sdk.preprocess import PreprocessSpec
from sdk.rpeaks import RR_MAX_S
from sdk.synthetic import synthetic_ecg

DEMO_RECORD = ("mitdb", "201")  # MIT-BIH 201: atrial fibrillation episodes among sinus rhythm
FAST_SPEED = 0.0  # virtual time: as fast as possible, the same run every time


def demo_recording(use_data: bool, spec: PreprocessSpec) -> tuple[Recording, str, str]:
    """A real record with AF episodes when the data root has one, else the synthetic ECG:
    (recording, what it is, why it is the synthetic one: no such record under the data root,
    or no wfdb; "" for the record). A record at a rate the SDK would not take (``spec``) is
    refused (:func:`ecgedge.replay.check_playable`)."""
    why = ""
    if use_data:
        from trainer.data.root import ENV_VAR, data_root

        path = data_root() / DEMO_RECORD[0] / DEMO_RECORD[1]
        if Path(f"{path}.hea").is_file():
            try:
                recording = read_wfdb(path)
                check_playable(path, recording.fs, spec)
                return recording, f"MIT-BIH Arrhythmia record {DEMO_RECORD[1]} ({path})", ""
            except ImportError as exc:  # a runtime-only install: no wfdb
                why = f"; {path} needs wfdb ({exc})"
        else:
            why = f"; no {path}.hea (set {ENV_VAR} to the folder holding {DEMO_RECORD[0]}/)"
    ecg = synthetic_ecg((("sinus", 90.0), ("af", 120.0), ("sinus", 90.0)), fs=250.0, seed=7)
    synthetic = Recording("synthetic", ecg.signal, ecg.fs, ecg.rhythm)
    return synthetic, "built-in synthetic ECG (sinus → AF → sinus)", why


@dataclass
class LiveView:
    """Prints one line per window and every episode change; keeps what the summary needs."""

    windows: list[WindowEvent] = field(default_factory=list)
    episodes: list[EpisodeEvent] = field(default_factory=list)
    in_af: bool = False

    def __call__(self, event: Event) -> None:
        if isinstance(event, EpisodeEvent):
            self.episodes.append(event)
            self.in_af = event.phase == "onset"
            print(
                f"  >>> {event.label} episode {event.phase} at {event.time_s / 60:.2f} min",
                flush=True,
            )
            return
        self.windows.append(event)
        hr = f"{event.heart_rate_bpm:5.0f} bpm" if event.heart_rate_bpm else "   -- bpm"
        rr = event.longest_rr_s
        if rr is not None and rr > RR_MAX_S:  # a pause the median heart rate hides
            hr += f" (pause {rr:.1f} s)"
        q = "ok" if event.quality.ok else ",".join(event.quality.flags)
        probs = " ".join(f"{k}:{v:4.2f}" for k, v in event.probabilities.items())
        tags = ((" denoised", event.denoised), (" step", event.stateful))
        how = "".join(tag for tag, on in (*tags, (" user", event.personalized)) if on)
        print(
            f"{event.end_s / 60:6.2f} min  {event.label:>2}  {probs}  HR {hr}  quality {q:<10} "
            f"{event.latency_ms:5.1f} ms{how}  {'AF EPISODE' if self.in_af else ''}",
            flush=True,
        )

    def summary(
        self,
        stream_s: float,
        bridge: SessionStats | None,
        windows_af: float | None,
        stream: StreamStats | None = None,
    ) -> str:
        """The end-of-stream report; ``bridge`` is ``None`` for a record replayed straight into
        the SDK, ``stream`` (the pipeline's counters) adds what the SDK refused or flagged."""
        onsets = [e for e in self.episodes if e.phase == "onset"]
        offsets = [e for e in self.episodes if e.phase == "offset"]
        af_s = sum(e.duration_s or 0.0 for e in offsets)
        af_pct = 100 * af_s / max(stream_s, 1e-9)
        lat = np.asarray([w.latency_ms for w in self.windows])
        p50, p95, p99 = np.percentile(lat, [50, 95, 99]) if lat.size else (np.nan,) * 3
        spans = ", ".join(
            f"{a.time_s / 60:.1f}–{b.time_s / 60:.1f} min" for a, b in zip(onsets, offsets)
        )
        lines = [
            "",
            "Summary",
            f"  streamed        {stream_s / 60:.1f} min, {len(self.windows)} windows "
            f"({sum(w.flagged for w in self.windows)} flagged by quality)",
            f"  AF episodes     {len(onsets)}{': ' + spans if spans else ''}",
            f"  time in AF      {af_s / 60:.1f} min ({af_pct:.0f}%) in episodes; "
            + (
                "no window analysed"
                if windows_af is None
                else f"{100 * windows_af:.0f}% of the analysed time in windows labelled AF"
            ),
            f"  window latency  p50 {p50:.1f} ms, p95 {p95:.1f} ms, p99 {p99:.1f} ms",
            f"  embedding       {sum(w.stateful for w in self.windows)} windows by the step "
            f"model, {sum(w.denoised for w in self.windows)} denoised",
        ]
        if stream is not None:
            lines.append(
                f"  input           {stream.nonfinite_samples} lost or non-finite samples, "
                f"{stream.gaps} gaps ({stream.gap_s:.1f} s), {stream.blocks_rejected} blocks "
                "refused"
            )
        if bridge is None:
            return "\n".join(lines)
        a = bridge.assembly
        lines.append(
            f"  bridge          {bridge.packets} PMD frames, {bridge.malformed} malformed, "
            f"{a.gaps} gaps ({a.samples_lost} samples), {bridge.reconnects} reconnects"
        )
        if bridge.samples_lost_at_end is not None:  # a source that knows its end (simulated)
            lines.append(
                f"  lost at end     {bridge.samples_lost_at_end} samples, never delivered after "
                "the last one received"
            )
        return "\n".join(lines)


def run_demo(
    bundle: Path,
    *,
    fast: bool = False,
    seconds: float = 0.0,
    use_data: bool = True,
    speed: float = 20.0,
    impairments: Impairments | None = None,
) -> int:
    """Stream the demo recording through the virtual strap; print windows and a summary.

    The bundle is loaded (and verified) first: a bad one is an error before any output.
    """
    loaded = load_bundle(bundle)
    recording, source, why = demo_recording(use_data, loaded.manifest.preprocess)
    signal = recording.signal[: int(seconds * recording.fs)] if seconds else recording.signal
    pace = FAST_SPEED if fast else speed
    transport, profile = simulated(signal, recording.fs, impairments or Impairments(), speed=pace)
    print(
        f"ecgedge demo: {source}{why}\n  through a simulated Polar H10 (PMD frames, 130 Hz) at "
        f"{'full speed' if fast else f'{speed:g}x real time'}; bundle {bundle}"
    )
    if recording.rhythm:
        from trainer.data.records import is_af  # torch-free; the recording was read by it

        truth = [
            f"{s / recording.fs / 60:.1f}–{e / recording.fs / 60:.1f} min"
            for s, e, lab in recording.rhythm
            if is_af(lab) and s < signal.size
        ]
        print(f"  reference AF episodes: {', '.join(truth) or 'none'}")
    view = LiveView()
    pipeline, stats, _ = run_live(transport, profile, loaded, on_event=view)
    print(
        view.summary(signal.size / recording.fs, stats, pipeline.stats.share("A"), pipeline.stats)
    )
    return 0
