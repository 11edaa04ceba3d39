"""Training run → model bundle: ONNX export, parity, INT8 calibration, accuracy gate, manifest.

The gate evaluates the FP32 and INT8 embedders the way a device runs them (ONNX Runtime,
through :class:`sdk.classifier.WindowClassifier`) on the CinC 2017 validation records and
refuses the bundle when INT8 (or, for Jetson, FP16) loses more than ``int8_limit`` of the
challenge F1 or AUROC, or when no layer can be INT8 within the budget.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from export.errors import AccuracyGateError, ExportError, ParityError
from export.fp16 import convert_fp16
from export.jetson_rules import require_tensorrt_ready
from export.model_card import write_model_card
from export.onnx_export import compare, export_extractor, export_head
from export.publish import staged_bundle
from export.quantize import bar_progress, embed_onnx, mixed_precision_int8, quantizable_nodes
from sdk.bundle import SCHEMA_VERSION, load_bundle, sha256_file
from sdk.classifier import WindowClassifier, WindowInputs
from sdk.head import SoftmaxHead
from sdk.rr import RR_FEATURE_NAMES
from trainer.checkpoint import load_checkpoint
from trainer.config import RunConfig, train_command
from trainer.data.datasets import WindowSet, cinc2017_split, spec_of
from trainer.diffusion import alphas_cumprod, linear_betas
from trainer.metrics import CLASSES, aggregate_by_record, encode, rhythm_metrics
from trainer.probe import build_extractor, load_head

#: torch vs ONNX Runtime FP32, max |Δ| / max |reference| over real windows.
FP32_PARITY_TOL = 1e-4
#: FP16 graph vs torch FP32, max relative error of the embedding (a broken conversion: ~1)
FP16_PARITY_TOL = 1e-2
GATED_METRICS = ("challenge_f1", "auroc_normal_vs_af_other")


@dataclass
class BuildResult:
    bundle: Path
    figures: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        return f"bundle written to {self.bundle}\n{json.dumps(self.figures, indent=2)}"


def _tensor(name: str, dtype: str, shape: list[Any]) -> dict[str, Any]:
    return {"name": name, "dtype": dtype, "shape": shape}


def _file_entry(
    root: Path, name: str, role: str, precision: str, inputs: list, outputs: list
) -> dict[str, Any]:
    return {
        "path": name,
        "role": role,
        "precision": precision,
        "sha256": sha256_file(root / name),
        "bytes": (root / name).stat().st_size,
        "inputs": inputs,
        "outputs": outputs,
    }


def training_data(data: Any, train: WindowSet, val: WindowSet) -> dict[str, Any]:
    """The manifest's account of what a CinC-probed model was trained and validated on (or,
    for a ``data.source = "synthetic"`` run, that it saw no real ECG at all)."""
    if getattr(data, "source", "shared") == "synthetic":
        return {
            "source": "synthetic",
            "pretrain": ["synthetic (sdk.synthetic: Gaussian-wave sinus and AF, no real ECG)"],
            "head": "synthetic windows (N = sinus, A = AF)",
            "split_seed": data.split_seed,
            "val_fraction": data.val_fraction,
            "train_records": len(train.names),
            "val_records": len(val.names),
        }
    return {
        "source": "shared",
        "pretrain": list(data.pretrain_databases),
        "head": "cinc2017 train split",
        "max_records": int(getattr(data, "max_records", 0)),  # 0: every record
        "split_seed": data.split_seed,
        "val_fraction": data.val_fraction,
        "train_records": len(train.names),
        "val_records": len(val.names),
    }


def _code_version() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_manifest(
    root: Path,
    cfg: RunConfig,
    *,
    t: int,
    emb_dim: int,
    precisions: list[str],
    provenance: dict[str, Any],
    metrics: dict[str, Any],
) -> None:
    window, n_leads = cfg.data.window, cfg.model.in_channels
    x_shape = ["batch", n_leads, window]
    emb_io = (
        [
            _tensor("x", "float32", x_shape),
            _tensor("t", "int64", ["batch"]),
            _tensor("noise", "float32", x_shape),
        ],
        [_tensor("embedding", "float32", ["batch", emb_dim])],
    )
    n_feat, n_cls = emb_dim + len(RR_FEATURE_NAMES), len(CLASSES)
    files = [_file_entry(root, f"embedder.{p}.onnx", "embedder", p, *emb_io) for p in precisions]
    files.append(
        _file_entry(
            root,
            "head.onnx",
            "head",
            "fp32",
            [_tensor("features", "float32", ["batch", n_feat])],
            [
                _tensor("logits", "float32", ["batch", n_cls]),
                _tensor("probabilities", "float32", ["batch", n_cls]),
            ],
        )
    )
    files.append(_file_entry(root, "noise.npy", "inference_noise", "fp32", [], []))
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "name": f"diffecg-{cfg.preset}",
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "preprocess": spec_of(cfg.data).to_dict(),
        "window_samples": window,
        "hop_samples": cfg.data.hop,
        "leads": ["ECG"],
        "normalization": "per-window z-score, clipped to ±8 (sdk.preprocess.standardize_window)",
        "classes": list(CLASSES),
        "thresholds": {"episode_on": 0.6, "episode_off": 0.4},
        "diffusion": {
            "schedule": "linear",
            "steps": cfg.train.diffusion_steps,
            "alphas_cumprod": [
                float(a) for a in alphas_cumprod(linear_betas(cfg.train.diffusion_steps))
            ],
            "default_t": {"raw": int(t)},
        },
        "head_features": {"embedding_dim": emb_dim, "rr_features": list(RR_FEATURE_NAMES)},
        "files": files,
        "provenance": provenance,
        "metrics": metrics,
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1))


def _sdk_scores(root: Path, precision: str, ws: WindowSet, t: int) -> tuple[np.ndarray, np.ndarray]:
    """Record-level (labels, probabilities) through the SDK's classifier."""
    clf = WindowClassifier(load_bundle(root), precision=precision, threads=2)
    proba = np.concatenate(
        [
            clf.classify(WindowInputs(ws.windows[i : i + 256], ws.rr[i : i + 256]), t)
            for i in range(0, len(ws.windows), 256)
        ]
    )
    return encode(ws.labels), aggregate_by_record(proba, ws.record_index, len(ws.names))


