"""``ecgedge bench stream``: the device path, measured.

A 30-minute record (MIT-BIH 201, or the synthetic ECG without data) is resampled to the
bundle's rate and streamed through the SDK in 0.5 s blocks, in a fresh torch-free process
per run (``python -m sdk.bench``), on one thread; medians over repeats. Peers in the same
run: the extractor in PyTorch eager (one thread), NeuroKit2's ``ecg_process`` and
``ecg_peaks`` on the same 10 s windows; and the model's FLOPs per hop against one core's
measured peak.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sdk.bundle import load_bundle
from sdk.lru_step import streaming_spec
from sdk.resample import resample
from sdk.step_stream import step_model_problem
from sdk.synthetic import synthetic_ecg
from trainer.bench.flops import count_flops, peak_flops_one_core
from trainer.bench.report import md_table, write_result
from trainer.checkpoint import load_checkpoint
from trainer.data import records as rec
from trainer.data.root import has_folder
from trainer.errors import BenchError
from trainer.probe import build_extractor

ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def bench_signal(minutes: float) -> tuple[np.ndarray, float, str]:
    if has_folder("mitdb"):
        r = rec.read_mitdb("201")
        n = int(minutes * 60 * r.fs)
        return r.signal[:n, 0], r.fs, "mitdb/201 lead 0"
    ecg = synthetic_ecg((("sinus", minutes * 20), ("af", minutes * 20), ("sinus", minutes * 20)))
    return ecg.signal, ecg.fs, "synthetic"


def sdk_runs(
    bundle: Path,
    signal: np.ndarray,
    fs: float,
    precision: str,
    repeats: int,
    *,
    hop_s: float | None = None,
    stateful: str = "auto",
    paced: bool = False,
) -> dict[str, Any]:
    """Median figures over ``repeats`` fresh processes (``stateful``: auto / on / off;
    ``paced``: blocks pushed at the sensor's pace, see :func:`sdk.bench.stream_benchmark`)."""
    options = ["--stateful", stateful] + (["--hop", str(hop_s)] if hop_s else [])
    options += ["--paced"] if paced else []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "signal.npy"
        np.save(path, signal.astype(np.float32))
        runs = []
        for _ in range(repeats):
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "sdk.bench",
                    "--bundle",
                    str(bundle),
                    "--signal",
                    str(path),
                    "--fs",
                    str(fs),
                    "--precision",
                    precision,
                    *options,
                ],
                capture_output=True,
                text=True,
                env={**os.environ, **ONE_THREAD},
            )
            if out.returncode != 0:
                lines = out.stderr.strip().splitlines() or ["no error output"]
                raise BenchError(
                    lines[-1], command="python -m sdk.bench", returncode=out.returncode
                )
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    med = {
        k: float(np.median([r[k] for r in runs]))
        for k in ("real_time_factor", "ms_compute_per_ecg_s", "peak_rss_mb")
    }
    for key in ("hop_latency_ms", "window_analysis_ms"):
        med[key] = {q: float(np.median([r[key][q] for r in runs])) for q in ("p50", "p99")}
    med["windows"] = runs[0]["windows"]
    med["stateful"] = runs[0]["stateful"]
    return med


def windows_of(signal: np.ndarray, fs: float, n: int, window_s: float = 10.0) -> np.ndarray:
    w = int(window_s * fs)
    starts = np.linspace(0, signal.size - w, n).astype(int)
    return np.stack([signal[s : s + w] for s in starts])


def torch_eager_ms(
    extractor: torch.nn.Module, windows: np.ndarray, t: int, noise: np.ndarray
) -> float:
    torch.set_num_threads(1)
    times = []
    eps = torch.from_numpy(noise)
    with torch.no_grad():
        for w in windows:
            x = torch.from_numpy(w[None, None].astype(np.float32))
            tic = time.perf_counter()
            extractor(x, torch.tensor([t]), eps)
            times.append(1000 * (time.perf_counter() - tic))
    return float(np.median(times[2:]))


