"""Simulated sensors that emit the same bytes as real ones, over an impaired radio link.

:class:`VirtualH10` plays any signal as Polar PMD ECG frames (raw or delta-compressed) at
130 Hz; :class:`VirtualOpenDevice` as open-profile frames. :class:`SimulatedTransport`
delivers them as notifications on a virtual clock, in real time, ``speed`` times faster or
as fast as possible, with injectable loss, jitter, duplication, corruption, clock drift and
disconnects. The sensor keeps sampling while the link is down, so the frames it could not
send are lost, as on a real strap.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from firmware_bridge import hrs, open_profile, polar_pmd
from sdk.resample import resample
from sdk.rpeaks import detect_rpeaks

#: The virtual H10's clock at the first sample: ns since 2000-01-01 (2026-11-21T00:00:00Z).
H10_START_NS = 848_534_400 * 10**9


@dataclass(frozen=True)
class Impairments:
    """What the radio and the sensor do wrong. Probabilities are per notification."""

    loss: float = 0.0
    jitter_ms: float = 0.0  # mean of an exponential extra delay
    duplicate: float = 0.0
    corrupt: float = 0.0
    #: one bit of the frame's sensor timestamp flips (uniform over its 64 bits): PMD frames
    #: decode as valid, the open profile's CRC rejects them
    timestamp_glitch: float = 0.0
    disconnect_every_s: float = 0.0  # 0 = never
    outage_s: float = 2.0  # how long the link stays down after a disconnect
    base_latency_ms: float = 8.0
    drift_ppm: float = 0.0  # sensor clock rate error against the host
    time_reset_on_reconnect: bool = False  # the H10 quirk: its clock restarts
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("loss", "duplicate", "corrupt", "timestamp_glitch"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must lie in [0, 1), got {getattr(self, name)}")
        for name in ("jitter_ms", "disconnect_every_s", "outage_s"):
            if not 0.0 <= getattr(self, name) < math.inf:  # NaN fails too
                raise ValueError(f"{name} must be finite and >= 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class Frame:
    """One notification the sensor sends: its first sample's index and the payload."""

    first_index: int
    n: int
    payload: bytes


class VirtualSensor(abc.ABC):
    """A sensor playing ``signal_mv`` (n,) or (n, leads) resampled to its own rate.

    Samples must lie in ``[-limit_uv, limit_uv)`` µV, what the sensor's frames can carry;
    a signal beyond raises ``ValueError`` here rather than failing the playback later.
    """

    fs: float
    frame_samples: int
    data_uuid: str
    #: bytes of a payload holding the sensor timestamp (uint64 little-endian)
    timestamp_field: slice
    control_uuid: str

    def __init__(self, signal_mv: np.ndarray, fs_signal: float, *, limit_uv: int) -> None:
        x = np.asarray(signal_mv, dtype=np.float64)
        x = x[:, None] if x.ndim == 1 else x
        y = resample(x, fs_signal, self.fs) if fs_signal != self.fs else x
        self.samples_uv = np.round(np.asarray(y) * 1000.0).astype(np.int32)  # (n, leads)
        lo, hi = int(self.samples_uv.min(initial=0)), int(self.samples_uv.max(initial=0))
        if lo < -limit_uv or hi >= limit_uv:
            raise ValueError(
                f"signal spans {lo} to {hi} µV; {type(self).__name__} frames carry "
                f"{-limit_uv} to {limit_uv - 1} µV"
            )

    @property
    def duration_s(self) -> float:
        return self.samples_uv.shape[0] / self.fs

    def frames(self, epoch_ns: int = 0) -> Iterator[Frame]:
        """Every frame of the recording, in order; ``epoch_ns`` shifts the sensor clock."""
        for k, start in enumerate(range(0, self.samples_uv.shape[0], self.frame_samples)):
            chunk = self.samples_uv[start : start + self.frame_samples]
            yield Frame(start, chunk.shape[0], self.encode(k, start, chunk, epoch_ns))

    def side_notifications(self) -> Iterator[tuple[int, str, bytes]]:
        """Other notifications (e.g. heart rate): (sample index they follow, uuid, payload)."""
        return iter(())

    def encode_at(self, k: int, frame: Frame, epoch_ns: int) -> bytes:
        """Frame ``k`` again, with the sensor clock shifted by ``epoch_ns``."""
        chunk = self.samples_uv[frame.first_index : frame.first_index + frame.n]
        return self.encode(k, frame.first_index, chunk, epoch_ns)

    @abc.abstractmethod
    def encode(self, k: int, first_index: int, chunk: np.ndarray, epoch_ns: int) -> bytes: ...

    @abc.abstractmethod
    def is_start(self, command: bytes) -> bool: ...

    @abc.abstractmethod
    def is_stop(self, command: bytes) -> bool: ...

    def answer(self, command: bytes) -> bytes | None:
        """The control-point indication answering ``command``, if the sensor sends one."""
        return None


