"""Sensor profiles: which characteristics to use, how to start a stream, how to decode it.

A profile turns one notification payload into a :class:`~firmware_bridge.assembler.DecodedFrame`
(sensor time of the first sample, samples in millivolts) or raises
:class:`~firmware_bridge.errors.DecodeError`. It also says how many samples a frame may hold,
which :class:`~firmware_bridge.session.SensorSession` enforces (``max_frame_samples``).
"""

from __future__ import annotations

import abc
import asyncio

import numpy as np

from firmware_bridge import hrs, open_profile, polar_pmd
from firmware_bridge.assembler import DecodedFrame
from firmware_bridge.errors import DecodeError, ProtocolError, TransportError
from firmware_bridge.transport import Transport

UV_PER_MV = 1000.0

#: first bytes of a PMD control-point answer to a start request
_START_ANSWER = bytes(
    (polar_pmd.CONTROL_POINT_RESPONSE, polar_pmd.OpCode.REQUEST_MEASUREMENT_START)
)
#: PMD status "already in state": the sensor is streaming already
_ALREADY_IN_STATE = 6


class Profile(abc.ABC):
    """How to talk to one kind of sensor."""

    name: str
    fs: float
    n_leads: int
    data_uuid: str
    reorder_depth: int = 0
    #: Heart Rate Measurement characteristic to subscribe to as well, if the sensor has one.
    hr_uuid: str | None = None
    #: most samples (per lead) one frame can hold under the protocol; a frame claiming more
    #: is damaged (a profile that does not say gets a bound nothing real reaches)
    max_frame_samples: int = 65_535

    @abc.abstractmethod
    def decode(self, payload: bytes) -> DecodedFrame: ...

    @abc.abstractmethod
    async def start(self, transport: Transport) -> None:
        """Ask the sensor to stream (after notifications are enabled)."""

    @abc.abstractmethod
    async def stop(self, transport: Transport) -> None:
        """Ask the sensor to stop streaming."""


class PolarH10(Profile):
    """Polar H10 ECG over PMD: 130 Hz, one lead, raw or delta-compressed frames.

    PMD frames have no length field and no CRC. A frame claiming more samples than the
    longest notification holds is refused; a frame cut at a whole sample cannot be told from
    a real shorter one (the H10 sends 72- or 73-sample frames at Polar's MTU of 232:
    polar-ble-sdk issue #71), so its samples would land late by what was cut (BLE's link-layer
    CRC makes such a cut unlikely; the assembler counts the overlap it causes).
    """

    name = "Polar H10 (PMD ECG)"
    fs = 130.0
    n_leads = 1
    data_uuid = polar_pmd.PMD_DATA_UUID
    control_uuid = polar_pmd.PMD_CONTROL_POINT_UUID
    hr_uuid = hrs.HEART_RATE_MEASUREMENT_UUID
    max_frame_samples = polar_pmd.MAX_ECG_FRAME_SAMPLES
    #: how long the sensor may take to answer the start request (s)
    response_timeout_s: float = 5.0

    def decode(self, payload: bytes) -> DecodedFrame:
        frame = polar_pmd.decode_ecg_frame(payload)
        n = frame.samples_uv.shape[0]
        if n == 0:
            raise DecodeError("frame holds no samples", reason="empty")
        first_ns = frame.timestamp_ns - int(round((n - 1) * 1e9 / self.fs))
        return DecodedFrame(first_ns, (frame.samples_uv / UV_PER_MV).astype(np.float32), self.fs)

    async def start(self, transport: Transport) -> None:
        """Request the ECG stream and wait for the sensor's answer on the control point.

        Raises
        ------
        ProtocolError
            The sensor refused (e.g. status 13, "device in charger"); "already in state"
            counts as started.
        DecodeError
            The answer is malformed.
        TransportError
            No answer within :attr:`response_timeout_s`, or the link failed.
        """
        answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        def on_indication(_host_time_s: float, data: bytes) -> None:
            if data[:2] == _START_ANSWER and not answer.done():  # other answers are not ours
                answer.set_result(data)

        await transport.start_notify(self.control_uuid, on_indication)
        await transport.write(self.control_uuid, polar_pmd.start_request())
        try:
            data = await asyncio.wait_for(answer, self.response_timeout_s)
        except asyncio.TimeoutError:  # not yet the builtin on Python 3.10
            raise TransportError(
                f"no answer to the PMD start request within {self.response_timeout_s:g} s"
            ) from None
        try:
            polar_pmd.parse_response(data, expect_op=polar_pmd.OpCode.REQUEST_MEASUREMENT_START)
        except ProtocolError as exc:
            if exc.code != _ALREADY_IN_STATE:
                raise

    async def stop(self, transport: Transport) -> None:
        await transport.write(self.control_uuid, polar_pmd.stop_request())


class OpenEcgDevice(Profile):
    """The open ECG profile (``OPEN_PROFILE.md``): sequence numbers, int16/int24, 1–12 leads.

    A frame flagged ``LEAD_OFF`` decodes with every sample NaN (``lead_off`` set): its
    timing stands, its values do not. A frame declares its sample count and is CRC-checked,
    so the count may vary from frame to frame.
    """

    name = "open ECG profile"
    data_uuid = open_profile.OPEN_ECG_DATA_UUID
    control_uuid = open_profile.OPEN_ECG_CONTROL_UUID
    reorder_depth = 4
    max_frame_samples = open_profile.MAX_SAMPLES

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
        if frame.lead_off:  # an electrode was off: what the leads measured is no ECG
            samples = np.full(frame.samples_uv.shape, np.nan, np.float32)
        else:
            samples = (frame.samples_uv / UV_PER_MV).astype(np.float32)
        return DecodedFrame(
            frame.timestamp_us * 1000, samples, self.fs, frame.sequence, lead_off=frame.lead_off
        )

    async def start(self, transport: Transport) -> None:
        await transport.write(self.control_uuid, open_profile.start_command())

    async def stop(self, transport: Transport) -> None:
        await transport.write(self.control_uuid, open_profile.stop_command())
