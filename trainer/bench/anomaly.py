"""``ecgedge bench anomaly``: DACL-style anomaly AUROC for any bundle's embedder.

The DACL anomaly score (METHODS.md §2) is a record's mean distance to the prototype (mean
embedding) of the normal training windows; AUROC is Normal vs (AF + Other) on our CinC 2017
validation split, noisy records excluded (as ``ecgedge bench dacl``). Here the embeddings
come from a bundle through the SDK (ONNX Runtime, the bundle's default t), so the DiffECG
extractor, the DiffAE-LRU encoder and the DACL encoder are scored the same way. Each block
of the head input (every modality's embedding, the fused embedding, all of them together;
never the RR features) is scored with every distance of :data:`trainer.dacl.DISTANCES`
(Euclidean to the prototype as DACL, z-scored, Mahalanobis, k nearest normal windows) and
every record aggregation of :data:`trainer.dacl.AGGREGATIONS` (mean, median, max).

Which of these variants is the benchmark's figure is chosen without the validation split
(:func:`select_variant`): the training records are split by record (stratified, seed 0) into
a fitting part (75%) and a selection part (25%); each variant is fitted on the fitting part's
normal windows and scored on the selection records; the best one there is refitted on all
training normal windows and reported on validation. The full validation table is printed
as well, for reference only (its best cell is chosen on validation).
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
from trainer.dacl import AGGREGATIONS, DISTANCES, auroc_report, prototype_distance, record_scores
from trainer.data.datasets import WindowSet, cinc2017_split, head_split
from trainer.data.splits import stratified_split
from trainer.errors import ConfigError

BATCH = 256
SELECTION_FRACTION = 0.25
SELECTION_SEED = 0


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


def variant_reports(
    emb_train: np.ndarray, emb_val: np.ndarray, train: WindowSet, val: WindowSet
) -> dict[str, dict[str, dict[str, Any]]]:
    """AUROC report of every distance × aggregation: ``{distance: {aggregation: report}}``."""
    normal = train.window_labels == "N"
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for metric in DISTANCES:
        dist = prototype_distance(emb_train, emb_val, normal, metric)
        out[metric] = {
            agg: auroc_report(record_scores(dist, val, agg), val) for agg in AGGREGATIONS
        }
    return out


def score_blocks(
    train_blocks: dict[str, np.ndarray],
    val_blocks: dict[str, np.ndarray],
    train: WindowSet,
    val: WindowSet,
) -> dict[str, dict[str, Any]]:
    """Every block's dimension and :func:`variant_reports` (fitted on ``train``, scored on
    ``val``)."""
    return {
        name: {"dim": int(tr.shape[1]), **variant_reports(tr, val_blocks[name], train, val)}
        for name, tr in train_blocks.items()
    }


def selection_split(train: WindowSet) -> tuple[np.ndarray, WindowSet, WindowSet]:
    """Training records split by record (stratified by label, :data:`SELECTION_SEED`):
    the mask of the fitting part's windows, the fitting part and the selection part
    (:data:`SELECTION_FRACTION` of the records), windows in ``train``'s order."""
    fit_names, sel_names = stratified_split(
        train.names, train.labels, val_fraction=SELECTION_FRACTION, seed=SELECTION_SEED
    )
    fit_mask = np.isin(np.asarray(train.names)[train.record_index], fit_names)
    return fit_mask, train.subset(fit_names), train.subset(sel_names)


