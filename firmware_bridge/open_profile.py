"""Open ECG GATT profile for device makers' own firmware (specification: OPEN_PROFILE.md).

A device exposes :data:`OPEN_ECG_SERVICE_UUID` with a data characteristic
(:data:`OPEN_ECG_DATA_UUID`, notify) that carries one frame per notification, and a
control characteristic (:data:`OPEN_ECG_CONTROL_UUID`, write) that takes the commands
built by :func:`start_command`, :func:`stop_command` and :func:`set_time_command`.

Frame (all little-endian)::

    0  magic/version  0xE1: magic 0xE in the high nibble, version 1 in the low nibble
    1  flags          bit 0 Unix epoch, bit 1 lead off (the samples are no ECG: the
                      session delivers them as NaN), bit 2 gap; bits 3-7 reserved (0)
    2  sequence       uint16, +1 per frame, wraps 65535 -> 0
    4  timestamp      uint64 µs of the FIRST sample: since 1970-01-01T00:00:00Z when
                      flag bit 0 is set, else since the device's own epoch (e.g. boot)
    12 sample rate    uint16 Hz, 1..65535
    14 sample format  0x02 = int16 µV, 0x03 = int24 µV
    15 lead count     1..12
    16 sample count   samples per lead, 1..255
    17 samples        sample-major, leads interleaved: s0.l0, s0.l1, ..., s1.l0, ...
    .. crc            uint16 CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) of all before it
"""

from __future__ import annotations

import binascii
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from firmware_bridge.errors import DecodeError

__all__ = [
    "FLAG_GAP",
    "FLAG_LEAD_OFF",
    "FLAG_UNIX_EPOCH",
    "FORMAT_INT16",
    "FORMAT_INT24",
    "MAGIC_VERSION",
    "OPEN_ECG_CONTROL_UUID",
    "OPEN_ECG_DATA_UUID",
    "OPEN_ECG_SERVICE_UUID",
    "OpenEcgFrame",
    "crc16_ccitt_false",
    "decode_open_frame",
    "encode_open_frame",
    "next_sequence",
    "sequence_gap",
    "set_time_command",
    "start_command",
    "stop_command",
]

OPEN_ECG_SERVICE_UUID = "f2440001-9073-4439-82e6-70015f5873e0"
"""Open ECG service."""
OPEN_ECG_DATA_UUID = "f2440002-9073-4439-82e6-70015f5873e0"
"""Data characteristic (notify): one frame per notification."""
OPEN_ECG_CONTROL_UUID = "f2440003-9073-4439-82e6-70015f5873e0"
"""Control characteristic (write with response): commands."""

MAGIC = 0xE
VERSION = 1
MAGIC_VERSION = (MAGIC << 4) | VERSION
"""First byte of every version-1 frame (0xE1)."""
FLAG_UNIX_EPOCH = 0x01
"""Timestamp counts µs since the Unix epoch (else since the device's own epoch)."""
FLAG_LEAD_OFF = 0x02
"""An electrode was off during (part of) the frame."""
FLAG_GAP = 0x04
"""The device dropped samples before this frame (e.g. a full transmit queue)."""
FORMAT_INT16 = 0x02
"""Samples are int16, 1 µV per LSB."""
FORMAT_INT24 = 0x03
"""Samples are int24, 1 µV per LSB."""

CMD_START, CMD_STOP, CMD_SET_TIME = 0x01, 0x02, 0x03
HEADER_SIZE = 17
CRC_SIZE = 2
MAX_LEADS = 12
MAX_SAMPLES = 255
"""Most samples per lead a frame holds (the sample count is one byte)."""
_FORMATS = frozenset((FORMAT_INT16, FORMAT_INT24))


@dataclass(frozen=True)
class OpenEcgFrame:
    """A decoded open-profile frame.

    Attributes
    ----------
    sequence
        Frame counter, 0..65535, wrapping.
    timestamp_us
        Time of the FIRST sample, µs (epoch per :attr:`unix_epoch`).
    sample_rate_hz
        Sample rate, Hz.
    sample_format
        :data:`FORMAT_INT16` or :data:`FORMAT_INT24` (bytes per sample).
    flags
        The raw flag byte, reserved bits included.
    samples_uv
        int32 array of shape ``(n, leads)``, microvolts.
    """

    sequence: int
    timestamp_us: int
    sample_rate_hz: int
    sample_format: int
    flags: int
    samples_uv: np.ndarray

    @property
    def unix_epoch(self) -> bool:
        """``True`` when :attr:`timestamp_us` counts from 1970-01-01T00:00:00Z."""
        return bool(self.flags & FLAG_UNIX_EPOCH)

    @property
    def lead_off(self) -> bool:
        """``True`` when an electrode was off during the frame."""
        return bool(self.flags & FLAG_LEAD_OFF)

    @property
    def gap(self) -> bool:
        """``True`` when the device dropped samples before this frame."""
        return bool(self.flags & FLAG_GAP)


def crc16_ccitt_false(data: bytes) -> int:
    """CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, no final XOR.

    The check value of ``b"123456789"`` is 0x29B1.
    """
    return binascii.crc_hqx(bytes(data), 0xFFFF)


