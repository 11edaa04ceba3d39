"""``ecgedge bench rhythm-noise``: the rhythm benchmark on clean and on noise-corrupted CinC 2017
validation records, streamed through the SDK with and without the bundle's denoiser.

Same records, split, aggregation and metrics as ``ecgedge bench rhythm``. Noise: evaluation
part (last 20%) of NSTDB ``bw``, ``ma`` and recovered ``em`` (one type per record, in turn),
resampled to the record's 300 Hz, random channel and offset (seeded per record), scaled so the
input SNR on the device representation (after the SDK's resample and band-pass) is the stated
level over the whole record.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from sdk.bundle import load_bundle
from sdk.events import WindowEvent
from sdk.pipeline import StreamPipeline
from sdk.preprocess import preprocess_record
from trainer.bench.report import md_table, once_per_message, write_result
from trainer.bench.rhythm import HEADER, _row, bundle_val_records, record_report
from trainer.data import records as rec
from trainer.data.noise import NOISE_TYPES, noise_source, scale_for_snr
from trainer.metrics import encode


def noisy_signal(x: np.ndarray, fs: float, index: int, snr_db: float, spec: Any) -> np.ndarray:
    """``x`` plus evaluation noise at ``snr_db`` measured on the device representation."""
    kind = NOISE_TYPES[index % len(NOISE_TYPES)]
    src = noise_source(kind, "eval", fs)
    rng = np.random.default_rng(index)
    ch = int(rng.integers(0, src.shape[1]))
    start = int(rng.integers(0, src.shape[0] - x.size))
    n = src[start : start + x.size, ch].astype(np.float64)
    y_c, y_n = preprocess_record(x, fs, spec)[:, 0], preprocess_record(n, fs, spec)[:, 0]
    k = float(scale_for_snr(y_c, y_n, snr_db)[0])
    return x + k * n


def record_probabilities(
    bundle_dir: Path, names: list[str], snr_db: float | None, denoise: bool
) -> np.ndarray:
    bundle = load_bundle(bundle_dir)
    out = np.zeros((len(names), len(bundle.manifest.classes)))
    desc = f"rhythm {'clean' if snr_db is None else f'{snr_db:+.0f} dB'} denoise={denoise}"
    with once_per_message("sdk.pipeline"):
        for i, name in enumerate(tqdm(names, desc=desc, unit="rec", leave=False)):
            r = rec.read_cinc2017(name)
            x = r.signal[:, 0].astype(np.float64)
            if snr_db is not None:
                x = noisy_signal(x, r.fs, i, snr_db, bundle.manifest.preprocess)
            p = StreamPipeline(bundle, fs_in=r.fs, denoise=denoise)
            events = [e for e in p.push(x) + p.close() if isinstance(e, WindowEvent)]
            out[i] = np.mean([list(e.probabilities.values()) for e in events], axis=0)
    return out


def run(
    bundle_dir: Path, out_dir: Path, *, levels: tuple[float | None, ...] = (None, 6.0)
) -> dict[str, Any]:
    manifest = load_bundle(bundle_dir).manifest
    if not any(f.role == "denoiser" for f in manifest.files):
        raise ValueError(f"bundle {bundle_dir} has no denoiser")
    split = manifest.provenance["training_data"]
    names = bundle_val_records(manifest)
    labels = rec.cinc2017_labels_cached()
    y = encode([labels[n] for n in names])
    rows: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    for level in levels:
        tag = "clean" if level is None else f"noise {level:+.0f} dB"
        for denoise in (False, True):
            key = f"{tag}, {'with' if denoise else 'without'} denoiser"
            tic = time.perf_counter()
            rows[key] = record_report(y, record_probabilities(bundle_dir, names, level, denoise))
            seconds[key] = time.perf_counter() - tic
    header = ["condition", *HEADER]
    table = md_table(header, [_row(k, v) for k, v in rows.items()])
    den = next(f for f in manifest.files if f.role == "denoiser")
    levels_arg = ",".join("clean" if lv is None else f"{lv:g}" for lv in levels)
    md = f"""# rhythm with noise — CinC 2017 validation, with and without the denoiser

{__doc__.split(chr(10) + chr(10), 1)[1].strip()}

{len(names)} validation records (split seed {split["split_seed"]}), bundle `{manifest.name}`
(embedder in its most compact precision, denoiser {den.precision.upper()}), one ONNX Runtime
thread. Command: `ecgedge bench rhythm-noise --bundle {bundle_dir} --levels {levels_arg}`.

{table}
"""
    result = {"bundle": manifest.name, "n_records": len(names), "rows": rows, "seconds": seconds}
    write_result(out_dir, "rhythm_noise", result, md)
    print(md)
    return result
