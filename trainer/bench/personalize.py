"""``ecgedge bench personalize``: per-subject AF detection with on-device calibration of t.

Protocol (BENCHMARKS.md): per subject, windows are cut the way a stream cuts them and
labelled AF / non-AF from the rhythm annotations (majority of the window); the first 10%
of each rhythm's windows by time calibrate (see :func:`calibration_split` for why not the
first 10% of all), the rest test. Compared on the same
subjects: the bundle's global head at its default t; the user's head fitted at each fixed
t; t found by the Gaussian-process optimizer with γ (the SDK's :class:`Calibrator`); t by
grid search with γ; the user's head at the default t (fine-tune without t search); and
the objective ablation (γ vs ΔAcc / ΔF1 / ΔLoss) under the same optimizer budget.
A subject whose calibration part holds only one class cannot fit a head: every
personalized method falls back to the global model there, and the report counts them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from sdk.anchors import (
    ANCHOR_MODES,
    Anchors,
    anchors_mismatch,
    load_anchors,
    select_anchors,
)
from sdk.bundle import load_bundle
from sdk.calibration import OBJECTIVES, Calibrator, maximize_integer
from sdk.calibration.calibrator import DEFAULT_ANCHORS
from sdk.classifier import WindowClassifier, WindowInputs
from sdk.denoiser import WindowDenoiser
from sdk.head import SoftmaxHead, fit_softmax_head
from sdk.modalities import LorenzSpec, lorenz_image, rr_from_peaks
from sdk.rr import RR_FEATURE_NAMES, rr_features
from sdk.windowing import record_windows, window_starts
from trainer.bench.report import md_table, write_result
from trainer.data import records as rec
from trainer.data.datasets import cinc_record_windows, head_split

MITDB_AF = ("201", "203")  # the records of our mitdb sample with AF episodes
MITDB_NON_AF = ("101", "106", "119", "208", "209", "220")
FIXED_T = (20, 30, 40, 50, 60, 70)
GRID_T = tuple(range(0, 201, 5))[1:]  # 5, 10, …, 200 (41 points with t=1 added below)
CAL_FRACTION = 0.1
#: CinC 2017 validation records per class whose windows test what a user's head still knows
REFERENCE_PER_CLASS = 100
REFERENCE_SEED = 2


@dataclass
class Subject:
    name: str
    inputs: WindowInputs
    labels: np.ndarray  # (N,) "A" or "N", windows in time order
    seconds: np.ndarray  # (N,) start of each window on the subject's concatenated timeline
    denoised: bool = False  # windows denoised as StreamPipeline(denoise=True) does


def calibration_split(subject: Subject, window_s: float) -> tuple[np.ndarray, np.ndarray]:
    """(calibration, test) window indices: the first 10% of each class's windows by time;
    test windows overlapping a calibration window in time are left out (no shared samples).

    BENCHMARKS.md takes the first 10% of the subject's data; with paroxysmal AF that part
    almost never holds both rhythms, so no per-user head could be fitted. Taking the first
    10% of each rhythm keeps the calibration data early and small, and both classes in it.
    """
    cal: list[int] = []
    for label in np.unique(subject.labels):
        idx = np.flatnonzero(subject.labels == label)
        cal.extend(idx[: max(1, int(round(CAL_FRACTION * idx.size)))])
    cal_idx = np.sort(np.asarray(cal, dtype=np.int64))
    overlap = np.abs(subject.seconds[:, None] - subject.seconds[cal_idx][None, :]) < window_s
    test_idx = np.flatnonzero(~overlap.any(axis=1))
    return cal_idx, test_idx


def _labelled(
    signal: np.ndarray,
    fs: float,
    rhythm: list[tuple[int, int, str]],
    m: Any,
    denoiser: WindowDenoiser | None = None,
):
    rw = record_windows(
        signal, fs, m.preprocess, m.window_samples, m.hop_samples, denoiser=denoiser
    )
    labels = []
    for s in rw.starts:
        a, b = s / rw.fs * fs, (s + m.window_samples) / rw.fs * fs
        af = sum(max(0.0, min(b, e) - max(a, st)) for st, e, lab in rhythm if rec.is_af(lab))
        labels.append("A" if af >= 0.5 * (b - a) else "N")
    return rw, labels


def _record_order(r: rec.Record) -> int:
    tail = r.name.rsplit("_", 1)[-1]
    return int(tail) if "_" in r.name and tail.isdigit() else 0


def load_subjects(
    manifest: Any, max_subjects: int = 0, denoiser: WindowDenoiser | None = None
) -> list[Subject]:
    """mitdb records (with and without AF) and cpsc2021 subjects (records in order); with a
    1-lead ``denoiser`` the windows are denoised as the pipeline denoises them."""
    groups: dict[str, list[rec.Record]] = {}
    for name in (*MITDB_AF, *MITDB_NON_AF):
        groups[f"mitdb/{name}"] = [rec.read_mitdb(name)]
    for name in rec.list_records("cpsc2021"):
        subject = name.split("_")[1]
        groups.setdefault(f"cpsc2021/{subject}", []).append(rec.read_cpsc2021(name))
    subjects = []
    for key in tqdm(list(groups)[: max_subjects or None], desc="subjects", leave=False):
        parts = sorted(groups[key], key=_record_order)
        wins, rrs, lors, labels, seconds, offset = [], [], [], [], [], 0.0
        for r in parts:
            rhythm = r.annotations.rhythm if r.annotations else []
            rw, lab = _labelled(r.signal[:, 0], r.fs, rhythm, manifest, denoiser)
            seconds.append(offset + rw.starts / rw.fs)
            offset += r.duration_s + 3600.0  # records of a subject never overlap in time
            wins.append(rw.windows)
            rrs.append(rw.rr)
            lors.append(rw.lorenz)
            labels += lab
        inputs = WindowInputs(np.concatenate(wins), np.concatenate(rrs), np.concatenate(lors))
        subjects.append(
            Subject(
                key,
                inputs,
                np.asarray(labels),
                np.concatenate(seconds),
                denoised=denoiser is not None,
            )
        )
    return subjects


def _scores(
    y_true: np.ndarray, pred: np.ndarray, classes: tuple[str, ...]
) -> dict[str, float | None]:
    """F1 of AF and accuracy of AF vs non-AF for predicted class indices ``pred``, and the
    share of non-AF windows called "O" or "~" (classes the subjects are not labelled with)."""
    pred_af = pred == classes.index("A")
    truth = y_true == "A"
    tp = int(np.sum(pred_af & truth))
    denom = int(pred_af.sum() + truth.sum())
    f1 = 2 * tp / denom if truth.any() else None
    other = np.isin(pred, [k for k, c in enumerate(classes) if c not in ("N", "A")])
    return {
        "f1": f1,
        "accuracy": float(np.mean(pred_af == truth)),
        "other_share": float(np.mean(other[~truth])) if (~truth).any() else None,
    }


class _Features:
    """Head inputs of a subject's calibration / test windows per t, computed once.

    ``t`` is one step for every modality, or a ``{modality: t}`` mapping. With ``only``
    (e.g. ``("lorenz",)``) the features are those modalities' embeddings ++ RR, no fusion.
    """

    def __init__(
        self,
        clf: WindowClassifier,
        cal: WindowInputs,
        test: WindowInputs,
        only: tuple[str, ...] | None = None,
        more: dict[str, WindowInputs] | None = None,
    ) -> None:
        self.clf, self.sets = clf, {"cal": cal, "test": test, **(more or {})}
        self.modalities = only or clf.modalities
        self.only = only
        self.cache: dict[tuple[Any, ...], np.ndarray] = {}

    def __call__(self, part: str, t: int | dict[str, int]) -> np.ndarray:
        steps = t if isinstance(t, dict) else {mod: t for mod in self.modalities}
        key = (part, *sorted(steps.items()))
        if key not in self.cache:
            inputs = self.sets[part]
            if self.only is None:
                self.cache[key] = self.clf.features(inputs, steps)
            else:
                embs = [self.clf.embed_modality(m, inputs, steps[m])[0] for m in self.only]
                self.cache[key] = np.concatenate([*embs, inputs.rr], axis=1)
        return self.cache[key]


def _evaluate_subject(
    clf: WindowClassifier,
    bundle: Any,
    subject: Subject,
    gp_evals: int,
    reference: ReferenceWindows | None = None,
    anchors: Anchors | None = None,
) -> dict[str, Any]:
    """``anchors``: the bundle's (:func:`sdk.anchors.load_anchors`), read once per run."""
    m = bundle.manifest
    cal_idx, test_idx = calibration_split(subject, m.window_samples / m.fs)
    n_cal = len(cal_idx)
    cal_in, test_in = subject.inputs.take(cal_idx), subject.inputs.take(test_idx)
    y_cal, y_test = subject.labels[cal_idx], subject.labels[test_idx]
    if anchors is not None and anchors_mismatch(anchors, bundle, subject.denoised):
        anchors = None  # denoised otherwise than the subject's windows: the Calibrator skips them
    more = {"anchors": anchors.inputs} if anchors is not None else {}
    if reference is not None:
        more["reference"] = reference.inputs
    feats = _Features(clf, cal_in, test_in, more=more)
    t0 = {mod: m.default_t[mod] for mod in clf.modalities}
    global_p = clf.head.run({"features": feats("test", t0)}, ["probabilities"])[0]
    rows: dict[str, Any] = {"global": _scores(y_test, global_p.argmax(1), m.classes)}
    out: dict[str, Any] = {
        "subject": subject.name,
        "windows_cal": int(n_cal),
        "windows_test": int(len(y_test)),
        "af_cal": int(np.sum(y_cal == "A")),
        "af_test": int(np.sum(y_test == "A")),
        "methods": rows,
    }
    calibratable = len(set(y_cal.tolist())) == 2 and n_cal >= 8
    out["calibratable"] = calibratable
    codes = _codes(y_cal, m.classes)

    def fit(t: int | dict[str, int], mode: str) -> SoftmaxHead:
        if anchors is None or mode == "none":
            return fit_softmax_head(feats("cal", t), codes, m.classes)
        taken = select_anchors(anchors, codes, mode)
        x = np.concatenate([feats("cal", t), feats("anchors", t)[taken]])
        return fit_softmax_head(x, np.concatenate([codes, anchors.labels[taken]]), m.classes)

    def personal(
        t: int | dict[str, int], mode: str = "none", name: str | None = None
    ) -> dict[str, float | None]:
        if not calibratable:
            return rows["global"]
        head = fit(t, mode)
        if reference is not None and name is not None:
            recall[name] = reference.scores(head.predict_proba(feats("reference", t)))
        return _scores(y_test, head.predict_proba(feats("test", t)).argmax(1), m.classes)

    recall: dict[str, Any] = {}
    modes = [mode for mode in ANCHOR_MODES if mode != "none"] if anchors is not None else []
    rows["finetune_default_t"] = personal(t0, name="finetune_default_t")
    for mode in modes:
        name = f"finetune_default_t_anchors_{mode}"
        rows[name] = personal(t0, mode, name=name)
    for t in FIXED_T:
        rows[f"fixed_t{t}"] = personal(t)
    gp_runs = [(objective, DEFAULT_ANCHORS) for objective in OBJECTIVES]
    gp_runs += [("gamma", mode) for mode in (*modes, "none") if mode != DEFAULT_ANCHORS]
    if anchors is None:
        gp_runs = gp_runs[: len(OBJECTIVES)]
    if not calibratable:
        rows["grid_gamma"] = rows["global"]
        for objective, mode in gp_runs:
            rows[_gp_name(objective, mode, anchors is not None)] = rows["global"]
        return out
    if reference is not None:
        recall["global"] = reference.scores(
            clf.head.run({"features": feats("reference", t0)}, ["probabilities"])[0]
        )
        out["reference_recall"] = recall
    grid = (1, *(t for t in GRID_T if t <= m.t_max))
    gamma = {t: OBJECTIVES["gamma"](feats("cal", t), codes, len(m.classes)) for t in grid}
    t_grid = max(grid, key=lambda t: gamma[t])
    rows["grid_gamma"] = {**personal(t_grid), "t": t_grid, "evaluations": len(grid)}
    for objective, mode in gp_runs:
        cal = Calibrator(
            bundle,
            objective=objective,
            t_box=_box(m),
            max_evals=gp_evals,
            anchors=mode,
            denoise=subject.denoised,
        )
        cal.add_windows(cal_in, list(y_cal), source=subject.name, denoised=subject.denoised)
        tic = time.perf_counter()
        res = cal.calibrate(user=subject.name)
        seconds = time.perf_counter() - tic
        found = res.profile.t
        name = _gp_name(objective, mode, anchors is not None)
        pred = res.profile.head.predict_proba(feats("test", found)).argmax(1)
        rows[name] = {
            **_scores(y_test, pred, m.classes),
            "t": found,
            "evaluations": res.extractor_evaluations,
            "anchor_windows": res.profile.calibration["anchors"]["windows"],
            "seconds": seconds,
        }
        if objective == "gamma":  # how close the GP came to the grid's best γ
            rows[name]["gamma_gap_to_grid"] = gamma[t_grid] - float(res.search.best_y)
            if reference is not None:
                recall[name] = reference.scores(
                    res.profile.head.predict_proba(feats("reference", found))
                )
    return out


