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


class JetsonRuleError(ExportError):
    """A graph meant for TensorRT breaks a rule; ``violations`` lists every finding."""

    def __init__(self, violations: list) -> None:
        lines = [str(v) for v in violations]
        super().__init__(
            f"{len(lines)} TensorRT rule violation(s):\n  " + "\n  ".join(lines)
            if lines
            else "no violations"
        )
        self.violations = list(violations)


class EngineBuildError(ExportError):
    """TensorRT could not parse a graph or build an engine from it."""

    def __init__(self, message: str, *, path: str, precision: str) -> None:
        super().__init__(f"{path} ({precision}): {message}")
        self.path = path
        self.precision = precision
