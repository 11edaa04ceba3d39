"""Polar PMD: control-point bytes, responses, raw and delta ECG frames built by hand."""

from __future__ import annotations

import numpy as np
import pytest

from firmware_bridge import polar_pmd as pmd
from firmware_bridge.errors import DecodeError, ProtocolError

TS = 599_616_023_171_427_290  # an H10 timestamp after a clock reset (2019-01-01 + 23 s)
TS_LE = TS.to_bytes(8, "little")


def header(frame_type: int, measurement: int = 0) -> bytes:
    return bytes([measurement]) + TS_LE + bytes([frame_type])


# ------------------------------------------------------------------ constants, requests
def test_uuids_and_epochs():
    assert pmd.PMD_SERVICE_UUID == "fb005c80-02e7-f387-1cad-8acd2d8df0c8"
    assert pmd.PMD_CONTROL_POINT_UUID == "fb005c81-02e7-f387-1cad-8acd2d8df0c8"
    assert pmd.PMD_DATA_UUID == "fb005c82-02e7-f387-1cad-8acd2d8df0c8"
    assert pmd.POLAR_EPOCH_UNIX_NS == 946_684_800_000_000_000
    assert pmd.H10_DEFAULT_TIME_NS == 599_616_000_000_000_000


def test_request_bytes():
    assert pmd.get_settings_request() == bytes.fromhex("0100")
    assert pmd.get_settings_request(pmd.MeasurementType.ACC) == bytes.fromhex("0102")
    assert pmd.start_request() == bytes.fromhex("02 00 00 01 82 00 01 01 0e 00")
    assert pmd.stop_request() == bytes.fromhex("0300")
    acc = {
        pmd.SettingType.SAMPLE_RATE: 200,
        pmd.SettingType.RESOLUTION: 16,
        pmd.SettingType.RANGE: 8,
    }
    assert pmd.start_request(pmd.MeasurementType.ACC, acc) == bytes.fromhex(
        "02 02 00 01 c8 00 01 01 10 00 02 01 08 00"
    )
    assert pmd.start_request(0, {pmd.SettingType.CHANNELS: 2}) == bytes.fromhex("02 00 04 01 02")


def test_request_rejects_values_that_do_not_fit():
    with pytest.raises(ValueError):
        pmd.start_request(0, {pmd.SettingType.SAMPLE_RATE: 70000})
    with pytest.raises(ValueError):
        pmd.stop_request(256)


# ------------------------------------------------------------------ responses
def test_success_response():
    start = pmd.OpCode.REQUEST_MEASUREMENT_START
    r = pmd.parse_response(bytes.fromhex("f0 02 00 00 00"), expect_op=start)
    assert (r.op_code, r.measurement_type, r.status, r.more, r.parameters) == (2, 0, 0, False, b"")
    assert r.status_name == "success"
    assert pmd.parse_response(bytes.fromhex("f0 03 00 00")).more is False


@pytest.mark.parametrize(("code", "name"), sorted(pmd.PMD_ERROR_NAMES.items())[1:])
def test_error_responses_raise_protocol_error(code, name):
    with pytest.raises(ProtocolError) as info:
        pmd.parse_response(bytes([0xF0, 0x02, 0x00, code]))
    assert info.value.code == code
    assert info.value.op_code == 2
    assert name in str(info.value)


def test_error_code_table():
    expected = [
        "success",
        "invalid op code",
        "invalid measurement type",
        "not supported",
        "invalid length",
        "invalid parameter",
        "already in state",
        "invalid resolution",
        "invalid sample rate",
        "invalid range",
        "invalid MTU",
        "invalid number of channels",
        "invalid state",
        "device in charger",
    ]
    assert [pmd.PMD_ERROR_NAMES[i] for i in range(14)] == expected


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ("f0 02 00", "short"),
        ("f1 02 00 00", "response_code"),
        ("01 00", "short"),
    ],
)
def test_malformed_responses(data, reason):
    with pytest.raises(DecodeError) as info:
        pmd.parse_response(bytes.fromhex(data))
    assert info.value.reason == reason


def test_response_to_another_op_is_rejected():
    with pytest.raises(DecodeError) as info:
        pmd.parse_response(bytes.fromhex("f0 03 00 00"), expect_op=2)
    assert info.value.reason == "op_code"


def test_parse_settings_ecg_and_acc():
    ecg = bytes.fromhex("f0 01 00 00 00 00 01 82 00 01 01 0e 00")
    assert pmd.parse_settings(ecg) == {
        pmd.SettingType.SAMPLE_RATE: (130,),
        pmd.SettingType.RESOLUTION: (14,),
    }
    acc = bytes.fromhex(
        "f0 01 02 00 00 00 04 19 00 32 00 64 00 c8 00 01 01 10 00 02 03 02 00 04 00 08 00"
    )
    assert pmd.parse_settings(acc) == {
        pmd.SettingType.SAMPLE_RATE: (25, 50, 100, 200),
        pmd.SettingType.RESOLUTION: (16,),
        pmd.SettingType.RANGE: (2, 4, 8),
    }


