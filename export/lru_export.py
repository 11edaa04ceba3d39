"""ONNX export of the DiffAE-LRU encoder (whole window and stateful step) and the DACL embedder.

Both LRU graphs are exported from the lean export-time modules of
:mod:`trainer.models.lru_lean` (every parameter-only quantity precomputed as a constant, the
complex state as one real tensor), which equal the training modules to float32 rounding.

Whole-window LRU embedder: inputs ``x``/``noise`` (B, 1, L) float32 and ``t`` (B,) int64, as
every bundle embedder; ``t`` and ``noise`` are ignored (kept in the graph through a term
multiplied by zero). Step model (state layout ``packed-v2``, :mod:`sdk.lru_step`):
``x_block`` (B, 1, hop), ``lru_state`` (B, layers, 2N) and ``reducer`` (B, K, 3, C) in;
``embedding`` (B, C), ``new_lru_state`` and ``new_reducer`` out.

DACL embedder: ``features`` (B, F) raw scattering features and ``t`` (B,) int64 in,
``embedding`` out (standardization, VAE μ and Enc(z_0, t) in the graph).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch

from export.onnx_export import Parity, compare, export_module
from sdk.lru_step import STEP_INPUTS, STEP_OUTPUTS
from trainer.models.lru import LRUEncoder
from trainer.models.lru_lean import LeanStepModel, LeanWindowEmbedder


def export_lru_embedder(encoder: LRUEncoder, window: int, path: Path) -> None:
    """Whole-window embedder with the SDK's (x, t, noise) interface."""
    x = torch.zeros(2, 1, window)
    t = torch.tensor([1, 2], dtype=torch.int64)
    lean = LeanWindowEmbedder(encoder, window)
    export_module(lean, (x, t, torch.zeros_like(x)), path, ["x", "t", "noise"], ["embedding"])


def export_lru_step(encoder: LRUEncoder, blocks_per_window: int, path: Path) -> None:
    """Stateful step model: one block of ``cfg.block_samples`` samples per call."""
    step = LeanStepModel(encoder, blocks_per_window)
    args = (torch.zeros(2, 1, encoder.cfg.block_samples), *step.initial(2))
    export_module(step, args, path, list(STEP_INPUTS), list(STEP_OUTPUTS))


def export_dacl_embedder(embedder: torch.nn.Module, n_features: int, path: Path) -> None:
    f = torch.zeros(2, n_features)
    t = torch.tensor([0, 1], dtype=torch.int64)
    export_module(embedder, (f, t), path, ["features", "t"], ["embedding"])


def session(path: Path, optimized_path: Path | None = None):  # noqa: ANN201 - ORT session
    """One-thread CPU session with ONNX Runtime's default (all) graph optimizations; with
    ``optimized_path`` the optimized graph is written there."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # no warning about writing a hardware-specific optimized graph
    if optimized_path is not None:
        opts.optimized_model_filepath = str(optimized_path)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def graph_nodes(path: Path) -> dict[str, int]:
    """Node counts of an ONNX file: as exported and after ONNX Runtime's graph optimizations
    (CPU provider, one thread)."""
    with tempfile.TemporaryDirectory() as tmp:
        optimized = Path(tmp) / "optimized.onnx"
        session(path, optimized)
        after = len(onnx.load(str(optimized)).graph.node)
    return {"onnx": len(onnx.load(str(path)).graph.node), "ort_optimized": after}


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
    state = [s.numpy() for s in LeanStepModel(encoder, blocks_per_window).initial(x.shape[0])]
    hop = encoder.cfg.block_samples
    embs = []
    for b in range(x.shape[-1] // hop):
        feeds = dict(zip(STEP_INPUTS, [x[..., b * hop : (b + 1) * hop], *state]))
        out = sess.run(list(STEP_OUTPUTS), feeds)
        embs.append(out[0])
        state = out[1:]
    return np.stack(embs)
