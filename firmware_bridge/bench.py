"""``ecgedge bench bridge``: decoding cost, loss/jitter/disconnects, frame-to-event latency.

Torch-free; the SDK pipeline is the sink. Results go to ``bridge.json`` and ``bridge.md``.
"""

from __future__ import annotations

import json
import os
import platform
import time
import timeit
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from firmware_bridge import hrs, open_profile, polar_pmd
from firmware_bridge.profiles import PolarH10
from firmware_bridge.session import SensorSession
from firmware_bridge.sim_transport import SimulatedTransport
from firmware_bridge.simulator import Impairments, VirtualH10
from sdk.events import Event, WindowEvent
from sdk.pipeline import StreamPipeline

H10_FRAMES_PER_S = 130.0 / 73


def decoder_throughput() -> dict[str, float]:
    """Frames per second of one core for each decoder (best of 5 repeats)."""
    rng = np.random.default_rng(0)
    samples = rng.integers(-2000, 2000, 73)
    frames: dict[str, tuple[Callable[[bytes], object], bytes]] = {
        "pmd_raw_73": (polar_pmd.decode_ecg_frame, polar_pmd.encode_ecg_raw(10**18, samples)),
        "pmd_delta_73": (
            polar_pmd.decode_ecg_frame,
            polar_pmd.encode_ecg_delta(10**18, np.cumsum(rng.integers(-30, 30, 73))),
        ),
        "open_int24_50": (
            open_profile.decode_open_frame,
            open_profile.encode_open_frame(
                samples[:50], sequence=1, timestamp_us=1, sample_rate_hz=250, sample_format=3
            ),
        ),
        "hr_measurement": (
            hrs.parse_hr_measurement,
            hrs.encode_hr_measurement(72, rr_s=(0.8, 0.82)),
        ),
    }
    out = {}
    for name, (decode, data) in frames.items():
        n = 5000
        timer = timeit.Timer(partial(decode, data))
        out[name] = n / min(timer.repeat(number=n, repeat=5))
    return out


class TimedSink:
    """Pushes into the pipeline and remembers when (transport clock) each push began."""

    def __init__(self, pipeline: StreamPipeline, transport: SimulatedTransport) -> None:
        self.pipeline, self.transport = pipeline, transport
        self.push_started = 0.0
        self.placed: list[tuple[float, np.ndarray]] = []

    def push(
        self, samples: np.ndarray, *, timestamp_s: float | None = None, fs: float | None = None
    ) -> Any:
        self.push_started = self.transport.now()
        self.placed.append((float(timestamp_s or 0.0), np.asarray(samples)[:, 0].copy()))
        return self.pipeline.push(samples, timestamp_s=timestamp_s, fs=fs)


#: The stress scenario's link: loss, jitter, a disconnect a minute and flipped timestamp bits.
STRESS = Impairments(
    loss=0.05, jitter_ms=50.0, disconnect_every_s=60.0, outage_s=2.0, timestamp_glitch=0.01, seed=1
)


def _quantiles(values: list[float]) -> dict[str, float] | None:
    """p50 and p99 of ``values``; None when there are none (a run on virtual time)."""
    if not values:
        return None
    return {q: float(np.percentile(values, p)) for q, p in (("p50", 50), ("p99", 99))}


def scenario(
    bundle: Path,
    signal: np.ndarray,
    fs: float,
    imp: Impairments,
    speed: float,
    *,
    repair_timestamps: bool = True,
) -> dict[str, Any]:
    """Stream through the virtual strap; count misplaced samples, gaps and latencies.

    ``speed`` 0 plays on virtual time (the run repeats exactly; no latencies: computing takes
    no simulated time), any other speed on the wall clock."""
    sensor = VirtualH10(signal, fs)
    transport = SimulatedTransport(sensor, imp, speed=speed)
    pipeline = StreamPipeline(bundle, fs_in=sensor.fs)
    sink = TimedSink(pipeline, transport)
    processing_ms, acquisition_s = [], []

    def on_event(event: Event) -> None:
        if isinstance(event, WindowEvent) and speed:
            now = transport.now()
            processing_ms.append(1000.0 * (now - sink.push_started) / speed)
            acquisition_s.append(now - event.end_s)  # no drift: stream time = acquisition time

    pipeline.add_callback(on_event)
    session = SensorSession(transport, PolarH10(), sink, repair_timestamps=repair_timestamps)
    stats = transport.run(session.run())
    truth = sensor.samples_uv[:, 0] / 1000.0
    misplaced, placed = 0, 0
    for ts, block in sink.placed:
        start = int(round(ts * sensor.fs))
        ref = truth[start : start + block.size]  # shorter if placed past the stream's end
        misplaced += int(np.sum(np.abs(block[: ref.size] - ref) > 1e-6)) + block.size - ref.size
        placed += block.size
    a = stats.assembly
    return {
        "impairments": imp.__dict__,
        "speed": speed,
        "seconds": sensor.duration_s,
        "samples_sent": int(truth.size),
        "samples_placed": placed,
        "samples_misplaced": misplaced,
        "frames_lost_on_air": transport.lost_on_air,
        "frames_lost_while_down": transport.lost_while_down,
        "gaps_detected": a.gaps,
        "gaps_in_pipeline": pipeline.stats.gaps,
        "samples_lost": a.samples_lost,
        "samples_lost_at_end": stats.samples_lost_at_end,
        "unaccounted_samples": int(
            truth.size - placed - a.samples_lost - (stats.samples_lost_at_end or 0)
        ),
        "duplicates_dropped": a.duplicates,
        "timestamp_bit_flips": transport.timestamp_glitches,
        "timestamps_repaired": stats.timestamps_repaired,
        "timestamps_rejected": stats.timestamps_rejected,
        "reconnects": stats.reconnects,
        "malformed": stats.malformed,
        "windows": pipeline.stats.windows,
        "windows_flagged": pipeline.stats.windows_flagged,
        "processing_ms": _quantiles(processing_ms),
        "sample_to_event_s": _quantiles(acquisition_s),
        "hop_s": pipeline.hop / pipeline.fs,
    }


