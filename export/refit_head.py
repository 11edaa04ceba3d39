"""Refit a bundle's head on the features its own device path computes, denoiser included.

A bundle's head is fitted by the trainer on windows without a denoiser. Once a denoiser is
put in front of the embedders (``ecgedge export --denoiser … --base-bundle …``), the head
sees embeddings unlike those it was fitted on. :func:`refit_head` streams nothing and trains
no network: it cuts each CinC 2017 training record (the split the bundle's head was trained
on, from its provenance) the way the device does (:func:`sdk.windowing.record_windows`,
with the bundle's denoiser), computes the head's input with the bundle's own ONNX graphs
(:class:`sdk.classifier.WindowClassifier`, FP32 embedders, the bundle's default t), and fits
the same class-balanced softmax head (:func:`sdk.head.fit_softmax_head`). The head then
assumes the pipeline denoises (``StreamPipeline(denoise=True)``, the default; the pipeline
warns otherwise). The INT8 raw embedder's layers kept in float were chosen for the old head,
so its layer search is run again for the new one, on device-path windows of the same
training records (:func:`export.multimodal.search_int8_layers`). Validation records are
never read.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from export.bundle_copy import bundle_copy
from export.multimodal import (
    CALIBRATION_WINDOWS,
    INT8_BUDGET,
    INT8_WORST_BUDGET,
    search_int8_layers,
)
from export.onnx_export import export_head
from export.quantize import quantizable_nodes
from sdk.bundle import Bundle, load_bundle, sha256_file
from sdk.classifier import WindowClassifier, WindowInputs
from sdk.denoiser import WindowDenoiser
from sdk.head import fit_softmax_head
from trainer.data.datasets import cinc_record_windows, head_split
from trainer.errors import ConfigError

#: L2 strength of the head fit; the trainer's (:func:`trainer.fusion._score_rows`).
HEAD_L2 = 1.0
#: Windows per classifier call (the graphs take any batch; this bounds memory).
BATCH = 64


def training_records(bundle: Bundle) -> list[str]:
    """The CinC 2017 records the bundle's head was trained on (its provenance's split;
    :func:`trainer.data.datasets.head_split`)."""
    return head_split(bundle.manifest.provenance.get("training_data", {}))[0]


def device_features(
    bundle: Bundle, names: list[str], *, denoise: bool = True, threads: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Head inputs of every window of ``names`` as the device computes them.

    Returns ``features`` (W, D) float32, ``labels`` (W,) class indices (each window takes its
    record's label) and ``record_index`` (W,) into ``names``.
    """
    m = bundle.manifest
    classifier = WindowClassifier(bundle, precision="fp32", threads=threads)
    denoiser = WindowDenoiser(bundle, threads=threads) if denoise and m.has("denoiser") else None
    steps = classifier.resolve_t(None)
    classes = list(m.classes)
    feats, labels, index = [], [], []
    pending: list[WindowInputs] = []

    def run_pending() -> None:
        if not pending:
            return
        batch = WindowInputs(
            np.concatenate([p.windows for p in pending]),
            np.concatenate([p.rr for p in pending]),
            np.concatenate([p.lorenz for p in pending]),  # type: ignore[misc]
        )
        feats.append(classifier.features(batch, steps))
        pending.clear()

    for i, r, rw in cinc_record_windows(bundle, names, denoiser, progress=True):
        pending.append(WindowInputs(rw.windows, rw.rr, rw.lorenz))
        if r.label not in classes:
            raise ConfigError(
                f"cinc2017/{names[i]}: label {r.label!r} is not a class of the bundle {classes}",
                key="labels",
            )
        labels.append(np.full(rw.starts.size, classes.index(r.label), dtype=np.int64))
        index.append(np.full(rw.starts.size, i, dtype=np.int64))
        if sum(len(p) for p in pending) >= BATCH:
            run_pending()
    run_pending()
    return np.concatenate(feats), np.concatenate(labels), np.concatenate(index)


def calibration_inputs(
    bundle: Bundle, names: list[str], n: int = CALIBRATION_WINDOWS, seed: int = 0
) -> WindowInputs:
    """``n`` device-path windows (denoised when the bundle has a denoiser) of randomly chosen
    records of ``names``, for the INT8 layer search."""
    denoiser = WindowDenoiser(bundle) if bundle.manifest.has("denoiser") else None
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    parts: list[WindowInputs] = []
    for _, _, rw in cinc_record_windows(bundle, order, denoiser):
        parts.append(WindowInputs(rw.windows, rw.rr, rw.lorenz))
        if sum(len(p) for p in parts) >= n:
            break
    return WindowInputs(
        np.concatenate([p.windows for p in parts])[:n],
        np.concatenate([p.rr for p in parts])[:n],
        np.concatenate([p.lorenz for p in parts])[:n],  # type: ignore[misc]
    )


