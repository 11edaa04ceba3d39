"""On-device per-user calibration: search each modality's t, fit the user's head.

From a few minutes of the user's labelled ECG the :class:`Calibrator` finds the diffusion
steps (one per modality of the bundle) whose features the user's head learns from fastest
(DiffECG's γ, or ΔAcc/ΔF1/ΔLoss), with the Gaussian-process optimizer of
:mod:`sdk.calibration.bayesopt`, then fits the head at those steps (on the user's windows and
the bundle's anchor windows of the classes the user did not label, :mod:`sdk.anchors`) and
returns a :class:`~sdk.calibration.profile.UserProfile`. Embeddings are cached per (modality, t), so
an extractor runs once per distinct step it is asked for. No torch, no re-export.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sdk.anchors import ANCHOR_MODES, anchors_mismatch, load_anchors, select_anchors
from sdk.bundle import Bundle, load_bundle
from sdk.calibration.bayesopt import OptimizeResult, maximize_integer
from sdk.calibration.objectives import OBJECTIVES
from sdk.calibration.profile import UserProfile
from sdk.classifier import WindowClassifier, WindowInputs
from sdk.denoiser import WindowDenoiser
from sdk.errors import ConfigError
from sdk.head import fit_softmax_head
from sdk.preprocess import check_input_rate, is_real_number
from sdk.quality import MAX_ABS_MV, assess_quality, settle_envelope, settling_look_back
from sdk.windowing import record_windows

#: Default search box of t (inclusive). The bundle's schedule allows more, but beyond ~200
#: of 1000 linear-schedule steps the window is mostly noise (ᾱ < 0.66).
DEFAULT_T_BOX = (1, 200)
MIN_WINDOWS = 8
#: The anchor windows a user's head is fitted on by default (:data:`sdk.anchors.ANCHOR_MODES`)
DEFAULT_ANCHORS = "missing"
_log = logging.getLogger(__name__)


@dataclass
class CalibrationResult:
    """What :meth:`Calibrator.calibrate` found and what it cost."""

    profile: UserProfile
    search: OptimizeResult
    extractor_evaluations: int
    seconds: float
    trace: list[dict[str, Any]] = field(default_factory=list)


#: Most descent updates an objective may run before its measurement (``r``).
MAX_R = 1000


class Calibrator:
    """Calibrate one user on one bundle from labelled windows or recordings.

    Parameters
    ----------
    bundle : the verified bundle the profile will be bound to, or its folder
        (:func:`sdk.bundle.load_bundle` then verifies it).
    objective : ``"gamma"`` (default), ``"delta_acc"``, ``"delta_f1"`` or ``"delta_loss"``.
    t_box : inclusive (lo, hi) range of t searched for every modality; default
        ``DEFAULT_T_BOX`` cut to the bundle's schedule (a DACL bundle's ends at 49).
    max_evals, max_seconds, n_init, seed : budgets and initial design of the optimizer
        (``max_evals`` counts objective evaluations).
    max_extractor_evals : budget of extractor runs over the calibration windows (one per
        new (modality, t); the cost that matters on a device). With several modalities an
        objective evaluation may need one per modality; the search stops before exceeding it.
    r : the update at which the objective is read (γ compares ω_r and ω_{r+1}).
    precision, threads, backend, engine_dir : how the models run (see :class:`WindowClassifier`).
    anchors : which of the bundle's anchor windows (:mod:`sdk.anchors`) the user's head is
        fitted on besides the user's windows, embedded at the user's t: ``"missing"`` those
        of the classes the user labelled no window of (so the head can still say e.g.
        "other rhythm" or "noisy"), ``"all"`` every one, ``"none"`` none (the head then
        knows only the user's classes). Left out when the bundle has none, and with a
        warning when they were denoised otherwise than the calibration windows; the profile's
        ``calibration["anchors"]`` says which went in or why none did. The search of t looks
        at the user's windows alone; embedding the anchors at the t found is one extractor
        run per modality beyond ``max_extractor_evals``.
    denoise : run the bundle's ``denoiser`` (if it has one) on recorded windows, as
        ``StreamPipeline(denoise=True)`` does, so the user's head is fitted on the embeddings
        it will see; use the same setting for the pipeline that loads the profile. Calibration
        records one lead, so a bundle whose denoiser takes several leads needs
        ``denoise=False`` (:class:`ConfigError` otherwise).

    Not thread-safe; :meth:`calibrate` may be cancelled from another thread through its
    ``should_stop`` callback.
    """

    def __init__(
        self,
        bundle: Bundle | str | Path,
        *,
        objective: str = "gamma",
        t_box: tuple[int, int] | None = None,
        max_evals: int = 30,
        max_extractor_evals: int | None = 30,
        max_seconds: float | None = None,
        n_init: int = 4,
        r: int = 5,
        seed: int = 0,
        precision: str | None = None,
        threads: int = 1,
        backend: str = "cpu",
        engine_dir: Path | None = None,
        anchors: str = DEFAULT_ANCHORS,
        denoise: bool = True,
    ) -> None:
        if objective not in OBJECTIVES:
            raise ConfigError(
                f"objective {objective!r} unknown; expected one of {sorted(OBJECTIVES)}",
                field="objective",
            )
        bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        for name, value in (("max_evals", max_evals), ("n_init", n_init)):
            if not (isinstance(value, (int, np.integer)) and not isinstance(value, bool)):
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}", field=name)
            if value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}", field=name)
        if max_seconds is not None and not (
            is_real_number(max_seconds) and 0.0 < float(max_seconds) < math.inf
        ):
            raise ConfigError(
                f"max_seconds must be None or a positive number of seconds, got {max_seconds!r}",
                field="max_seconds",
            )
        m = bundle.manifest
        if t_box is None:
            t_box = (DEFAULT_T_BOX[0], min(DEFAULT_T_BOX[1], m.t_max))
        if len(t_box) != 2 or not all(isinstance(v, (int, np.integer)) for v in t_box):
            raise ConfigError(f"t_box must be two integers, got {t_box!r}", field="t_box")
        if not 0 <= t_box[0] <= t_box[1] <= m.t_max:
            raise ConfigError(f"0 <= lo <= hi <= {m.t_max} must hold for t_box", field="t_box")
        if not (isinstance(r, (int, np.integer)) and 0 <= r <= MAX_R):
            raise ConfigError(f"r must be an integer in 0 … {MAX_R}, got {r!r}", field="r")
        if objective.startswith("delta_") and r < 1:  # ω_0 against ω_0: 0 at every t
            raise ConfigError(
                f"objective {objective!r} compares the head before and after r descent updates: "
                "r must be at least 1",
                field="r",
            )
        n_mods = len(m.modalities)
        if max_extractor_evals is not None and not (
            isinstance(max_extractor_evals, (int, np.integer)) and max_extractor_evals >= n_mods
        ):
            raise ConfigError(
                f"max_extractor_evals must be None or an integer >= {n_mods} (one evaluation "
                f"runs every modality's extractor), got {max_extractor_evals!r}",
                field="max_extractor_evals",
            )
        self.bundle, self.objective = bundle, objective
        self.t_box = (int(t_box[0]), int(t_box[1]))
        self.max_extractor_evals = max_extractor_evals
        self.max_evals, self.n_init, self.r, self.seed = int(max_evals), int(n_init), r, seed
        self.max_seconds = None if max_seconds is None else float(max_seconds)
        self.classifier = WindowClassifier(
            bundle, precision=precision, threads=threads, backend=backend, engine_dir=engine_dir
        )
        self.classes = m.classes
        self.denoiser: WindowDenoiser | None = None
        if denoise and m.has("denoiser"):
            self.denoiser = WindowDenoiser(
                bundle, threads=threads, backend=self.classifier.backend, engine_dir=engine_dir
            )
            if self.denoiser.leads != 1:
                raise ConfigError(
                    f"the bundle's denoiser takes {self.denoiser.leads} leads but calibration "
                    "records one; pass denoise=False (and run the pipeline that loads the "
                    "profile with denoise=False too)",
                    field="denoise",
                )
        if anchors not in ANCHOR_MODES:
            raise ConfigError(
                f"anchors must be one of {ANCHOR_MODES}, got {anchors!r}", field="anchors"
            )
        self.anchor_mode = anchors
        self.anchors = load_anchors(bundle) if anchors != "none" else None  # bad files fail here
        self._inputs: list[WindowInputs] = []
        self._labels: list[np.ndarray] = []
        self._sources: list[str] = []
        self._denoised: bool | None = None  # whether the windows added so far are denoised
        self._quality_rejected = 0  # recorded windows the quality check kept out

    # -- data ---------------------------------------------------------------------------------
    def add_windows(
        self,
        inputs: WindowInputs,
        labels: Sequence[str],
        source: str = "live",
        *,
        denoised: bool = False,
    ) -> None:
        """Labelled windows (class names of the bundle), e.g. collected live from a stream.

        ``inputs.windows`` are the embedder's input: standardized and, when the pipeline
        that will use the profile denoises, denoised (``sdk.windowing.record_windows`` with
        a ``denoiser`` gives such windows; :meth:`add_recording` does this itself).
        ``denoised`` says which; the profile records it, and windows of both kinds cannot be
        mixed in one calibration.
        """
        y = self._encode(labels)
        if y.shape[0] != len(inputs):
            raise ConfigError(f"{len(inputs)} windows but {y.shape[0]} labels", field="labels")
        self._check_inputs(inputs)
        if self._denoised is not None and self._denoised != bool(denoised):
            raise ConfigError(
                f"these windows are {'' if denoised else 'not '}denoised but the windows "
                f"added before are {'' if self._denoised else 'not '}; a user's head is "
                "fitted on one kind",
                field="denoised",
            )
        self._inputs.append(inputs)
        self._labels.append(y)
        self._sources.append(source)
        self._denoised = bool(denoised)

    def _check_inputs(self, inputs: WindowInputs) -> None:
        """Shapes the bundle's embedders take, and finite values (a NaN would make a NaN
        head that scores every window the same)."""
        n, window = len(inputs), self.bundle.manifest.window_samples
        parts = {"windows": (inputs.windows, (n, 1, window)), "rr": (inputs.rr, None)}
        if inputs.lorenz is not None:
            parts["lorenz"] = (inputs.lorenz, None)
        for name, (arr, shape) in parts.items():
            a = np.asarray(arr)
            if (shape is not None and a.shape != shape) or a.shape[:1] != (n,):
                want = shape if shape is not None else f"({n}, …)"
                raise ConfigError(f"{name} must be {want}, got {a.shape}", field=name)
            if a.dtype.kind not in "fiu" or not np.isfinite(a).all():
                raise ConfigError(f"{name} must be finite numbers", field=name)

    def add_recording(
        self,
        signal: np.ndarray,
        fs: float,
        intervals: Sequence[tuple[float, float, str]],
        *,
        source: str = "recording",
        min_coverage: float = 0.5,
        hop_s: float | None = None,
    ) -> int:
        """A recording (n,) in mV at ``fs`` with labelled intervals ``(start_s, end_s, class)``.

        Windows are cut as the stream cuts them, every ``hop_s`` seconds (default: one window
        length, so windows do not overlap: half the extractor work of the stream's hop for
        nearly the same information); each takes the class covering most of it. Left out:
        windows less than ``min_coverage`` covered by one interval's recorded samples (the
        zero padding of a recording shorter than a window counts as uncovered), and windows
        the pipeline's quality check (:func:`sdk.quality.assess_quality` on the raw samples)
        would flag: lead-off, flat, saturated or noisy ECG must not teach the user's head
        (counted in the profile's ``windows_rejected_quality``). Lost samples (NaN/inf, as a
        saved session keeps them) are never filled in: each stretch without them is windowed
        on its own, stretches shorter than a window left out.
        Returns the number of windows added.

        Raises :class:`~sdk.errors.ConfigError` for a rate the pipeline would refuse
        (:func:`sdk.preprocess.check_input_rate`), a signal of more than one lead, unknown
        classes or bad intervals, and a signal without a stretch long enough for a window.
        """
        m = self.bundle.manifest
        fs = check_input_rate(fs, m.preprocess, field="fs")
        if hop_s is not None and not (is_real_number(hop_s) and 0.0 < float(hop_s) < math.inf):
            raise ConfigError(
                f"hop_s must be a positive number of seconds, got {hop_s!r}", field="hop_s"
            )
        hop = m.window_samples if hop_s is None else int(round(float(hop_s) * m.fs))
        if hop <= 0:
            raise ConfigError(
                f"hop_s {hop_s:g} s is under one sample at the bundle's {m.fs:g} Hz", field="hop_s"
            )
        intervals = _checked_intervals(intervals)
        if not intervals:
            raise ConfigError(
                "no labelled interval: give (start_s, end_s, class) tuples", field="labels"
            )
        self._encode([label for _, _, label in intervals])  # a misspelled class fails here
        _check_no_overlap(intervals)
        raw = np.asarray(signal)
        if raw.dtype.kind not in "iuf":
            raise ConfigError(
                f"signal must be real numbers (mV), got dtype {raw.dtype}", field="signal"
            )
        x = raw.astype(np.float64)
        if x.ndim == 2 and x.shape[1] == 1:
            x = x[:, 0]
        with np.errstate(invalid="ignore"):  # beyond ±MAX_ABS_MV: no ECG, lost like NaN
            x = np.where(np.abs(x) <= MAX_ABS_MV, x, np.nan)
        if x.ndim != 1:
            fix = "signal[lead]" if x.ndim == 2 and x.shape[0] < x.shape[1] else "signal[:, lead]"
            raise ConfigError(
                f"signal must be one lead, (n,), got shape {x.shape}: pass {fix}",
                field="signal",
            )
        if not 0.0 < min_coverage <= 1.0:
            raise ConfigError(
                f"min_coverage must lie in (0, 1], got {min_coverage!r}", field="min_coverage"
            )
        window_s = m.window_samples / m.fs
        # a recording without lost samples may be shorter than a window (zero padding counts
        # as uncovered); between lost samples only stretches of a whole window count, as the
        # stream analyses no window padded with zeros beside a gap
        whole = int(np.ceil(window_s * fs))
        least = whole if not np.isfinite(x).all() else int(np.ceil(min_coverage * window_s * fs))
        runs = _finite_runs(x, max(1, least))
        if not runs:
            raise ConfigError(
                f"no stretch of finite samples gives a window ({window_s:g} s"
                + ("" if least == whole else f", {min_coverage:.0%} of it recorded")
                + ")",
                field="signal",
            )
        duration_s = x.shape[0] / fs
        for start, end, label in intervals:  # seconds from the recording's start
            if start >= duration_s:  # (one may run past its end: what is not recorded is no label)
                raise ConfigError(
                    f"interval ({start:g}, {end:g}, {label!r}) starts after the recording "
                    f"({duration_s:g} s); intervals are seconds from its start",
                    field="labels",
                )
        added = 0
        for a, b in runs:  # lost samples are never filled in: each stretch on its own
            shifted = [(s - a / fs, e - a / fs, c) for s, e, c in intervals]
            added += self._add_stretch(x[a:b], fs, shifted, source, min_coverage, hop)
        return added

    def _add_stretch(
        self,
        x: np.ndarray,
        fs: float,
        intervals: Sequence[tuple[float, float, str]],
        source: str,
        min_coverage: float,
        hop: int,
    ) -> int:
        """:meth:`add_recording` of one stretch of finite samples."""
        m = self.bundle.manifest
        rw = record_windows(x, fs, m.preprocess, m.window_samples, hop, denoiser=self.denoiser)
        spans = _spans_by_class(intervals, x.shape[0] / fs)
        settle = settle_envelope(m.preprocess, fs)
        labels, keep = [], []
        for i, start in enumerate(rw.starts):
            a, b = start / rw.fs, (start + m.window_samples) / rw.fs
            cover = {label: _covered(s, a, b) for label, s in spans.items()}
            best = max(cover, key=lambda k: cover[k]) if cover else None
            if best is None or cover[best] < min_coverage * (b - a):
                continue
            ia, ib = int(round(a * fs)), int(round(b * fs))
            # as the pipeline checks it: with the samples its filters are still settling from
            # (and at the stretch's start their zero state), which the window must not inherit
            before = settling_look_back(x[:ia], settle, from_zero_state=True)
            if not assess_quality(x[ia:ib], fs, before=before, settle=settle).ok:
                self._quality_rejected += 1
                continue
            labels.append(best)
            keep.append(i)
        if not keep:
            return 0
        idx = np.asarray(keep, dtype=np.int64)
        self.add_windows(
            WindowInputs(rw.windows[idx], rw.rr[idx], rw.lorenz[idx]),
            labels,
            source,
            denoised=rw.denoised,
        )
        return len(keep)

    def _encode(self, labels: Sequence[str]) -> np.ndarray:
        unknown = sorted(set(labels) - set(self.classes))
        if unknown:
            raise ConfigError(
                f"labels {unknown} are not classes of the bundle {list(self.classes)}",
                field="labels",
            )
        return np.array([self.classes.index(lab) for lab in labels], dtype=np.int64)

    def _data(self) -> tuple[WindowInputs, np.ndarray]:
        if not self._inputs:
            raise ConfigError("no calibration windows: add a recording or windows", field="data")
        y = np.concatenate(self._labels)
        lorenz = [i.lorenz for i in self._inputs]
        inputs = WindowInputs(
            np.concatenate([i.windows for i in self._inputs]),
            np.concatenate([i.rr for i in self._inputs]),
            None if any(x is None for x in lorenz) else np.concatenate(lorenz),  # type: ignore[arg-type]
        )
        present = np.unique(y)
        if y.size < MIN_WINDOWS or present.size < 2:
            raise ConfigError(
                f"calibration needs >= {MIN_WINDOWS} windows of >= 2 classes; got {y.size} "
                f"windows of {[self.classes[k] for k in present]}",
                field="data",
            )
        return inputs, y

    def _anchor_rows(self, y: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """Which anchor windows the head fit takes (indices), and an account of it."""
        none = np.zeros(0, dtype=np.int64)
        if self.anchors is None:
            why = "off" if self.anchor_mode == "none" else "the bundle has no anchors"
            return none, {"mode": self.anchor_mode, "windows": 0, "skipped": why}
        mismatch = anchors_mismatch(self.anchors, self.bundle, bool(self._denoised))
        if mismatch is not None:
            _log.warning("calibration without the bundle's anchors: %s", mismatch)
            return none, {"mode": self.anchor_mode, "windows": 0, "skipped": mismatch}
        rows = select_anchors(self.anchors, y, self.anchor_mode)
        counts = np.bincount(self.anchors.labels[rows], minlength=len(self.classes))
        info: dict[str, Any] = {
            "mode": self.anchor_mode,
            "windows": int(rows.size),
            "label_counts": {c: int(n) for c, n in zip(self.classes, counts) if n},
        }
        if not rows.size:
            info["skipped"] = "the user labelled every class"
        return rows, info

    # -- search -------------------------------------------------------------------------------
    def calibrate(
        self,
        *,
        user: str = "user",
        progress: Callable[[int, dict[str, int], float], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> CalibrationResult:
        """Search t per modality, fit the user's head there, return the profile.

        ``progress(i, t, score)`` follows every objective evaluation (an exception it raises
        ends the calibration and propagates: unlike an event callback of the pipeline, it
        is the caller's own code on the caller's thread); ``should_stop()`` returning True
        ends the search early (the best point so far is kept).

        Raises
        ------
        ConfigError
            Too few windows or classes, or cancelled before any evaluation.
        """
        tic = time.perf_counter()
        inputs, y = self._data()
        mods = self.classifier.modalities
        cache: dict[tuple[str, int], tuple[np.ndarray, np.ndarray | None]] = {}

        def features(steps: tuple[int, ...]) -> np.ndarray:
            parts = {}
            for mod, t in zip(mods, steps):
                if (mod, t) not in cache:
                    cache[mod, t] = self.classifier.embed_modality(mod, inputs, t)
                parts[mod] = cache[mod, t]
            return self.classifier.combine(parts, inputs.rr)

        score = OBJECTIVES[self.objective]
        trace: list[dict[str, Any]] = []

        def objective(steps: tuple[int, ...]) -> float:
            return score(features(steps), y, len(self.classes), r=self.r)

        def report(i: int, steps: tuple[int, ...], value: float) -> None:
            # a failed evaluation (NaN/inf) is kept as None: a profile is strict JSON
            finite = math.isfinite(value)
            trace.append({"t": dict(zip(mods, steps)), "score": value if finite else None})
            if progress is not None:
                progress(i, dict(zip(mods, steps)), value)

        def over_budget() -> bool:  # could the next evaluation exceed the extractor budget?
            limit = self.max_extractor_evals
            return limit is not None and len(cache) + len(mods) > limit

        search = maximize_integer(
            objective,
            [self.t_box] * len(mods),
            n_init=self.n_init,
            max_evals=self.max_evals,
            max_seconds=self.max_seconds,
            seed=self.seed,
            progress=report,
            should_stop=lambda: over_budget() or (should_stop is not None and should_stop()),
        )
        if search.stopped == "cancelled" and over_budget():
            if should_stop is None or not should_stop():
                search.stopped = "extractor_budget"
        if search.evaluations == 0:
            raise ConfigError("calibration stopped before any evaluation", field="should_stop")
        if not np.isfinite(search.best_y):
            raise ConfigError(
                f"the {self.objective} objective gave no finite value at any t evaluated",
                field="objective",
            )
        steps = dict(zip(mods, (int(v) for v in search.best_x)))
        x_fit, y_fit = features(search.best_x), y
        rows, anchor_info = self._anchor_rows(y)
        if rows.size:
            assert self.anchors is not None
            taken = self.anchors.inputs.take(rows)
            x_fit = np.concatenate([x_fit, self.classifier.features(taken, steps)])
            y_fit = np.concatenate([y, self.anchors.labels[rows]])
        head = fit_softmax_head(x_fit, y_fit, self.classes)
        seconds = time.perf_counter() - tic
        counts = np.bincount(y, minlength=len(self.classes))
        profile = UserProfile(
            user=user,
            bundle_name=self.bundle.manifest.name,
            bundle_sha256=self.bundle.manifest_sha256,
            t=steps,
            head=head,
            calibration={
                "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "sources": sorted(set(self._sources)),
                "windows": int(y.size),
                "windows_rejected_quality": self._quality_rejected,
                "denoised": bool(self._denoised),
                "label_counts": {c: int(n) for c, n in zip(self.classes, counts) if n},
                "anchors": anchor_info,
                "objective": self.objective,
                "t_box": list(self.t_box),
                "objective_evaluations": search.evaluations,
                "extractor_evaluations": len(cache),
                "stopped": search.stopped,
                "seconds": round(seconds, 3),
                "trace": trace,
            },
        )
        profile.check_bundle(self.bundle)  # what every pipeline checks before using it
        return CalibrationResult(profile, search, len(cache), seconds, trace)


def _checked_intervals(
    intervals: Sequence[tuple[float, float, str]],
) -> list[tuple[float, float, str]]:
    """``intervals`` as (start_s, end_s, class) with real finite start < end; else
    :class:`ConfigError` naming the first bad one."""
    checked = []
    for i, item in enumerate(intervals):
        ok = isinstance(item, (tuple, list)) and len(item) == 3
        start, end, label = item if ok else (None, None, None)
        if not (
            ok
            and is_real_number(start)
            and is_real_number(end)
            and math.isfinite(start)
            and math.isfinite(end)
            and start < end
            and isinstance(label, str)
        ):
            raise ConfigError(
                f"interval {i} ({item!r}) is not (start_s, end_s, class) with finite real "
                "start < end and a class name",
                field="labels",
            )
        checked.append((float(start), float(end), label))
    return checked


def _check_no_overlap(intervals: Sequence[tuple[float, float, str]]) -> None:
    """No two intervals of different classes overlap (a window under both would take
    whichever came first); intervals of one class may. One pass in start order, keeping
    each class's interval that reaches furthest (a day of labels checks in a second)."""
    furthest: dict[str, tuple[float, float]] = {}
    for s1, e1, c1 in sorted(intervals, key=lambda i: (i[0], i[1])):
        for c0, (s0, e0) in furthest.items():
            if c0 != c1 and s1 < e0:
                raise ConfigError(
                    f"intervals ({s0:g}, {e0:g}, {c0!r}) and ({s1:g}, {e1:g}, {c1!r}) overlap",
                    field="labels",
                )
        if c1 not in furthest or e1 > furthest[c1][1]:
            furthest[c1] = (s1, e1)