def select_variant(
    train_blocks: dict[str, dict[str, np.ndarray]], train: WindowSet
) -> dict[str, Any]:
    """Rank every (bundle, block, distance, aggregation) by its AUROC on the selection records
    of :func:`selection_split`, fitted on the fitting records' normal windows only.

    ``train_blocks``: bundle label → block → training-window embeddings (rows in ``train``'s
    order). Returns the ranking (best first) and the split's sizes; ties keep the order of
    ``train_blocks``, its blocks, :data:`DISTANCES` and :data:`AGGREGATIONS`."""
    fit_mask, fit, sel = selection_split(train)
    ranking = []
    for label, blocks in train_blocks.items():
        for block, emb in blocks.items():
            reports = variant_reports(emb[fit_mask], emb[~fit_mask], fit, sel)
            for metric, by_agg in reports.items():
                for agg, r in by_agg.items():
                    ranking.append(
                        {
                            "bundle": label,
                            "block": block,
                            "distance": metric,
                            "aggregate": agg,
                            "selection_auroc": r["value"],
                        }
                    )
    ranking.sort(key=lambda v: -v["selection_auroc"])  # stable: ties keep their order
    return {
        "fraction": SELECTION_FRACTION,
        "seed": SELECTION_SEED,
        "fit_records": len(fit.names),
        "selection_records": len(sel.names),
        "ranking": ranking,
    }


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
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Embed both splits with one bundle and score every block on validation; with
    ``denoise`` (default) a bundle's denoiser runs first, as in the pipeline. Returns the
    result and the training windows' blocks (for :func:`select_variant`)."""
    tic = time.perf_counter()
    bundle = load_bundle(bundle_dir)
    clf = WindowClassifier(bundle, precision="fp32", threads=1)
    name = bundle.manifest.name
    den = WindowDenoiser.from_bundle(bundle, 1) if denoise else None
    if den is not None:
        train, val = denoised(den, train, f"{name} denoise train"), denoised(den, val, "val")
    train_blocks = embedding_blocks(clf, train, f"{name} train")
    val_blocks = embedding_blocks(clf, val, f"{name} val")
    result = {
        "bundle": str(bundle_dir),
        "name": name,
        "denoised": den is not None,
        "t": clf.resolve_t(None),
        "blocks": score_blocks(train_blocks, val_blocks, train, val),
        "seconds": time.perf_counter() - tic,
    }
    return result, train_blocks


def chosen_variant(results: dict[str, dict[str, Any]], selection: dict[str, Any]) -> dict:
    """The selection's best variant with its validation report (fitted on all training
    normal windows)."""
    best = selection["ranking"][0]
    block = results[best["bundle"]]["blocks"][best["block"]]
    return {**best, "validation": block[best["distance"]][best["aggregate"]]}


def _ci(r: dict[str, Any]) -> str:
    lo, hi = r["ci95"]
    return f"{r['value']:.3f} [{lo:.3f}, {hi:.3f}]"


