"""``ecgedge bench episodes``: AF episodes as a stream reports them, against the annotations.

Records: every MIT-BIH Arrhythmia record in the data root (30 min each: 201 and 203 hold AF;
the others sinus rhythm with ectopy, bigeminy, flutter, tachycardias, noise, where false AF
alarms come from) and every CPSC 2021 record (paroxysmal and persistent AF and non-AF
subjects, 0.7–8.7 min). Lead 0 of each record is streamed through
:class:`sdk.pipeline.StreamPipeline` with the bundle (its denoiser and default precision, the
bundle's window and hop) in 1 s blocks, and the pipeline's AF ``EpisodeEvent``s are scored.
Neither database trains the head (CinC 2017); both were in the extractors' self-supervised
pretraining (no labels), and mitdb's training records in the denoiser's.

Reference: the rhythm annotations' AF episodes (``(AFIB``; flutter is not AF). Measures, in
the manner of ANSI/AAMI EC57's AF measures, pooled over the records of a database:

- episode Se: reference AF episodes that a reported episode overlaps;
- episode +P: reported episodes that overlap reference AF;
- duration Se / +P: reference AF time covered by reported episodes / reported time that is
  reference AF;
- false episodes per hour: reported episodes overlapping no reference AF, per hour streamed;
- AF burden: per record, reported and reference AF time / record length; the mean absolute
  difference in percentage points. Reported time is the episodes', and, beside it, the
  windows' (:attr:`sdk.pipeline.StreamStats.label_s`: the signal of the windows labelled AF).

Three settings of the episode tracker (:class:`sdk.episodes.EpisodeTracker`), each a stream
of its own: no minimum and no gap (an onset as soon as the smoothed AF probability crosses the
threshold, an offset as soon as it falls below the other); a 30 s minimum
(:data:`sdk.episodes.AF_EPISODE_MIN_S`, the clinical definition of an AF episode); and the
SDK's default, runs less than 30 s apart joined into one episode, reported once its runs add
up to 30 s of AF. A tracker with a minimum cannot report a shorter reference episode, so
episode Se is also given over the reference episodes of at least 30 s.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from sdk.bundle import load_bundle
from sdk.episodes import AF_EPISODE_MIN_S
from sdk.events import EpisodeEvent
from sdk.pipeline import StreamPipeline
from trainer.bench.report import md_table, write_result
from trainer.data import records as rec
from trainer.data.root import has_folder

DATABASES = {"mitdb": rec.read_mitdb, "cpsc2021": rec.read_cpsc2021}
BLOCK_S = 1.0
#: (minimum duration, gap) of each setting; the last is the SDK's default
SETTINGS: dict[str, tuple[float, float]] = {
    "no minimum": (0.0, 0.0),
    "≥ 30 s": (AF_EPISODE_MIN_S, 0.0),
    "≥ 30 s of AF, gaps < 30 s joined (SDK)": (AF_EPISODE_MIN_S, AF_EPISODE_MIN_S),
}

Span = tuple[float, float]


def reference_af(record: rec.Record) -> list[Span]:
    """The record's AF episodes (s)."""
    assert record.annotations is not None
    return [
        (s / record.fs, e / record.fs)
        for s, e, label in record.annotations.rhythm
        if rec.is_af(label)
    ]


def stream_episodes(
    bundle: Any, record: rec.Record, min_s: float = 0.0, gap_s: float = 0.0
) -> tuple[list[Span], float]:
    """Lead 0 of ``record`` through a pipeline whose tracker has that minimum duration and
    gap: the AF episodes it reports (s), and the time of its windows labelled AF
    (:attr:`sdk.pipeline.StreamStats.label_s`)."""
    p = StreamPipeline(bundle, fs_in=record.fs, episode_min_s=min_s, episode_gap_s=gap_s)
    x = record.signal[:, :1]
    block = int(BLOCK_S * record.fs)
    events = []
    for i in range(0, x.shape[0], block):
        events += p.push(x[i : i + block])
    events += p.close()
    onsets = [e.time_s for e in events if isinstance(e, EpisodeEvent) and e.phase == "onset"]
    offsets = [e.time_s for e in events if isinstance(e, EpisodeEvent) and e.phase == "offset"]
    if len(onsets) != len(offsets):
        raise RuntimeError(f"{len(onsets)} onsets but {len(offsets)} offsets")
    return list(zip(onsets, offsets, strict=True)), p.stats.label_s.get("A", 0.0)