def _gp_name(objective: str, mode: str, bundle_has_anchors: bool) -> str:
    """``gp_gamma`` etc. for the Calibrator's default anchors, ``gp_gamma_anchors_all`` …
    for the others."""
    name = "gp_gamma" if objective == "gamma" else f"gp_{objective}"
    return name if mode == DEFAULT_ANCHORS or not bundle_has_anchors else f"{name}_anchors_{mode}"


@dataclass
class ReferenceWindows:
    """Windows of every class from records no model of the bundle was fitted on (CinC 2017
    validation split): does a user's head still tell the classes apart?"""

    inputs: WindowInputs
    labels: np.ndarray  # (N,) class indices
    classes: tuple[str, ...]
    records: int

    def scores(self, proba: np.ndarray) -> dict[str, float]:
        """Recall per class and 4-class macro F1 of ``proba``'s argmax."""
        pred = proba.argmax(1)
        out = {}
        f1s = []
        for k, c in enumerate(self.classes):
            truth, said = self.labels == k, pred == k
            tp = float(np.sum(truth & said))
            out[f"recall_{c}"] = tp / max(1, int(truth.sum()))
            f1s.append(2 * tp / max(1, int(truth.sum() + said.sum())))
        out["macro_f1"] = float(np.mean(f1s))
        return out