def _requantize(root: Path, manifest: dict[str, Any], inputs: WindowInputs) -> dict[str, Any]:
    """Redo the raw embedder's INT8 layer search for the new head (the layers an INT8 file
    keeps in float were chosen for the head it shipped with), with the bundle's target and
    budget; drop INT8 if nothing fits."""
    t = int(manifest["diffusion"]["default_t"]["raw"])
    before = dict(manifest["provenance"].get("int8_calibration", {}))
    for stale in ("budget_p99_max_prob_change", "p99_max_prob_change"):  # an earlier search's
        before.pop(stale, None)
    budget = float(before.get("budget_mean_max_prob_change", INT8_BUDGET))
    worst_budget = float(before.get("budget_worst_max_prob_change", INT8_WORST_BUDGET))
    target = manifest["provenance"].get("target", "cpu")
    kept, err, worst = search_int8_layers(
        root, inputs, t, budget=budget, worst_budget=worst_budget, target=target
    )
    entry = next(f for f in manifest["files"] if f["path"] == "embedder.int8.onnx")
    candidates = quantizable_nodes(root / "embedder.fp32.onnx")
    nothing = set(candidates) <= set(kept)
    shipped = not nothing and err <= budget and worst <= worst_budget
    if shipped:
        entry["sha256"] = sha256_file(root / entry["path"])
        entry["bytes"] = (root / entry["path"]).stat().st_size
    else:
        manifest["files"].remove(entry)
        (root / entry["path"]).unlink()
    info = {
        **before,
        "windows": len(inputs),
        "calibration": "device-path windows (denoised as the pipeline does) of the head's "
        "training records",
        "layers_kept_float": kept,
        "int8_layers": len(set(candidates) - set(kept)),
        "candidate_layers": len(candidates),
        "budget_mean_max_prob_change": budget,
        "mean_max_prob_change": err,
        "budget_worst_max_prob_change": worst_budget,
        "worst_max_prob_change": worst,
        "shipped": shipped,
    }
    if shipped:
        info["validation_gate"] = (
            "not run by --refit-head (it reads no validation record); ecgedge bench rhythm "
            "reports both precisions"
        )
    else:
        info.pop("validation_gate", None)  # an earlier export's, of a file no longer shipped
    manifest["provenance"]["int8_calibration"] = info
    return info


def refit_head(
    base_bundle: Path,
    out_dir: Path,
    *,
    threads: int = 1,
    calibration_windows: int = CALIBRATION_WINDOWS,
) -> dict[str, Any]:
    """Copy ``base_bundle`` to ``out_dir`` with its head refitted on device-path features of
    the head's training records (and its INT8 raw embedder's layer search redone for the new
    head on ``calibration_windows`` of them); return what was done (also in the manifest)."""
    tic = time.perf_counter()
    base = load_bundle(base_bundle)
    m = base.manifest
    used = m.file("denoiser") if m.has("denoiser") else None  # the file the pipeline runs
    if used is not None and used.inputs[0].shape[1] != 1:  # (batch, leads, window)
        raise ConfigError(
            "the bundle's denoiser takes several leads; CinC 2017 records have one",
            key="denoiser",
        )
    names = training_records(base)
    x, y, _ = device_features(base, names, threads=threads)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{int((~np.isfinite(x)).any(1).sum())} windows gave non-finite features")
    head = fit_softmax_head(x, y, tuple(m.classes), l2=HEAD_L2)
    train_acc = float(np.mean(np.argmax(head.predict_proba(x), 1) == y))
    with bundle_copy(base_bundle, out_dir) as tmp:
        export_head(*head.folded(), tmp / "head.onnx")
        manifest = json.loads((tmp / "manifest.json").read_text())
        for entry in manifest["files"]:
            if entry["role"] == "head":
                entry["sha256"] = sha256_file(tmp / entry["path"])
                entry["bytes"] = (tmp / entry["path"]).stat().st_size
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        int8 = None
        if any(f["path"] == "embedder.int8.onnx" for f in manifest["files"]):
            inputs = calibration_inputs(base, names, calibration_windows)
            int8 = _requantize(tmp, manifest, inputs)
        info = {
            "what": "head refitted on the device path's features of its training records "
            + ("(bundle denoiser on)" if used else "(no denoiser)"),
            "records": len(names),
            "windows": int(y.size),
            "windows_per_class": {c: int((y == k).sum()) for k, c in enumerate(m.classes)},
            "features": int(x.shape[1]),
            "embedder_precision": "fp32",
            "t": dict(m.default_t),
            "l2": HEAD_L2,
            "train_window_accuracy": train_acc,
            "denoiser_sha256": used.sha256 if used else None,
            "features_sha256": hashlib.sha256(x.astype(np.float32).tobytes()).hexdigest(),
            "int8_layers_kept_float": None if int8 is None else len(int8["layers_kept_float"]),
            "seconds": time.perf_counter() - tic,
            "command": f"ecgedge export --refit-head --base-bundle {base_bundle} --out {out_dir}",
        }
        manifest["provenance"]["head_refit"] = info
        manifest["created_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        manifest["metrics"].pop("rhythm_val_sdk", None)  # of the old head: re-run bench rhythm
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return info