def _streams(bundle: Any, record: rec.Record) -> dict[str, Any]:
    """The episodes of every setting, and the time of the windows labelled AF (the same
    windows in every setting)."""
    runs = {key: stream_episodes(bundle, record, *value) for key, value in SETTINGS.items()}
    return {
        "reported": {key: spans for key, (spans, _) in runs.items()},
        "window_af_s": next(iter(runs.values()))[1],
    }


def _overlap(a: Span, spans: list[Span]) -> float:
    return sum(max(0.0, min(a[1], b[1]) - max(a[0], b[0])) for b in spans)


def score(rows: list[dict[str, Any]], setting: str) -> dict[str, Any]:
    """Pooled measures (module docstring) of the episodes reported with ``setting``."""
    n_ref = n_ref_hit = n_rep = n_rep_true = n_ref_long = n_ref_long_hit = 0
    ref_t = ref_cov = rep_t = rep_true = hours = 0.0
    burden_err, window_err = [], []
    for r in rows:
        ref = [tuple(s) for s in r["reference"]]
        rep = [tuple(s) for s in r["reported"][setting]]
        n_ref += len(ref)
        n_ref_hit += sum(_overlap(a, rep) > 0 for a in ref)
        long = [a for a in ref if a[1] - a[0] >= AF_EPISODE_MIN_S]
        n_ref_long += len(long)
        n_ref_long_hit += sum(_overlap(a, rep) > 0 for a in long)
        n_rep += len(rep)
        n_rep_true += sum(_overlap(a, ref) > 0 for a in rep)
        ref_t += sum(b - a for a, b in ref)
        ref_cov += sum(_overlap(a, rep) for a in ref)
        rep_t += sum(b - a for a, b in rep)
        rep_true += sum(_overlap(a, ref) for a in rep)
        hours += r["seconds"] / 3600.0
        burden_err.append(
            100.0 * abs(sum(b - a for a, b in rep) - sum(b - a for a, b in ref)) / r["seconds"]
        )
        if "window_af_s" in r:
            window_err.append(
                100.0 * abs(r["window_af_s"] - sum(b - a for a, b in ref)) / r["seconds"]
            )

    def pct(a: float, b: float) -> float | None:
        return 100.0 * a / b if b > 0 else None

    return {
        "setting": setting,
        "reference_episodes": n_ref,
        "reported_episodes": n_rep,
        "episode_se": pct(n_ref_hit, n_ref),
        "reference_episodes_30s": n_ref_long,
        "episode_se_30s": pct(n_ref_long_hit, n_ref_long),
        "episode_pp": pct(n_rep_true, n_rep),
        "duration_se": pct(ref_cov, ref_t),
        "duration_pp": pct(rep_true, rep_t),
        "false_episodes": n_rep - n_rep_true,
        "false_episodes_per_hour": (n_rep - n_rep_true) / hours if hours else None,
        "hours": hours,
        "burden_mae_pct_points": float(np.mean(burden_err)) if burden_err else None,
        # from the windows labelled AF, not from episodes (the same in every setting)
        "window_burden_mae_pct_points": float(np.mean(window_err)) if window_err else None,
    }


def run(bundle_dir: Path, out_dir: Path, *, report: str = "episodes") -> dict[str, Any]:
    """Stream every record of :data:`DATABASES` present; write ``<report>.json`` and ``.md``."""
    bundle = load_bundle(bundle_dir)
    m = bundle.manifest
    present = {db: read for db, read in DATABASES.items() if has_folder(db)}
    if not present:
        raise FileNotFoundError(f"none of {list(DATABASES)} is in the data root")
    tic = time.perf_counter()
    rows: dict[str, list[dict[str, Any]]] = {}
    jobs = [(db, name) for db in present for name in rec.list_records(db)]
    for db, name in tqdm(jobs, desc="episodes", unit="rec"):
        r = present[db](name)
        rows.setdefault(db, []).append(
            {
                "record": name,
                "seconds": r.signal.shape[0] / r.fs,
                "reference": reference_af(r),
                **_streams(bundle, r),
            }
        )
    result = {
        "command": f"ecgedge bench episodes --bundle {bundle_dir}"
        + (f" --report {report}" if report != "episodes" else ""),
        "bundle": m.name,
        "seconds": time.perf_counter() - tic,
        "settings": SETTINGS,
        "scores": {db: [score(rs, key) for key in SETTINGS] for db, rs in rows.items()},
        "records": rows,
        "plot": f"{report}.png",
    }
    md = _markdown(result)
    write_result(out_dir, report, result, md)
    plot_timelines(rows, out_dir / f"{report}.png")
    print(md)
    return result


