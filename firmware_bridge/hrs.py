"""Bluetooth SIG Heart Rate Service (0x180D) and Battery Service (0x180F) values.

Heart Rate Measurement (0x2A37), notify: ``flags (1) | heart rate (1 or 2) |
[energy expended (2)] | [RR interval (2)]*``, all little-endian. Flags:

* bit 0 -- heart rate is uint16 (else uint8), beats per minute;
* bits 1-2 -- sensor contact: bit 2 = contact detection supported, bit 1 = contact
  detected (bit 1 means nothing while bit 2 is clear);
* bit 3 -- energy expended present, uint16 kilojoules;
* bit 4 -- RR intervals present: every remaining uint16, in units of 1/1024 s.

Values no heart can give are not passed on as if one had: a heart rate of 0 (what a strap
sends before it has one, e.g. without skin contact) parses as ``bpm=None``, and RR intervals
outside :data:`RR_RANGE_S` are set apart in ``rr_rejected_s``.

Body Sensor Location (0x2A38), read: one byte, :data:`BODY_SENSOR_LOCATIONS`.
Battery Level (0x2A19 in service 0x180F), read/notify: one byte, percent (0..100).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from firmware_bridge.errors import DecodeError

__all__ = [
    "BATTERY_LEVEL_UUID",
    "BATTERY_SERVICE_UUID",
    "BODY_SENSOR_LOCATIONS",
    "BODY_SENSOR_LOCATION_UUID",
    "HEART_RATE_CONTROL_POINT_UUID",
    "HEART_RATE_MEASUREMENT_UUID",
    "HEART_RATE_SERVICE_UUID",
    "HeartRateMeasurement",
    "RR_RANGE_S",
    "BPM_RANGE",
    "encode_hr_measurement",
    "parse_battery_level",
    "parse_body_sensor_location",
    "parse_hr_measurement",
    "uuid16",
]


def uuid16(short: int) -> str:
    """Expand a 16-bit SIG-assigned UUID onto the Bluetooth base UUID (lowercase)."""
    if not 0 <= short <= 0xFFFF:
        raise ValueError(f"{short} is not a 16-bit UUID")
    return f"0000{short:04x}-0000-1000-8000-00805f9b34fb"


HEART_RATE_SERVICE_UUID = uuid16(0x180D)
HEART_RATE_MEASUREMENT_UUID = uuid16(0x2A37)
BODY_SENSOR_LOCATION_UUID = uuid16(0x2A38)
HEART_RATE_CONTROL_POINT_UUID = uuid16(0x2A39)
BATTERY_SERVICE_UUID = uuid16(0x180F)
BATTERY_LEVEL_UUID = uuid16(0x2A19)

BODY_SENSOR_LOCATIONS: dict[int, str] = {
    0: "other",
    1: "chest",
    2: "wrist",
    3: "finger",
    4: "hand",
    5: "ear lobe",
    6: "foot",
}
"""Body Sensor Location values; 7..255 are reserved."""

_UINT16 = 0x01
_CONTACT_DETECTED = 0x02
_CONTACT_SUPPORTED = 0x04
_ENERGY = 0x08
_RR = 0x10
_RR_UNITS_PER_S = 1024

RR_RANGE_S = (0.2, 5.0)
"""RR intervals (s) taken as beats, bounds included. 0.2 s is 300 bpm, about the fastest a
heart conducts short of fibrillation (pre-excited atrial fibrillation). 5.0 s (12 bpm) keeps
the sinus pauses of 3 s and more that matter clinically, while a longer value from a strap
is likelier lost contact than one beat interval (it is kept in ``rr_rejected_s``, and the ECG
itself shows a real pause). The 0 of a strap that has no interval lies outside."""

BPM_RANGE = (round(60 / RR_RANGE_S[1]), round(60 / RR_RANGE_S[0]))
"""Heart rates (bpm) taken as such, bounds included: the rates of :data:`RR_RANGE_S`
(12 to 300 bpm). A value outside (a corrupted byte, a uint16 of 65535) is set apart in
``bpm_rejected``."""


@dataclass(frozen=True)
class HeartRateMeasurement:
    """A Heart Rate Measurement notification.

    Attributes
    ----------
    bpm
        Heart rate, beats per minute; ``None`` when the sensor sent 0, i.e. has no heart
        rate (no skin contact yet, or no beat found), or a value outside :data:`BPM_RANGE`.
    contact
        Skin contact detected, or ``None`` when the sensor does not report contact.
    energy_kj
        Energy expended since the last reset, kilojoules, or ``None`` when absent.
    rr_s
        RR intervals in seconds (multiples of 1/1024 s) within :data:`RR_RANGE_S`, oldest
        first; may be empty.
    rr_rejected_s
        The intervals the notification carried outside :data:`RR_RANGE_S`, oldest first:
        kept apart, not lost; usually empty.
    rr_rejected_at
        Where each of ``rr_rejected_s`` stood among all the notification's intervals.
    bpm_rejected
        A heart rate the notification carried outside :data:`BPM_RANGE` (``bpm`` is then
        ``None``): kept apart, not lost; usually ``None``.
    rr_cut
        One byte was left after the last whole RR interval (a cut interval, as some
        firmware sends): the heart rate and the whole intervals are kept, and the interval
        series breaks after them (:meth:`rr_in_order` ends with a NaN).
    """

    bpm: int | None
    contact: bool | None
    energy_kj: int | None
    rr_s: tuple[float, ...]
    rr_rejected_s: tuple[float, ...] = ()
    rr_rejected_at: tuple[int, ...] = ()
    bpm_rejected: int | None = None
    rr_cut: bool = False

    def rr_in_order(self) -> list[float]:
        """Every interval of the notification in its order, NaN where one was rejected (and
        last where one was cut)."""
        out = [math.nan] * (len(self.rr_s) + len(self.rr_rejected_s))
        kept = iter(self.rr_s)
        rejected = set(self.rr_rejected_at)
        return [v if i in rejected else next(kept) for i, v in enumerate(out)] + (
            [math.nan] if self.rr_cut else []
        )


def parse_hr_measurement(data: bytes) -> HeartRateMeasurement:
    """Parse a Heart Rate Measurement (0x2A37) value.

    A heart rate of 0 gives ``bpm=None``, one outside :data:`BPM_RANGE` ``bpm=None`` and
    ``bpm_rejected``; RR intervals outside :data:`RR_RANGE_S` go to ``rr_rejected_s`` instead
    of ``rr_s``.

    A byte left after the last whole RR interval sets ``rr_cut`` (the rest is kept).

    Raises
    ------
    DecodeError
        ``"short"`` (a flagged field is cut off) or ``"length"`` (bytes after the fields
        where no RR interval is flagged).
    """
    data = bytes(data)
    if not data:
        raise DecodeError("empty heart rate measurement", reason="short", offset=0)
    flags = data[0]
    pos = 3 if flags & _UINT16 else 2
    if len(data) < pos:
        raise DecodeError("heart rate value cut off", reason="short", offset=len(data))
    bpm = int.from_bytes(data[1:pos], "little")
    contact = bool(flags & _CONTACT_DETECTED) if flags & _CONTACT_SUPPORTED else None
    energy: int | None = None
    if flags & _ENERGY:
        if len(data) < pos + 2:
            raise DecodeError("energy expended cut off", reason="short", offset=len(data))
        energy = int.from_bytes(data[pos : pos + 2], "little")
        pos += 2
    rest = len(data) - pos
    rr: tuple[float, ...] = ()
    if flags & _RR:
        # plain Python: numpy's per-call cost is most of the work for one to three values
        rr = tuple(v / _RR_UNITS_PER_S for v in struct.unpack_from(f"<{rest // 2}H", data, pos))
    elif rest:
        raise DecodeError(f"{rest} unexpected trailing bytes", reason="length", offset=pos)
    beat = [RR_RANGE_S[0] <= v <= RR_RANGE_S[1] for v in rr]
    plausible = BPM_RANGE[0] <= bpm <= BPM_RANGE[1]
    return HeartRateMeasurement(
        bpm if plausible else None,
        contact,
        energy,
        tuple(v for v, ok in zip(rr, beat) if ok),
        tuple(v for v, ok in zip(rr, beat) if not ok),
        tuple(i for i, ok in enumerate(beat) if not ok),
        None if plausible or bpm == 0 else bpm,
        bool(flags & _RR and rest % 2),
    )


def encode_hr_measurement(
    bpm: int,
    *,
    contact: bool | None = None,
    energy_kj: int | None = None,
    rr_s: Sequence[float] = (),
    rr_present: bool | None = None,
    force_uint16: bool = False,
) -> bytes:
    """Encode a Heart Rate Measurement (0x2A37) value, e.g. for a simulator.

    Parameters
    ----------
    bpm
        Heart rate in beats per minute, 0..65535; uint8 unless above 255 or
        ``force_uint16``.
    contact
        ``None`` = contact detection not supported; else supported and this state.
    energy_kj
        Energy expended in kilojoules (0..65535), or ``None`` to leave it out.
    rr_s
        RR intervals in seconds, rounded to 1/1024 s (each below 64 s).
    rr_present
        Set the RR flag even with no intervals; default: set when ``rr_s`` is non-empty.
    force_uint16
        Write the heart rate as uint16 even when it fits one byte.
    """
    if not 0 <= bpm <= 0xFFFF:
        raise ValueError(f"bpm {bpm} does not fit uint16")
    wide = force_uint16 or bpm > 0xFF
    flags = _UINT16 if wide else 0
    if contact is not None:
        flags |= _CONTACT_SUPPORTED | (_CONTACT_DETECTED if contact else 0)
    out = bytearray(bpm.to_bytes(2 if wide else 1, "little"))
    if energy_kj is not None:
        if not 0 <= energy_kj <= 0xFFFF:
            raise ValueError(f"energy_kj {energy_kj} does not fit uint16")
        flags |= _ENERGY
        out += energy_kj.to_bytes(2, "little")
    if rr_present or (rr_present is None and len(rr_s) > 0):
        flags |= _RR
        ticks = np.rint(np.asarray(rr_s, dtype=np.float64) * _RR_UNITS_PER_S)
        if ticks.size and (ticks.min() < 0 or ticks.max() > 0xFFFF):
            raise ValueError("RR intervals must lie in [0, 64) s")
        out += ticks.astype("<u2").tobytes()
    return bytes((flags,)) + bytes(out)


def parse_body_sensor_location(data: bytes) -> str:
    """Parse Body Sensor Location (0x2A38): a name from :data:`BODY_SENSOR_LOCATIONS`.

    Reserved values (7..255) give ``"reserved"``.

    Raises
    ------
    DecodeError
        ``"short"`` (empty) or ``"length"`` (more than one byte).
    """
    data = bytes(data)
    if not data:
        raise DecodeError("empty body sensor location", reason="short", offset=0)
    if len(data) != 1:
        raise DecodeError(f"body sensor location of {len(data)} bytes", reason="length", offset=1)
    return BODY_SENSOR_LOCATIONS.get(data[0], "reserved")


def parse_battery_level(data: bytes) -> int:
    """Parse Battery Level (0x2A19): percent, 0..100.

    Raises
    ------
    DecodeError
        ``"short"`` (empty), ``"length"`` (more than one byte) or ``"range"`` (over 100).
    """
    data = bytes(data)
    if not data:
        raise DecodeError("empty battery level", reason="short", offset=0)
    if len(data) != 1:
        raise DecodeError(f"battery level of {len(data)} bytes", reason="length", offset=1)
    if data[0] > 100:
        raise DecodeError(f"battery level {data[0]} % over 100", reason="range", offset=0)
    return data[0]
