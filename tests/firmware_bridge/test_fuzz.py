"""Any bytes given to any decoder give a result or a DecodeError/ProtocolError, nothing else."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_bridge import hrs, open_profile, polar_pmd
from firmware_bridge.errors import DecodeError, ProtocolError

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

DECODERS: dict[str, Callable[[bytes], Any]] = {
    "ecg": polar_pmd.decode_ecg_frame,
    "ecg_2ch_16bit": lambda b: polar_pmd.decode_ecg_frame(b, channels=2, resolution_bits=16),
    "ecg_3ch_24bit": lambda b: polar_pmd.decode_ecg_frame(b, channels=3, resolution_bits=24),
    "ecg_1ch_32bit": lambda b: polar_pmd.decode_ecg_frame(b, resolution_bits=32),
    "pmd_header": polar_pmd.parse_frame_header,
    "pmd_response": polar_pmd.parse_response,
    "pmd_settings": polar_pmd.parse_settings,
    "pmd_features": polar_pmd.parse_features,
    "hr": hrs.parse_hr_measurement,
    "body_sensor_location": hrs.parse_body_sensor_location,
    "battery": hrs.parse_battery_level,
    "open_frame": open_profile.decode_open_frame,
}

TS = 599_616_023_171_427_290
VALID: list[bytes] = [
    polar_pmd.encode_ecg_raw(TS, np.arange(-36, 37) * 1000),
    polar_pmd.encode_ecg_delta(TS, np.cumsum(np.arange(-36, 37) ** 3 % 97 - 48), block_size=9),
    polar_pmd.encode_ecg_delta(
        TS, np.arange(60).reshape(20, 3) * 7919 % 65536 - 32768, block_size=4, resolution_bits=24
    ),
    bytes.fromhex("f0 01 00 00 00 00 01 82 00 01 01 0e 00"),
    bytes.fromhex("f0 02 00 05"),
    bytes.fromhex("0f 05 00"),
    hrs.encode_hr_measurement(300, contact=True, energy_kj=1234, rr_s=[0.8, 0.81]),
    open_profile.encode_open_frame(
        np.arange(24).reshape(8, 3) * 1000 - 12000,
        sequence=9,
        timestamp_us=10**15,
        sample_rate_hz=500,
        sample_format=open_profile.FORMAT_INT24,
    ),
]


def check_all(data: bytes) -> None:
    for name, decode in DECODERS.items():
        try:
            decode(data)
        except (DecodeError, ProtocolError):
            pass
        except Exception as exc:  # pragma: no cover - a failure is the point of the test
            raise AssertionError(f"{name} raised {type(exc).__name__}: {exc}") from exc


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes(data):
    check_all(data)


@FUZZ
@given(
    st.binary(max_size=2).flatmap(
        lambda prefix: st.tuples(st.just(prefix), st.binary(max_size=120))
    )
)
def test_random_bytes_with_plausible_prefix(parts):
    prefix, rest = parts
    for head in (
        b"\x00" + rest[:8] + b"\x80",
        b"\x00" + rest[:8] + b"\x00",
        b"\xf0\x01\x00\x00",
        b"\xe1",
    ):
        check_all(head + prefix + rest)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    frame = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "set", "cut", "extend", "delete"]))
        if action in ("flip", "set", "delete") and frame:
            i = draw(st.integers(0, len(frame) - 1))
            if action == "flip":
                frame[i] ^= 1 << draw(st.integers(0, 7))
            elif action == "set":
                frame[i] = draw(st.integers(0, 255))
            else:
                del frame[i]
        elif action == "cut":
            frame = frame[: draw(st.integers(0, len(frame)))]
        else:
            frame += draw(st.binary(min_size=1, max_size=8))
    return bytes(frame)


@FUZZ
@given(mutated())
def test_mutated_valid_frames(data):
    check_all(data)


def test_valid_frames_decode():
    assert polar_pmd.decode_ecg_frame(VALID[0]).samples_uv.shape == (73, 1)
    assert polar_pmd.decode_ecg_frame(VALID[1]).samples_uv.shape == (73, 1)
    frame = polar_pmd.decode_ecg_frame(VALID[2], channels=3, resolution_bits=24)
    assert frame.samples_uv.shape == (20, 3)
    assert open_profile.decode_open_frame(VALID[7]).samples_uv.shape == (8, 3)