def reference_windows(
    bundle: Any, denoiser: WindowDenoiser | None, per_class: int = REFERENCE_PER_CLASS
) -> ReferenceWindows:
    """One random window (seeded) of up to ``per_class`` random validation records per class,
    cut (and denoised) as the device does."""
    m = bundle.manifest
    _, val = head_split(m.provenance.get("training_data", {}))
    labels = rec.cinc2017_labels_cached()
    rng = np.random.default_rng(REFERENCE_SEED)
    parts, y = [], []
    for k, c in enumerate(m.classes):
        pool = sorted(n for n in val if labels[n] == c)
        chosen = [pool[i] for i in rng.permutation(len(pool))[:per_class]]
        for _, _, rw in cinc_record_windows(bundle, chosen, denoiser):
            j = int(rng.integers(rw.starts.size))
            parts.append(WindowInputs(rw.windows, rw.rr, rw.lorenz).take(np.array([j])))
            y.append(k)
    lorenz = [p.lorenz for p in parts if p.lorenz is not None]
    inputs = WindowInputs(
        np.concatenate([p.windows for p in parts]),
        np.concatenate([p.rr for p in parts]),
        np.concatenate(lorenz) if len(lorenz) == len(parts) else None,
    )
    return ReferenceWindows(inputs, np.asarray(y), tuple(m.classes), len(parts))


