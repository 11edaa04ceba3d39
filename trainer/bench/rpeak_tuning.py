"""``ecgedge bench rpeak-tuning``: choose the R-peak detector's search-back rule on mitdb records
with added noise, never on the noise-stress records (118, 119) that ``bench noise-stress`` scores.

Tuning set: the mitdb records that the bundle's denoiser neither trained on nor has in the
noise-stress benchmark (its checkpoint-selection and evaluation records), lead 0 (MLII; V5
in 114, whose leads are swapped); a 2-lead denoiser sees leads 0 and 1 (MLII and V1; V5 and
MLII in 114), each with its own channel of
the noise record, each at the level measured on its own QRS. Noise is added as in nstdb: from
minute 5 on, two-minute noisy segments alternating with clean ones, at the labels 12, 6 and 0
dB. The noise is NSTDB muscle artefact (``ma``) from the first 80% of the record (the
denoiser's training and selection part; the last 20% stays unseen), starting at a seeded random
offset per record. Electrode motion is left out: the only ``em`` there is was recovered from
118e*/119e*, so it is the noise-stress benchmark's own noise.

The SNR scale is nstdb's: signal power is the squared median peak-to-peak QRS amplitude / 8,
noise power the mean square over the noisy segments, and the labels of nstdb's 118e*/119e* are
this ratio plus a constant offset, measured here from those records' noise amplitude (not from
any detection) and applied to the tuning records.

Each rule ``(I2 / I1, pick)`` runs the SDK's streaming Pan-Tompkins
(:func:`sdk.rpeaks.detect_rpeaks`) on the device representation (128 Hz, band-pass), with and
without the bundle's denoiser, and on the clean tuning records; behind a multi-lead denoiser on
all its denoised leads (in mV, as the pipeline weighs them:
:meth:`sdk.denoiser.DenoisedWindow.beat_signal`), and on lead 0 alone for comparison. Behind the
denoiser the record is denoised window by window and stitched
(:func:`sdk.denoiser.denoise_signal`), as ``bench noise-stress`` scores it; a streaming
pipeline detects in each denoised window alone (what it reports is measured in ``bench noise-
stress``'s heart-rate section).

The chosen rule maximizes min(Se, +P) at 6 dB (denoised when the bundle has a denoiser) among
rules that keep Se and +P at 12 dB >= 99% and lose at most 0.05 points of clean +P against Pan
and Tompkins' rule (0.5, largest).

With a denoiser, a second table scores a window's beats as a denoising stream finds them (the
bundle's rule): each window (the bundle's window and hop) denoised alone
(:meth:`sdk.denoiser.WindowDenoiser.denoise_leads`), its beats detected on the window alone and
with the previous window's denoised samples before it as context
(:func:`sdk.rpeaks.denoised_window_rpeaks`, :func:`sdk.windowing.denoised_context`, as
:class:`sdk.pipeline.StreamPipeline`). Beats and detections within 0.1 s of a window's edges
are not scored; the counts pool every window (a beat lies in two windows)."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from sdk import rpeaks
from sdk.preprocess import Preprocessor, PreprocessSpec
from trainer.bench.noise_stress import bundle_denoiser, score, se_pp
from trainer.bench.report import md_table, write_result
from trainer.data import records as rec
from trainer.data.denoise_data import NOISE_STRESS_RECORDS, record_split
from trainer.data.noise import NOISE_PARTS, em_segments, noise_360

LEVELS_DB = (12, 6, 0)
NOISE_KINDS = ("ma",)  # not em: recovered from the noise-stress records themselves
THRESHOLDS = (0.5, 0.3, 0.2, 0.15, 0.1, 0.05, 0.0)
PICKS = ("largest", "nearest")
PAPER_RULE = (0.5, "largest")
MIN_SE_PP_12DB = 99.0
CLEAN_PP_TOLERANCE = 0.05  # percentage points of +P on the clean tuning records
QRS_HALF_WINDOW_S = 0.05
WINDOW_EDGE_S = 0.1  # beats this close to a window's edges are not scored per window
DEFAULT_SPLIT = {"val_fraction": 0.2, "split_seed": 2017, "select_fraction": 0.1}


@dataclass
class Case:
    """One tuning record at one noise condition, in the device representation."""

    name: str
    kind: str  # "em", "ma" or "clean"
    level_db: int | None
    ref_s: np.ndarray
    delay_s: float
    y: np.ndarray  # (n, leads): the leads the denoiser sees (lead 0 alone without one)
    y_denoised: np.ndarray | None  # (n, leads)
    fs: float


def qrs_power(x: np.ndarray, beats: np.ndarray, fs: float) -> float:
    """nstdb's signal power: (median peak-to-peak amplitude within ±50 ms of the beats)² / 8."""
    w = int(round(QRS_HALF_WINDOW_S * fs))
    inside = beats[(beats >= w) & (beats + w < x.size)]
    if inside.size == 0:
        raise ValueError("no annotated beat lies far enough from the record's ends")
    pp = [float(np.ptp(x[b - w : b + w + 1])) for b in inside]
    return float(np.median(pp)) ** 2 / 8.0


