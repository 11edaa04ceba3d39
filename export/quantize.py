"""Static INT8 quantization (QDQ, per-channel weights) calibrated on real ECG windows, and FP16."""

from __future__ import annotations

import tempfile
from pathlib import Path

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


def quantize_int8(
    fp32_path: Path,
    out_path: Path,
    windows: np.ndarray,
    t: int,
    noise: np.ndarray,
    *,
    exclude: list[str] | None = None,
    method: CalibrationMethod = CalibrationMethod.Percentile,
) -> Path:
    """QDQ INT8 calibrated on ``windows``: uint8 activations, int8 per-channel weights.

    ``exclude`` names nodes to keep in float (the gate's fallback when INT8 costs too much).
    """
    with tempfile.TemporaryDirectory() as tmp:
        prepped = Path(tmp) / "prepped.onnx"
        quant_pre_process(str(fp32_path), str(prepped), skip_symbolic_shape=True)
        quantize_static(
            str(prepped),
            str(out_path),
            WindowReader(windows, t, noise),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=method,
            op_types_to_quantize=QUANTIZED_OPS,
            nodes_to_exclude=exclude or [],
            extra_options={"CalibPercentile": 99.99},
        )
    return out_path
