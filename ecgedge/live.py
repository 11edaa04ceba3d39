"""Live streams from sensors (BLE or simulated) into the SDK, shown in the terminal."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from firmware_bridge.profiles import OpenEcgDevice, PolarH10, Profile
from firmware_bridge.session import SensorSession, SessionStats
from firmware_bridge.sim_transport import SimulatedTransport
from firmware_bridge.simulator import Impairments, VirtualH10
from firmware_bridge.transport import Transport
from sdk.bundle import Bundle
from sdk.calibration.profile import UserProfile
from sdk.events import Event
from sdk.pipeline import StreamPipeline

#: The record name ``Recorder.save_wfdb`` (and ``ecgedge stream --save``) writes by default.
SESSION_NAME = "session"
#: The files of a saved session: header, signal and (when samples were lost) gap annotations.
SESSION_SUFFIXES = (".hea", ".dat", ".gap")
#: The largest |sample| a saved session holds (32-bit format at 1 µV); beyond it: invalid.
MAX_SAVED_MV = 2_000_000.0


def saved_session(folder: Path, name: str = SESSION_NAME) -> list[Path]:
    """The files of a session already saved in ``folder`` as ``name`` (empty: the name is free)."""
    files = (folder / f"{name}{suffix}" for suffix in SESSION_SUFFIXES)
    return [f for f in files if f.exists() or f.is_symlink()]


@dataclass
class Recorder:
    """A sink in front of the pipeline that keeps what was received, gaps included."""

    pipeline: StreamPipeline
    fs: float
    blocks: list[tuple[float, np.ndarray]] = field(default_factory=list)

    def push(
        self, samples: np.ndarray, *, timestamp_s: float | None = None, fs: float | None = None
    ) -> Any:
        """Push to the pipeline; a block it accepted is kept (one it refuses raises, unkept)."""
        events = self.pipeline.push(samples, timestamp_s=timestamp_s, fs=fs)
        block = np.ma.filled(np.ma.asarray(samples, dtype=np.float32), np.nan)  # masked: lost
        self.blocks.append((float(timestamp_s or 0.0), block.reshape(block.shape[0], -1)))
        return events

    def save_wfdb(self, folder: Path, name: str = SESSION_NAME) -> Path:
        """Write a WFDB record; lost samples are invalid (NaN) and each gap is annotated.

        Samples are stored in 32-bit format at 1 µV (±2.1 kV: any sensor's range, a corrupted
        frame's too); non-finite received samples are stored as invalid, and the header says
        how many. Each file appears whole (written aside, then renamed; a failed write leaves
        none of the new files), the header last. A record of that name in ``folder`` is
        replaced, its ``.gap`` file too: one from an earlier session never stays beside a
        record without gaps (``ecgedge stream --save`` refuses such a folder before streaming,
        :func:`saved_session`, so a kill between the renames cannot mix two sessions there).
        """
        import wfdb

        if not self.blocks:
            raise ValueError("nothing was received, nothing to save")
        end = max(int(round(ts * self.fs)) + b.shape[0] for ts, b in self.blocks)
        leads = self.blocks[0][1].shape[1]
        signal = np.full((end, leads), np.nan)
        gaps, expected = [], 0
        for ts, block in self.blocks:
            start = int(round(ts * self.fs))
            if start > expected:
                gaps.append((expected, start - expected))
            signal[start : start + block.shape[0]] = block
            expected = start + block.shape[0]
        folder.mkdir(parents=True, exist_ok=True)
        private = os.umask(0o077)  # health data: never readable by others, not even briefly
        aside = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=folder))
        try:
            self._write(wfdb, aside, name, signal, leads, gaps)
            for suffix in (".dat", ".gap", ".hea"):  # the header, which readers open first, last
                if (aside / f"{name}{suffix}").exists():
                    os.replace(aside / f"{name}{suffix}", folder / f"{name}{suffix}")
                else:
                    (folder / f"{name}{suffix}").unlink(missing_ok=True)
        finally:
            os.umask(private)
            shutil.rmtree(aside, ignore_errors=True)
        return folder / name

    def _write(
        self,
        wfdb: Any,
        folder: Path,
        name: str,
        signal: np.ndarray,
        leads: int,
        gaps: list[tuple[int, int]],
    ) -> None:
        """The record and its ``.gap`` annotation (or none), written fresh into ``folder``
        under the umask :meth:`save_wfdb` sets: every file mode 0600."""
        with np.errstate(invalid="ignore"):
            unusable = ~(np.abs(signal) <= MAX_SAVED_MV)  # NaN (lost), inf, out of range
        invalid = sum(int((~(np.abs(b) <= MAX_SAVED_MV)).sum()) for _, b in self.blocks)
        wfdb.wrsamp(
            name,
            fs=self.fs,
            units=["mV"] * leads,
            sig_name=[f"ECG{i}" for i in range(leads)],
            p_signal=np.where(unusable, np.nan, signal),
            fmt=["32"] * leads,
            adc_gain=[1000.0] * leads,
            baseline=[0] * leads,
            comments=[
                f"ecgedge: {invalid} received samples not finite or beyond "
                f"{MAX_SAVED_MV:g} mV, stored as invalid"
            ]
            if invalid
            else None,
            write_dir=str(folder),
        )
        if gaps:
            wfdb.wrann(
                name,
                "gap",
                np.array([g[0] for g in gaps]),
                symbol=['"'] * len(gaps),
                aux_note=[f"gap {n} samples" for _, n in gaps],
                write_dir=str(folder),
            )


def simulated(
    signal_mv: np.ndarray,
    fs: float,
    impairments: Impairments,
    *,
    speed: float,
    compressed: bool = False,
) -> tuple[Transport, Profile]:
    """A virtual Polar H10 playing ``signal_mv`` over an impaired link; ``speed`` 0 = as fast
    as possible, on virtual time."""
    return SimulatedTransport(
        VirtualH10(signal_mv, fs, compressed=compressed), impairments, speed=speed
    ), PolarH10()


def ble(target: str, profile: str, allow: list[str] | None) -> tuple[Transport, Profile]:
    from firmware_bridge.ble import BleakTransport

    prof: Profile = PolarH10() if profile == "h10" else OpenEcgDevice()
    return BleakTransport(target, allow_list=allow), prof


def run_live(
    transport: Transport,
    profile: Profile,
    bundle: Bundle | Path,
    *,
    on_event: Callable[[Event], None],
    save: Path | None = None,
    user_profile: UserProfile | Path | None = None,
    options: Mapping[str, Any] | None = None,
) -> tuple[StreamPipeline, SessionStats, Path | None]:
    """Stream until the source ends (or Ctrl-C); return the pipeline, the session's counters
    and where the record was saved. ``bundle``: a loaded bundle or its directory;
    ``user_profile``: a calibration profile (or its file) to apply, on the SDK's terms (one
    that cannot be used leaves the bundle's defaults, the reason in ``profile_error``);
    ``options``: further :class:`~sdk.pipeline.StreamPipeline` keywords (``hop_s``,
    ``stateful``, ``denoise``, ``lead``)."""
    pipeline = StreamPipeline(
        bundle,
        fs_in=profile.fs,
        n_leads=profile.n_leads,
        on_event=on_event,
        profile=user_profile,
        **dict(options or {}),
    )
    sink = Recorder(pipeline, profile.fs)
    session = SensorSession(transport, profile, sink)

    async def main() -> SessionStats:
        try:
            return await session.run()
        except asyncio.CancelledError:
            session.stop()
            return session.stats

    try:
        stats = transport.run(main())
    except KeyboardInterrupt:
        stats = session.stats
    pipeline.close()
    saved = sink.save_wfdb(save) if save is not None else None
    return pipeline, stats, saved