def noisy_mask(n: int, fs: float) -> np.ndarray:
    """nstdb's layout: noise from minute 5 on, two minutes on, two minutes off."""
    on = np.zeros(n, dtype=bool)
    for start, end in em_segments(n, fs):
        on[start:end] = True
    return on


def nstdb_snr_offset() -> tuple[float, dict[str, float]]:
    """Mean of (nstdb label − qrs_power / noise power in dB) over 118e*/119e* at 12, 6, 0 dB."""
    per: dict[str, float] = {}
    for name in NOISE_STRESS_RECORDS:
        clean = rec.read_mitdb(name)
        x = clean.signal[:, 0].astype(np.float64)
        assert clean.annotations is not None
        s = qrs_power(x, clean.annotations.beat_samples, clean.fs)
        for level in LEVELS_DB:
            noisy = rec.read_nstdb(f"{name}e{level:02d}").signal[:, 0].astype(np.float64)
            n = min(noisy.size, x.size)
            diff = noisy[:n] - x[:n]
            segs = [diff[a:b] - diff[a:b].mean() for a, b in em_segments(n, clean.fs)]
            noise_power = float(np.mean(np.square(np.concatenate(segs))))
            per[f"{name}e{level:02d}"] = level - 10.0 * np.log10(s / noise_power)
    return float(np.mean(list(per.values()))), per


def tuning_records(split: dict[str, Any]) -> list[str]:
    """The denoiser's checkpoint-selection and evaluation mitdb records (never 118/119)."""
    side = record_split(
        "mitdb", split["val_fraction"], split["split_seed"], split["select_fraction"]
    )
    names = sorted(side.select + side.eval)
    if set(names) & set(NOISE_STRESS_RECORDS):
        raise ValueError(f"the tuning records {names} include a noise-stress record")
    return names


def _noise(kind: str, n: int, seed: int, channel: int = 0) -> np.ndarray:
    src = noise_360(kind)[:, channel].astype(np.float64)
    src = src[: int(round(NOISE_PARTS["select"][1] * src.size))]  # never the evaluation 20%
    start = int(np.random.default_rng(seed).integers(0, src.size))
    z = np.tile(src, int(np.ceil((n + start) / src.size)) + 1)[start : start + n]
    return z - z.mean()


def add_noise(
    x: np.ndarray,
    beats: np.ndarray,
    fs: float,
    kind: str,
    snr_db: float,
    seed: int,
    channel: int = 0,
) -> np.ndarray:
    """``x`` (one lead, 360 Hz) plus noise ``kind`` (its ``channel``) on the nstdb segments,
    ``qrs_power`` / noise power = ``snr_db`` over those segments."""
    z = _noise(kind, x.size, seed, channel)
    on = noisy_mask(x.size, fs)
    k = np.sqrt(qrs_power(x, beats, fs) / np.mean(np.square(z[on])) / 10.0 ** (snr_db / 10.0))
    return x + k * z * on