def _spans_by_class(
    intervals: Sequence[tuple[float, float, str]], duration_s: float
) -> dict[str, np.ndarray]:
    """Each class's labelled time within ``[0, duration_s)`` as sorted disjoint spans (k, 2):
    overlapping intervals of one class are merged, so no second is counted twice; classes in
    the order they first appear (the order a tie between them is broken in)."""
    out: dict[str, np.ndarray] = {}
    for label in dict.fromkeys(c for _, _, c in intervals):
        merged: list[list[float]] = []
        for s, e in sorted((s, min(e, duration_s)) for s, e, c in intervals if c == label):
            if e <= s:
                continue
            if merged and s <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], e)
            else:
                merged.append([s, e])
        out[label] = np.asarray(merged, dtype=np.float64).reshape(-1, 2)
    return out


def _covered(spans: np.ndarray, a: float, b: float) -> float:
    """Seconds of ``[a, b)`` the sorted disjoint ``spans`` (k, 2) cover."""
    first = int(np.searchsorted(spans[:, 1], a, side="right"))  # the first span ending after a
    last = int(np.searchsorted(spans[:, 0], b, side="left"))  # past the last starting before b
    return sum(max(0.0, min(b, e) - max(a, s)) for s, e in spans[first:last].tolist())


def _finite_runs(x: np.ndarray, min_samples: int) -> list[tuple[int, int]]:
    """(start, end) of the runs of finite samples of ``x`` (n,) at least ``min_samples`` long
    (a saved session marks lost samples NaN; calibration uses only what was received)."""
    ok = np.concatenate([[False], np.isfinite(x), [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(ok))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2]) if b - a >= min_samples]
