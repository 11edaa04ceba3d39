"""``ecgedge bench anomaly``: DACL-style anomaly AUROC for any bundle's embedder.

The DACL anomaly score (METHODS.md §2) is a record's mean distance to the prototype (mean
embedding) of the normal training windows; AUROC is Normal vs (AF + Other) on our CinC 2017
validation split, noisy records excluded (as ``ecgedge bench dacl``). Here the embeddings
come from a bundle through the SDK (ONNX Runtime, the bundle's default t), so the DiffECG
extractor, the DiffAE-LRU encoder and the DACL encoder are scored the same way. Each block
of the head input (every modality's embedding, the fused embedding, all of them together;
never the RR features) is scored three ways: plain Euclidean distance (DACL's), distance
after z-scoring each dimension with the training windows' mean and standard deviation, and
Mahalanobis distance under the normal training windows' covariance (z-scored, Ledoit-Wolf).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from sdk.bundle import load_bundle
from sdk.classifier import WindowClassifier, WindowInputs
from sdk.denoiser import WindowDenoiser
from trainer.bench.report import md_table, write_result
from trainer.config import DataConfig
from trainer.dacl import anomaly_report, standardize
from trainer.data.datasets import WindowSet, cinc2017_split

BATCH = 256


def embedding_blocks(clf: WindowClassifier, ws: WindowSet, desc: str) -> dict[str, np.ndarray]:
    """Every modality's embedding, the fused one (if any), ``modalities`` (the modalities'
    embeddings side by side: self-supervised only) and ``all`` (with the fused one) of every
    window: name → (N, D)."""
    t = clf.resolve_t(None)
    blocks: dict[str, list[np.ndarray]] = {}
    for i in tqdm(range(0, len(ws.windows), BATCH), desc=desc, unit="batch", leave=False):
        sl = slice(i, i + BATCH)
        inputs = WindowInputs(ws.windows[sl], ws.rr[sl], ws.lorenz[sl])
        parts = {m: clf.embed_modality(m, inputs, t[m]) for m in clf.modalities}
        for m in clf.modalities:
            blocks.setdefault(m, []).append(parts[m][0])
        if clf.fusion is not None:
            feats = clf.combine(parts, inputs.rr)
            width = sum(parts[m][0].shape[1] for m in clf.modalities)
            blocks.setdefault("fused", []).append(feats[:, width : feats.shape[1] - clf.n_rr])
    out = {k: np.concatenate(v).astype(np.float32) for k, v in blocks.items()}
    if len(clf.modalities) > 1:
        out["modalities"] = np.concatenate([out[m] for m in clf.modalities], axis=1)
    if len(out) > 1:
        out["all"] = np.concatenate([out[k] for k in (*clf.modalities, "fused") if k in out], 1)
    return out


def score_blocks(
    train_blocks: dict[str, np.ndarray],
    val_blocks: dict[str, np.ndarray],
    train: WindowSet,
    val: WindowSet,
) -> dict[str, dict[str, Any]]:
    """Anomaly AUROC of each block, plain and z-scored by the training statistics."""
    rows: dict[str, dict[str, Any]] = {}
    for name, tr in train_blocks.items():
        va = val_blocks[name]
        mean, std = standardize(tr)
        rows[name] = {
            "dim": int(tr.shape[1]),
            "euclidean": anomaly_report(tr, va, train, val),
            "z_scored": anomaly_report((tr - mean) / std, (va - mean) / std, train, val),
            "mahalanobis": anomaly_report(tr, va, train, val, metric="mahalanobis"),
        }
    return rows


def denoised(den: WindowDenoiser, ws: WindowSet, desc: str) -> WindowSet:
    """``ws`` with every window denoised as :class:`~sdk.pipeline.StreamPipeline` does
    (:meth:`~sdk.denoiser.WindowDenoiser.denoise_window`); RR features and Lorenz images
    unchanged (the pipeline takes them from the signal before denoising)."""
    out = np.empty_like(ws.windows)
    for i in tqdm(range(len(out)), desc=desc, unit="window", leave=False, mininterval=2.0):
        out[i] = den.denoise_window(ws.windows[i, 0][:, None], 0)[0]
    return dataclasses.replace(ws, windows=out)


def bundle_anomaly(
    bundle_dir: Path, train: WindowSet, val: WindowSet, *, denoise: bool = True
) -> dict[str, Any]:
    """Embed both splits with one bundle and score every block; with ``denoise`` (default)
    a bundle's denoiser runs first, as in the pipeline."""
    tic = time.perf_counter()
    bundle = load_bundle(bundle_dir)
    clf = WindowClassifier(bundle, precision="fp32", threads=1)
    name = bundle.manifest.name
    den = WindowDenoiser.from_bundle(bundle, 1) if denoise else None
    if den is not None:
        train, val = denoised(den, train, f"{name} denoise train"), denoised(den, val, "val")
    train_blocks = embedding_blocks(clf, train, f"{name} train")
    val_blocks = embedding_blocks(clf, val, f"{name} val")
    return {
        "bundle": str(bundle_dir),
        "name": name,
        "denoised": den is not None,
        "t": clf.resolve_t(None),
        "blocks": score_blocks(train_blocks, val_blocks, train, val),
        "seconds": time.perf_counter() - tic,
    }