def build_cases(den: Any, spec: PreprocessSpec, names: list[str], offset_db: float) -> list[Case]:
    """Every tuning record clean and with each noise type at each level, preprocessed (and
    denoised when ``den`` is given). A multi-lead denoiser sees the record's first leads, each
    with its own channel of the noise record, each at the level on its own QRS power."""
    from sdk.denoiser import denoise_signal

    cases = []
    jobs = [(n, "clean", None) for n in names]
    jobs += [(n, k, lv) for n in names for k in NOISE_KINDS for lv in LEVELS_DB]
    for name, kind, level in tqdm(jobs, desc="rpeak-tuning: cases", unit="case"):
        r = rec.read_mitdb(name)
        assert r.annotations is not None
        leads = den.leads if den is not None else 1
        x = r.signal[:, :leads].astype(np.float64)
        if level is not None:
            seed = zlib.crc32(f"{name}/{kind}".encode())
            for j in range(leads):
                x[:, j] = add_noise(
                    x[:, j], r.annotations.beat_samples, r.fs, kind, level - offset_db, seed, j
                )
        pre = Preprocessor(r.fs, spec, leads)
        y = pre.process(x).astype(np.float64)
        yd = denoise_signal(den, y) if den is not None else None
        ref = r.annotations.beat_samples / r.fs
        cases.append(Case(name, kind, level, ref, pre.delay_s, y, yd, spec.fs))
    return cases


def evaluate(cases: list[Case], threshold: float, pick: str) -> dict[str, dict[str, float]]:
    """Pooled Se / +P per condition (``"12 dB"``, ``"6 dB"``, ``"0 dB"``, ``"clean"``) and
    signal (``"raw"``: lead 0; ``"denoised"``: every denoised lead, as the pipeline takes
    them; with a multi-lead denoiser also ``"denoised lead 0"``)."""
    counts: dict[tuple[str, str], dict[str, int]] = {}
    for c in cases:
        cond = "clean" if c.level_db is None else f"{c.level_db} dB"
        signals: list[tuple[str, np.ndarray]] = [("raw", c.y[:, 0])]
        if c.y_denoised is not None:
            yd = c.y_denoised
            signals.append(("denoised", yd[:, 0] if yd.shape[1] == 1 else yd))
            if yd.shape[1] > 1:
                signals.append(("denoised lead 0", yd[:, 0]))
        for sig, y in signals:
            peaks = rpeaks.detect_rpeaks(
                y, c.fs, search_back_threshold=threshold, search_back_pick=pick
            )
            _tally(counts, (cond, sig), score(c.ref_s, peaks / c.fs - c.delay_s, None))
    return _rates(counts)


def _tally(counts: dict[tuple[str, str], dict[str, int]], key: tuple[str, str], got: dict) -> None:
    acc = counts.setdefault(key, {"tp": 0, "fn": 0, "fp": 0})
    for k, v in got.items():
        acc[k] += v


def _rates(counts: dict[tuple[str, str], dict[str, int]]) -> dict[str, dict[str, float]]:
    """``"<condition> / <signal or mode>"`` → the counts with Se and +P (%)."""
    out: dict[str, dict[str, float]] = {}
    for (cond, what), n in counts.items():
        se, pp = se_pp(n)
        out[f"{cond} / {what}"] = {**n, "se": se, "pp": pp}
    return out