class VirtualH10(VirtualSensor):
    """Polar H10: 130 Hz single-lead ECG in PMD frames, timestamp = last sample.

    Compressed frames hold 14-bit samples (within ±8.192 mV), raw ones 24-bit.
    """

    fs = 130.0
    data_uuid = polar_pmd.PMD_DATA_UUID
    timestamp_field = slice(1, 9)
    control_uuid = polar_pmd.PMD_CONTROL_POINT_UUID

    def __init__(
        self,
        signal_mv: np.ndarray,
        fs_signal: float,
        *,
        compressed: bool = False,
        frame_samples: int = 73,
        start_ns: int = H10_START_NS,
    ) -> None:
        bits = polar_pmd.ECG_START_SETTINGS[polar_pmd.SettingType.RESOLUTION] if compressed else 24
        super().__init__(signal_mv, fs_signal, limit_uv=1 << (bits - 1))
        self.compressed, self.frame_samples, self.start_ns = compressed, frame_samples, start_ns

    def side_notifications(self) -> Iterator[tuple[int, str, bytes]]:
        """Heart Rate Measurement once a second: rate and the RR intervals that ended in it."""
        peaks = detect_rpeaks(self.samples_uv[:, 0] / 1000.0, self.fs)
        rr = np.diff(peaks) / self.fs
        per_s = int(self.fs)
        for end in range(per_s, self.samples_uv.shape[0] + 1, per_s):
            ended = (peaks[1:] > end - per_s) & (peaks[1:] <= end)
            recent = rr[(peaks[1:] <= end)][-8:]
            bpm = int(round(60.0 / float(np.median(recent)))) if recent.size else 0
            payload = hrs.encode_hr_measurement(bpm, contact=True, rr_s=tuple(rr[ended]))
            yield end, hrs.HEART_RATE_MEASUREMENT_UUID, payload

    def is_start(self, command: bytes) -> bool:
        return command[:1] == bytes((polar_pmd.OpCode.REQUEST_MEASUREMENT_START,))

    def is_stop(self, command: bytes) -> bool:
        return command[:1] == bytes((polar_pmd.OpCode.STOP_MEASUREMENT,))

    def answer(self, command: bytes) -> bytes:
        """Success: ``F0 | op code | measurement type | 00 (status) | 00 (more)``."""
        return bytes((polar_pmd.CONTROL_POINT_RESPONSE, *command[:2].ljust(2, b"\0"), 0, 0))

    def sensor_ns(self, index: int, epoch_ns: int = 0) -> int:
        return self.start_ns + epoch_ns + int(round(index * 1e9 / self.fs))

    def encode(self, k: int, first_index: int, chunk: np.ndarray, epoch_ns: int) -> bytes:
        ts = self.sensor_ns(first_index + chunk.shape[0] - 1, epoch_ns)
        lead0 = chunk[:, 0]
        return (
            polar_pmd.encode_ecg_delta(ts, lead0)
            if self.compressed
            else polar_pmd.encode_ecg_raw(ts, lead0)
        )


class VirtualOpenDevice(VirtualSensor):
    """A device speaking the open ECG profile (sequence numbers, int16 or int24)."""

    data_uuid = open_profile.OPEN_ECG_DATA_UUID
    timestamp_field = slice(4, 12)
    control_uuid = open_profile.OPEN_ECG_CONTROL_UUID

    def __init__(
        self,
        signal_mv: np.ndarray,
        fs_signal: float,
        *,
        fs: float = 250.0,
        frame_samples: int = 50,
        sample_format: int = open_profile.FORMAT_INT24,
    ) -> None:
        self.fs = float(fs)
        super().__init__(signal_mv, fs_signal, limit_uv=1 << (8 * sample_format - 1))
        self.frame_samples, self.sample_format = frame_samples, sample_format

    def is_start(self, command: bytes) -> bool:
        return command == open_profile.start_command()

    def is_stop(self, command: bytes) -> bool:
        return command == open_profile.stop_command()

    def encode(self, k: int, first_index: int, chunk: np.ndarray, epoch_ns: int) -> bytes:
        ts_us = (epoch_ns // 1000) + int(round(first_index * 1e6 / self.fs))
        return open_profile.encode_open_frame(
            chunk,
            sequence=k % 65536,
            timestamp_us=ts_us,
            sample_rate_hz=int(self.fs),
            sample_format=self.sample_format,
        )
