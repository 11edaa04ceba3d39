"""Errors of the training side; each names the file or field at fault."""

from __future__ import annotations


class TrainerError(Exception):
    """Base class of every error raised by :mod:`trainer`."""


class DataError(TrainerError):
    """A data file is missing, unreadable or inconsistent."""

    def __init__(self, message: str, *, path: str, reason: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.reason = reason


class ConfigError(TrainerError, ValueError):
    """A configuration key is unknown or a value is out of range."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class CheckpointError(TrainerError):
    """A checkpoint is missing, corrupt, or was written by an incompatible version."""

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


class BenchError(TrainerError):
    """A benchmark's child process failed; the message is the child's own last error line."""

    def __init__(self, message: str, *, command: str, returncode: int) -> None:
        super().__init__(f"{command} failed (exit {returncode}): {message}")
        self.command = command
        self.returncode = returncode


class DivergedError(TrainerError):
    """Training produced non-finite weights; nothing was saved over the last good checkpoint."""

    def __init__(self, message: str, *, step: int) -> None:
        super().__init__(message)
        self.step = step
