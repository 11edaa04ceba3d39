"""Errors of the export side."""

from __future__ import annotations


class ExportError(Exception):
    """Base class of every error raised by :mod:`export`."""


class ParityError(ExportError):
    """ONNX output differs from PyTorch beyond the stated tolerance."""

    def __init__(self, message: str, *, max_rel: float, tolerance: float) -> None:
        super().__init__(message)
        self.max_rel = max_rel
        self.tolerance = tolerance


class AccuracyGateError(ExportError):
    """Quantization costs more of the headline metric than the configured limit."""

    def __init__(
        self, message: str, *, metric: str, fp32: float, quantized: float, limit: float
    ) -> None:
        super().__init__(message)
        self.metric = metric
        self.fp32 = fp32
        self.quantized = quantized
        self.limit = limit
