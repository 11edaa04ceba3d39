"""Sensor profiles: which characteristics to use, how to start a stream, how to decode it.

A profile turns one notification payload into a :class:`~firmware_bridge.assembler.DecodedFrame`
(sensor time of the first sample, samples in millivolts) or raises
:class:`~firmware_bridge.errors.DecodeError`.
"""

from __future__ import annotations

import abc

import numpy as np

from firmware_bridge import hrs, open_profile, polar_pmd
from firmware_bridge.assembler import DecodedFrame
from firmware_bridge.errors import DecodeError
from firmware_bridge.transport import Transport

UV_PER_MV = 1000.0


class Profile(abc.ABC):
    """How to talk to one kind of sensor."""

    name: str
    fs: float
    n_leads: int
    data_uuid: str
    reorder_depth: int = 0
    #: Heart Rate Measurement characteristic to subscribe to as well, if the sensor has one.
    hr_uuid: str | None = None

    @abc.abstractmethod
    def decode(self, payload: bytes) -> DecodedFrame: ...

    @abc.abstractmethod
    async def start(self, transport: Transport) -> None:
        """Ask the sensor to stream (after notifications are enabled)."""

    @abc.abstractmethod
    async def stop(self, transport: Transport) -> None:
        """Ask the sensor to stop streaming."""


class PolarH10(Profile):
    """Polar H10 ECG over PMD: 130 Hz, one lead, raw or delta-compressed frames."""

    name = "Polar H10 (PMD ECG)"
    fs = 130.0
    n_leads = 1
    data_uuid = polar_pmd.PMD_DATA_UUID
    control_uuid = polar_pmd.PMD_CONTROL_POINT_UUID
    hr_uuid = hrs.HEART_RATE_MEASUREMENT_UUID

    def decode(self, payload: bytes) -> DecodedFrame:
        frame = polar_pmd.decode_ecg_frame(payload)
        n = frame.samples_uv.shape[0]
        if n == 0:
            raise DecodeError("frame holds no samples", reason="empty")
        first_ns = frame.timestamp_ns - int(round((n - 1) * 1e9 / self.fs))
        return DecodedFrame(first_ns, (frame.samples_uv / UV_PER_MV).astype(np.float32), self.fs)

    async def start(self, transport: Transport) -> None:
        await transport.start_notify(self.control_uuid, lambda _t, _b: None)
        await transport.write(self.control_uuid, polar_pmd.start_request())

    async def stop(self, transport: Transport) -> None:
        await transport.write(self.control_uuid, polar_pmd.stop_request())


class OpenEcgDevice(Profile):
    """The open ECG profile (``OPEN_PROFILE.md``): sequence numbers, int16/int24, 1–12 leads."""

    name = "open ECG profile"
    data_uuid = open_profile.OPEN_ECG_DATA_UUID
    control_uuid = open_profile.OPEN_ECG_CONTROL_UUID
    reorder_depth = 4

    def __init__(self, fs: float = 250.0, n_leads: int = 1) -> None:
        self.fs, self.n_leads = float(fs), n_leads

    def decode(self, payload: bytes) -> DecodedFrame:
        frame = open_profile.decode_open_frame(payload)
        if frame.sample_rate_hz != self.fs or frame.samples_uv.shape[1] != self.n_leads:
            raise DecodeError(
                f"frame at {frame.sample_rate_hz} Hz × {frame.samples_uv.shape[1]} leads, "
                f"session expects {self.fs:g} Hz × {self.n_leads}",
                reason="format",
            )
        samples = (frame.samples_uv / UV_PER_MV).astype(np.float32)
        return DecodedFrame(frame.timestamp_us * 1000, samples, self.fs, frame.sequence)

    async def start(self, transport: Transport) -> None:
        await transport.write(self.control_uuid, open_profile.start_command())

    async def stop(self, transport: Transport) -> None:
        await transport.write(self.control_uuid, open_profile.stop_command())
