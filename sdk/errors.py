"""Exception hierarchy of the on-device runtime.

Every error carries structured fields so an app can react without parsing text.
Configuration errors also subclass :class:`ValueError`.
"""

from __future__ import annotations


class EcgEdgeError(Exception):
    """Base class of every error raised by :mod:`sdk`."""


class ConfigError(EcgEdgeError, ValueError):
    """A parameter is out of range or inconsistent with another one."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class SampleRateError(ConfigError):
    """A block's sample rate does not match what the stream was built for."""

    def __init__(self, message: str, *, expected_hz: float, got_hz: float) -> None:
        super().__init__(message, field="fs")
        self.expected_hz = expected_hz
        self.got_hz = got_hz


class BlockError(EcgEdgeError, ValueError):
    """A pushed block is malformed (shape, dtype, timestamps)."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class BufferOverflowError(EcgEdgeError):
    """The ring buffer is full and its overflow policy is ``"raise"``."""

    def __init__(self, message: str, *, capacity: int, pending: int) -> None:
        super().__init__(message)
        self.capacity = capacity
        self.pending = pending


class BundleError(EcgEdgeError):
    """A model bundle is missing, tampered with, or does not match its manifest."""

    def __init__(self, message: str, *, path: str, reason: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.reason = reason


class MissingDependencyError(EcgEdgeError, ImportError):
    """An optional dependency is not installed; the message names the extra."""

    def __init__(self, package: str, extra: str, *, hint: str | None = None) -> None:
        message = f"{package} is not installed: pip install 'ecgedge[{extra}]'"
        super().__init__(message + (f"; {hint}" if hint else ""))
        self.package = package
        self.extra = extra


def require_package(package: str, extra: str, *, hint: str | None = None) -> None:
    """Raise :class:`MissingDependencyError` now, naming ``extra``, if ``package`` cannot be
    imported (found without importing it): before work that would need it later."""
    import importlib.util

    if importlib.util.find_spec(package) is None:
        raise MissingDependencyError(package, extra, hint=hint)


class ProfileError(EcgEdgeError):
    """A user profile is missing, corrupt, tampered with, or belongs to another bundle.

    ``reason`` is one of ``missing``, ``malformed``, ``checksum``, ``bundle``, ``permissions``.
    """

    def __init__(self, message: str, *, path: str, reason: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.reason = reason


class AcceleratorError(EcgEdgeError, RuntimeError):
    """A GPU backend cannot run here.

    ``reason`` is one of ``no-gpu`` (no CUDA device visible), ``cuda`` (a CUDA call failed),
    ``engine`` (a TensorRT engine is missing, stale or does not match the model), ``provider``
    (the installed onnxruntime has no provider for the backend: a CPU-only build).
    """

    def __init__(self, message: str, *, backend: str, reason: str) -> None:
        super().__init__(f"{backend}: {message}")
        self.backend = backend
        self.reason = reason
