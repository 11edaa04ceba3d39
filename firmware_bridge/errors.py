"""Exception hierarchy of :mod:`firmware_bridge`.

Every error carries structured fields so an app can react without parsing text.
Malformed bytes raise :class:`DecodeError`, which also subclasses :class:`ValueError`;
a sensor that answers a request with an error status raises :class:`ProtocolError`.
"""

from __future__ import annotations

__all__ = [
    "BridgeError",
    "ClockError",
    "ConnectError",
    "DecodeError",
    "ProtocolError",
    "TransportError",
]


class BridgeError(Exception):
    """Base class of every error raised by :mod:`firmware_bridge`."""


class DecodeError(BridgeError, ValueError):
    """Bytes received from a sensor are malformed.

    Parameters
    ----------
    message
        Human-readable description.
    reason
        Short machine-readable cause, e.g. ``"short"``, ``"crc"``, ``"length"``,
        ``"frame_type"``. Each decoder documents the reasons it uses.
    offset
        Byte offset in the input where the problem was found, or ``None`` when the
        problem is not tied to one position.
    """

    def __init__(self, message: str, *, reason: str, offset: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.offset = offset


class ProtocolError(BridgeError):
    """A sensor answered a control-point request with an error status.

    Parameters
    ----------
    message
        Human-readable description.
    code
        The sensor's error code (e.g. a Polar PMD status byte), or ``None`` when the
        error has no numeric code.
    op_code
        The request's op code the error answers, when known.
    """

    def __init__(self, message: str, *, code: int | None, op_code: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.op_code = op_code


class TransportError(BridgeError):
    """The link to a sensor failed while in use (write failed, notifications stopped).

    Parameters
    ----------
    message
        Human-readable description.
    address
        The sensor's address (BLE MAC or platform UUID), when known.
    """

    def __init__(self, message: str, *, address: str | None = None) -> None:
        super().__init__(message)
        self.address = address


class ConnectError(TransportError):
    """A sensor could not be found or connected to.

    Parameters
    ----------
    message
        Human-readable description.
    address
        The sensor's address, when known.
    attempts
        How many connection attempts were made before giving up.
    """

    def __init__(self, message: str, *, address: str | None = None, attempts: int = 1) -> None:
        super().__init__(message, address=address)
        self.attempts = attempts


class ClockError(BridgeError):
    """A sensor-to-host time mapping was asked for before any pair was observed.

    Parameters
    ----------
    message
        Human-readable description.
    pairs
        How many (sensor, host) pairs the aligner holds.
    """

    def __init__(self, message: str, *, pairs: int) -> None:
        super().__init__(message)
        self.pairs = pairs
