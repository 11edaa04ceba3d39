"""Real ECG noise from the MIT-BIH Noise Stress Test Database, split in time, and mixing.

Sources (all 2 channels, 360 Hz in the files; everything here is at the model rate after
:class:`sdk.resample.StreamingResampler`):

- ``bw`` baseline wander and ``ma`` muscle artefact: the NSTDB noise records.
- ``em`` electrode motion: the ``em`` record is not in the data root. It is recovered where
  ``nst`` added it, ``118e00 − 118`` in digital units over the noisy segments (minute 5 on,
  two minutes noisy / two minutes clean), each segment's mean removed (the difference holds
  a different constant in each segment), the last sample of the record dropped (an artefact).
  Its scale in ``118e00`` is that of the 0 dB mixture, so it is rescaled per channel to the
  RMS of the ``ma`` record (assumption: the three NSTDB noise records were taken with the
  same set-up; ``bw`` and ``ma`` have RMS 0.47/0.18 and 0.19/0.19 mV).

Time split (:data:`NOISE_PARTS`): the first 70% of each noise source (the concatenated
segments for ``em``) is for training, the next 10% selects the training checkpoint, the last
20% is for evaluation, so evaluation noise is never seen in training or in model selection.

Mixing (:func:`mix_at_snr`, :class:`NoiseMixer`): noise is scaled per lead either by a
factor uniform in [0.2, 1.5] (CD-ECGNet's mode) or to a fixed input SNR, measured on the
device representation (after the 0.5–40 Hz band-pass), and added to a random subset of leads.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import signal

from sdk.filters import design_bandpass
from sdk.preprocess import CLIP_STD, MIN_STD_MV, PreprocessSpec, standardize_window
from sdk.resample import StreamingResampler
from trainer.data import records as rec
from trainer.data.root import require_folder
from trainer.errors import ConfigError, DataError

NOISE_TYPES = ("bw", "ma", "em")
#: Time split of each noise source: (start, end) as fractions of its length.
NOISE_PARTS = {"train": (0.0, 0.7), "select": (0.7, 0.8), "eval": (0.8, 1.0)}
NSTDB_FS = 360.0
#: Noisy segments of the 118e*/119e* records: minute 5 on, 2 min noisy / 2 min clean.
EM_FIRST_S, EM_PERIOD_S, EM_NOISY_S = 300.0, 240.0, 120.0
#: Amplitude-factor range of CD-ECGNet.
AMPLITUDE_RANGE = (0.2, 1.5)
SNR_LEVELS_DB = (-6, 0, 6, 12, 18, 24)


def em_segments(n_samples: int, fs: float = NSTDB_FS) -> list[tuple[int, int]]:
    """(start, end) samples of the noisy segments of an ``n_samples`` 118e*/119e* record."""
    last = n_samples - 1  # the last sample is an artefact
    out, t = [], EM_FIRST_S
    while t * fs < last:
        start = int(round(t * fs))
        out.append((start, min(int(round((t + EM_NOISY_S) * fs)), last)))
        t += EM_PERIOD_S
    return out


def _digital(database: str, name: str) -> np.ndarray:
    """A record's digital samples (n, leads) int64; :class:`DataError` names a bad file."""
    wfdb = rec._wfdb()
    path = require_folder(database) / name
    if not path.with_suffix(".hea").is_file():
        raise DataError("header file not found", path=str(path) + ".hea", reason="missing")
    try:
        return wfdb.rdrecord(str(path), physical=False).d_signal.astype(np.int64)
    except Exception as exc:  # wfdb raises many types for corrupt files
        raise DataError(
            f"cannot read WFDB record: {exc}", path=str(path), reason="corrupt"
        ) from exc


@dataclass
class EmRecovery:
    """Recovered electrode-motion noise in digital units, (n, 2), and where it came from."""

    noise: np.ndarray
    segments: list[tuple[int, int]]
    offsets: np.ndarray  # (n_segments, 2) the constant removed from each segment


def recover_em(record: str = "118", snr_tag: str = "00") -> EmRecovery:
    """``<record>e<snr_tag> − <record>`` over the noisy segments, each segment's mean removed."""
    clean = _digital("mitdb", record)
    noisy = _digital("nstdb", f"{record}e{snr_tag}")
    if clean.shape != noisy.shape:
        raise DataError(
            f"{record}e{snr_tag} has shape {noisy.shape}, {record} {clean.shape}",
            path=f"nstdb/{record}e{snr_tag}",
            reason="shape",
        )
    diff = noisy - clean
    segments = em_segments(diff.shape[0])
    parts, offsets = [], []
    for start, end in segments:
        seg = diff[start:end].astype(np.float64)
        offsets.append(seg.mean(axis=0))
        parts.append(seg - offsets[-1])
    return EmRecovery(np.concatenate(parts).astype(np.float32), segments, np.asarray(offsets))


