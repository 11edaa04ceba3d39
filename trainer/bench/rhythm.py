"""``ecgedge bench rhythm``: CinC 2017 rhythm classification on our validation split.

Rows: the linear probe on frozen embeddings (PyTorch FP32, from the training run's probe),
and the bundle end to end through the SDK (each validation record streamed through
:class:`sdk.pipeline.StreamPipeline`, window probabilities averaged per record) in FP32
and INT8, with 95% bootstrap intervals, beside the published anchors.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from sdk.bundle import load_bundle
from sdk.events import WindowEvent
from sdk.pipeline import StreamPipeline
from trainer.bench.report import md_table, write_result
from trainer.config import DataConfig
from trainer.data import records as rec
from trainer.data.datasets import cinc2017_record_names, head_split
from trainer.metrics import CLASSES, encode, f1_per_class, rhythm_report

ANCHORS = {
    "RR features + gradient boosting (floor, 5-fold CV)": {"challenge_f1": 0.750, "auroc": 0.897},
    "DACL (paper)": {"auroc": 0.7815},
    "DiffAE-LRU linear probe (paper)": {"macro_f1": 0.763},
    "CinC 2017 winners": {"challenge_f1": 0.83},
}


def val_records(split_seed: int, val_fraction: float) -> list[str]:
    return cinc2017_record_names(split_seed, val_fraction)[1]


def bundle_val_records(manifest: Any) -> list[str]:
    """The validation records of the bundle's head: its recorded split rebuilt, refused when
    this data root gives other split sizes (a record added or missing moves hundreds of
    records between training and validation: :func:`trainer.data.datasets.head_split`)."""
    return head_split(manifest.provenance.get("training_data", {}))[1]


def stream_record_probabilities(bundle_dir: Path, names: list[str], precision: str) -> np.ndarray:
    """(R, K) mean window probabilities of each record streamed through the SDK."""
    bundle = load_bundle(bundle_dir)
    out = np.zeros((len(names), len(bundle.manifest.classes)))
    for i, name in enumerate(
        tqdm(names, desc=f"stream val ({precision})", unit="rec", leave=False)
    ):
        r = rec.read_cinc2017(name)
        p = StreamPipeline(bundle, fs_in=r.fs, precision=precision)
        events = p.push(r.signal[:, 0]) + p.close()
        probs = [list(e.probabilities.values()) for e in events if isinstance(e, WindowEvent)]
        out[i] = np.mean(probs, axis=0)
    return out


#: Columns of :func:`_row`.
HEADER = ["challenge F1 [95% CI]", "4-class macro F1", "F1 N / A / O / ~", "AUROC N vs (A+O)"]


def record_report(y: np.ndarray, proba: np.ndarray) -> dict[str, Any]:
    """:func:`trainer.metrics.rhythm_report` of record probabilities plus per-class F1."""
    report = rhythm_report(y, proba)
    f1 = f1_per_class(y, proba.argmax(axis=1), len(CLASSES))
    report["f1_per_class"] = {c: float(v) for c, v in zip(CLASSES, f1)}
    return report


def _row(name: str, report: dict[str, Any]) -> list[Any]:
    def fmt(key: str) -> str:
        v = report[key]
        return f"{v['value']:.3f} [{v['ci95'][0]:.3f}, {v['ci95'][1]:.3f}]"

    per_class = report.get("f1_per_class")
    classes = " / ".join(f"{v:.2f}" for v in per_class.values()) if per_class else "—"
    return [name, fmt("challenge_f1"), fmt("macro_f1"), classes, fmt("auroc_normal_vs_af_other")]


def run(
    bundle_dir: Path, out_dir: Path, *, run_dir: Path | None = None, report: str = "rhythm"
) -> dict[str, Any]:
    """Stream the validation records through the bundle in each of its embedder precisions;
    add the run's linear-probe rows; write ``<report>.json`` and ``<report>.md``."""
    manifest = load_bundle(bundle_dir).manifest
    split = manifest.provenance["training_data"]
    names = bundle_val_records(manifest)
    labels = rec.cinc2017_labels_cached()
    y = encode([labels[n] for n in names])
    rows: dict[str, Any] = {}
    timings = {}
    precisions = sorted(
        {f.precision for f in manifest.files if f.role == "embedder" and f.modality == "raw"},
        key=("fp32", "fp16", "int8").index,
    )
    for precision in precisions:
        tic = time.perf_counter()
        proba = stream_record_probabilities(bundle_dir, names, precision)
        rows[f"bundle via SDK ({precision.upper()})"] = record_report(y, proba)
        timings[precision] = time.perf_counter() - tic
    probe_path = (run_dir or Path()) / "probe.json"
    probe = (
        json.loads(probe_path.read_text())
        if run_dir and probe_path.is_file()
        else manifest.metrics.get("linear_probe", {})
    )
    for key in ("embedding_plus_rr", "embedding_only", "rr_only"):
        if key in probe:
            rows[f"linear probe, torch FP32 ({key.replace('_', ' ')})"] = probe[key]
    for key, value in probe.get("rows", {}).items():  # a multimodal run's modality ablation
        rows[f"linear probe, torch FP32 ({key} ++ RR)"] = value
    header = ["model", *HEADER]
    table = md_table(header, [_row(k, v) for k, v in rows.items()])
    anchors = md_table(
        ["anchor", "figures"],
        [[k, ", ".join(f"{m} {v}" for m, v in a.items())] for k, a in ANCHORS.items()],
    )
    md = f"""# rhythm — CinC 2017, validation split

Protocol: {len(names)} validation records of the shared CinC 2017 data (split by record,
stratified by label, seed {split["split_seed"]}, {split["val_fraction"]:.0%} held out; never
used for training or for choosing t, but the bundle's configuration (single- or multimodal,
with or without the denoiser) was chosen by comparing alternatives on it; the anomaly
score of `bench anomaly` is chosen on held-out training records).
Per-record label = argmax of the mean window
probability; AUROC of P(A)+P(O) with noisy records excluded; 95% bootstrap intervals
(1000 resamples of records). Bundle `{manifest.name}` streamed record by record through
`sdk.pipeline.StreamPipeline` (one ONNX Runtime thread). Command:
`ecgedge bench rhythm --bundle {bundle_dir}{f" --run {run_dir}" if run_dir else ""}`
{f"--report {report}" if report != "rhythm" else ""}.

{table}

Published anchors (other splits and protocols; for orientation only):

{anchors}
"""
    result = {
        "bundle": manifest.name,
        "n_records": len(names),
        "rows": rows,
        "stream_seconds": timings,
        "data": DataConfig().pretrain_databases[:1],
    }
    write_result(out_dir, report, result, md)
    print(md)
    return result
