"""Polar Measurement Data (PMD) protocol of the Polar H10 chest strap: ECG stream.

GATT layout: the PMD service :data:`PMD_SERVICE_UUID` has a control point
(:data:`PMD_CONTROL_POINT_UUID`: read = feature bitmap, write = request, indicate =
response) and a data characteristic (:data:`PMD_DATA_UUID`, notify = data frames).

Control point
    Request: ``op code (1) | measurement type (1) | settings``. Settings are entries
    ``type (1) | count (1) | count x value`` with little-endian values of 2 bytes
    (sample rate in Hz, resolution in bits, range), 1 byte (channels) or 4 bytes (range in
    milli-units, factor). The H10 ECG start request is ``02 00 00 01 82 00 01 01 0E 00``
    (130 Hz, 14 bits). Response: ``F0 | op code | measurement type | status | more |
    parameters``; ``more`` and the parameters follow only on success. A get-settings
    response lists every allowed value of each setting.

Data frame
    ``measurement type (1) | timestamp (8, uint64 LE) | frame type (1) | payload``; only
    the low 6 bits of the type byte name the measurement (Polar's SDK masks with 0x3F).
    The timestamp is the sensor time of the LAST sample of the frame, in nanoseconds since
    2000-01-01T00:00:00Z. Frame type bit 7 marks a delta-compressed frame; bits 0-6 are
    the frame type proper. Raw ECG frame type 0: 3-byte little-endian signed samples in µV.
    Delta frame: one reference sample per channel of ``ceil(resolution / 8)`` bytes
    (two's complement in ``resolution`` bits), then blocks ``bit width (1) | sample count
    (1) | ceil(count x channels x width / 8) bytes`` of two's-complement deltas packed
    LSB-first, channels interleaved; each sample is the previous one plus its delta, and
    the reference sample is the frame's first sample.

Sensor time and the H10 reset quirk
    Polar sensors count nanoseconds since 2000-01-01T00:00:00Z (:data:`POLAR_EPOCH_UNIX_NS`
    from the Unix epoch). Unless the host sets the time, an H10 runs from its firmware
    default 2019-01-01T00:00:00Z (:data:`H10_DEFAULT_TIME_NS`) and falls back to that
    default whenever it shuts down, which it does about a minute after it is detached from
    the strap with no BLE connection. Setting the time is NOT a PMD control-point
    operation: Polar's SDK does it with a protobuf ``SET_LOCAL_TIME`` query of its file
    transfer protocol (PFTP) on the separate service 0xFEEE (:data:`PSFTP_SERVICE_UUID`),
    which this module does not implement, so there is no ``set_time_request`` here. The
    bridge never trusts sensor time as wall time: :class:`firmware_bridge.clock.ClockAligner`
    maps sensor timestamps to host time from arrival times and detects the jump of a reset.

Sources: Polar's ``polar-ble-sdk`` (Android ``BlePMDClient.kt``, ``PmdSetting.kt``,
``PmdControlPointResponse.kt``, ``PmdMeasurementType.kt``, ``EcgData.kt``;
``technical_documentation/TimeSystemExplained.md``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

import numpy as np

from firmware_bridge.errors import DecodeError, ProtocolError

__all__ = [
    "CONTROL_POINT_RESPONSE",
    "ECG_START_SETTINGS",
    "H10_DEFAULT_TIME_NS",
    "MAX_ATTRIBUTE_BYTES",
    "MAX_ECG_FRAME_SAMPLES",
    "PMD_CONTROL_POINT_UUID",
    "PMD_DATA_UUID",
    "PMD_ERROR_NAMES",
    "PMD_SERVICE_UUID",
    "POLAR_EPOCH_UNIX_NS",
    "PSFTP_SERVICE_UUID",
    "ControlPointResponse",
    "EcgFrame",
    "MeasurementType",
    "OpCode",
    "PmdFrameHeader",
    "SettingType",
    "decode_ecg_frame",
    "encode_ecg_delta",
    "encode_ecg_raw",
    "get_settings_request",
    "parse_features",
    "parse_frame_header",
    "parse_response",
    "parse_settings",
    "sample_times_ns",
    "start_request",
    "stop_request",
]

PMD_SERVICE_UUID = "fb005c80-02e7-f387-1cad-8acd2d8df0c8"
"""Polar Measurement Data service."""
PMD_CONTROL_POINT_UUID = "fb005c81-02e7-f387-1cad-8acd2d8df0c8"
"""PMD control point: read features, write requests, indications carry responses."""
PMD_DATA_UUID = "fb005c82-02e7-f387-1cad-8acd2d8df0c8"
"""PMD data: notifications carry data frames."""
PSFTP_SERVICE_UUID = "0000feee-0000-1000-8000-00805f9b34fb"
"""Polar file transfer service (PFTP; time setting, recordings). Not implemented here."""

POLAR_EPOCH_UNIX_NS = 946_684_800 * 1_000_000_000
"""2000-01-01T00:00:00Z in nanoseconds since the Unix epoch."""
H10_DEFAULT_TIME_NS = 599_616_000 * 1_000_000_000
"""2019-01-01T00:00:00Z in Polar sensor time: where an H10 whose time was never set starts."""

CONTROL_POINT_RESPONSE = 0xF0
"""First byte of every control-point response."""
_FEATURE_READ = 0x0F
_HEADER_SIZE = 10
_RAW_ECG_BYTES = 3
_MAX_DELTA_WIDTH = 32
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1

MAX_ATTRIBUTE_BYTES = 512
"""Longest attribute value, so longest notification, BLE allows (Core spec Vol 3 Part F
3.2.9), whatever ATT MTU a link negotiates (at most 517, i.e. 514 bytes of payload)."""
MAX_ECG_FRAME_SAMPLES = (MAX_ATTRIBUTE_BYTES - _HEADER_SIZE) // _RAW_ECG_BYTES
"""Most samples a PMD ECG frame can hold: a raw frame filling the longest notification,
``(512 - 10) // 3 = 167`` (the H10 sends 73 at the ATT MTU of 232 Polar's SDK negotiates).
The H10 sends its ECG as raw type-0 frames; a delta frame is held to the same bound, so one
claiming more (e.g. zero-width blocks of 255 samples each: 25 501 samples in 210 bytes) is
refused as damaged by :class:`firmware_bridge.session.SensorSession`."""


class MeasurementType(IntEnum):
    """PMD measurement types (the low 6 bits of the type byte)."""

    ECG = 0
    PPG = 1
    ACC = 2
    PPI = 3
    GYRO = 5
    MAGNETOMETER = 6
    SDK_MODE = 9


class OpCode(IntEnum):
    """Control-point request op codes."""

    GET_MEASUREMENT_SETTINGS = 0x01
    REQUEST_MEASUREMENT_START = 0x02
    STOP_MEASUREMENT = 0x03
    GET_SDK_MODE_SETTINGS = 0x04
    GET_MEASUREMENT_STATUS = 0x05


class SettingType(IntEnum):
    """Setting type codes of control-point requests and responses."""

    SAMPLE_RATE = 0
    RESOLUTION = 1
    RANGE = 2
    RANGE_MILLIUNIT = 3
    CHANNELS = 4
    FACTOR = 5


_SETTING_SIZE: dict[int, int] = {0: 2, 1: 2, 2: 2, 3: 4, 4: 1, 5: 4}

PMD_ERROR_NAMES: dict[int, str] = {
    0: "success",
    1: "invalid op code",
    2: "invalid measurement type",
    3: "not supported",
    4: "invalid length",
    5: "invalid parameter",
    6: "already in state",
    7: "invalid resolution",
    8: "invalid sample rate",
    9: "invalid range",
    10: "invalid MTU",
    11: "invalid number of channels",
    12: "invalid state",
    13: "device in charger",
    14: "disk full",
}
"""Control-point status codes by value."""

ECG_START_SETTINGS: dict[SettingType, int] = {
    SettingType.SAMPLE_RATE: 130,
    SettingType.RESOLUTION: 14,
}
"""The H10's only ECG settings: 130 Hz, 14-bit resolution."""