def test_parse_settings_across_more_packets():
    first = bytes.fromhex("f0 01 00 00 01 00 01 82 00")
    second = bytes.fromhex("f0 01 00 00 00 01 01 0e 00 04 01 01")
    assert pmd.parse_response(first).more is True
    assert pmd.parse_settings([first, second]) == {
        pmd.SettingType.SAMPLE_RATE: (130,),
        pmd.SettingType.RESOLUTION: (14,),
        pmd.SettingType.CHANNELS: (1,),
    }


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ("f0 01 00 00 00 09 01 00 00", "setting_type"),
        ("f0 01 00 00 00 00 02 82 00", "truncated"),
        ("f0 01 00 00 00 00", "truncated"),
        ("f0 02 00 00 00", "op_code"),
    ],
)
def test_parse_settings_errors(data, reason):
    with pytest.raises(DecodeError) as info:
        pmd.parse_settings(bytes.fromhex(data))
    assert info.value.reason == reason


def test_parse_settings_error_status():
    with pytest.raises(ProtocolError) as info:
        pmd.parse_settings(bytes.fromhex("f0 01 07 02"))
    assert info.value.code == 2


def test_parse_features():
    assert pmd.parse_features(bytes.fromhex("0f 05 00")) == {0, 2}
    assert pmd.parse_features(bytes.fromhex("0f 00 02")) == {9}
    with pytest.raises(DecodeError):
        pmd.parse_features(bytes.fromhex("f0 05"))


# ------------------------------------------------------------------ raw frames
def test_raw_frame_by_hand():
    data = header(0x00) + bytes.fromhex("01 00 00 ff ff ff 56 34 12 fe ff 7f 00 00 80 00 00 00")
    frame = pmd.decode_ecg_frame(data)
    assert frame.timestamp_ns == TS
    assert frame.compressed is False
    assert frame.samples_uv.dtype == np.int32
    assert frame.samples_uv.shape == (6, 1)
    assert frame.samples_uv[:, 0].tolist() == [1, -1, 0x123456, 0x7FFFFE, -(1 << 23), 0]
    assert pmd.encode_ecg_raw(TS, [1, -1, 0x123456, 0x7FFFFE, -(1 << 23), 0]) == data


def test_raw_frame_two_channels():
    data = header(0x00) + bytes.fromhex("0a 00 00 f6 ff ff 14 00 00 ec ff ff")
    frame = pmd.decode_ecg_frame(data, channels=2)
    assert frame.samples_uv.tolist() == [[10, -10], [20, -20]]


def test_raw_73_sample_round_trip():
    rng = np.random.default_rng(1)
    x = rng.integers(-(1 << 23), 1 << 23, size=73)
    data = pmd.encode_ecg_raw(TS, x)
    assert len(data) == 10 + 73 * 3
    np.testing.assert_array_equal(pmd.decode_ecg_frame(data).samples_uv[:, 0], x)


def test_empty_raw_frame():
    assert pmd.decode_ecg_frame(header(0)).samples_uv.shape == (0, 1)


# ------------------------------------------------------------------ delta frames
# Reference -5 in 14 bits (0x3FFB), then a 3-bit block of deltas [1, -1, 3, -4]:
# bits LSB-first 100 111 110 001 -> 0xF9 0x08; then an 8-bit block [100, -128].
DELTA_1CH = header(0x80) + bytes.fromhex("fb 3f 03 04 f9 08 08 02 64 80")
DELTA_1CH_SAMPLES = [-5, -4, -5, -2, -6, 94, -34]


def test_delta_frame_by_hand():
    frame = pmd.decode_ecg_frame(DELTA_1CH)
    assert frame.compressed is True
    assert frame.timestamp_ns == TS
    assert frame.samples_uv[:, 0].tolist() == DELTA_1CH_SAMPLES
    assert pmd.encode_ecg_delta(TS, DELTA_1CH_SAMPLES, block_size=4) == DELTA_1CH


def test_delta_reference_may_be_sign_extended_by_the_device():
    data = header(0x80) + bytes.fromhex("fb ff 03 04 f9 08 08 02 64 80")
    assert pmd.decode_ecg_frame(data).samples_uv[:, 0].tolist() == DELTA_1CH_SAMPLES


def test_delta_frame_two_channels_by_hand():
    # 16-bit references [1000, -1000]; 2-bit block, 2 samples x 2 channels:
    # deltas [1, -2], [-1, 0] -> bits 10 01 11 00 -> 0x39
    data = header(0x80) + bytes.fromhex("e8 03 18 fc 02 02 39")
    frame = pmd.decode_ecg_frame(data, channels=2, resolution_bits=16)
    assert frame.samples_uv.tolist() == [[1000, -1000], [1001, -1002], [1000, -1002]]
    assert pmd.encode_ecg_delta(TS, frame.samples_uv, resolution_bits=16) == data


