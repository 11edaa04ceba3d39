"""Inference sessions: ONNX Runtime (CPU, CUDA, TensorRT providers) with explicit threads.

onnxruntime is imported lazily so that importing :mod:`sdk` stays cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sdk.bundle import BundleError, ModelFile
from sdk.errors import MissingDependencyError

PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise MissingDependencyError("onnxruntime", "core") from exc
    return onnxruntime


class OnnxModel:
    """One ONNX model with its input/output names and shapes read from the session.

    Parameters
    ----------
    path : model file.
    threads : intra-op threads (1 = one core, the device benchmark's setting).
    backend : ``"cpu"``, ``"cuda"`` or ``"tensorrt"``; unavailable providers raise.
    spec : the manifest entry; its declared inputs/outputs are checked against the model.

    Not thread-safe for concurrent :meth:`run` calls on one instance.
    """

    def __init__(
        self, path: Path, *, threads: int = 1, backend: str = "cpu", spec: ModelFile | None = None
    ) -> None:
        ort = _ort()
        if backend not in PROVIDERS:
            raise ValueError(f"backend {backend!r} unknown; expected one of {sorted(PROVIDERS)}")
        available = set(ort.get_available_providers())
        providers = [p for p in PROVIDERS[backend] if p in available]
        if PROVIDERS[backend][0] not in available:
            raise BundleError(
                f"provider {PROVIDERS[backend][0]} not available (have {sorted(available)})",
                path=str(path),
                reason="provider",
            )
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BundleError(
                f"onnxruntime cannot load the model: {exc}", path=str(path), reason="load"
            ) from exc
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        if spec is not None:
            self._check(spec, path)

    def _check(self, spec: ModelFile, path: Path) -> None:
        actual = {i.name: i.shape for i in self.session.get_inputs()}
        actual.update({o.name: o.shape for o in self.session.get_outputs()})
        for t in (*spec.inputs, *spec.outputs):
            if t.name not in actual:
                raise BundleError(
                    f"model has no tensor {t.name!r} (has {sorted(actual)})",
                    path=str(path),
                    reason="shape",
                )
            got = actual[t.name]
            fixed_mismatch = len(got) != len(t.shape) or any(
                isinstance(e, int) and isinstance(g, int) and e != g for e, g in zip(t.shape, got)
            )
            if fixed_mismatch:
                raise BundleError(
                    f"tensor {t.name!r} has shape {got}, manifest says {list(t.shape)}",
                    path=str(path),
                    reason="shape",
                )

    def run(
        self, feeds: dict[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> list[np.ndarray]:
        return self.session.run(list(outputs) if outputs else None, feeds)