# --------------------------------------------------------------------------- control point
def get_settings_request(measurement: int = MeasurementType.ECG) -> bytes:
    """Build a get-measurement-settings request (op 0x01) for ``measurement``."""
    return bytes((OpCode.GET_MEASUREMENT_SETTINGS, _u8(measurement, "measurement")))


def start_request(
    measurement: int = MeasurementType.ECG,
    settings: Mapping[SettingType, int] | None = None,
) -> bytes:
    """Build a start-measurement request (op 0x02).

    Parameters
    ----------
    measurement
        Measurement type byte, :attr:`MeasurementType.ECG` by default.
    settings
        One value per setting type, written in the mapping's order; default
        :data:`ECG_START_SETTINGS` (sample rate 130 Hz, resolution 14 bits).

    Returns
    -------
    bytes
        E.g. ``02 00 00 01 82 00 01 01 0E 00`` for the defaults.
    """
    chosen = ECG_START_SETTINGS if settings is None else settings
    out = bytearray((OpCode.REQUEST_MEASUREMENT_START, _u8(measurement, "measurement")))
    for kind, value in chosen.items():
        size = _SETTING_SIZE[int(kind)]
        if not 0 <= value < 1 << (8 * size):
            raise ValueError(f"setting {SettingType(kind).name}={value} does not fit {size} bytes")
        out += bytes((int(kind), 1)) + int(value).to_bytes(size, "little")
    return bytes(out)


