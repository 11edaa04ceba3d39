"""Heart Rate Service, Body Sensor Location and Battery Level values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from firmware_bridge import hrs
from firmware_bridge.errors import DecodeError


def test_uuids():
    assert hrs.HEART_RATE_SERVICE_UUID == "0000180d-0000-1000-8000-00805f9b34fb"
    assert hrs.HEART_RATE_MEASUREMENT_UUID == "00002a37-0000-1000-8000-00805f9b34fb"
    assert hrs.BODY_SENSOR_LOCATION_UUID == "00002a38-0000-1000-8000-00805f9b34fb"
    assert hrs.BATTERY_SERVICE_UUID == "0000180f-0000-1000-8000-00805f9b34fb"
    assert hrs.BATTERY_LEVEL_UUID == "00002a19-0000-1000-8000-00805f9b34fb"


@pytest.mark.parametrize(
    ("hex_value", "expected"),
    [
        # uint8 rate, RR present: what an H10 sends (72 bpm, RR 1016/1024 s)
        ("10 48 f8 03", hrs.HeartRateMeasurement(72, None, None, (1016 / 1024,))),
        # contact supported and detected, two RR values
        ("16 3c 00 04 00 02", hrs.HeartRateMeasurement(60, True, None, (1.0, 0.5))),
        # contact supported, not detected: 0 bpm is no heart rate value
        ("04 00", hrs.HeartRateMeasurement(None, False, None, ())),
        # bit 1 without bit 2 means "not supported"
        ("02 50", hrs.HeartRateMeasurement(80, None, None, ())),
        # uint16 rate
        ("01 2c 01", hrs.HeartRateMeasurement(300, None, None, ())),
        # energy expended
        ("08 48 34 12", hrs.HeartRateMeasurement(72, None, 0x1234, ())),
        # everything
        ("1f 2c 01 34 12 00 04 00 02", hrs.HeartRateMeasurement(300, True, 0x1234, (1.0, 0.5))),
        # RR flag with no interval in this notification
        ("10 48", hrs.HeartRateMeasurement(72, None, None, ())),
    ],
)
def test_parse_hr_measurement(hex_value, expected):
    assert hrs.parse_hr_measurement(bytes.fromhex(hex_value)) == expected


@pytest.mark.parametrize(
    ("hex_value", "reason"),
    [
        ("", "short"),
        ("00", "short"),
        ("01 2c", "short"),
        ("08 48 34", "short"),
        ("00 48 00", "length"),
    ],
)
def test_malformed_hr_measurement(hex_value, reason):
    with pytest.raises(DecodeError) as info:
        hrs.parse_hr_measurement(bytes.fromhex(hex_value))
    assert info.value.reason == reason


@pytest.mark.parametrize(
    ("hex_value", "rr"),
    [("10 48 f8", ()), ("10 3c 00 04 01", (1.0,)), ("18 48 34 12 00 02 00 04 07", (0.5, 1.0))],
)
def test_a_cut_last_rr_interval_keeps_the_rest(hex_value, rr):
    """A byte after the last whole interval refused the notification, heart rate and all."""
    m = hrs.parse_hr_measurement(bytes.fromhex(hex_value))
    assert m.rr_cut and m.rr_s == rr and m.bpm in (72, 60)
    assert len(m.rr_in_order()) == len(rr) + 1 and math.isnan(m.rr_in_order()[-1])


def test_encoder_bytes():
    assert hrs.encode_hr_measurement(72, rr_s=[1016 / 1024]) == bytes.fromhex("10 48 f8 03")
    assert hrs.encode_hr_measurement(
        300, contact=True, energy_kj=0x1234, rr_s=[1.0, 0.5]
    ) == bytes.fromhex("1f 2c 01 34 12 00 04 00 02")
    assert hrs.encode_hr_measurement(60, force_uint16=True) == bytes.fromhex("01 3c 00")
    assert hrs.encode_hr_measurement(72, rr_present=True) == bytes.fromhex("10 48")


@pytest.mark.parametrize("bpm", [0, 1, 255, 256, 65535])
@pytest.mark.parametrize("contact", [None, False, True])
@pytest.mark.parametrize("energy", [None, 0, 65535])
@pytest.mark.parametrize("rr", [(), (0.75,), (0.5, 1.25, 63.999)])
def test_round_trip(bpm, contact, energy, rr):
    rr_ticks = tuple(round(r * 1024) / 1024 for r in rr)
    low, high = hrs.RR_RANGE_S
    plausible = hrs.BPM_RANGE[0] <= bpm <= hrs.BPM_RANGE[1]
    data = hrs.encode_hr_measurement(bpm, contact=contact, energy_kj=energy, rr_s=rr)
    assert hrs.parse_hr_measurement(data) == hrs.HeartRateMeasurement(
        bpm if plausible else None,  # 0 bpm: no value; 1 or 256 and more: none a heart gives
        contact,
        energy,
        tuple(r for r in rr_ticks if low <= r <= high),
        tuple(r for r in rr_ticks if not low <= r <= high),  # kept apart, not lost
        tuple(i for i, r in enumerate(rr_ticks) if not low <= r <= high),
        None if plausible or bpm == 0 else bpm,  # kept apart, not lost
    )


def test_impossible_values_are_no_heart_rate_and_rejected_rr_intervals():
    m = hrs.parse_hr_measurement(bytes([0x10, 0]) + b"\0\0" * 3)
    assert m.bpm is None and m.rr_s == () and m.rr_rejected_s == (0.0, 0.0, 0.0)


@pytest.mark.parametrize(
    ("rr", "kept"),
    [
        (0.2, True),  # 300 bpm: the fastest rhythm kept
        (0.199, False),
        (3.0, True),  # a 3 s sinus pause: clinically relevant, kept
        (5.0, True),
        (5.001, False),
        (0.0, False),
        (63.999, False),
    ],
)
def test_rr_intervals_outside_the_physiological_range_are_rejected(rr, kept):
    ticks = round(rr * 1024)
    m = hrs.parse_hr_measurement(bytes([0x10, 60]) + ticks.to_bytes(2, "little"))
    assert m.bpm == 60
    assert (m.rr_s, m.rr_rejected_s) == (((ticks / 1024,), ()) if kept else ((), (ticks / 1024,)))


def test_encoder_rejects_out_of_range():
    with pytest.raises(ValueError):
        hrs.encode_hr_measurement(70000)
    with pytest.raises(ValueError):
        hrs.encode_hr_measurement(60, energy_kj=-1)
    with pytest.raises(ValueError):
        hrs.encode_hr_measurement(60, rr_s=[64.0])


def test_body_sensor_location():
    names = [hrs.parse_body_sensor_location(bytes([i])) for i in range(7)]
    assert names == ["other", "chest", "wrist", "finger", "hand", "ear lobe", "foot"]
    assert hrs.parse_body_sensor_location(b"\x07") == "reserved"
    for bad, reason in [(b"", "short"), (b"\x01\x01", "length")]:
        with pytest.raises(DecodeError) as info:
            hrs.parse_body_sensor_location(bad)
        assert info.value.reason == reason


def test_battery_level():
    assert hrs.parse_battery_level(b"\x00") == 0
    assert hrs.parse_battery_level(b"\x64") == 100
    for bad, reason in [(b"", "short"), (b"\x10\x00", "length"), (b"\x65", "range")]:
        with pytest.raises(DecodeError) as info:
            hrs.parse_battery_level(bad)
        assert info.value.reason == reason


def test_rr_in_order_breaks_only_where_an_interval_was_rejected():
    m = hrs.parse_hr_measurement(hrs.encode_hr_measurement(75, rr_s=[0.75, 0.75, 0.75, 40.0]))
    assert m.rr_s == (0.75,) * 3 and m.rr_rejected_s == (40.0,) and m.rr_rejected_at == (3,)
    got = m.rr_in_order()
    assert got[:3] == [0.75] * 3 and np.isnan(got[3]) and len(got) == 4
    m = hrs.parse_hr_measurement(hrs.encode_hr_measurement(75, rr_s=[0.125, 0.75, 9.0, 0.5]))
    got = m.rr_in_order()
    assert np.isnan(got[0]) and got[1] == 0.75 and np.isnan(got[2]) and got[3] == 0.5


@pytest.mark.parametrize(
    ("value", "bpm", "rejected"),
    [(11, None, 11), (12, 12, None), (300, 300, None), (301, None, 301), (65535, None, 65535)],
)
def test_a_heart_rate_no_heart_gives_is_set_apart(value, bpm, rejected):
    """The module promised that values no heart can give are not passed on; 65535 was."""
    m = hrs.parse_hr_measurement(hrs.encode_hr_measurement(value, force_uint16=True))
    assert (m.bpm, m.bpm_rejected) == (bpm, rejected)
    assert hrs.BPM_RANGE == (12, 300)
