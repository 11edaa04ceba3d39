"""ONNX export of the DiffAE-LRU encoder (whole window and stateful step) and the DACL embedder.

Whole-window LRU embedder: inputs ``x``/``noise`` (B, 1, L) float32 and ``t`` (B,) int64, as
every bundle embedder; ``t`` and ``noise`` are ignored (kept in the graph through a term
multiplied by zero). Step model: ``x_block`` (B, 1, hop) plus per layer ``state_re_i``,
``state_im_i`` (B, N) and the reducer's block summaries ``red_m``, ``red_s``, ``red_v``
(B, K, C) in; ``embedding`` (B, C) and the same state tensors (``new_*``) out.

DACL embedder: ``features`` (B, F) raw scattering features and ``t`` (B,) int64 in,
``embedding`` out (standardization, VAE μ and Enc(z_0, t) in the graph).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from export.onnx_export import Parity, compare, export_module
from trainer.models.diffae import LRUEmbedder
from trainer.models.lru import LRUEncoder, LRUStepModel


def export_lru_embedder(encoder: LRUEncoder, window: int, path: Path) -> None:
    """Whole-window embedder with the SDK's (x, t, noise) interface."""
    x = torch.zeros(2, 1, window)
    t = torch.tensor([1, 2], dtype=torch.int64)
    export_module(
        LRUEmbedder(encoder), (x, t, torch.zeros_like(x)), path, ["x", "t", "noise"], ["embedding"]
    )


def step_io_names(layers: int) -> tuple[list[str], list[str]]:
    states = [f"state_{p}_{i}" for i in range(layers) for p in ("re", "im")]
    reducer = ["red_m", "red_s", "red_v"]
    inputs = ["x_block", *states, *reducer]
    outputs = ["embedding", *(f"new_{s}" for s in states), *(f"new_{r}" for r in reducer)]
    return inputs, outputs


def export_lru_step(encoder: LRUEncoder, blocks_per_window: int, path: Path) -> None:
    """Stateful step model: one block of ``cfg.block_samples`` samples per call."""
    step = LRUStepModel(encoder, blocks_per_window)
    args = (torch.zeros(2, 1, encoder.cfg.block_samples), *step.initial(2))
    export_module(step, args, path, *step_io_names(encoder.cfg.layers))


def export_dacl_embedder(embedder: torch.nn.Module, n_features: int, path: Path) -> None:
    f = torch.zeros(2, n_features)
    t = torch.tensor([0, 1], dtype=torch.int64)
    export_module(embedder, (f, t), path, ["features", "t"], ["embedding"])


def session(path: Path):  # noqa: ANN201 - onnxruntime session
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def embedder_parity(encoder: LRUEncoder, path: Path, windows: np.ndarray) -> Parity:
    """torch vs ONNX Runtime on windows (B, 1, L)."""
    feeds = {
        "x": windows.astype(np.float32),
        "t": np.zeros(len(windows), np.int64),
        "noise": np.zeros_like(windows, dtype=np.float32),
    }
    with torch.no_grad():
        ref = encoder(torch.from_numpy(feeds["x"])).numpy()
    return compare(ref, session(path).run(["embedding"], feeds)[0])


def stream_onnx_step(
    path: Path, encoder: LRUEncoder, blocks_per_window: int, x: np.ndarray
) -> np.ndarray:
    """Run the ONNX step model over a stream (B, 1, n · hop) from the initial state;
    return the embedding after every block, (n, B, C)."""
    sess = session(path)
    inputs, outputs = step_io_names(encoder.cfg.layers)
    state = [s.numpy() for s in LRUStepModel(encoder, blocks_per_window).initial(x.shape[0])]
    hop = encoder.cfg.block_samples
    embs = []
    for b in range(x.shape[-1] // hop):
        out = sess.run(outputs, dict(zip(inputs, [x[..., b * hop : (b + 1) * hop], *state])))
        embs.append(out[0])
        state = out[1:]
    return np.stack(embs)