def neurokit_ms(windows: np.ndarray, fs: float) -> dict[str, float]:
    import neurokit2 as nk

    process, peaks = [], []
    for w in windows:
        tic = time.perf_counter()
        nk.ecg_process(w, sampling_rate=int(fs))
        process.append(1000 * (time.perf_counter() - tic))
        tic = time.perf_counter()
        nk.ecg_peaks(nk.ecg_clean(w, sampling_rate=int(fs)), sampling_rate=int(fs))
        peaks.append(1000 * (time.perf_counter() - tic))
    return {"ecg_process_ms": float(np.median(process)), "ecg_peaks_ms": float(np.median(peaks))}


def _row_label(key: str, stateful: bool, *, compared: bool) -> str:
    if key.endswith("-paced"):
        return f"ONNX Runtime {key.removesuffix('-paced').upper()}, paced at the sensor"
    text = f"ONNX Runtime {key.removesuffix('-step').upper()}"
    if compared:
        text += ", step model" if stateful else ", whole windows"
    return text


def run(
    bundle_dir: Path,
    out_dir: Path,
    *,
    minutes: float = 30.0,
    peers: bool = True,
    run_dir: Path = Path("runs/cpu"),
    repeats: int = 3,
    report: str = "stream",
    hop_s: float | None = None,
    paced_minutes: float = 2.0,
) -> dict[str, Any]:
    """Stream the bench signal through the bundle at each embedder precision; for a bundle
    with a step model (DiffAE-LRU) once re-encoding whole windows and once with the step
    model; and the first ``paced_minutes`` of it at the sensor's pace with the most compact
    embedder (0: skip). ``hop_s``: the pipeline's window hop (default: the bundle's)."""
    bundle = load_bundle(bundle_dir)
    m = bundle.manifest
    precisions = sorted(
        {f.precision for f in m.files if f.role == "embedder" and f.modality == "raw"},
        key=("fp32", "fp16", "int8").index,
    )
    raw, fs_raw, source = bench_signal(minutes)
    signal = resample(raw, fs_raw, m.fs)
    hop_samples = m.hop_samples if hop_s is None else int(round(hop_s * m.fs))
    modes = {p: (p, "off") for p in precisions}
    if step_model_problem(bundle, hop_samples=hop_samples) is None:
        modes["fp32-step"] = ("fp32", "on")
    rows = {
        label: sdk_runs(bundle_dir, signal, m.fs, p, repeats, hop_s=hop_s, stateful=mode)
        for label, (p, mode) in modes.items()
    }
    if paced_minutes > 0:
        paced = signal[: int(paced_minutes * 60 * m.fs)]
        rows[f"{precisions[-1]}-paced"] = sdk_runs(
            bundle_dir, paced, m.fs, precisions[-1], 1, hop_s=hop_s, paced=True
        )
    sizes = {f.path: (bundle.root / f.path).stat().st_size for f in m.files}
    if "fp32-step" in modes:  # the step model lies beside the manifest's files
        step_path = streaming_spec(bundle).path
        sizes[step_path] = (bundle.root / step_path).stat().st_size
    unused = {m.file("embedder", p).path for p in precisions[:-1]}  # a device keeps the smallest
    device_bytes = sum(v for k, v in sizes.items() if k not in unused)
    result: dict[str, Any] = {
        "bundle": m.name,
        "signal": source,
        "minutes": signal.size / m.fs / 60,
        "sdk": rows,
        "bundle_bytes": sizes,
        "device_bundle_bytes": device_bytes,
    }
    hop_s = hop_samples / m.fs
    result["hop_s"] = hop_s
    peer_rows = []
    if peers:
        windows = windows_of(signal, m.fs, 40)
        ckpt = run_dir / "diffecg.pt"
        if ckpt.is_file():
            cfg, state, _ = load_checkpoint(ckpt)
            extractor = build_extractor(cfg, state)
            eager = torch_eager_ms(extractor, windows, m.default_t["raw"], bundle.inference_noise())
            flops = count_flops(extractor, m.window_samples, m.default_t["raw"])
            peak = peak_flops_one_core()
            result["torch_eager_ms_per_window"] = eager
            result["flops_per_hop"] = flops
            result["peak_flops_one_core"] = peak
            result["best_possible_ms_per_hop"] = 1000 * flops / peak
            peer_rows.append(
                [
                    "DiffECG extractor, PyTorch eager FP32 (model only)",
                    f"{eager:.2f}",
                    f"{hop_s * 1000 / eager:.0f}",
                ]
            )
        nk = neurokit_ms(windows_of(raw, fs_raw, 20), fs_raw)
        result["neurokit2"] = nk
        peer_rows.append(
            [
                "NeuroKit2 ecg_process (clean+peaks+delineation)",
                f"{nk['ecg_process_ms']:.1f}",
                f"{hop_s * 1000 / nk['ecg_process_ms']:.0f}",
            ]
        )
        peer_rows.append(
            [
                "NeuroKit2 ecg_clean + ecg_peaks",
                f"{nk['ecg_peaks_ms']:.1f}",
                f"{hop_s * 1000 / nk['ecg_peaks_ms']:.0f}",
            ]
        )
    sdk_table = md_table(
        [
            "SDK path (one thread)",
            "real-time factor",
            "ms compute / s ECG",
            "hop latency p50 / p99 (ms)",
            "window analysis p50 / p99 (ms)",
            "peak RSS (MB)",
        ],
        [
            [
                _row_label(p, r["stateful"], compared=len(modes) > len(precisions)),
                f"{r['real_time_factor']:.0f}",
                f"{r['ms_compute_per_ecg_s']:.2f}",
                f"{r['hop_latency_ms']['p50']:.2f} / {r['hop_latency_ms']['p99']:.2f}",
                f"{r['window_analysis_ms']['p50']:.2f} / {r['window_analysis_ms']['p99']:.2f}",
                f"{r['peak_rss_mb']:.0f}",
            ]
            for p, r in rows.items()
        ],
    )
    peers_md = (
        md_table(["peer, per 10 s window", "ms", "real-time factor at the hop"], peer_rows)
        if peer_rows
        else "(peers skipped)"
    )
    flops_md = ""
    compact_ms = rows[precisions[-1]]["window_analysis_ms"]["p50"]
    best_ms = result.get("best_possible_ms_per_hop", float("nan"))
    if "flops_per_hop" in result:
        flops_md = (
            f"Model cost: {result['flops_per_hop'] / 1e6:.1f} MFLOP per hop; one core's measured "
            f"peak {result['peak_flops_one_core'] / 1e9:.1f} GFLOP/s (float32 matmul) → best "
            f"possible {result['best_possible_ms_per_hop']:.3f} ms per hop (raw extractor); the "
            f"{precisions[-1].upper()} window analysis takes {compact_ms:.2f} ms "
            f"({compact_ms / best_ms:.0f}×)."
        )
    paced_text = ""
    if paced_minutes > 0:
        paced_text = (
            f" The paced row pushes the first {paced_minutes:g} min at the sensor's pace (each "
            "0.5 s block when its last sample would be taken; the process idles in between, "
            "as on a device; one run): its latencies include models running cold after each "
            "idle spell, which back-to-back pushing never shows."
        )
    command = f"ecgedge bench stream --bundle {bundle_dir}"
    command += f" --minutes {minutes:g}" if minutes != 30.0 else ""
    command += f" --hop {hop_s:g}" if hop_samples != m.hop_samples else ""
    command += "" if peers else " --no-peers"
    command += f" --paced-minutes {paced_minutes:g}" if paced_minutes != 2.0 else ""
    command += f" --report {report}" if report != "stream" else ""
    other_roles = ", ".join(sorted({f.role for f in m.files} - {"embedder"}))
    md = f"""# stream — the device path

Protocol: {result["minutes"]:.0f} min of {source}, resampled to the bundle's {m.fs:.0f} Hz and
pushed in 0.5 s blocks through `sdk.pipeline.StreamPipeline` (window {m.window_samples}, hop
{hop_samples} samples) in a fresh torch-free process, ONNX Runtime with one thread; medians of
{repeats} runs. Hop latency = wall time of a push that completes a window (preprocessing,
R-peaks, quality, embedder, head).{paced_text}
Bundle `{m.name}`: {device_bytes / 1024:.0f} KiB on a device (its most compact embedders
and every other file it lists: {other_roles}; {sum(sizes.values()) / 1024:.0f} KiB with every
file). Command: `{command}`.

{sdk_table}

{peers_md}

{flops_md}
"""
    write_result(out_dir, report, result, md)
    print(md)
    return result
