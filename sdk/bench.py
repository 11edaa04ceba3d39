"""Device-path measurement worker: stream a signal through the SDK and time every push.

Run as ``python -m sdk.bench --bundle DIR --signal FILE.npy --fs HZ --precision int8`` in a
fresh process (so peak memory is the SDK's alone); prints one JSON object. The orchestrating
benchmark is ``ecgedge bench stream``.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np

from sdk.events import WindowEvent
from sdk.pipeline import StreamPipeline


def peak_rss_mb() -> float:
    """Peak resident memory of this process image (MB).

    Linux's ``VmHWM`` restarts at ``exec``, unlike ``ru_maxrss``, which keeps the peak of the
    parent image a worker was forked from; elsewhere ``ru_maxrss`` is the best available.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def stream_benchmark(
    bundle_dir: Path,
    signal: np.ndarray,
    fs: float,
    *,
    precision: str,
    threads: int = 1,
    block_s: float = 0.5,
    hop_s: float | None = None,
    stateful: bool | None = None,
    paced: bool = False,
) -> dict[str, Any]:
    """Push ``signal`` in ``block_s`` blocks; return timing, latency and memory figures.
    ``hop_s`` and ``stateful`` are passed to :class:`~sdk.pipeline.StreamPipeline`.
    ``paced``: push each block when it would arrive from a sensor (the process idles in
    between, as on a device) instead of back to back; takes the signal's duration."""
    pipeline = StreamPipeline(
        bundle_dir,
        fs_in=fs,
        precision=precision,
        threads=threads,
        hop_s=hop_s,
        stateful=stateful,
    )
    step = max(1, int(round(block_s * fs)))
    push_ms, window_push_ms = [], []
    start = time.perf_counter()
    for i in range(0, signal.size, step):
        if paced:  # the block is complete at the sensor when its last sample was taken
            time.sleep(max(0.0, start + (i + step) / fs - time.perf_counter()))
        tic = time.perf_counter()
        events = pipeline.push(signal[i : i + step])
        dt = 1000.0 * (time.perf_counter() - tic)
        push_ms.append(dt)
        if any(isinstance(e, WindowEvent) for e in events):
            window_push_ms.append(dt)
    tic = time.perf_counter()
    pipeline.close()
    push_ms.append(1000.0 * (time.perf_counter() - tic))
    compute_s = sum(push_ms) / 1000.0
    ecg_s = signal.size / fs
    analysis = np.asarray(pipeline.stats.latencies_ms)
    hop = np.asarray(window_push_ms)
    return {
        "precision": pipeline.classifier.precision,
        "stateful": pipeline.step_stream is not None,
        "hop_s": pipeline.hop / pipeline.fs,
        "threads": threads,
        "block_s": block_s,
        "paced": paced,
        "ecg_s": ecg_s,
        "compute_s": compute_s,
        "real_time_factor": ecg_s / compute_s,
        "ms_compute_per_ecg_s": 1000.0 * compute_s / ecg_s,
        "windows": pipeline.stats.windows,
        "hop_latency_ms": {
            "p50": float(np.percentile(hop, 50)),
            "p99": float(np.percentile(hop, 99)),
        },
        "window_analysis_ms": {
            "p50": float(np.percentile(analysis, 50)),
            "p99": float(np.percentile(analysis, 99)),
        },
        "peak_rss_mb": peak_rss_mb(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--signal", required=True, help=".npy file of one lead in mV")
    ap.add_argument("--fs", type=float, required=True)
    ap.add_argument("--precision", default="int8")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--hop", type=float, help="window hop in s (default: the bundle's)")
    ap.add_argument("--stateful", choices=("auto", "on", "off"), default="auto")
    ap.add_argument("--paced", action="store_true", help="push blocks at the sensor's pace")
    args = ap.parse_args()
    signal = np.load(args.signal, allow_pickle=False).astype(np.float32)
    result = stream_benchmark(
        Path(args.bundle),
        signal,
        args.fs,
        precision=args.precision,
        threads=args.threads,
        hop_s=args.hop,
        stateful={"auto": None, "on": True, "off": False}[args.stateful],
        paced=args.paced,
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
