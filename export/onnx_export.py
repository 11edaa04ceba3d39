"""ONNX export of the extractor and the head, and the torch-vs-ONNX parity check."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def export_extractor(extractor: torch.nn.Module, window: int, n_leads: int, path: Path) -> None:
    """Write the extractor: inputs ``x`` and ``noise`` (B, leads, L) float32, ``t`` (B,) int64."""
    x = torch.zeros(2, n_leads, window)
    t = torch.tensor([1, 2], dtype=torch.int64)
    export_module(extractor, (x, t, torch.zeros_like(x)), path, ["x", "t", "noise"], ["embedding"])


def export_module(
    module: torch.nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    inputs: list[str],
    outputs: list[str],
) -> None:
    """Export ``module(*args)`` with a free batch axis only: every other axis of every output
    is fixed to the traced size (the tracer leaves pooled axes symbolic; TensorRT needs them
    static)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            args,
            str(path),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes={name: {0: "batch"} for name in (*inputs, *outputs)},
            opset_version=OPSET,
            dynamo=False,
        )
        with torch.no_grad():
            traced = module(*args)
    shapes = [tuple(o.shape) for o in (traced if isinstance(traced, tuple) else (traced,))]
    model = onnx.load(str(path))
    for out, shape in zip(model.graph.output, shapes):
        for dim, size in zip(list(out.type.tensor_type.shape.dim)[1:], shape[1:]):
            dim.ClearField("dim_param")
            dim.dim_value = int(size)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def export_head(weight: np.ndarray, bias: np.ndarray, path: Path) -> None:
    """Affine head ``logits = features W + b`` and ``probabilities = softmax(logits)``."""
    d, k = weight.shape
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["features", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
        ],
        "head",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", d])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", k]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", k]),
        ],
        initializer=[
            numpy_helper.from_array(weight.astype(np.float32), "W"),
            numpy_helper.from_array(bias.astype(np.float32), "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


@dataclass(frozen=True)
class Parity:
    max_abs: float
    max_rel: float  # max |a − b| / max |a|, per output tensor

    def ok(self, tol_rel: float) -> bool:
        return self.max_rel <= tol_rel


def compare(reference: np.ndarray, other: np.ndarray) -> Parity:
    """Largest absolute and relative difference; ``inf`` for outputs of another shape or
    with NaN/inf in either (a gate ``not parity.ok(tol)`` then fails, as it must)."""
    a, b = np.asarray(reference, np.float64), np.asarray(other, np.float64)
    if a.shape != b.shape or not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return Parity(math.inf, math.inf)
    diff = np.abs(a - b)
    scale = max(float(np.abs(a).max()), 1e-12)
    return Parity(float(diff.max()), float(diff.max() / scale))
