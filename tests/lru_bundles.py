"""A tiny exported DiffAE-LRU bundle (whole-window embedder, step model, head, noise) for tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from export.build import _tensor
from export.lru_bundle import bundle_manifest, streaming_entry
from export.lru_export import export_lru_embedder, export_lru_step, graph_nodes
from export.onnx_export import export_head
from trainer.config import DataConfig
from trainer.models.lru import LRUEncoder


def write_lru_bundle(
    root: Path,
    encoder: LRUEncoder,
    head: tuple[np.ndarray, np.ndarray],
    *,
    name: str,
) -> Path:
    """Export ``encoder`` (whole window + step model) with the linear ``head`` (weight (F, 4),
    bias (4,)) as a schema-v1 bundle under ``root``; return ``root``."""
    data = DataConfig()
    cfg = encoder.cfg
    k = data.window // cfg.block_samples
    export_lru_embedder(encoder, data.window, root / "embedder.fp32.onnx")
    export_lru_step(encoder, k, root / "embedder_step.fp32.onnx")
    export_head(head[0], head[1], root / "head.onnx")
    np.save(root / "noise.npy", np.zeros((1, 1, data.window), np.float32))
    x_shape = ["batch", 1, data.window]
    nodes = {
        "embedder": graph_nodes(root / "embedder.fp32.onnx"),
        "step": graph_nodes(root / "embedder_step.fp32.onnx"),
    }
    extra: dict[str, Any] = {
        "streaming": streaming_entry(root, cfg, k),
        "provenance": {},
        "metrics": {"graph_nodes": nodes},
    }
    bundle_manifest(
        root,
        name=name,
        data=data,
        emb_inputs=[
            _tensor("x", "float32", x_shape),
            _tensor("t", "int64", ["batch"]),
            _tensor("noise", "float32", x_shape),
        ],
        emb_dim=cfg.emb_dim,
        steps=50,
        note="test",
        extra=extra,
    )
    return root