def load_rr_subjects(manifest: Any, max_subjects: int = 0) -> list[Subject]:
    """AFDB subjects from beat times alone (``afdb_rr``): RR features and Lorenz images per
    window, as a Heart Rate Service stream would give them; no ECG samples exist."""
    fs = 250.0
    window, hop = (
        int(round(n / manifest.fs * fs)) for n in (manifest.window_samples, manifest.hop_samples)
    )
    subjects = []
    for name in rec.list_records("afdb_rr")[: max_subjects or None]:
        ann = rec.read_afdb_rr(name)
        beats = ann.beat_samples
        starts = window_starts(int(beats[-1]) + 1, window, hop)
        rr = np.zeros((starts.size, len(RR_FEATURE_NAMES)), np.float32)
        lorenz = np.zeros((starts.size, LorenzSpec().grid, LorenzSpec().grid), np.float32)
        labels = []
        for i, st in enumerate(starts):
            inside = beats[(beats >= st) & (beats < st + window)] - st
            rr[i] = rr_features(inside, fs)
            lorenz[i] = lorenz_image(rr_from_peaks(inside, fs))
            af = sum(
                max(0, min(st + window, e) - max(st, b))
                for b, e, lab in ann.rhythm
                if rec.is_af(lab)
            )
            labels.append("A" if af >= 0.5 * window else "N")
        no_ecg = np.zeros((starts.size, 1, 1), np.float32)  # the Lorenz path never reads it
        subjects.append(
            Subject(
                f"afdb_rr/{name}", WindowInputs(no_ecg, rr, lorenz), np.asarray(labels), starts / fs
            )
        )
    return subjects