def _parity(
    extractor: torch.nn.Module, path: Path, windows: np.ndarray, t: int, noise: np.ndarray
) -> float:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {
        "x": windows,
        "t": np.full(len(windows), t, dtype=np.int64),
        "noise": np.broadcast_to(noise, windows.shape).astype(np.float32),
    }
    with torch.no_grad():
        ref = extractor(*(torch.from_numpy(v) for v in feeds.values())).numpy()
    return compare(ref, sess.run(["embedding"], feeds)[0]).max_rel


def _quantize(
    root: Path,
    head: SoftmaxHead,
    windows: np.ndarray,
    rr: np.ndarray,
    t: int,
    noise: np.ndarray,
    budget: float,
    target: str = "cpu",
) -> tuple[list[str], float]:
    """INT8 where the head's probabilities barely move (mean max |Δp| on calibration windows)."""
    fp32 = root / "embedder.fp32.onnx"
    reference = head.predict_proba(np.concatenate([embed_onnx(fp32, windows, t, noise), rr], 1))

    def error_of(path: Path) -> float:
        p = head.predict_proba(np.concatenate([embed_onnx(path, windows, t, noise), rr], 1))
        return float(np.abs(p - reference).max(axis=1).mean())

    with tqdm(desc="INT8 layer sensitivity", unit="trial", leave=False) as bar:
        return mixed_precision_int8(
            fp32,
            root / "embedder.int8.onnx",
            windows,
            t,
            noise,
            error_of,
            budget=budget,
            progress=bar_progress(bar),
            target=target,
        )