def stop_request(measurement: int = MeasurementType.ECG) -> bytes:
    """Build a stop-measurement request (op 0x03) for ``measurement``."""
    return bytes((OpCode.STOP_MEASUREMENT, _u8(measurement, "measurement")))


class ControlPointResponse(NamedTuple):
    """A parsed control-point response.

    Attributes
    ----------
    op_code, measurement_type, status
        Echoed op code, echoed measurement type byte, status (0 = success).
    more
        ``True`` when further response packets follow.
    parameters
        The bytes after the ``more`` byte (settings for op 0x01).
    """

    op_code: int
    measurement_type: int
    status: int
    more: bool
    parameters: bytes

    @property
    def status_name(self) -> str:
        """Name of :attr:`status` from :data:`PMD_ERROR_NAMES`."""
        return PMD_ERROR_NAMES.get(self.status, f"unknown status {self.status}")


def parse_response(data: bytes, *, expect_op: int | None = None) -> ControlPointResponse:
    """Parse a control-point response and raise on an error status.

    Raises
    ------
    DecodeError
        ``reason="short"`` (under 4 bytes), ``"response_code"`` (first byte not 0xF0) or
        ``"op_code"`` (answers another op than ``expect_op``).
    ProtocolError
        The status is not success; ``code`` is the status, ``op_code`` the echoed op.
    """
    data = bytes(data)
    if len(data) < 4:
        raise DecodeError(
            f"control-point response of {len(data)} bytes", reason="short", offset=len(data)
        )
    if data[0] != CONTROL_POINT_RESPONSE:
        raise DecodeError(
            f"response code 0x{data[0]:02X}, expected 0xF0", reason="response_code", offset=0
        )
    op, mtype, status = data[1], data[2], data[3]
    if expect_op is not None and op != expect_op:
        raise DecodeError(
            f"response to op 0x{op:02X}, expected 0x{expect_op:02X}", reason="op_code", offset=1
        )
    if status != 0:
        name = PMD_ERROR_NAMES.get(status, "unknown")
        raise ProtocolError(f"PMD op 0x{op:02X} failed: {name} ({status})", code=status, op_code=op)
    more = len(data) > 4 and data[4] != 0
    return ControlPointResponse(op, mtype, status, more, data[5:])


def parse_settings(packets: bytes | Sequence[bytes]) -> dict[SettingType, tuple[int, ...]]:
    """Parse a get-settings response (one packet, or the packets of a ``more`` sequence).

    Returns
    -------
    dict
        Allowed values per setting type, in response order (sample rate in Hz,
        resolution in bits; ``FACTOR`` values are IEEE-754 float32 bit patterns).

    Raises
    ------
    DecodeError
        As :func:`parse_response`, plus ``"setting_type"`` (unknown type: its size is
        unknown) and ``"truncated"`` (an entry runs past the end).
    ProtocolError
        The response carries an error status.
    """
    chunks = [packets] if isinstance(packets, (bytes, bytearray)) else list(packets)
    params = b"".join(
        parse_response(p, expect_op=OpCode.GET_MEASUREMENT_SETTINGS).parameters for p in chunks
    )
    out: dict[SettingType, tuple[int, ...]] = {}
    pos = 0
    while pos < len(params):
        if pos + 2 > len(params):
            raise DecodeError("setting entry header cut off", reason="truncated", offset=pos + 5)
        kind, count = params[pos], params[pos + 1]
        if kind not in _SETTING_SIZE:
            raise DecodeError(f"unknown setting type {kind}", reason="setting_type", offset=pos + 5)
        size = _SETTING_SIZE[kind]
        end = pos + 2 + count * size
        if end > len(params):
            raise DecodeError("setting values cut off", reason="truncated", offset=pos + 5)
        values = tuple(
            int.from_bytes(params[i : i + size], "little") for i in range(pos + 2, end, size)
        )
        out[SettingType(kind)] = out.get(SettingType(kind), ()) + values
        pos = end
    return out


