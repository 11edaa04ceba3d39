"""Static INT8 quantization (QDQ, per-channel weights) calibrated on real ECG windows, and FP16."""

from __future__ import annotations

import contextlib
import io
import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process


class WindowReader(CalibrationDataReader):
    """Feeds the extractor's three inputs, one batch of real windows at a time."""

    def __init__(self, windows: np.ndarray, t: int, noise: np.ndarray, batch: int = 32) -> None:
        # equal batches only: onnxruntime's calibrator stacks per-batch tensors, so a short
        # last batch would make them ragged (the remainder of < batch windows is left out)
        batch = min(batch, len(windows))
        windows = windows[: len(windows) // batch * batch]
        self._batches = [
            {
                "x": windows[i : i + batch],
                "t": np.full(len(windows[i : i + batch]), t, dtype=np.int64),
                "noise": np.broadcast_to(noise, windows[i : i + batch].shape).astype(np.float32),
            }
            for i in range(0, len(windows), batch)
        ]
        self._iter = iter(self._batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = iter(self._batches)


#: Only convolutions and dense layers are quantized; normalization and attention arithmetic
#: (Mul/Add of GroupNorm, attention MatMul/Softmax) stay in float, where INT8 hurts most.
QUANTIZED_OPS = ["Conv", "Gemm"]
TARGETS = ("cpu", "jetson")


def _settings(target: str) -> tuple[QuantType, dict]:
    """Activation type and extra options per target.

    ``cpu``: uint8 asymmetric activations, INT32 biases (ONNX Runtime's QDQ fusions).
    ``jetson``: what TensorRT's explicit quantization fuses - signed INT8, symmetric
    (zero point 0) activations and weights, float biases, Q->DQ pairs on float weights
    (also parsed by TensorRT 8.x) and kept activations (Relu/Clip are not folded away).
    """
    extra: dict = {"CalibPercentile": 99.99}
    if target == "cpu":
        return QuantType.QUInt8, extra
    if target != "jetson":
        raise ValueError(f"target {target!r} unknown; expected one of {TARGETS}")
    extra |= {
        "ActivationSymmetric": True,
        "WeightSymmetric": True,
        "QuantizeBias": False,
        "AddQDQPairToWeight": True,
        "QDQKeepRemovableActivations": True,
    }
    return QuantType.QInt8, extra


def static_qdq(
    fp32_path: Path,
    out_path: Path,
    reader: CalibrationDataReader,
    *,
    activation_type: QuantType = QuantType.QUInt8,
    method: CalibrationMethod = CalibrationMethod.Percentile,
    exclude: list[str] | None = None,
    extra: dict | None = None,
) -> Path:
    """ONNX Runtime's pre-processing, then static QDQ quantization of :data:`QUANTIZED_OPS`.

    Weights are int8 per channel; activations ``activation_type``, calibrated on what
    ``reader`` yields. ONNX Runtime's calibrator prints four lines per call on stdout (a
    layer search makes dozens of calls); they are dropped, errors still raise.
    """
    with tempfile.TemporaryDirectory() as tmp:
        prepped = Path(tmp) / "prepped.onnx"
        quant_pre_process(str(fp32_path), str(prepped), skip_symbolic_shape=True)
        with contextlib.redirect_stdout(io.StringIO()):
            quantize_static(
                str(prepped),
                str(out_path),
                reader,
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=activation_type,
                weight_type=QuantType.QInt8,
                calibrate_method=method,
                op_types_to_quantize=QUANTIZED_OPS,
                nodes_to_exclude=exclude or [],
                extra_options={"CalibPercentile": 99.99} if extra is None else extra,
            )
    return out_path


def quantize_int8(
    fp32_path: Path,
    out_path: Path,
    windows: np.ndarray,
    t: int,
    noise: np.ndarray,
    *,
    exclude: list[str] | None = None,
    method: CalibrationMethod = CalibrationMethod.Percentile,
    target: str = "cpu",
) -> Path:
    """QDQ INT8 calibrated on ``windows``: int8 per-channel weights; activations per ``target``.

    ``exclude`` names nodes to keep in float (the gate's fallback when INT8 costs too much).
    ``target="jetson"`` writes the TensorRT form (see :func:`_settings`).
    """
    return qdq_for_target(
        fp32_path,
        out_path,
        WindowReader(windows, t, noise),
        target=target,
        method=method,
        exclude=exclude,
    )


def qdq_for_target(
    fp32_path: Path,
    out_path: Path,
    reader: CalibrationDataReader,
    *,
    target: str = "cpu",
    method: CalibrationMethod = CalibrationMethod.Percentile,
    exclude: list[str] | None = None,
) -> Path:
    """:func:`static_qdq` in ``target``'s form (:func:`_settings`); the Jetson form without
    the opset imports the quantization tools add and no node uses."""
    activation_type, extra = _settings(target)
    static_qdq(
        fp32_path,
        out_path,
        reader,
        activation_type=activation_type,
        method=method,
        exclude=exclude,
        extra=extra,
    )
    if target == "jetson":
        import onnx

        from export.jetson_rules import strip_unused_opsets

        onnx.save(strip_unused_opsets(onnx.load(str(out_path))), str(out_path))
    return out_path


def embed_onnx(path: Path, windows: np.ndarray, t: int, noise: np.ndarray) -> np.ndarray:
    """Run an extractor file on ``windows`` with ONNX Runtime (one batch)."""
    import onnxruntime as ort

    feeds = WindowReader(windows, t, noise, batch=len(windows)).get_next()
    assert feeds is not None
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


#: graph inputs that carry no signal: the diffusion step (calibration sees one value of it)
CONDITIONING_INPUTS = ("t",)


def quantizable_nodes(model_path: Path) -> list[str]:
    """The nodes INT8 may take: :data:`QUANTIZED_OPS` on the signal's path. Layers fed only
    by :data:`CONDITIONING_INPUTS` (the time embedding's MLP) stay in float: calibration
    windows carry one t, so their ranges would fit that t alone (the shipped INT8 graph's only
    INT8 layer clipped the negative half of the time embedding at every other t)."""
    import onnx

    graph = onnx.load(str(model_path)).graph
    signal = {i.name for i in graph.input if i.name not in CONDITIONING_INPUTS}
    names = []
    for node in graph.node:  # topological order
        if any(i in signal for i in node.input):
            signal.update(node.output)
            if node.op_type in QUANTIZED_OPS:
                names.append(node.name)
    return names


def float_only_nodes(model_path: Path) -> list[str]:
    """:data:`QUANTIZED_OPS` nodes that are no INT8 candidate (:func:`quantizable_nodes`)."""
    import onnx

    candidates = set(quantizable_nodes(model_path))
    return [
        n.name
        for n in onnx.load(str(model_path)).graph.node
        if n.op_type in QUANTIZED_OPS and n.name not in candidates
    ]


def mixed_precision_int8(
    fp32_path: Path,
    out_path: Path,
    windows: np.ndarray,
    t: int,
    noise: np.ndarray,
    error_of: Callable[[Path], float],
    *,
    budget: float,
    progress: Callable[[int, int], None] | None = None,
    target: str = "cpu",
) -> tuple[list[str], float]:
    """INT8 for the layers that tolerate it.

    ``error_of(model_path)`` scores a quantized model (e.g. the mean change of the head's class
    probabilities on calibration windows). If full INT8 exceeds ``budget``, each layer's
    sensitivity is measured alone, and the largest set of least sensitive layers whose joint
    error stays within ``budget`` is quantized. Returns the nodes kept in float and the error;
    when no layer fits, every node and the least sensitive layer's error (above ``budget``).
    ``progress(done, most)`` is called after every trial (quantize + score); ``most`` bounds
    the trials: full INT8, one per layer, the binary search and the final file.
    """
    nodes = quantizable_nodes(fp32_path)
    always_float = float_only_nodes(fp32_path)
    most = 2 + len(nodes) + math.ceil(math.log2(len(nodes) + 1))
    done = 0

    def error_with(quantized: list[str]) -> float:
        nonlocal done
        quantize_int8(
            fp32_path,
            out_path,
            windows,
            t,
            noise,
            exclude=[n for n in nodes if n not in quantized] + always_float,
            target=target,
        )
        err = error_of(out_path)
        done += 1
        if progress is not None:
            progress(done, most)
        return err

    if (err := error_with(nodes)) <= budget:
        return [], err
    sensitivity = {}
    for node in nodes:
        sensitivity[node] = error_with([node])
    order = sorted(nodes, key=sensitivity.__getitem__)
    lo, hi = 0, len(order)  # the largest k with error(order[:k]) <= budget
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if error_with(order[:mid]) <= budget:
            lo = mid
        else:
            hi = mid - 1
    if lo == 0:  # no layer fits: the file is FP32; the error says by how much INT8 misses
        error_with([])
        return order, sensitivity[order[0]]
    return order[lo:], error_with(order[:lo])


def bar_progress(bar: Any) -> Callable[[int, int], None]:
    """:func:`mixed_precision_int8`'s ``progress`` on a tqdm bar: its total is the most trials
    the search can take, so the bar shows an ETA."""

    def advance(done: int, most: int) -> None:
        bar.total = most
        bar.update(done - bar.n)

    return advance