def run(
    bundle: Path,
    out_dir: Path,
    signal: np.ndarray,
    fs: float,
    source: str,
    *,
    minutes: float = 10.0,
    latency_seconds: float = 60.0,
    provenance: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the bridge benchmark on ``signal`` (``fs`` Hz, from ``source``) through
    ``bundle``'s pipeline and write ``bridge.json`` and ``bridge.md`` under ``out_dir``;
    ``provenance`` (the code's commit, the command line) is recorded as given."""
    thr = decoder_throughput()
    stress = STRESS
    long = signal[: int(minutes * 60 * fs)]
    result: dict[str, Any] = {
        "benchmark": "bridge",
        "when_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        **(provenance or {}),
        "bundle": str(bundle),
        "minutes": minutes,
        "source": source,
        "decoder_frames_per_s": thr,
        "decoder_core_fraction_at_h10_rate": {k: H10_FRAMES_PER_S / v for k, v in thr.items()},
        "stress": scenario(bundle, long, fs, stress, speed=0.0),
        "stress_no_repair": scenario(bundle, long, fs, stress, speed=0.0, repair_timestamps=False),
        "latency": scenario(
            bundle,
            signal[: int(latency_seconds * fs)],
            fs,
            Impairments(jitter_ms=20.0, seed=2),
            speed=1.0,
        ),
    }
    s: dict[str, Any] = result["stress"]
    lat: dict[str, Any] = result["latency"]
    rows = "\n".join(
        f"| {k} | {v:,.0f} | {100 * H10_FRAMES_PER_S / v:.4f}% |" for k, v in thr.items()
    )

    def stress_rows(s: dict[str, Any]) -> list[str]:
        return [
            f"{s['samples_sent']} / {s['samples_placed']}",
            f"**{s['samples_misplaced']}**",
            f"{s['frames_lost_on_air']} / {s['frames_lost_while_down']}",
            f"{s['gaps_detected']} / {s['gaps_in_pipeline']}",
            f"{s['samples_lost']} / {s['samples_lost_at_end']} / {s['unaccounted_samples']}",
            f"{s['duplicates_dropped']}, {s['reconnects']}",
            f"{s['timestamp_bit_flips']} / {s['timestamps_repaired']} / {s['timestamps_rejected']}",
            f"{s['windows']} ({s['windows_flagged']})",
        ]

    labels = [
        "samples sent / placed",
        "samples misplaced",
        "frames lost on air / while disconnected",
        "gaps detected by the bridge / flagged in the SDK",
        "samples lost (inside flagged gaps) / after the last frame / unaccounted",
        "duplicates dropped, reconnects",
        "timestamp bit flips sent / repaired / dropped as implausible",
        "windows (flagged)",
    ]
    stress_table = [
        f"| {k} | {on} | {off} |"
        for k, on, off in zip(labels, stress_rows(s), stress_rows(result["stress_no_repair"]))
    ]
    pm, se = lat["processing_ms"], lat["sample_to_event_s"]
    md = "\n".join(
        [
            "# bridge — simulated Polar H10 → session → SDK pipeline",
            "",
            f"Protocol: {source}; decoders timed with `timeit` (best of 5 × 5000 calls, one core).",
            f"Stress: {s['seconds'] / 60:.0f} min on virtual time through `SimulatedTransport`"
            " (speed 0: the run repeats exactly), 5% loss,",
            "50 ms mean exponential jitter, a disconnect every 60 s (2 s outage), one flipped",
            "timestamp bit in 1% of frames (uniform over the 64 bits; bits below 2^22 ns move",
            "a frame by under half a sample and need no repair), seed 1.",
            f"Latency: {lat['seconds']:.0f} s in real time (speed 1, 20 ms jitter).",
            "Command: `ecgedge bench bridge`.",
            "",
            "| decoder | frames/s (one core) | core share at the H10's 1.78 frames/s |",
            "|---|---|---|",
            rows,
            "",
            "| stress scenario | timestamp repair on (default) | off |",
            "|---|---|---|",
            *stress_table,
            "",
            "Latency at speed 1: frame arrival → window event (processing)",
            f"p50 {pm['p50']:.1f} ms, p99 {pm['p99']:.1f} ms; a window's last sample acquired →",
            f"its event p50 {se['p50']:.2f} s,",
            f"p99 {se['p99']:.2f} s (hop {lat['hop_s']:.0f} s; includes up to 1 s of input",
            "batching, the 73-sample frame, the radio and, in a pipeline that does not denoise,",
            "the 2.5 s R-peak lag). The processing figure depends on the host: the",
            "process sleeps between frames, and a host whose CPU is slower after idle (this",
            "project's VM: several times, in CPU time) shows it here; `bench stream` measures",
            "compute per window back to back.",
            "",
        ]
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bridge.json").write_text(json.dumps(result, indent=2))
    (out_dir / "bridge.md").write_text(md)
    print(md)
    return result