def encode_open_frame(
    samples_uv: np.ndarray | Sequence[int],
    *,
    sequence: int,
    timestamp_us: int,
    sample_rate_hz: int,
    sample_format: int = FORMAT_INT16,
    flags: int = 0,
) -> bytes:
    """Encode one frame.

    Parameters
    ----------
    samples_uv
        Integers in µV, shape ``(n,)`` (one lead) or ``(n, leads)``; 1..255 samples,
        1..12 leads, each within the format's range.
    sequence
        Frame counter, 0..65535 (see :func:`next_sequence`).
    timestamp_us
        Time of the first sample, µs, 0..2**64-1.
    sample_rate_hz
        1..65535 Hz.
    sample_format
        :data:`FORMAT_INT16` or :data:`FORMAT_INT24`.
    flags
        OR of ``FLAG_*``.
    """
    arr = np.asarray(samples_uv)
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError("samples_uv must be integers of shape (n,) or (n, leads)")
    n, leads = arr.shape
    if not 1 <= n <= MAX_SAMPLES or not 1 <= leads <= MAX_LEADS:
        raise ValueError(f"{n} samples x {leads} leads: need 1..255 samples, 1..12 leads")
    if sample_format not in _FORMATS:
        raise ValueError(f"unknown sample format 0x{sample_format:02X}")
    bits = 8 * sample_format
    values = arr.astype(np.int64).reshape(-1)
    if values.min() < -(1 << (bits - 1)) or values.max() >= 1 << (bits - 1):
        raise ValueError(f"samples do not fit int{bits}")
    for name, value, top in (
        ("sequence", sequence, 0xFFFF),
        ("sample_rate_hz", sample_rate_hz, 0xFFFF),
        ("timestamp_us", timestamp_us, 2**64 - 1),
        ("flags", flags, 0xFF),
    ):
        if not 0 <= value <= top:
            raise ValueError(f"{name} {value} out of range")
    if sample_rate_hz < 1:
        raise ValueError("sample_rate_hz must be at least 1")
    head = bytes((MAGIC_VERSION, flags)) + sequence.to_bytes(2, "little")
    head += timestamp_us.to_bytes(8, "little") + sample_rate_hz.to_bytes(2, "little")
    head += bytes((sample_format, leads, n))
    raw = (values & ((1 << bits) - 1)).astype("<u4").view(np.uint8).reshape(-1, 4)
    body = head + raw[:, :sample_format].tobytes()
    return body + crc16_ccitt_false(body).to_bytes(2, "little")


def decode_open_frame(data: bytes) -> OpenEcgFrame:
    """Decode one frame.

    Raises
    ------
    DecodeError
        Checked in this order: ``"short"`` (under 19 bytes), ``"magic"``, ``"version"``,
        ``"crc"``, ``"format"`` (unknown sample format, 0 or over 12 leads, 0 samples,
        0 Hz), ``"length"`` (size differs from what the header declares).
    """
    data = bytes(data)
    if len(data) < HEADER_SIZE + CRC_SIZE:
        raise DecodeError(f"frame of {len(data)} bytes", reason="short", offset=len(data))
    if data[0] >> 4 != MAGIC:
        raise DecodeError(f"magic 0x{data[0] >> 4:X}, expected 0xE", reason="magic", offset=0)
    if data[0] & 0x0F != VERSION:
        raise DecodeError(f"version {data[0] & 0x0F} not supported", reason="version", offset=0)
    if crc16_ccitt_false(data[:-CRC_SIZE]) != int.from_bytes(data[-CRC_SIZE:], "little"):
        raise DecodeError("CRC mismatch", reason="crc", offset=len(data) - CRC_SIZE)
    fmt, leads, n = data[14], data[15], data[16]
    rate = int.from_bytes(data[12:14], "little")
    if fmt not in _FORMATS or not 1 <= leads <= MAX_LEADS or n == 0 or rate == 0:
        raise DecodeError(
            f"format 0x{fmt:02X}, {leads} leads, {n} samples, {rate} Hz", reason="format", offset=12
        )
    size = HEADER_SIZE + n * leads * fmt + CRC_SIZE
    if len(data) != size:
        raise DecodeError(
            f"frame of {len(data)} bytes, header declares {size}",
            reason="length",
            offset=min(len(data), size),
        )
    payload = np.frombuffer(data, np.uint8, count=n * leads * fmt, offset=HEADER_SIZE)
    if fmt == FORMAT_INT16:
        samples = payload.view("<i2").astype(np.int32)
    else:
        b = payload.reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        samples = (v ^ 0x800000) - 0x800000
    return OpenEcgFrame(
        sequence=int.from_bytes(data[2:4], "little"),
        timestamp_us=int.from_bytes(data[4:12], "little"),
        sample_rate_hz=rate,
        sample_format=fmt,
        flags=data[1],
        samples_uv=samples.reshape(n, leads),
    )


def next_sequence(sequence: int) -> int:
    """The sequence number after ``sequence`` (65535 wraps to 0)."""
    return (sequence + 1) & 0xFFFF


def sequence_gap(previous: int, current: int) -> int:
    """Frames missing between two received sequence numbers (0 = consecutive).

    Computed modulo 65536, so a run of more than 65535 lost frames is not seen.
    """
    return (current - previous - 1) & 0xFFFF


def start_command() -> bytes:
    """Control command 0x01: start streaming."""
    return bytes((CMD_START,))


def stop_command() -> bytes:
    """Control command 0x02: stop streaming."""
    return bytes((CMD_STOP,))


def set_time_command(unix_us: int) -> bytes:
    """Control command 0x03: set the device clock to ``unix_us`` µs since the Unix epoch.

    Afterwards the device sets :data:`FLAG_UNIX_EPOCH` in its frames.
    """
    if not 0 <= unix_us < 1 << 64:
        raise ValueError(f"unix_us {unix_us} does not fit uint64")
    return bytes((CMD_SET_TIME,)) + unix_us.to_bytes(8, "little")