def parse_features(data: bytes) -> frozenset[int]:
    """Parse a control-point read: the measurement types the sensor supports.

    Byte 0 is 0x0F; bit ``k`` of the following bytes (LSB first) flags type ``k``.
    The H10 reports ECG (0) and ACC (2).

    Raises
    ------
    DecodeError
        ``"short"`` (under 2 bytes) or ``"response_code"`` (first byte not 0x0F).
    """
    data = bytes(data)
    if len(data) < 2:
        raise DecodeError("feature read under 2 bytes", reason="short", offset=len(data))
    if data[0] != _FEATURE_READ:
        raise DecodeError(
            f"feature code 0x{data[0]:02X}, expected 0x0F", reason="response_code", offset=0
        )
    bits = np.unpackbits(np.frombuffer(data[1:], np.uint8), bitorder="little")
    return frozenset(int(k) for k in np.flatnonzero(bits))


# --------------------------------------------------------------------------- data frames
class PmdFrameHeader(NamedTuple):
    """The 10-byte header of a PMD data frame."""

    measurement_type: int
    timestamp_ns: int
    frame_type: int
    compressed: bool


@dataclass(frozen=True)
class EcgFrame:
    """A decoded PMD ECG frame.

    Attributes
    ----------
    timestamp_ns
        Sensor time of the LAST sample, ns since 2000-01-01T00:00:00Z.
    samples_uv
        int32 array of shape ``(n, channels)``, microvolts.
    compressed
        ``True`` for a delta-compressed frame.
    """

    timestamp_ns: int
    samples_uv: np.ndarray
    compressed: bool


def parse_frame_header(data: bytes) -> PmdFrameHeader:
    """Parse a data frame's header; raise ``DecodeError(reason="short")`` under 10 bytes."""
    if len(data) < _HEADER_SIZE:
        raise DecodeError(f"PMD frame of {len(data)} bytes", reason="short", offset=len(data))
    return PmdFrameHeader(
        data[0] & 0x3F, int.from_bytes(data[1:9], "little"), data[9] & 0x7F, bool(data[9] & 0x80)
    )


def decode_ecg_frame(data: bytes, *, channels: int = 1, resolution_bits: int = 14) -> EcgFrame:
    """Decode a raw (type 0) or delta-compressed PMD ECG frame.

    Parameters
    ----------
    data
        The notification's bytes.
    channels
        Channels per sample (1 on the H10).
    resolution_bits
        Resolution from the measurement settings; sizes a delta frame's reference sample.

    Raises
    ------
    DecodeError
        ``"short"``, ``"measurement_type"`` (not ECG), ``"frame_type"`` (not type 0),
        ``"length"`` (raw payload not whole samples), ``"truncated"`` (delta block runs
        past the end), ``"bit_width"`` (delta width over 32), ``"range"`` (a sample leaves
        int32).
    """
    if channels < 1 or not 1 <= resolution_bits <= 32:
        raise ValueError("channels must be >= 1 and resolution_bits in 1..32")
    head = parse_frame_header(data)
    if head.measurement_type != MeasurementType.ECG:
        raise DecodeError(
            f"measurement type {head.measurement_type} is not ECG",
            reason="measurement_type",
            offset=0,
        )
    if head.frame_type != 0:
        raise DecodeError(
            f"ECG frame type {head.frame_type} not supported", reason="frame_type", offset=9
        )
    payload = np.frombuffer(data, np.uint8, offset=_HEADER_SIZE)
    if head.compressed:
        samples = _decode_delta(payload, channels, resolution_bits)
    else:
        samples = _decode_raw24(payload, channels)
    return EcgFrame(head.timestamp_ns, samples, head.compressed)