def window_beats(cases: list[Case], den: Any, window: int, hop: int) -> dict[str, dict[str, float]]:
    """Pooled Se / +P per condition and mode (``"alone"``, ``"with context"``) of the beats
    of each denoised window (module docstring)."""
    from sdk.windowing import denoised_context

    counts: dict[tuple[str, str], dict[str, int]] = {}
    for c in tqdm(cases, desc="rpeak-tuning: window beats", unit="case"):
        cond = "clean" if c.level_db is None else f"{c.level_db} dB"
        ref = c.ref_s + c.delay_s  # in the device representation's time
        edge = WINDOW_EDGE_S * c.fs
        prev: tuple[int, np.ndarray] | None = None
        for s in range(0, c.y.shape[0] - window + 1, hop):
            denoised = den.denoise_leads(c.y[s : s + window].astype(np.float32), 0)
            x = denoised.beat_signal()
            context = denoised_context(prev, s)
            prev = (s, x)
            spans = [((s + edge) / c.fs, (s + window - edge) / c.fs)]
            for mode, ctx in (("alone", None), ("with context", context)):
                peaks = rpeaks.denoised_window_rpeaks(
                    x,
                    window,
                    c.fs,
                    ctx,
                    search_back_threshold=den.search_back_threshold,
                    min_qrs_energy=denoised.min_qrs_energy,
                )
                _tally(counts, (cond, mode), score(ref, (peaks + s) / c.fs, spans))
    return _rates(counts)


def choose(results: dict[tuple[float, str], dict], signal: str) -> tuple[float, str]:
    """The rule of the module docstring; ``results[(threshold, pick)] = evaluate(...)``."""
    paper_clean_pp = results[PAPER_RULE][f"clean / {signal}"]["pp"]

    def ok(r: dict) -> bool:
        at12 = r[f"12 dB / {signal}"]
        return (
            min(at12["se"], at12["pp"]) >= MIN_SE_PP_12DB
            and r[f"clean / {signal}"]["pp"] >= paper_clean_pp - CLEAN_PP_TOLERANCE
        )

    def objective(rule: tuple[float, str]) -> float:
        at6 = results[rule][f"6 dB / {signal}"]
        return min(at6["se"], at6["pp"])

    allowed = [rule for rule, r in results.items() if ok(r)] or [PAPER_RULE]
    return max(allowed, key=objective)


def run(
    out_dir: Path, *, bundle_dir: Path | None = None, report: str = "rpeak_tuning"
) -> dict[str, Any]:
    """Evaluate every search-back rule on the tuning set; write ``<report>.json`` and ``.md``."""
    bundle, den, spec, bundle_name = bundle_denoiser(bundle_dir)
    split = dict(DEFAULT_SPLIT)
    if den is not None:
        data = bundle.manifest.provenance.get("denoiser", {}).get("config", {}).get("data", {})
        split = {k: data.get(k, v) for k, v in DEFAULT_SPLIT.items()}
    offset, per_record = nstdb_snr_offset()
    names = tuning_records(split)
    cases = build_cases(den, spec, names, offset)
    rules = [(t, p) for t in THRESHOLDS for p in PICKS]
    results = {rule: evaluate(cases, *rule) for rule in tqdm(rules, desc="rpeak-tuning: rules")}
    signal = "denoised" if den is not None else "raw"
    chosen = choose(results, signal)
    windows = (
        window_beats(cases, den, bundle.manifest.window_samples, bundle.manifest.hop_samples)
        if den is not None
        else None
    )
    sdk_rule = (rpeaks.SEARCH_BACK_THRESHOLD, "nearest")
    # the rule the bundle's pipeline uses: its denoiser's, when the manifest sets one
    bundle_rule = (den.search_back_threshold, "nearest") if den is not None else sdk_rule
    command = "ecgedge bench rpeak-tuning" + (f" --bundle {bundle_dir}" if bundle_dir else "")
    command += f" --report {report}" if report != "rpeak_tuning" else ""
    result = {
        "command": command,
        "bundle": bundle_name,
        "records": names,
        "beats_per_condition": int(sum(c.ref_s.size for c in cases if c.kind == "clean")),
        "nstdb_snr_offset_db": offset,
        "nstdb_snr_offset_per_record_db": per_record,
        "signal_for_choice": signal,
        "chosen": list(chosen),
        "sdk_default": list(sdk_rule),
        "bundle_rule": list(bundle_rule),
        # which denoiser the choice is for (``ecgedge export --rpeak-rule`` checks it)
        "denoiser_sha256": bundle.manifest.file("denoiser").sha256 if den is not None else None,
        "results": [{"threshold": t, "pick": p, **results[(t, p)]} for t, p in rules],
        "window_beats": windows,
    }
    md = _markdown(result, results, chosen, bundle_rule, signal)
    write_result(out_dir, report, result, md)
    print(md)
    return result