def _evaluate_rr_subject(
    clf: WindowClassifier, bundle: Any, subject: Subject, gp_evals: int
) -> dict[str, Any]:
    """The Lorenz modality alone (its embedding ++ RR features): per-user heads only (the
    bundle's head needs ECG modalities too, so there is no global row)."""
    m = bundle.manifest
    cal_idx, test_idx = calibration_split(subject, m.window_samples / m.fs)
    feats = _Features(
        clf, subject.inputs.take(cal_idx), subject.inputs.take(test_idx), only=("lorenz",)
    )
    y_cal, y_test = subject.labels[cal_idx], subject.labels[test_idx]
    out: dict[str, Any] = {
        "subject": subject.name,
        "windows_cal": int(cal_idx.size),
        "windows_test": int(test_idx.size),
        "af_cal": int(np.sum(y_cal == "A")),
        "af_test": int(np.sum(y_test == "A")),
        "calibratable": len(set(y_cal.tolist())) == 2 and cal_idx.size >= 8,
        "methods": {},
    }
    if not out["calibratable"]:
        return out
    codes, k = _codes(y_cal, m.classes), len(m.classes)

    def personal(t: int) -> dict[str, float | None]:
        head = fit_softmax_head(feats("cal", t), codes, m.classes)
        return _scores(y_test, head.predict_proba(feats("test", t)).argmax(1), m.classes)

    rows = out["methods"]
    rows["finetune_default_t"] = personal(m.default_t["lorenz"])
    for t in FIXED_T:
        rows[f"fixed_t{t}"] = personal(t)
    grid = (1, *(t for t in GRID_T if t <= m.t_max))
    gamma = {t: OBJECTIVES["gamma"](feats("cal", t), codes, k) for t in grid}
    t_grid = max(grid, key=lambda t: gamma[t])
    rows["grid_gamma"] = {**personal(t_grid), "t": t_grid, "evaluations": len(grid)}
    tic = time.perf_counter()
    res = maximize_integer(
        lambda x: OBJECTIVES["gamma"](feats("cal", x[0]), codes, k), [_box(m)], max_evals=gp_evals
    )
    seconds = time.perf_counter() - tic
    t_gp = res.best_x[0]
    rows["gp_gamma"] = {
        **personal(t_gp),
        "t": t_gp,
        "evaluations": res.evaluations,
        "seconds": seconds,
    }
    rows["gp_gamma"]["gamma_gap_to_grid"] = gamma[t_grid] - float(res.best_y)
    return out


def _box(m: Any) -> tuple[int, int]:
    return (1, min(200, m.t_max))


def _codes(labels: np.ndarray, classes: tuple[str, ...]) -> np.ndarray:
    return np.array([classes.index(str(v)) for v in labels], dtype=np.int64)


def _summary(values: list[float | None]) -> dict[str, float | int]:
    v = np.array([x for x in values if x is not None], dtype=np.float64)
    if v.size == 0:
        return {"n": 0}
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    return {
        "n": int(v.size),
        "mean": float(v.mean()),
        "median": float(med),
        "q1": float(q1),
        "q3": float(q3),
    }


def calibration_speed(bundle_dir: Path, minutes: float = 10.0) -> dict[str, Any]:
    """Wall time of one calibration (default Calibrator, one thread) on mitdb 201's start."""
    bundle = load_bundle(bundle_dir)
    r = rec.read_mitdb("201")
    n = int(minutes * 60 * r.fs)
    intervals = [
        (s / r.fs, min(e, n) / r.fs, "A" if rec.is_af(lab) else "N")
        for s, e, lab in (r.annotations.rhythm if r.annotations else [])
        if s < n
    ]
    cal = Calibrator(bundle, threads=1)
    windows = cal.add_recording(r.signal[:n, 0], r.fs, intervals)
    tic = time.perf_counter()
    res = cal.calibrate(user="mitdb/201")
    return {
        "record": "mitdb/201",
        "minutes": minutes,
        "windows": windows,
        "seconds": time.perf_counter() - tic,
        "extractor_evaluations": res.extractor_evaluations,
        "t": res.profile.t,
        "stopped": res.search.stopped,
    }