def _decode_raw24(payload: np.ndarray, channels: int) -> np.ndarray:
    step = _RAW_ECG_BYTES * channels
    if payload.size % step:
        raise DecodeError(
            f"raw ECG payload of {payload.size} bytes is not whole samples",
            reason="length",
            offset=_HEADER_SIZE + payload.size - payload.size % step,
        )
    b = payload.reshape(-1, _RAW_ECG_BYTES).astype(np.int32)
    v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
    return ((v ^ 0x800000) - 0x800000).reshape(-1, channels)


def _decode_delta(payload: np.ndarray, channels: int, resolution: int) -> np.ndarray:
    ref_size = -(-resolution // 8)
    pos = ref_size * channels
    if payload.size < pos:
        raise DecodeError(
            "delta frame shorter than its reference sample",
            reason="short",
            offset=_HEADER_SIZE + payload.size,
        )
    raw = payload.tobytes()  # indexing bytes is much cheaper than indexing an ndarray
    mask, half = (1 << resolution) - 1, 1 << (resolution - 1)
    ref = [
        ((int.from_bytes(raw[c * ref_size : (c + 1) * ref_size], "little") & mask) ^ half) - half
        for c in range(channels)
    ]
    parts = [np.array([ref], np.int64)]
    while pos < len(raw):
        if pos + 2 > len(raw):
            raise DecodeError(
                "delta block header cut off", reason="truncated", offset=_HEADER_SIZE + pos
            )
        width, count = raw[pos], raw[pos + 1]
        if width > _MAX_DELTA_WIDTH:
            raise DecodeError(
                f"delta bit width {width}", reason="bit_width", offset=_HEADER_SIZE + pos
            )
        nbits = width * count * channels
        end = pos + 2 + (nbits + 7) // 8
        if end > len(raw):
            raise DecodeError(
                "delta block runs past the frame", reason="truncated", offset=_HEADER_SIZE + pos
            )
        if width == 0:
            parts.append(np.zeros((count, channels), np.int64))
        else:  # bit-unpack the whole block at once, then weigh each width-bit row
            bits = np.unpackbits(payload[pos + 2 : end], bitorder="little")[:nbits]
            vals = bits.reshape(-1, width).astype(np.int64) @ _WEIGHTS[width]
            vals -= (vals >> (width - 1)) << width
            parts.append(vals.reshape(count, channels))
        pos = end
    samples = np.cumsum(np.concatenate(parts), axis=0)
    if samples.size and (samples.min() < _INT32_MIN or samples.max() > _INT32_MAX):
        raise DecodeError("delta-decoded sample outside int32", reason="range")
    return samples.astype(np.int32)


_WEIGHTS = [np.left_shift(np.int64(1), np.arange(w, dtype=np.int64)) for w in range(33)]
"""Bit weights 2**0 .. 2**(w-1) per delta width w."""


def _as_samples(samples_uv: np.ndarray | Sequence[int]) -> np.ndarray:
    arr = np.asarray(samples_uv)
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise ValueError("samples_uv must have shape (n,) or (n, channels)")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError("samples_uv must be integers (microvolts)")
    return arr.astype(np.int64)


def _header(timestamp_ns: int, frame_type: int) -> bytes:
    if not 0 <= timestamp_ns < 1 << 64:
        raise ValueError(f"timestamp_ns {timestamp_ns} does not fit uint64")
    return bytes((MeasurementType.ECG,)) + timestamp_ns.to_bytes(8, "little") + bytes((frame_type,))


def encode_ecg_raw(timestamp_ns: int, samples_uv: np.ndarray | Sequence[int]) -> bytes:
    """Encode a raw ECG frame (type 0): 3-byte little-endian signed µV per channel sample.

    Parameters
    ----------
    timestamp_ns
        Sensor time of the last sample, ns since 2000-01-01T00:00:00Z.
    samples_uv
        Integers, shape ``(n,)`` or ``(n, channels)``, each within 24-bit signed range.
    """
    arr = _as_samples(samples_uv)
    if arr.size and (arr.min() < -(1 << 23) or arr.max() >= 1 << 23):
        raise ValueError("raw ECG samples must fit 24-bit signed integers")
    u = (arr.reshape(-1) & 0xFFFFFF).astype("<u4")
    body = u.view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
    return _header(timestamp_ns, 0x00) + body


def encode_ecg_delta(
    timestamp_ns: int,
    samples_uv: np.ndarray | Sequence[int],
    *,
    block_size: int = 16,
    resolution_bits: int = 14,
) -> bytes:
    """Encode a delta-compressed ECG frame (frame type byte 0x80).

    The first sample is the reference (``ceil(resolution_bits / 8)`` bytes per channel);
    the other samples go in blocks of up to ``block_size`` samples, each with the minimal
    two's-complement bit width (at least 1) that holds all its deltas.

    Parameters
    ----------
    timestamp_ns
        Sensor time of the last sample, ns since 2000-01-01T00:00:00Z.
    samples_uv
        Integers, shape ``(n,)`` or ``(n, channels)`` with ``n >= 1``; the first sample
        must fit ``resolution_bits`` signed bits and every delta 32 bits.
    block_size
        Samples per block, 1..255.
    resolution_bits
        Resolution of the measurement, 1..32 bits.
    """
    arr = _as_samples(samples_uv)
    if arr.shape[0] < 1:
        raise ValueError("a delta frame needs at least the reference sample")
    if not 1 <= block_size <= 255 or not 1 <= resolution_bits <= 32:
        raise ValueError("block_size must be in 1..255 and resolution_bits in 1..32")
    lim = 1 << (resolution_bits - 1)
    ref = arr[0]
    if ref.min() < -lim or ref.max() >= lim:
        raise ValueError(f"reference sample does not fit {resolution_bits} signed bits")
    ref_size = -(-resolution_bits // 8)
    ref_u = (ref & ((1 << resolution_bits) - 1)).astype("<u8")
    out = bytearray(_header(timestamp_ns, 0x80))
    out += ref_u.view(np.uint8).reshape(-1, 8)[:, :ref_size].tobytes()
    deltas = np.diff(arr, axis=0)
    for start in range(0, deltas.shape[0], block_size):
        block = deltas[start : start + block_size]
        width = int(np.where(block < 0, ~block, block).max()).bit_length() + 1
        if width > _MAX_DELTA_WIDTH:
            raise ValueError("a delta does not fit 32 bits")
        bits = (block.reshape(-1, 1) >> np.arange(width, dtype=np.int64)) & 1
        out += bytes((width, block.shape[0]))
        out += np.packbits(bits.astype(np.uint8).reshape(-1), bitorder="little").tobytes()
    return bytes(out)


#: largest relative difference between a frame's measured sample spacing and 1 / fs that
#: :func:`sample_times_ns` still takes for the sensor's own clock
SPACING_TOLERANCE = 0.01


def sample_times_ns(
    frame: EcgFrame, fs: float, *, previous_timestamp_ns: int | None = None
) -> np.ndarray:
    """Sensor time of every sample of ``frame``; the last one equals ``frame.timestamp_ns``.

    Parameters
    ----------
    frame
        A decoded frame.
    fs
        Nominal sample rate in Hz (130 on the H10), used for the sample spacing unless
        ``previous_timestamp_ns`` gives a usable spacing.
    previous_timestamp_ns
        The previous frame's timestamp; when earlier than this frame's and the spacing
        ``(timestamp - previous) / n`` (the sensor's own clock, as Polar's SDK uses it) lies
        within 1% of ``1 / fs``, that spacing is used; otherwise (a frame was lost in between,
        or the clock jumped) the nominal ``1 / fs``.

    Returns
    -------
    numpy.ndarray
        int64 nanoseconds since 2000-01-01T00:00:00Z, shape ``(n,)``.
    """
    if not fs > 0:
        raise ValueError("fs must be positive")
    n = frame.samples_uv.shape[0]
    prev = previous_timestamp_ns
    step = 1e9 / fs
    if prev is not None and 0 < prev < frame.timestamp_ns and n:
        measured = (frame.timestamp_ns - prev) / n
        if abs(measured - step) <= SPACING_TOLERANCE * step:
            step = measured
    if frame.timestamp_ns >= 1 << 63:
        raise ValueError("timestamp_ns beyond int64 nanoseconds")
    back = np.rint(np.arange(n - 1, -1, -1, dtype=np.float64) * step).astype(np.int64)
    return np.int64(frame.timestamp_ns) - back


def _u8(value: int, name: str) -> int:
    if not 0 <= int(value) <= 0xFF:
        raise ValueError(f"{name} {value} does not fit one byte")
    return int(value)