def build_bundle(
    run_dir: Path,
    out_dir: Path,
    *,
    int8_limit: float = 0.01,
    calibration_windows: int = 256,
    int8_budget: float = 0.02,
    seed: int = 0,
    target: str = "cpu",
) -> BuildResult:
    """Export ``run_dir`` (``diffecg.pt`` + ``head.npz``) as a verified bundle in ``out_dir``.

    ``target="jetson"`` quantizes in TensorRT's form (symmetric INT8, float biases), adds an
    FP16 graph, and refuses the bundle (:class:`export.errors.JetsonRuleError`) when any graph
    breaks a rule of :mod:`export.jetson_rules`.
    """
    precisions = ["fp32", "fp16", "int8"] if target == "jetson" else ["fp32", "int8"]
    cfg, state, payload = load_checkpoint(run_dir / "diffecg.pt")
    if cfg.data.modality != "raw":
        raise ExportError(
            f"--run {run_dir} is a {cfg.data.modality} run: a bundle's embedder is a raw run's "
            "extractor; the spectrogram and Lorenz extractors join it through ecgedge "
            "train-fusion and export-multimodal"
        )
    head, t, noise = load_head(run_dir / "head.npz")
    extractor = build_extractor(cfg, state)
    train, val = cinc2017_split(cfg.data)
    with staged_bundle(out_dir, run_dir) as tmp:
        export_extractor(
            extractor, cfg.data.window, cfg.model.in_channels, tmp / "embedder.fp32.onnx"
        )
        rng = np.random.default_rng(seed)
        probe_windows = val.windows[
            rng.choice(len(val.windows), min(64, len(val.windows)), replace=False)
        ]
        fp32_rel = _parity(extractor, tmp / "embedder.fp32.onnx", probe_windows, t, noise)
        if not fp32_rel <= FP32_PARITY_TOL:  # NaN fails too
            raise ParityError(
                f"torch vs ONNX FP32 relative error {fp32_rel:.2e} > {FP32_PARITY_TOL:.0e}",
                max_rel=fp32_rel,
                tolerance=FP32_PARITY_TOL,
            )
        pick = rng.choice(
            len(train.windows), min(calibration_windows, len(train.windows)), replace=False
        )
        calib, calib_rr = train.windows[pick], train.rr[pick]
        float_nodes, int8_error = _quantize(
            tmp, head, calib, calib_rr, t, noise, int8_budget, target=target
        )
        if set(quantizable_nodes(tmp / "embedder.fp32.onnx")) <= set(float_nodes):
            raise AccuracyGateError(
                f"no layer of the embedder stays within the INT8 budget ({int8_budget} mean max "
                f"|dp|; the least sensitive layer alone: {int8_error:.4f}): the 'int8' graph "
                "would be FP32",
                metric="mean_max_prob_change",
                fp32=0.0,
                quantized=int8_error,
                limit=int8_budget,
            )
        int8_rel = _parity(extractor, tmp / "embedder.int8.onnx", probe_windows, t, noise)
        fp16_rel = None
        if "fp16" in precisions:
            convert_fp16(tmp / "embedder.fp32.onnx", tmp / "embedder.fp16.onnx")
            fp16_rel = _parity(extractor, tmp / "embedder.fp16.onnx", probe_windows, t, noise)
            if not fp16_rel <= FP16_PARITY_TOL:
                raise ParityError(
                    f"torch vs ONNX FP16 relative error {fp16_rel:.2e} > {FP16_PARITY_TOL:.0e}",
                    max_rel=fp16_rel,
                    tolerance=FP16_PARITY_TOL,
                )
        weight, bias = head.folded()
        export_head(weight, bias, tmp / "head.onnx")
        if target == "jetson":  # before the slow gates: a graph TensorRT cannot run is final
            require_tensorrt_ready(sorted(tmp.glob("*.onnx")))
        np.save(tmp / "noise.npy", noise.astype(np.float32))
        emb_dim = weight.shape[0] - len(RR_FEATURE_NAMES)
        provenance = {
            "training_data": training_data(cfg.data, train, val),
            "config": cfg.to_dict(),
            "pretrain_steps": payload["step"],
            "checkpoint_sha256": sha256_file(run_dir / "diffecg.pt"),
            "code_version": _code_version(),
            "int8_calibration": {
                "windows": int(len(calib)),
                "source": "cinc2017 train split",
                "seed": seed,
                "method": "static QDQ, per-channel int8 weights, "
                + (
                    "symmetric int8 activations, float biases (TensorRT)"
                    if target == "jetson"
                    else "uint8 activations"
                )
                + ", percentile 99.99",
                "layers_kept_float": float_nodes,
                "budget_mean_max_prob_change": int8_budget,
                "mean_max_prob_change": int8_error,
            },
            "train_seconds": payload.get("extra", {}).get("train_seconds"),
            "commands": {
                "train": train_command(cfg),
                "export": f"ecgedge export --run {run_dir} --out {out_dir}"
                + (f" --target {target}" if target != "cpu" else ""),
            },
            "target": target,
        }
        manifest = partial(
            write_manifest,
            tmp,
            cfg,
            t=t,
            emb_dim=emb_dim,
            precisions=precisions,
            provenance=provenance,
        )
        manifest(metrics={})  # the SDK reads it to score the bundle; the figures come last
        figures: dict[str, Any] = {
            "parity": {
                "fp32_max_rel": fp32_rel,
                "int8_max_rel": int8_rel,
                "fp32_tolerance": FP32_PARITY_TOL,
            }
        }
        if fp16_rel is not None:
            figures["parity"]["fp16_max_rel"] = fp16_rel
        for precision in precisions:
            y, p = _sdk_scores(tmp, precision, val, t)
            figures[f"val_{precision}"] = rhythm_metrics(y, p)
        figures["int8_limit"] = int8_limit
        for precision in precisions[1:]:  # every reduced precision that ships is gated
            drops = {
                m: figures["val_fp32"][m] - figures[f"val_{precision}"][m] for m in GATED_METRICS
            }
            figures[f"{precision}_drop"] = drops
            worst = max(drops, key=lambda m: drops[m])
            if not drops[worst] <= int8_limit:
                raise AccuracyGateError(
                    f"{precision.upper()} loses {drops[worst]:.4f} of {worst} (FP32 "
                    f"{figures['val_fp32'][worst]:.4f}, {precision.upper()} "
                    f"{figures[f'val_{precision}'][worst]:.4f}) > limit {int8_limit}",
                    metric=worst,
                    fp32=figures["val_fp32"][worst],
                    quantized=figures[f"val_{precision}"][worst],
                    limit=int8_limit,
                )
        probe_report = (
            json.loads((run_dir / "probe.json").read_text())
            if (run_dir / "probe.json").is_file()
            else {}
        )
        metrics = {
            "rhythm_val_sdk": {
                k: figures[k]
                for k in ("val_fp32", "val_fp16", "val_int8", "int8_drop", "fp16_drop")
                if k in figures
            },
            "parity": figures["parity"],
            "linear_probe": probe_report,
        }
        manifest(metrics=metrics)
        write_model_card(tmp)
    return BuildResult(out_dir, figures)