def seen_before(manifest: Any, subjects: list[str]) -> dict[str, Any]:
    """Which subjects' ECG the bundle's models saw in training (none of it with rhythm
    labels): the extractors' self-supervised pretraining databases, and the denoiser's clean
    training and checkpoint-selection records (its record split, re-derived from its config
    in the provenance)."""
    from trainer.data.denoise_data import record_split

    prov = manifest.provenance
    pretrain = set(prov.get("training_data", {}).get("pretrain", []))
    data = prov.get("denoiser", {}).get("config", {}).get("data", {})
    denoiser_train: set[str] = set()
    for db in data.get("databases", []):
        if db == "mitdb":
            split = record_split(
                db,
                float(data["val_fraction"]),
                int(data["split_seed"]),
                float(data.get("select_fraction", 0.0)),  # 0: a run before selection records
            )
            denoiser_train |= {f"mitdb/{n}" for n in split.train + split.select}
    return {
        "extractor_pretraining": sorted(s for s in subjects if s.split("/")[0] in pretrain),
        "denoiser_training": sorted(s for s in subjects if s in denoiser_train),
        "head_training": prov.get("training_data", {}).get("head", ""),
    }


def run(
    bundle_dir: Path,
    out_dir: Path,
    *,
    gp_evals: int = 13,
    max_subjects: int = 0,
    log: Callable[[str], None] = print,
    report: str = "personalize",
) -> dict[str, Any]:
    bundle = load_bundle(bundle_dir)
    clf = WindowClassifier(bundle, threads=1)
    denoiser = WindowDenoiser.from_bundle(bundle, 1, threads=1)
    subjects = load_subjects(bundle.manifest, max_subjects, denoiser)
    reference = reference_windows(bundle, denoiser)
    anchors = load_anchors(bundle)
    per_subject = [
        _evaluate_subject(clf, bundle, s, gp_evals, reference, anchors)
        for s in tqdm(subjects, desc="personalize", unit="subject")
    ]
    rr_subjects = []
    if "lorenz" in clf.modalities:
        rr_subjects = [
            _evaluate_rr_subject(clf, bundle, s, gp_evals)
            for s in tqdm(load_rr_subjects(bundle.manifest, max_subjects), desc="afdb_rr")
        ]
    speed = calibration_speed(bundle_dir)
    result = {
        "bundle": bundle.manifest.name,
        "bundle_dir": str(bundle_dir),
        "denoised": denoiser is not None,
        "seen_before": seen_before(bundle.manifest, [s.name for s in subjects]),
        "protocol": {
            "calibration_fraction": CAL_FRACTION,
            "fixed_t": list(FIXED_T),
            "grid_t": [1, *GRID_T],
            "gp_max_evaluations": gp_evals,
            "t_box": [1, 200],
        },
        "subjects": per_subject,
        "summary": _summaries(per_subject),
        "reference": {"records": reference.records, "per_class": REFERENCE_PER_CLASS},
        "default_anchors": DEFAULT_ANCHORS,
        "anchors_usable": anchors is not None
        and anchors_mismatch(anchors, bundle, denoiser is not None) is None,
        "reference_summary": _reference_summary(per_subject),
        "rr_subjects": rr_subjects,
        "rr_summary": _summaries([s for s in rr_subjects if s["calibratable"]]),
        "calibration_speed": speed,
    }
    write_result(out_dir, report, result, _markdown(result, report))
    log((out_dir / f"{report}.md").read_text())
    return result


def _summaries(subjects: list[dict[str, Any]]) -> dict[str, Any]:
    """Per method: F1 over subjects with AF in their test part, accuracy over all; and how
    GP + γ compares with grid + γ on the subjects that could be calibrated."""
    methods = list(subjects[0]["methods"]) if subjects else []
    out: dict[str, Any] = {
        name: {
            "f1_af_subjects": _summary([s["methods"][name]["f1"] for s in subjects]),
            "accuracy_all_subjects": _summary([s["methods"][name]["accuracy"] for s in subjects]),
            "other_share_calibrated_subjects": _summary(
                [s["methods"][name].get("other_share") for s in subjects if s["calibratable"]]
            ),
        }
        for name in methods
    }
    both = [
        s["methods"]
        for s in subjects
        if s["calibratable"] and s["methods"]["grid_gamma"]["f1"] is not None
    ]
    # the grid's head is fitted on the user's windows alone: compare the GP run without anchors
    gp = "gp_gamma_anchors_none" if both and "gp_gamma_anchors_none" in both[0] else "gp_gamma"
    if both:
        diff = [m[gp]["f1"] - m["grid_gamma"]["f1"] for m in both]
        out["gp_vs_grid"] = {
            "gp_row": gp,
            "subjects": len(both),
            "mean_f1_difference": float(np.mean(diff)),
            "max_abs_f1_difference": float(np.max(np.abs(diff))),
            "gp_evaluations_mean": float(np.mean([m[gp]["evaluations"] for m in both])),
            "grid_evaluations": both[0]["grid_gamma"]["evaluations"],
        }
    out["calibratable_subjects"] = sum(bool(s["calibratable"]) for s in subjects)
    out["subjects"] = len(subjects)
    return out


