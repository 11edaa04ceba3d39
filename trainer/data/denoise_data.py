"""Clean multi-lead ECG for the denoiser, and noisy/clean example pairs built from it.

Clean sources: ``mitdb`` (2 leads, 360 Hz) and ``challenge2021`` (12 leads, 500 Hz, 10 s),
resampled to the model rate with the device's resampler and split by record (fixed seed).
mitdb 118 and 119 never enter training: they are the clean halves of the noise-stress records.

An example is a window of the *device representation*: the raw segment (clean plus scaled
noise) goes through the device's causal band-pass from a zero state over ``context_s`` seconds
before the window, the window is cut and standardized per lead exactly as
:func:`sdk.preprocess.standardize_window` does. Because the band-pass is linear, the clean
target is the band-passed clean segment, expressed in the noisy window's standardized units.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from sdk.preprocess import PreprocessSpec
from trainer.config import check_fraction
from trainer.data import records as rec
from trainer.data.noise import (
    AMPLITUDE_RANGE,
    NOISE_TYPES,
    SNR_LEVELS_DB,
    Bandpass,
    noise_source,
    resample,
    scale_for_snr,
    standardize_with,
)
from trainer.errors import ConfigError

#: Records kept out of denoiser training (clean halves of nstdb 118e*/119e*).
NOISE_STRESS_RECORDS = ("118", "119")
DATABASE_LEADS = {"mitdb": 2, "challenge2021": 12}


@functools.lru_cache(maxsize=4)
def _clean_records(database: str, fs: float) -> tuple[tuple[str, np.ndarray], ...]:
    readers = {"mitdb": rec.read_mitdb, "challenge2021": rec.read_challenge2021}
    if database not in readers:
        raise ConfigError(f"database {database!r} unknown; expected {sorted(readers)}", key="db")
    out = []
    for name in rec.list_records(database):
        r = readers[database](name)
        out.append((name, resample(r.signal, r.fs, fs)))
    return tuple(out)


@dataclass(frozen=True)
class RecordSplit:
    """Record names of one database: training, checkpoint selection and evaluation."""

    train: list[str]
    select: list[str]
    eval: list[str]


def record_split(
    database: str, val_fraction: float, seed: int, select_fraction: float = 0.0
) -> RecordSplit:
    """Split ``database`` by record; noise-stress records go to none of the three sides.

    ``val_fraction`` of the records are for evaluation (the benchmarks) and
    ``select_fraction`` for choosing the training checkpoint; the rest train. The evaluation
    side depends only on ``val_fraction`` and ``seed``, so runs with and without a selection
    side are evaluated on the same records.

    Raises :class:`ConfigError` unless ``0 < val_fraction < 1``, ``0 <= select_fraction < 1``
    and every side gets a record (the selection side gets one whenever ``select_fraction > 0``).
    """
    check_fraction(val_fraction)
    if not 0.0 <= select_fraction < 1.0:
        raise ConfigError(
            f"data.select_fraction must lie in [0, 1), got {select_fraction}",
            key="data.select_fraction",
        )
    names = [n for n in rec.list_records(database) if n not in NOISE_STRESS_RECORDS]
    order = np.random.default_rng(seed).permutation(len(names))
    n_eval = max(1, int(round(val_fraction * len(names))))
    n_select = max(1, int(round(select_fraction * len(names)))) if select_fraction > 0 else 0
    sides = np.split(order, [n_eval, n_eval + n_select])
    evaluate, select, train = ([names[i] for i in side] for side in sides)
    if not train or not evaluate:  # selection is filled before training
        raise ConfigError(
            f"{database}: {len(names)} records give {len(train)} for training, "
            f"{len(select)} for checkpoint selection and {len(evaluate)} for evaluation at "
            f"val_fraction={val_fraction}, select_fraction={select_fraction}; each needs one",
            key="data.val_fraction",
        )
    return RecordSplit(sorted(train), sorted(select), sorted(evaluate))


def clean_signals(database: str, names: list[str], fs: float, leads: int) -> list[np.ndarray]:
    """Raw (not band-passed) clean records at ``fs``, (leads, n) float32: the first ``leads``
    leads, or, for a 1-lead model, every lead of every record as a record of its own."""
    have = dict(_clean_records(database, fs))
    if leads > DATABASE_LEADS[database]:
        raise ConfigError(
            f"{database} has {DATABASE_LEADS[database]} leads, model wants {leads}", key="leads"
        )
    if leads == 1:
        return [
            np.ascontiguousarray(have[n][:, j][None])
            for n in names
            for j in range(have[n].shape[1])
        ]
    return [np.ascontiguousarray(have[n][:, :leads].T) for n in names]


@dataclass
class Examples:
    """Standardized (B, leads, L) arrays; ``noisy`` (B, leads) marks leads that got noise.

    ``mean``/``std`` (B, leads, 1) undo the standardization (mV of the device representation);
    ``raw`` (B, leads, context + L + post) is the raw noisy segment, ``raw_clean`` the clean one,
    ``snr`` the input SNR (dB, device representation) per lead; ``noisy_bp``/``clean_bp`` the
    window of the noisy/clean device representation in mV (with ``raw`` only).
    """

    x: np.ndarray
    target: np.ndarray
    noisy: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    raw: np.ndarray = field(default_factory=lambda: np.zeros(0))
    raw_clean: np.ndarray = field(default_factory=lambda: np.zeros(0))
    snr: np.ndarray = field(default_factory=lambda: np.zeros(0))
    noisy_bp: np.ndarray = field(default_factory=lambda: np.zeros(0))  # window, mV
    clean_bp: np.ndarray = field(default_factory=lambda: np.zeros(0))  # window, mV


class PairSampler:
    """Draws clean segments and real noise and builds noisy windows at the device's rate.

    Parameters
    ----------
    clean : raw clean records (leads, n) at ``spec.fs``.
    spec : the device preprocessing (rate and band-pass).
    part : noise time split, ``"train"``, ``"select"`` or ``"eval"``
        (:data:`~trainer.data.noise.NOISE_PARTS`).
    window, context, post : samples of the window, of band-pass warm-up before it, and of
        extra raw signal after it (only the baselines and the reference use ``post``).
    """

    def __init__(
        self,
        clean: list[np.ndarray],
        spec: PreprocessSpec,
        part: str,
        *,
        window: int,
        context: int,
        post: int = 0,
        seed: int = 0,
    ) -> None:
        self.clean, self.spec, self.window, self.context, self.post = (
            clean,
            spec,
            window,
            context,
            post,
        )
        self.leads = clean[0].shape[0]
        self.noise = {k: noise_source(k, part, spec.fs).T.copy() for k in NOISE_TYPES}
        self.bandpass = Bandpass(spec)
        self.rng = np.random.default_rng(seed)
        self.lengths = np.array([c.shape[1] for c in clean])

    def _clean_segment(self) -> np.ndarray:
        """(leads, context + window + post), odd-reflected at the record start if needed."""
        n_total = self.context + self.window + self.post
        i = int(self.rng.choice(len(self.clean), p=self.lengths / self.lengths.sum()))
        c = self.clean[i]
        hi = c.shape[1] - self.window - self.post
        start = int(self.rng.integers(0, max(hi, 0) + 1))  # window start in the record
        lo = start - self.context
        if lo >= 0 and start + self.window + self.post <= c.shape[1]:
            return c[:, lo : lo + n_total].astype(np.float64)
        seg = c[:, max(lo, 0) : start + self.window + self.post].astype(np.float64)
        if seg.shape[1] < n_total:  # short record: odd reflection before its first sample
            pad = n_total - seg.shape[1]
            head = 2 * seg[:, :1] - seg[:, 1 : pad + 1][:, ::-1]
            while head.shape[1] < pad:
                head = np.concatenate([2 * seg[:, :1] - head[:, ::-1], head], axis=1)
            seg = np.concatenate([head[:, -pad:], seg], axis=1)
        return seg

    def _noise_segment(self, kind: str, n: int) -> np.ndarray:
        kinds = NOISE_TYPES if kind == "mix" else (kind,)
        total = np.zeros(n)
        for k in kinds:
            src = self.noise[k]
            ch = int(self.rng.integers(0, src.shape[0]))
            s = int(self.rng.integers(0, src.shape[1] - n))
            total += src[ch, s : s + n]
        return total

    def _noise_for(self, mask: np.ndarray, kinds: tuple[str, ...], n: int) -> np.ndarray:
        out = np.zeros((*mask.shape, n))
        for b, lead in zip(*np.nonzero(mask)):
            out[b, lead] = self._noise_segment(str(self.rng.choice(kinds)), n)
        return out

    def _scales(
        self,
        bp_c: np.ndarray,
        bp_n: np.ndarray,
        mask: np.ndarray,
        snr_db: float | None,
        p_snr: float,
    ) -> np.ndarray:
        """Per-lead noise factor: fixed SNR, else an SNR level or an amplitude factor."""
        if snr_db is not None:
            k = scale_for_snr(bp_c, bp_n, snr_db)[..., 0]
        else:
            level = self.rng.choice(SNR_LEVELS_DB, size=mask.shape)
            k_snr = scale_for_snr(bp_c, bp_n, 0.0)[..., 0] / 10.0 ** (level / 20.0)
            k_amp = self.rng.uniform(*AMPLITUDE_RANGE, size=mask.shape)
            k = np.where(self.rng.random(mask.shape) < p_snr, k_snr, k_amp)
        return np.where(mask, k, 0.0)

    def _bp(self, raw: np.ndarray) -> np.ndarray:
        return self.bandpass(raw[..., : self.context + self.window])[..., self.context :]

    def _examples(self, bp_c: np.ndarray, bp_noise: np.ndarray, noisy: np.ndarray) -> Examples:
        x, target, mean, std = standardize_with(bp_c + bp_noise, bp_c)
        snr = 10 * np.log10(np.var(bp_c, -1) / np.maximum(np.var(bp_noise, -1), 1e-20))
        return Examples(x, target, noisy, mean, std, snr=snr)

    def draw(
        self,
        batch: int,
        *,
        p_noisy: float,
        kinds: tuple[str, ...] = (*NOISE_TYPES, "mix"),
        snr_db: float | None = None,
        p_snr_mode: float = 0.5,
        want_raw: bool = False,
    ) -> Examples:
        """``batch`` examples; each lead gets noise with probability ``p_noisy``.

        With ``snr_db`` set every noisy lead is at that input SNR (dB, device representation);
        otherwise a lead's noise is, with probability ``p_snr_mode``, at an SNR drawn from the
        fixed levels, else multiplied by a factor uniform in the amplitude range. ``kinds``
        lists the noise types to draw from (``"mix"`` = the sum of all three).
        """
        raw_c = np.stack([self._clean_segment() for _ in range(batch)])
        noisy = self.rng.random((batch, self.leads)) < p_noisy
        raw_n = self._noise_for(noisy, kinds, raw_c.shape[-1])
        bp_c, bp_n = self._bp(raw_c), self._bp(raw_n)
        k = self._scales(bp_c, bp_n, noisy, snr_db, p_snr_mode)[..., None]
        ex = self._examples(bp_c, k * bp_n, noisy)
        if want_raw:
            ex.raw, ex.raw_clean = raw_c + k * raw_n, raw_c
            ex.noisy_bp, ex.clean_bp = bp_c + k * bp_n, bp_c
        return ex

    def draw_pair(
        self, batch: int, *, p_noisy: float, p_snr_mode: float = 0.5
    ) -> tuple[Examples, Examples]:
        """(X, X_S): X has real noise on a random subset of leads; X_S adds simulated noise
        (another draw of the training noise) to every clean lead of X."""
        kinds = (*NOISE_TYPES, "mix")
        raw_c = np.stack([self._clean_segment() for _ in range(batch)])
        noisy = self.rng.random((batch, self.leads)) < p_noisy
        n = raw_c.shape[-1]
        bp_c = self._bp(raw_c)
        bp_n1 = self._bp(self._noise_for(noisy, kinds, n))
        bp_n2 = self._bp(self._noise_for(~noisy, kinds, n))
        noise_x = self._scales(bp_c, bp_n1, noisy, None, p_snr_mode)[..., None] * bp_n1
        noise_s = self._scales(bp_c, bp_n2, ~noisy, None, p_snr_mode)[..., None] * bp_n2
        both = np.ones_like(noisy)
        return self._examples(bp_c, noise_x, noisy), self._examples(bp_c, noise_x + noise_s, both)