@functools.lru_cache(maxsize=8)
def noise_360(kind: str) -> np.ndarray:
    """Noise ``kind`` (``bw``/``ma``/``em``), the whole record, (n, 2) mV at 360 Hz; ``em`` is
    recovered from 118e00 (:func:`recover_em`) and scaled to the RMS of ``ma``."""
    if kind in ("bw", "ma"):
        return rec.read_nstdb(kind).signal.astype(np.float32)
    if kind == "em":
        em = recover_em().noise.astype(np.float64)
        ma_rms = np.sqrt(np.mean(np.square(noise_360("ma") - noise_360("ma").mean(0)), axis=0))
        em *= ma_rms / np.sqrt(np.mean(np.square(em), axis=0))
        return em.astype(np.float32)
    raise ConfigError(f"noise type {kind!r} unknown; expected one of {NOISE_TYPES}", key="noise")


def time_split(x: np.ndarray, part: str) -> np.ndarray:
    """``part`` (``"train"``, ``"select"`` or ``"eval"``, :data:`NOISE_PARTS`) of ``x`` (axis 0)."""
    if part not in NOISE_PARTS:
        raise ConfigError(f"part must be one of {sorted(NOISE_PARTS)}, got {part!r}", key="part")
    start, end = (int(round(f * x.shape[0])) for f in NOISE_PARTS[part])
    return x[start:end]


def resample(x: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    """(n, leads) → (m, leads) float32 with the device's streaming resampler."""
    x2 = x[:, None] if x.ndim == 1 else x
    return StreamingResampler(fs_in, fs_out, x2.shape[1]).process(x2).astype(np.float32)


@functools.lru_cache(maxsize=16)
def noise_source(kind: str, part: str, fs: float = 128.0) -> np.ndarray:
    """Noise ``kind`` (``bw``/``ma``/``em``), ``part`` of its time split, (n, 2) mV at ``fs``."""
    return resample(time_split(noise_360(kind), part), NSTDB_FS, fs)


def power(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Mean power about the mean along ``axis``."""
    return np.mean(np.square(x - x.mean(axis=axis, keepdims=True)), axis=axis)


def snr_db(clean: np.ndarray, noise: np.ndarray, axis: int = -1) -> np.ndarray:
    """10 log10(P_clean / P_noise) along ``axis``."""
    return 10.0 * np.log10(power(clean, axis) / np.maximum(power(noise, axis), 1e-20))


def scale_for_snr(clean: np.ndarray, noise: np.ndarray, target_db: float, axis: int = -1):
    """Factor k (broadcastable) such that ``snr_db(clean, k * noise) == target_db``."""
    ratio = power(clean, axis) / np.maximum(power(noise, axis), 1e-20)
    return np.expand_dims(np.sqrt(ratio / 10.0 ** (target_db / 10.0)), axis)


def mix_at_snr(clean: np.ndarray, noise: np.ndarray, target_db: float, axis: int = -1):
    """``clean + k * noise`` at ``target_db`` input SNR along ``axis``; returns (noisy, k)."""
    k = scale_for_snr(clean, noise, target_db, axis)
    return clean + k * noise, k


class Bandpass:
    """The device's band-pass (causal Butterworth, zero initial state) along the last axis."""

    def __init__(self, spec: PreprocessSpec) -> None:
        self.sos = design_bandpass(spec.fs, spec.low_hz, spec.high_hz, spec.order)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return signal.sosfilt(self.sos, np.asarray(x, dtype=np.float64), axis=-1)


def standardize_with(noisy: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Standardize (B, leads, L) ``noisy`` as the SDK does; ``others`` in its units, clipped alike.

    Returns ``[z, *others_z, mean, std]`` (mean and std (B, leads, 1), in the input's units).
    """
    z = np.stack([standardize_window(w.T).T for w in noisy]).astype(np.float32)
    mean = noisy.mean(axis=-1, keepdims=True)
    std = np.maximum(noisy.std(axis=-1, keepdims=True), MIN_STD_MV)
    scaled = [np.clip((o - mean) / std, -CLIP_STD, CLIP_STD).astype(np.float32) for o in others]
    return [z, *scaled, mean, std]
