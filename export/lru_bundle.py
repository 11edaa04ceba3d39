"""Bundles of the DiffAE-LRU encoder: FP32 embedder, head, and the stateful step model.

The bundle is a normal schema-v1 bundle (``embedder`` with the (x, t, noise) interface, t
and noise ignored; ``head``; ``inference_noise``, zeros) that
:class:`sdk.classifier.WindowClassifier` loads, plus ``embedder_step.fp32.onnx`` described
under the manifest's ``streaming`` key (path, sha256, inputs/outputs, hop, blocks per window)
for devices that update the embedding per block.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from export.build import _code_version, _file_entry, _sdk_scores, _tensor, training_data
from export.errors import ParityError
from export.lru_export import (
    embedder_parity,
    export_lru_embedder,
    export_lru_step,
    graph_nodes,
    stream_onnx_step,
)
from export.onnx_export import compare, export_head
from export.publish import staged_bundle
from sdk.bundle import SCHEMA_VERSION, sha256_file
from sdk.lru_step import STATE_LAYOUT, STEP_INPUTS, STEP_OUTPUTS
from sdk.rr import RR_FEATURE_NAMES
from trainer.config import DataConfig
from trainer.data.datasets import cinc2017_split, spec_of
from trainer.diffusion import alphas_cumprod, linear_betas
from trainer.metrics import CLASSES, rhythm_metrics
from trainer.models.lru import LRUConfig, LRUStepModel
from trainer.probe import load_head
from trainer.train_diffae import CHECKPOINT, DiffAERunConfig, load, train_command

#: torch vs ONNX Runtime FP32 (whole window and step model), max |Δ| / max |reference|
FP32_PARITY_TOL = 1e-4


def bundle_manifest(
    root: Path,
    *,
    name: str,
    data: DataConfig,
    emb_inputs: list[dict[str, Any]],
    emb_dim: int,
    steps: int,
    note: str,
    extra: dict[str, Any],
) -> None:
    """Schema-v1 manifest of an FP32 bundle: ``embedder.fp32.onnx``, ``head.onnx``, noise."""
    n_feat, n_cls = emb_dim + len(RR_FEATURE_NAMES), len(CLASSES)
    head_io = (
        [_tensor("features", "float32", ["batch", n_feat])],
        [
            _tensor("logits", "float32", ["batch", n_cls]),
            _tensor("probabilities", "float32", ["batch", n_cls]),
        ],
    )
    emb_out = [_tensor("embedding", "float32", ["batch", emb_dim])]
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "preprocess": spec_of(data).to_dict(),
        "window_samples": data.window,
        "hop_samples": data.hop,
        "leads": ["ECG"],
        "normalization": "per-window z-score, clipped to ±8 (sdk.preprocess.standardize_window)",
        "classes": list(CLASSES),
        "thresholds": {"episode_on": 0.6, "episode_off": 0.4},
        "diffusion": {
            "schedule": "linear",
            "steps": steps,
            "alphas_cumprod": [float(a) for a in alphas_cumprod(linear_betas(steps))],
            "default_t": {"raw": 0},
            "note": note,
        },
        "head_features": {"embedding_dim": emb_dim, "rr_features": list(RR_FEATURE_NAMES)},
        "files": [
            _file_entry(root, "embedder.fp32.onnx", "embedder", "fp32", emb_inputs, emb_out),
            _file_entry(root, "head.onnx", "head", "fp32", *head_io),
            _file_entry(root, "noise.npy", "inference_noise", "fp32", [], []),
        ],
        **extra,
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1))


def _manifest(root: Path, cfg: DiffAERunConfig, streaming: dict[str, Any], extra: dict) -> None:
    x_shape = ["batch", 1, cfg.data.window]
    emb_inputs = [
        _tensor("x", "float32", x_shape),
        _tensor("t", "int64", ["batch"]),
        _tensor("noise", "float32", x_shape),
    ]
    bundle_manifest(
        root,
        name=f"diffae-lru-{cfg.preset}",
        data=cfg.data,
        emb_inputs=emb_inputs,
        emb_dim=cfg.lru.emb_dim,
        steps=cfg.train.diffusion_steps,
        note="the LRU semantic encoder sees the clean window; t and noise are ignored",
        extra={"streaming": streaming, **extra},
    )


def streaming_entry(root: Path, lru: LRUConfig, blocks_per_window: int) -> dict[str, Any]:
    """The manifest's ``streaming`` entry for ``root/embedder_step.fp32.onnx`` (layout
    ``packed-v2``, read by :func:`sdk.lru_step.streaming_spec`)."""
    k, n2, c = blocks_per_window, 2 * lru.d_state, lru.emb_dim
    return {
        "path": "embedder_step.fp32.onnx",
        "sha256": sha256_file(root / "embedder_step.fp32.onnx"),
        "state_layout": STATE_LAYOUT,
        "hop_samples": lru.block_samples,
        "blocks_per_window": k,
        "layers": lru.layers,
        "d_state": lru.d_state,
        "emb_dim": c,
        "inputs": list(STEP_INPUTS),
        "outputs": list(STEP_OUTPUTS),
        "state_shapes": {"lru_state": ["batch", lru.layers, n2], "reducer": ["batch", k, 3, c]},
        "empty_reducer_m": LRUStepModel.EMPTY_M,
        "semantics": (
            "embedding of the last blocks_per_window blocks; LRU states carry the whole stream "
            "(equals the whole-window embedder when the stream starts at the window start); "
            "lru_state per layer [re | im], zeros at the start; reducer per block (m, s, v), "
            "an empty slot m = empty_reducer_m, s = v = 0"
        ),
    }


def _card(root: Path, figures: dict[str, Any]) -> None:
    m = json.loads((root / "manifest.json").read_text())
    st, v, nodes = m["streaming"], figures["val_fp32"], figures["graph_nodes"]
    text = f"""# {m["name"]}