def _ci(r: dict[str, Any]) -> str:
    lo, hi = r["ci95"]
    return f"{r['value']:.3f} [{lo:.3f}, {hi:.3f}]"


def markdown(results: dict[str, dict[str, Any]], n_records: int) -> str:
    rows = []
    for label, res in results.items():
        for block, r in res["blocks"].items():
            rows.append(
                [
                    label,
                    block,
                    r["dim"],
                    *(_ci(r[k]) for k in ("euclidean", "z_scored", "mahalanobis")),
                ]
            )
    table = md_table(
        ["bundle", "embedding block", "dim", "AUROC, Euclidean", "z-scored", "Mahalanobis"], rows
    )
    cmd = ",".join(r["bundle"] for r in results.values())
    den = [label for label, r in results.items() if r.get("denoised")]
    den_text = (
        f"Windows of {', '.join(den)} went through the bundle's denoiser first, as in the "
        "pipeline (`--no-denoise` skips it)."
        if den
        else "No denoiser ran."
    )
    return f"""# anomaly — DACL-style anomaly AUROC of every embedder (CinC 2017 validation split)

Command: `ecgedge bench anomaly --bundle {cmd}`. Score: mean over a record's 10 s windows of
the distance of the window's embedding (SDK, ONNX Runtime FP32, the bundle's default t) to
the mean embedding of the normal training windows; AUROC Normal vs (AF + Other) over
{n_records} validation records (noisy records excluded), 95% bootstrap intervals. Euclidean
is DACL's score; z-scored divides each dimension by its training standard deviation;
Mahalanobis uses the covariance of the normal training windows, z-scored per dimension and
shrunk towards the identity (Ledoit-Wolf): a one-class Gaussian model. Blocks:
each modality, "fused" (the fusion layer's output), "modalities" (the modality embeddings
side by side, no fusion layer) and "all" (both). No labels
other than "normal" are used to build the score, but the embedders differ in what their
training saw: the DiffECG extractors, the DiffAE-LRU encoder and DACL's VAE are
self-supervised; DACL's triplet encoder uses class labels to pick negatives; the DiffECG
fusion layer ("fused") was trained with a linear classifier on the rhythm labels. Target
(issue 6): ≥ 0.85 for the best embedder; DACL paper 0.7815. {den_text}

{table}
"""


def run(
    bundles: dict[str, Path], out_dir: Path, report: str = "anomaly", *, denoise: bool = True
) -> dict[str, Any]:
    """Score each bundle (label → directory); write ``<report>.json`` and ``.md``."""
    train, val = cinc2017_split(DataConfig())
    results = {
        label: bundle_anomaly(path, train, val, denoise=denoise) for label, path in bundles.items()
    }
    n = next(iter(next(iter(results.values()))["blocks"].values()))["euclidean"]["records"]
    md = markdown(results, n)
    write_result(out_dir, report, {"results": results}, md)
    print(md)
    return results