def _markdown(result: dict, results: dict, chosen: tuple, bundle_rule: tuple, signal: str) -> str:
    conds = ["12 dB", "6 dB", "0 dB", "clean"]
    first = next(iter(results.values()))
    signals = [s for s in ("denoised", "denoised lead 0", "raw") if f"clean / {s}" in first]
    header = ["I2 / I1", "pick", *[f"{c} {s}" for s in signals for c in conds]]
    rows = []
    for (t, p), r in results.items():
        mark = " (Pan-Tompkins)" if (t, p) == PAPER_RULE else ""
        mark += " **chosen**" if (t, p) == chosen else ""
        cells = [
            f"{r[f'{c} / {s}']['se']:.2f} / {r[f'{c} / {s}']['pp']:.2f}"
            for s in signals
            for c in conds
        ]
        rows.append([f"{t:g}{mark}", p, *cells])
    same = "equals" if tuple(chosen) == tuple(bundle_rule) else "differs from"
    return "\n".join(
        [
            "# rpeak-tuning — the R-peak detector's search-back rule, on mitdb with added noise\n",
            __doc__.split("\n\n", 1)[1].strip(),
            f"\nBundle `{result['bundle']}`. Command: `{result['command']}`. Records "
            f"{', '.join(result['records'])}: {result['beats_per_condition']} beats per "
            f"condition; noise: ma. nstdb label − our SNR: "
            f"{result['nstdb_snr_offset_db']:.2f} dB (mean over 118e/119e 12, 6, 0 dB). "
            "Cells: Se / +P (%), whole records.\n",
            md_table(header, rows),
            f"\nChosen on the {signal} signal: I2 / I1 = {chosen[0]:g}, {chosen[1]}. "
            + (
                f"This {same} the rule the bundle's pipeline uses on its denoiser's output (I2 "
                f"/ I1 = {bundle_rule[0]:g}, {bundle_rule[1]}; the SDK's default is "
                f"{result['sdk_default'][0]:g}; `ecgedge export --rpeak-rule` sets a bundle's "
                "rule for its denoiser from this report)."
                if signal == "denoised"
                else f"This {same} the SDK's default (I2 / I1 = {bundle_rule[0]:g}, "
                f"{bundle_rule[1]})."
            ),
            *_window_markdown(result["window_beats"], bundle_rule),
        ]
    )


def _window_markdown(windows: dict[str, dict[str, float]] | None, rule: tuple) -> list[str]:
    if windows is None:
        return []
    rows = []
    for cond in ("clean", "12 dB", "6 dB", "0 dB"):
        cells = []
        for mode in ("alone", "with context"):
            r = windows[f"{cond} / {mode}"]
            cells.append(f"{r['se']:.2f} / {r['pp']:.2f} ({r['fn']} FN, {r['fp']} FP)")
        rows.append([cond, *cells])
    return [
        f"\n## A window's beats as a denoising stream finds them (the bundle's rule, I2 / I1 = "
        f"{rule[0]:g})\n",
        "Each window denoised alone; beats within 0.1 s of its edges not scored. Se / +P (%).\n",
        md_table(["condition", "window alone", "with the previous window's context"], rows),
    ]