DiffAE-LRU semantic encoder (LRU stack + Attention Reducer, {m["head_features"]["embedding_dim"]}-d)
with a linear head on embedding ++ RR features. FP32 only (no INT8 graph).

- Train: `{m["provenance"]["commands"]["train"]}`
- Export: `{m["provenance"]["commands"]["export"]}`
- Validation (SDK, FP32, {m["provenance"]["training_data"]["val_records"]} records): challenge F1
  {v["challenge_f1"]:.3f}, macro F1 {v["macro_f1"]:.3f}, AUROC N vs (A+O)
  {v["auroc_normal_vs_af_other"]:.3f}.
- ONNX parity (max relative): whole window {figures["parity"]["fp32_max_rel"]:.1e}, step model
  streamed over a window vs whole window {figures["parity"]["step_vs_whole_max_rel"]:.1e}.
- Streaming: `{st["path"]}`, one block of {st["hop_samples"]} samples per call,
  {st["blocks_per_window"]} blocks per window, state layout `{st["state_layout"]}`.
  {st["semantics"]}.
- Graphs exported from the lean export-time modules (`trainer/models/lru_lean.py`: constants
  precomputed, packed real states): whole window {nodes["embedder"]["onnx"]} ONNX nodes
  ({nodes["embedder"]["ort_optimized"]} after ONNX Runtime's optimizations), step model
  {nodes["step"]["onnx"]} ({nodes["step"]["ort_optimized"]}).
- The embedder's `t` and `noise` inputs are ignored (the encoder sees the clean window).
"""
    (root / "MODEL_CARD.md").write_text(text)


def build_lru_bundle(run_dir: Path, out_dir: Path, seed: int = 0) -> dict[str, Any]:
    """Export ``run_dir`` (``diffae.pt`` + ``head.npz`` of the probe) as a bundle."""
    cfg, model, payload = load(run_dir / CHECKPOINT)
    encoder = model.encoder.eval()
    head, _, noise = load_head(run_dir / "head.npz")
    train, val = cinc2017_split(cfg.data)
    with staged_bundle(out_dir, run_dir) as tmp:
        k = cfg.data.window // cfg.lru.block_samples
        export_lru_embedder(encoder, cfg.data.window, tmp / "embedder.fp32.onnx")
        export_lru_step(encoder, k, tmp / "embedder_step.fp32.onnx")
        rng = np.random.default_rng(seed)
        probe = val.windows[rng.choice(len(val.windows), min(32, len(val.windows)), replace=False)]
        whole = embedder_parity(encoder, tmp / "embedder.fp32.onnx", probe).max_rel
        with torch.no_grad():
            ref = encoder(torch.from_numpy(probe)).numpy()
        step = compare(
            ref, stream_onnx_step(tmp / "embedder_step.fp32.onnx", encoder, k, probe)[-1]
        )
        if max(whole, step.max_rel) > FP32_PARITY_TOL:
            raise ParityError(
                f"ONNX parity {max(whole, step.max_rel):.2e} > {FP32_PARITY_TOL:.0e}",
                max_rel=max(whole, step.max_rel),
                tolerance=FP32_PARITY_TOL,
            )
        weight, bias = head.folded()
        export_head(weight, bias, tmp / "head.onnx")
        np.save(tmp / "noise.npy", np.zeros((1, 1, cfg.data.window), np.float32))
        figures: dict[str, Any] = {
            "parity": {"fp32_max_rel": whole, "step_vs_whole_max_rel": step.max_rel},
            "graph_nodes": {
                "embedder": graph_nodes(tmp / "embedder.fp32.onnx"),
                "step": graph_nodes(tmp / "embedder_step.fp32.onnx"),
            },
        }
        extra = {
            "provenance": {
                "training_data": training_data(cfg.data, train, val),
                "config": cfg.to_dict(),
                "pretrain_steps": payload["step"],
                "train_seconds": payload["extra"].get("train_seconds"),
                "code_version": _code_version(),
                "commands": {
                    "train": train_command(cfg),
                    "export": f"ecgedge export --run {run_dir} --out {out_dir}",
                },
                "target": "cpu",
            },
            "metrics": {"parity": figures["parity"]},
        }
        _manifest(tmp, cfg, streaming_entry(tmp, cfg.lru, k), extra)
        y, p = _sdk_scores(tmp, "fp32", val, 0)
        figures["val_fp32"] = rhythm_metrics(y, p)
        probe_path = run_dir / "probe.json"
        extra["metrics"] = {
            "rhythm_val_sdk": {"val_fp32": figures["val_fp32"]},
            "parity": figures["parity"],
            "graph_nodes": figures["graph_nodes"],
            "linear_probe": json.loads(probe_path.read_text()) if probe_path.is_file() else {},
        }
        _manifest(tmp, cfg, streaming_entry(tmp, cfg.lru, k), extra)
        _card(tmp, figures)
    return figures