def plot_timelines(rows: dict[str, list[dict[str, Any]]], path: Path) -> Path:
    """One line per record with reference or reported AF: the reference AF (grey) and the
    episodes of each setting, lighter to darker (the SDK's default darkest)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    shown = [
        (f"{db}/{r['record']}", r)
        for db, rs in rows.items()
        for r in rs
        if r["reference"] or any(r["reported"].values())
    ]
    if not shown:
        shown = [(f"{db}/{r['record']}", r) for db, rs in rows.items() for r in rs][:1]
    colors = ("#c6dbef", "#6baed6", "#08519c")
    fig, ax = plt.subplots(figsize=(10, 0.5 * len(shown) + 1.2))
    for i, (name, r) in enumerate(reversed(shown)):
        ax.broken_barh(
            [(a / 60, (b - a) / 60) for a, b in r["reference"]], (i - 0.42, 0.84), color="0.85"
        )
        for k, (key, color) in enumerate(zip(SETTINGS, colors)):
            spans = [(a / 60, (b - a) / 60) for a, b in r["reported"][key]]
            ax.broken_barh(spans, (i - 0.33 + 0.24 * k, 0.18), color=color)
        ax.text(r["seconds"] / 60 + 0.3, i, name, va="center", fontsize=8)
    ax.set_yticks([])
    ax.set_xlabel("minutes")
    ax.set_title(
        "AF: reference (grey); reported with " + ", ".join(SETTINGS) + " (light to dark)",
        fontsize=9,
    )
    ax.set_xlim(0, max((r["seconds"] for _, r in shown), default=60.0) / 60 + 6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _fmt(v: float | None, digits: int = 1) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _markdown(result: dict[str, Any]) -> str:
    header = [
        "database",
        "tracker",
        "episodes ref / reported",
        "episode Se / +P (%)",
        "episode Se, ref ≥ 30 s (%)",
        "duration Se / +P (%)",
        "false episodes (per h)",
        "burden error (pp)",
    ]
    rows = []
    for db, scores in result["scores"].items():
        for s in scores:
            rows.append(
                [
                    f"{db} ({s['hours']:.1f} h)",
                    s["setting"],
                    f"{s['reference_episodes']} / {s['reported_episodes']}",
                    f"{_fmt(s['episode_se'])} / {_fmt(s['episode_pp'])}",
                    f"{_fmt(s['episode_se_30s'])} (of {s['reference_episodes_30s']})",
                    f"{_fmt(s['duration_se'])} / {_fmt(s['duration_pp'])}",
                    f"{s['false_episodes']} ({_fmt(s['false_episodes_per_hour'], 2)})",
                    _fmt(s["burden_mae_pct_points"], 2),
                ]
            )
    per_record = []
    for db, rs in result["records"].items():
        for r in rs:
            ref = sum(b - a for a, b in r["reference"]) / 60
            cells = [
                f"{len(spans)} / {sum(b - a for a, b in spans) / 60:.1f}"
                for spans in (r["reported"][key] for key in SETTINGS)
            ]
            per_record.append(
                [
                    f"{db}/{r['record']}",
                    f"{r['seconds'] / 60:.1f}",
                    f"{len(r['reference'])} / {ref:.1f}",
                ]
                + cells
            )
    return "\n".join(
        [
            "# episodes — AF episodes as a stream reports them\n",
            __doc__.split("\n\n", 1)[1].strip(),
            f"\nBundle `{result['bundle']}`. Command: `{result['command']}` "
            f"({result['seconds'] / 60:.1f} min).\n",
            md_table(header, rows),
            "\nAF burden from the windows instead (the time of the windows labelled AF, "
            "flagged windows left out; the same in every setting), mean absolute error: "
            + ", ".join(
                f"{db} {_fmt(scores[0]['window_burden_mae_pct_points'], 2)} pp"
                for db, scores in result["scores"].items()
            )
            + ".",
            f"\nTimelines: `{result['plot']}`. Per record (AF episodes / minutes):\n",
            md_table(
                ["record", "minutes", "reference", *(f"reported, {k}" for k in SETTINGS)],
                per_record,
            ),
        ]
    )