def _reference_summary(subjects: list[dict[str, Any]]) -> dict[str, Any]:
    """Per head: the mean over calibrated subjects of each reference score."""
    done = [s["reference_recall"] for s in subjects if "reference_recall" in s]
    if not done:
        return {}
    return {
        name: {k: float(np.mean([d[name][k] for d in done])) for k in done[0][name]}
        for name in done[0]
    } | {"subjects": len(done)}


def _reference_section(r: dict[str, Any]) -> str:
    summ = r.get("reference_summary") or {}
    if not summ:
        return ""
    heads = [k for k in summ if k != "subjects"]
    keys = [k for k in summ[heads[0]] if k.startswith("recall_")] + ["macro_f1"]
    rows = [[h, *(f"{summ[h][k]:.2f}" for k in keys)] for h in heads]
    header = ["head", *(f"recall {k[7:]}" for k in keys[:-1]), "4-class macro F1"]
    ref = r["reference"]
    return f"""
## Does a user's head still know every class?

The heads of the {summ["subjects"]} calibrated subjects on {ref["records"]} windows of CinC
2017 validation records (one random window each of up to {ref["per_class"]} records per class,
cut{" and denoised" if r.get("denoised") else ""} as the device does; records no model of the
bundle was fitted on), at each head's own t; means over subjects. A head fitted on the
user's windows alone never saw "O" or "~" (the subjects are labelled AF / non-AF); with the
bundle's anchor windows (`sdk.anchors`) it was fitted on those classes too.
These are other people's windows: the figure says what a head can still recognise, not how
it does on its user.

{md_table(header, rows)}
"""


def _fmt(s: dict[str, Any]) -> str:
    if not s.get("n"):
        return "n/a"
    return f"{s['mean']:.3f} / {s['median']:.3f} [{s['q1']:.3f}, {s['q3']:.3f}]"


def _method_rows(summary: dict[str, Any]) -> list[list[Any]]:
    return [
        [
            name,
            _fmt(v["f1_af_subjects"]),
            _fmt(v["accuracy_all_subjects"]),
            _fmt(v.get("other_share_calibrated_subjects", {})),
        ]
        for name, v in summary.items()
        if isinstance(v, dict) and "f1_af_subjects" in v
    ]


METHOD_HEADER = ["method", "F1 (AF subjects)", "accuracy (all)", "non-AF called O / ~ (calibrated)"]


def _f1(m: dict[str, Any], k: str) -> str:
    if k not in m or m[k]["f1"] is None:
        return "n/a"
    t = m[k].get("t")
    return f"{m[k]['f1']:.3f}" + (f" (t={t})" if t is not None else "")


def _subject_rows(subjects: list[dict[str, Any]], keys: list[str]) -> list[list[Any]]:
    return [
        [s["subject"], f"{s['af_cal']}/{s['windows_cal']}", f"{s['af_test']}/{s['windows_test']}"]
        + [_f1(s["methods"], k) for k in keys]
        for s in subjects
    ]


def _gp_line(summary: dict[str, Any]) -> str:
    g = summary.get("gp_vs_grid")
    if not g:
        return "GP vs grid: no subject could be calibrated."
    return (
        f"GP + γ (`{g.get('gp_row', 'gp_gamma')}`: the grid's head, too, is fitted on the user's "
        f"windows alone) vs grid + γ over {g['subjects']} calibrated subjects: F1 difference mean "
        f"{g['mean_f1_difference']:+.3f}, largest {g['max_abs_f1_difference']:.3f}, with "
        f"{g['gp_evaluations_mean']:.1f} vs {g['grid_evaluations']} extractor evaluations."
    )


def _seen_line(seen: dict[str, Any] | None, n: int) -> str:
    if seen is None:
        return ""
    den = ", ".join(seen["denoiser_training"]) or "none"
    return (
        f"What the models saw of these {n} subjects before calibration, none of it with rhythm "
        f"labels: the extractors' self-supervised pretraining held "
        f"{len(seen['extractor_pretraining'])} of them; the denoiser's clean training or "
        f"checkpoint-selection data held {den}. The global head was fitted on "
        f"{seen['head_training'] or 'other data'} "
        "only. The rows compare methods on the same models; absolute figures may be "
        "optimistic for subjects the extractors or the denoiser saw."
    )