def test_delta_frame_zero_width_block():
    data = header(0x80) + bytes.fromhex("07 00 00 03")
    assert pmd.decode_ecg_frame(data).samples_uv[:, 0].tolist() == [7, 7, 7, 7]


@pytest.mark.parametrize("channels", [1, 2, 3])
@pytest.mark.parametrize(("resolution", "scale"), [(14, 40), (16, 3000), (24, 2_000_000)])
@pytest.mark.parametrize("block_size", [1, 7, 30, 255])
def test_delta_round_trip(channels, resolution, scale, block_size):
    rng = np.random.default_rng(channels * 1000 + resolution + block_size)
    lim = 1 << (resolution - 1)
    steps = rng.integers(-scale, scale + 1, size=(73, channels))
    x = np.clip(np.cumsum(steps, axis=0), -lim, lim - 1)
    data = pmd.encode_ecg_delta(TS, x, block_size=block_size, resolution_bits=resolution)
    frame = pmd.decode_ecg_frame(data, channels=channels, resolution_bits=resolution)
    np.testing.assert_array_equal(frame.samples_uv, x)
    assert data[9] == 0x80


def test_delta_bit_widths_are_minimal():
    # deltas 0 -> width 1; 1 -> 2; -2 -> 2; 2 -> 3; 2**23 -> 25; -(2**31) -> 32
    for delta, width in [(0, 1), (1, 2), (-2, 2), (2, 3), (1 << 23, 25), (-(1 << 31), 32)]:
        data = pmd.encode_ecg_delta(TS, [0, delta], resolution_bits=14)
        assert data[12] == width, (delta, data[12])
        assert pmd.decode_ecg_frame(data).samples_uv[:, 0].tolist() == [0, delta]


def test_delta_encoder_rejects_bad_input():
    with pytest.raises(ValueError):
        pmd.encode_ecg_delta(TS, [])
    with pytest.raises(ValueError):
        pmd.encode_ecg_delta(TS, [1 << 13], resolution_bits=14)
    with pytest.raises(ValueError):
        pmd.encode_ecg_delta(TS, [0, 1], block_size=256)
    with pytest.raises(ValueError):
        pmd.encode_ecg_raw(TS, [1 << 23])
    with pytest.raises(ValueError):
        pmd.encode_ecg_raw(-1, [0])


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (header(0)[:9], "short"),
        (header(0, measurement=2) + bytes(3), "measurement_type"),
        (header(0x01) + bytes(3), "frame_type"),
        (header(0x81) + bytes(3), "frame_type"),
        (header(0x00) + bytes(4), "length"),
        (header(0x80) + bytes(1), "short"),
        (header(0x80) + bytes.fromhex("00 00 03"), "truncated"),
        (header(0x80) + bytes.fromhex("00 00 03 04 f9"), "truncated"),
        (header(0x80) + bytes.fromhex("00 00 21 01 00 00 00 00 00"), "bit_width"),
        (header(0x80) + bytes.fromhex("00 00 20 02 ff ff ff 7f ff ff ff 7f"), "range"),
    ],
)
def test_malformed_frames(data, reason):
    with pytest.raises(DecodeError) as info:
        pmd.decode_ecg_frame(data)
    assert info.value.reason == reason


def test_decode_error_is_value_error():
    with pytest.raises(ValueError):
        pmd.decode_ecg_frame(b"\x00")


# ------------------------------------------------------------------ sample times
def test_sample_times_end_at_the_timestamp():
    frame = pmd.decode_ecg_frame(pmd.encode_ecg_raw(TS, np.zeros(73, np.int64)))
    t = pmd.sample_times_ns(frame, 130.0)
    assert t.dtype == np.int64 and t.shape == (73,)
    assert t[-1] == TS
    np.testing.assert_allclose(np.diff(t), 1e9 / 130, atol=1)
    assert TS - t[0] == round(72 * 1e9 / 130)


def test_sample_times_from_previous_timestamp():
    frame = pmd.decode_ecg_frame(pmd.encode_ecg_raw(TS, np.zeros(4, np.int64)))
    t = pmd.sample_times_ns(frame, 1e6 / 1.005, previous_timestamp_ns=TS - 4_000)
    assert t.tolist() == [TS - 3_000, TS - 2_000, TS - 1_000, TS]  # the sensor's own spacing
    # a frame lost in between: the measured spacing is twice the nominal one, not used
    t = pmd.sample_times_ns(frame, 1e6, previous_timestamp_ns=TS - 8_000)
    assert t.tolist() == [TS - 3_000, TS - 2_000, TS - 1_000, TS]
    # a previous timestamp after this one (a reset) falls back to the nominal rate
    t = pmd.sample_times_ns(frame, 100.0, previous_timestamp_ns=TS + 5)
    assert t.tolist() == [TS - 30_000_000, TS - 20_000_000, TS - 10_000_000, TS]