def markdown(results: dict[str, dict[str, Any]], selection: dict[str, Any], top: int = 10) -> str:
    chosen = chosen_variant(results, selection)
    n_records = chosen["validation"]["records"]
    ranked = []
    for v in selection["ranking"][:top]:
        val = results[v["bundle"]]["blocks"][v["block"]][v["distance"]][v["aggregate"]]
        ranked.append(
            [v["bundle"], v["block"], v["distance"], v["aggregate"], v["selection_auroc"], _ci(val)]
        )
    ranking = md_table(
        [
            "bundle",
            "block",
            "distance",
            "record aggregation",
            "selection AUROC",
            "validation AUROC",
        ],
        ranked,
    )
    rows = [
        [label, block, r["dim"], *(_ci(r[k]["mean"]) for k in DISTANCES)]
        for label, res in results.items()
        for block, r in res["blocks"].items()
    ]
    table = md_table(
        ["bundle", "embedding block", "dim", "Euclidean", "z-scored", "Mahalanobis", "kNN"], rows
    )
    cmd = ",".join(r["bundle"] for r in results.values())
    den = [label for label, r in results.items() if r.get("denoised")]
    den_text = (
        f"Windows of {', '.join(den)} went through the bundle's denoiser first, as in the "
        "pipeline (`--no-denoise` skips it)."
        if den
        else "No denoiser ran."
    )
    verdict = "meets" if chosen["validation"]["value"] >= 0.85 else "does not meet"
    labelled = chosen["block"] in ("fused", "all") or chosen["bundle"].startswith("dacl")
    winner_note = "; the winner is such a block" if labelled else ""
    return f"""# anomaly — DACL-style anomaly AUROC of every embedder (CinC 2017 validation split)

Command: `ecgedge bench anomaly --bundle {cmd}`. A record's score is an aggregation (mean,
median or max) over its 10 s windows of the distance of each window's embedding (SDK, ONNX
Runtime FP32, the bundle's default t) to the normal training windows; AUROC Normal vs
(AF + Other) over {n_records} validation records (noisy records excluded), 95% bootstrap
intervals. Distances: Euclidean to the mean embedding of the normal windows (DACL's score);
z-scored (each dimension divided by the normal windows' standard deviation); Mahalanobis
(the normal windows' covariance, z-scored per dimension and shrunk towards the identity,
Ledoit-Wolf: a one-class Gaussian model); kNN (mean z-scored distance to the 10 nearest
normal training windows). Blocks: each modality, "fused" (the fusion layer's output),
"modalities" (the modality embeddings side by side, no fusion layer) and "all" (both). No
labels other than "normal" are used to build a score, but the embedders differ in what
their training saw: the DiffECG extractors, the DiffAE-LRU encoder and DACL's VAE are
self-supervised; DACL's triplet encoder uses class labels to pick negatives; the DiffECG
fusion layer ("fused") was trained with a linear classifier on the rhythm labels.
{den_text}

## The benchmark's figure: chosen on held-out training records

The training records are split by record (stratified by label, seed {selection["seed"]}):
{selection["fit_records"]} fitting records, {selection["selection_records"]} selection records.
Every bundle × block × distance × aggregation ({len(selection["ranking"])} variants) is fitted
on the fitting records' normal windows and scored on the selection records; no validation
record takes part. Blocks that contain a part trained with the rhythm labels of every
training record ("fused" and "all": the fusion layer; every DACL bundle: its triplet
encoder) are optimistic on the selection records{winner_note}. The best one, refitted on all
training normal windows:

**{chosen["bundle"]}, block {chosen["block"]}, {chosen["distance"]} distance, record
{chosen["aggregate"]}: validation AUROC {_ci(chosen["validation"])}** (selection AUROC
{chosen["selection_auroc"]:.3f}). Target (issue 6) ≥ 0.85: {verdict}. DACL paper 0.7815.

The {top} best variants on the selection records:

{ranking}

## Reference: every block on validation (record mean; not a selection)

Each cell is a validation figure, so the best cell of this table is chosen on validation and
overstates what a new record would get; median and max aggregations are in `anomaly.json`.

{table}
"""


def run(
    bundles: dict[str, Path], out_dir: Path, report: str = "anomaly", *, denoise: bool = True
) -> dict[str, Any]:
    """Score each bundle (label → directory), choose the variant on held-out training records
    (:func:`select_variant`); write ``<report>.json`` and ``.md``."""
    train, val = cinc2017_split(DataConfig())
    held_out = sorted(set(val.names))
    for label, path in bundles.items():  # every head's own split must be this one
        manifest = load_bundle(path).manifest
        if sorted(head_split(manifest.provenance.get("training_data", {}))[1]) != held_out:
            raise ConfigError(
                f"bundle {label} ({path}) was trained with another CinC 2017 split than "
                f"this benchmark's (seed {DataConfig().split_seed}): its validation records "
                "are not held out from it",
                key="provenance.training_data",
            )
    results, train_blocks = {}, {}
    for label, path in bundles.items():
        results[label], train_blocks[label] = bundle_anomaly(path, train, val, denoise=denoise)
    selection = select_variant(train_blocks, train)
    md = markdown(results, selection)
    chosen = chosen_variant(results, selection)
    write_result(
        out_dir, report, {"results": results, "selection": selection, "chosen": chosen}, md
    )
    print(md)
    return {"results": results, "selection": selection, "chosen": chosen}
