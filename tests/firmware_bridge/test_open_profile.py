"""Open ECG profile: the test vectors of OPEN_PROFILE.md byte for byte, CRC, errors."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import firmware_bridge
from firmware_bridge import open_profile as op
from firmware_bridge.errors import DecodeError

SPEC = Path(firmware_bridge.__file__).with_name("OPEN_PROFILE.md")

# The inputs each documented vector encodes (as stated in OPEN_PROFILE.md's prose).
VECTORS = {
    "v1-one-lead-int16": dict(
        samples_uv=np.array([[0], [1], [-1], [1000], [-1000], [32767], [-32768]]),
        sequence=1,
        timestamp_us=1_700_000_000_000_000,
        sample_rate_hz=250,
        sample_format=op.FORMAT_INT16,
        flags=op.FLAG_UNIX_EPOCH,
    ),
    "v2-three-leads-int24": dict(
        samples_uv=np.array(
            [[0, 100, -100], [8388607, -8388608, 1], [-1, 2, -3], [1234567, -1234567, 0]]
        ),
        sequence=42,
        timestamp_us=123_456_789,
        sample_rate_hz=500,
        sample_format=op.FORMAT_INT24,
        flags=op.FLAG_LEAD_OFF,
    ),
    "v3a-sequence-65535": dict(
        samples_uv=np.array([[10], [-20]]),
        sequence=65535,
        timestamp_us=1_000_000,
        sample_rate_hz=130,
        sample_format=op.FORMAT_INT16,
        flags=0,
    ),
    "v3b-sequence-0": dict(
        samples_uv=np.array([[30]]),
        sequence=0,
        timestamp_us=1_015_385,
        sample_rate_hz=130,
        sample_format=op.FORMAT_INT16,
        flags=0,
    ),
}


def documented_vectors() -> dict[str, bytes]:
    text = SPEC.read_text(encoding="utf-8")
    blocks = re.findall(r"```hex (\S+)\n(.*?)```", text, flags=re.S)
    return {name: bytes.fromhex("".join(body.split())) for name, body in blocks}


def crc_bitwise(data: bytes) -> int:
    """CRC-16/CCITT-FALSE written out bit by bit, independent of binascii."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def test_spec_documents_every_vector():
    assert set(documented_vectors()) == set(VECTORS)
    assert len(VECTORS) >= 3


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_vector_encodes_byte_for_byte(name):
    assert op.encode_open_frame(**VECTORS[name]) == documented_vectors()[name]


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_vector_decodes_to_its_inputs(name):
    data = documented_vectors()[name]
    want = VECTORS[name]
    frame = op.decode_open_frame(data)
    np.testing.assert_array_equal(frame.samples_uv, want["samples_uv"])
    assert frame.samples_uv.dtype == np.int32
    assert (
        frame.sequence,
        frame.timestamp_us,
        frame.sample_rate_hz,
        frame.sample_format,
        frame.flags,
    ) == (
        want["sequence"],
        want["timestamp_us"],
        want["sample_rate_hz"],
        want["sample_format"],
        want["flags"],
    )
    assert crc_bitwise(data[:-2]) == int.from_bytes(data[-2:], "little")


def test_flag_properties():
    vec = documented_vectors()
    v1, v2 = (
        op.decode_open_frame(vec["v1-one-lead-int16"]),
        op.decode_open_frame(vec["v2-three-leads-int24"]),
    )
    assert (v1.unix_epoch, v1.lead_off, v1.gap) == (True, False, False)
    assert (v2.unix_epoch, v2.lead_off, v2.gap) == (False, True, False)


def test_sequence_wrap():
    vec = documented_vectors()
    a = op.decode_open_frame(vec["v3a-sequence-65535"])
    b = op.decode_open_frame(vec["v3b-sequence-0"])
    assert op.next_sequence(a.sequence) == b.sequence == 0
    assert op.sequence_gap(a.sequence, b.sequence) == 0
    assert op.sequence_gap(65534, 1) == 2


def test_crc_check_value():
    assert op.crc16_ccitt_false(b"123456789") == 0x29B1 == crc_bitwise(b"123456789")
    rng = np.random.default_rng(5)
    for n in (0, 1, 17, 300):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert op.crc16_ccitt_false(data) == crc_bitwise(data)


def test_control_commands():
    assert op.start_command() == b"\x01"
    assert op.stop_command() == b"\x02"
    assert op.set_time_command(1_700_000_000_000_000) == bytes.fromhex("03 00 40 1e 18 24 0a 06 00")


def test_uuids_are_128_bit_and_distinct():
    ids = {op.OPEN_ECG_SERVICE_UUID, op.OPEN_ECG_DATA_UUID, op.OPEN_ECG_CONTROL_UUID}
    assert len(ids) == 3
    assert all(re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", u) for u in ids)
    assert all(u in SPEC.read_text(encoding="utf-8") for u in ids)


def with_crc(body: bytes) -> bytes:
    return body + op.crc16_ccitt_false(body).to_bytes(2, "little")


def test_decode_errors():
    good = documented_vectors()["v1-one-lead-int16"]
    cases = {
        "short": good[:18],
        "magic": bytes([0xD1]) + good[1:],
        "version": bytes([0xE2]) + good[1:],
        "crc": good[:-1] + bytes([good[-1] ^ 1]),
        "format": with_crc(good[:14] + b"\x04" + good[15:-2]),
        "length": with_crc(good[:-2] + b"\x00"),
    }
    for reason, data in cases.items():
        with pytest.raises(DecodeError) as info:
            op.decode_open_frame(data)
        assert info.value.reason == reason, reason
    for field, value in ((15, 0), (15, 13), (16, 0)):
        bad = bytearray(good[:-2])
        bad[field] = value
        with pytest.raises(DecodeError) as info:
            op.decode_open_frame(with_crc(bytes(bad)))
        assert info.value.reason == "format"
    zero_rate = with_crc(good[:12] + b"\x00\x00" + good[14:-2])
    with pytest.raises(DecodeError, match="0 Hz"):
        op.decode_open_frame(zero_rate)


@pytest.mark.parametrize("fmt", [op.FORMAT_INT16, op.FORMAT_INT24])
@pytest.mark.parametrize("leads", [1, 2, 12])
def test_round_trip(fmt, leads):
    rng = np.random.default_rng(fmt * 100 + leads)
    lim = 1 << (8 * fmt - 1)
    x = rng.integers(-lim, lim, size=(255 if leads < 12 else 20, leads))
    data = op.encode_open_frame(
        x, sequence=7, timestamp_us=2**64 - 1, sample_rate_hz=65535, sample_format=fmt, flags=0xFF
    )
    frame = op.decode_open_frame(data)
    np.testing.assert_array_equal(frame.samples_uv, x)
    assert (frame.timestamp_us, frame.flags) == (2**64 - 1, 0xFF)


def test_encoder_rejects_bad_input():
    kw = dict(sequence=0, timestamp_us=0, sample_rate_hz=250)
    for samples in ([], [[1] * 13], [1 << 15], np.zeros(256, np.int64), [0.5]):
        with pytest.raises(ValueError):
            op.encode_open_frame(samples, **kw)
    for key, value in (
        ("sequence", 65536),
        ("sample_rate_hz", 0),
        ("timestamp_us", -1),
        ("flags", 256),
    ):
        with pytest.raises(ValueError):
            op.encode_open_frame([0], **{**kw, key: value})
    with pytest.raises(ValueError):
        op.encode_open_frame([0], sample_format=4, **kw)