def _anchor_text(r: dict[str, Any]) -> str:
    if not r.get("anchors_usable"):
        return (
            "The bundle has no anchor windows usable with these windows (`sdk.anchors`): "
            "every head is fitted on the user's windows alone."
        )
    return f"""The GP rows
are the SDK's `Calibrator` with its default anchor windows (`anchors="{r["default_anchors"]}"`,
`sdk.anchors`); `_anchors_missing` rows also fit the user's head on the bundle's
anchor windows of the classes the user labelled none of (here O and ~), `_anchors_all` on
every anchor window, `_anchors_none` on none. The fine-tune, fixed-t and grid rows fit on the
user's windows alone unless their name says otherwise."""


def _markdown(r: dict[str, Any], report: str = "personalize") -> str:
    keys = ["global", "finetune_default_t", "fixed_t20", "fixed_t50", "gp_gamma", "grid_gamma"]
    header = ["subject", "cal AF/win", "test AF/win", "global", "fine-tune t0", "fixed t=20"]
    header += ["fixed t=50", "GP + γ", "grid + γ"]
    rr_header = header[:3] + header[4:]  # no global head on beat times alone
    for mode in ANCHOR_MODES:  # GP + γ with the anchors other than the Calibrator's default
        if r["subjects"] and f"gp_gamma_anchors_{mode}" in r["subjects"][0]["methods"]:
            keys.append(f"gp_gamma_anchors_{mode}")
            header.append(f"GP + γ, anchors {mode}")
    sp, summ = r["calibration_speed"], r["summary"]
    text = f"""# personalize — per-subject AF detection with on-device calibration of t

Command: `ecgedge bench personalize --bundle {r.get("bundle_dir", "DIR")}{
        f" --report {report}" if report != "personalize" else ""
    }` (bundle `{r["bundle"]}`; ECG windows {
        "denoised by the bundle's denoiser as the pipeline denoises them"
        if r.get("denoised")
        else "not denoised"
    }). Per subject the first
{r["protocol"]["calibration_fraction"]:.0%} of each rhythm's windows (by time) calibrate,
the rest test, less the test windows that overlap a calibration window (BENCHMARKS.md says
the first 10% of all data; with paroxysmal AF that part rarely holds both rhythms); labels
AF vs non-AF by majority of the window. F1 is the AF class's, over subjects with AF in their
test part; accuracy (AF vs non-AF) over all subjects; the last column is the share of a
calibrated subject's non-AF test windows the head calls "O" or "~" (the subjects carry no
such labels: their "other" rhythms, e.g. mitdb/203's ventricular runs, may earn it), over the
subjects that could be calibrated. Cells: mean / median [q1, q3]. GP: at most
{r["protocol"]["gp_max_evaluations"]} objective evaluations over t in 1…200 (every modality), within
the Calibrator's default budget of extractor runs (`max_extractor_evals`; one run per modality
per evaluation);
grid: {len(r["protocol"]["grid_t"])} values of one t shared by every modality. Subjects
whose calibration part holds one rhythm ({summ["subjects"] - summ["calibratable_subjects"]}
of {summ["subjects"]}) cannot fit a head: they keep the global model in every row. {_anchor_text(r)}

{md_table(METHOD_HEADER, _method_rows(summ))}

{_gp_line(summ)}

{_seen_line(r.get("seen_before"), summ["subjects"])}
{_reference_section(r)}
Per subject (F1 of AF):

{md_table(header, _subject_rows(r["subjects"], keys))}

Calibration speed: {sp["minutes"]:.0f} min of {sp["record"]} ({sp["windows"]} windows), default
`Calibrator` on one thread: {sp["seconds"]:.1f} s, {sp["extractor_evaluations"]} extractor
evaluations (stopped: {sp["stopped"]}), t = {sp["t"]}.
"""
    if r["rr_subjects"]:
        rs = r["rr_summary"]
        rr_keys = ["finetune_default_t", "fixed_t20", "fixed_t50", "gp_gamma", "grid_gamma"]
        text += f"""
## Beat times only: the Lorenz modality on `afdb_rr`

Lorenz embedding ++ RR features, a per-user head (no global row: the bundle's head needs the
ECG modalities). {rs["subjects"]} calibrated subjects of {len(r["rr_subjects"])}.

{md_table(METHOD_HEADER, _method_rows(rs))}

{_gp_line(rs)}

{md_table(rr_header, _subject_rows(r["rr_subjects"], rr_keys))}
"""
    return text
