"""``ecgedge calibrate``: a user profile from a labelled WFDB recording."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ecgedge.replay import read_wfdb
from sdk.bundle import load_bundle
from sdk.calibration import Calibrator, save_profile
from sdk.calibration.calibrator import DEFAULT_ANCHORS
from sdk.errors import ConfigError


def rhythm_class(label: str) -> str:
    """A rhythm annotation (``AFIB``, ``AFL``, ``N`` …) → the bundle class it calibrates:
    ``A`` for atrial fibrillation only (flutter is not the bundles' AF class)."""
    from trainer.data.records import is_af

    return "A" if is_af(label) else "N"


def budgets(max_evals: int | None, n_modalities: int) -> dict[str, int]:
    """The Calibrator's budgets for ``--max-evals``: ``max_evals`` evaluations and the
    extractor runs they may need (each runs every modality's extractor at most once; the
    Calibrator's default of 30 runs would stop a three-modality bundle after 10 of them);
    ``None``: the Calibrator's defaults."""
    if max_evals is None:
        return {}
    return {"max_evals": max_evals, "max_extractor_evals": max_evals * n_modalities}


def read_labels(path: Path, classes: tuple[str, ...], duration_s: float) -> list[tuple]:
    """Labelled stretches of a recording from a CSV file, one ``start_s,end_s,class`` per line
    (seconds from the record's start; ``#`` comments and blank lines skipped): the labels of a
    session saved by ``ecgedge stream --save``, which has no annotations. Raises
    :class:`ValueError` naming the line of any defect: a class not in ``classes``, numbers
    that are not finite, ``start >= end``, a stretch beyond the record or overlapping another."""
    try:  # utf-8-sig: a byte-order mark (as spreadsheet programs write) is not part of line 1
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"--labels {path}: cannot read it ({exc})") from exc
    out: list[tuple[float, float, str, int]] = []
    for i, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"--labels {path}, line {i}"
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 3:
            raise ValueError(f"{where}: expected start_s,end_s,class, got {raw.strip()!r}")
        try:
            start, end = float(parts[0]), float(parts[1])
        except ValueError:
            bad = raw.strip()
            raise ValueError(f"{where}: start and end must be seconds, got {bad!r}") from None
        if not (np.isfinite(start) and np.isfinite(end) and 0 <= start < end):
            raise ValueError(f"{where}: need 0 <= start < end, got {start:g}, {end:g}")
        if end > duration_s + 1e-6:
            raise ValueError(f"{where}: ends at {end:g} s, the record lasts {duration_s:g} s")
        if parts[2] not in classes:
            raise ValueError(f"{where}: class {parts[2]!r} is not one of {list(classes)}")
        out.append((start, end, parts[2], i))
    if not out:
        raise ValueError(f"--labels {path}: no labelled stretch")
    ordered = sorted(out)
    for (_, e0, _, i0), (s1, _, _, i1) in zip(ordered, ordered[1:]):
        if s1 < e0:
            raise ValueError(f"--labels {path}, lines {i0} and {i1}: stretches overlap at {s1:g} s")
    return [(s, e, c) for s, e, c, _ in ordered]


def labels_within(
    stretches: list[tuple], used_s: float, source: str, minutes: float, *, say_cut: bool = True
) -> list[tuple] | None:
    """The labelled ``stretches`` (of ``source``: ``--labels FILE`` or the record's
    annotations) cut to the first ``used_s`` seconds the calibration uses (``--minutes``);
    with ``say_cut``, what is left out is said on stderr. ``None`` (and why, on stderr) when
    no stretch starts within them."""
    kept = [(s, min(e, used_s), c) for s, e, c in stretches if s < used_s]
    if not kept:
        first = f" (the first starts at {stretches[0][0]:g} s)" if stretches else ""
        print(
            f"{source}: no labelled stretch starts within the first --minutes {minutes:g} of "
            f"the record{first}; give --minutes 0 to use the whole record",
            file=sys.stderr,
        )
        return None
    left_s = sum(e - s for s, e, _ in stretches) - sum(e - s for s, e, _ in kept)
    if say_cut and left_s > 0:
        print(
            f"{source}: {left_s:g} s of labelled ECG lie beyond the first --minutes "
            f"{minutes:g} and are not used (--minutes 0 uses the whole record)",
            file=sys.stderr,
        )
    return kept


def calibrate_record(
    record: Path,
    out: Path,
    *,
    bundle_dir: Path,
    user: str = "user",
    minutes: float = 10.0,
    lead: int = 0,
    objective: str = "gamma",
    max_evals: int | None = None,
    max_seconds: float | None = None,
    anchors: str | None = None,
    denoise: bool = True,
    labels: Path | None = None,
    plot: Path | None = None,
) -> int:
    """Calibrate on the first ``minutes`` of ``record`` (AF vs non-AF rhythm labels from its
    annotations, or the stretches of a ``labels`` file: :func:`read_labels`), save.

    ``max_evals``: objective evaluations at most (fewer when ``max_seconds`` runs out or the
    search ends by itself), whatever the bundle's number of modalities; ``None`` keeps the
    Calibrator's budgets (30 evaluations and 30 extractor runs: 10 evaluations of a
    three-modality bundle), the cost the SDK's default was chosen for.

    Lost (NaN) samples are never filled in: each stretch without them is windowed on its own
    (:meth:`sdk.calibration.Calibrator.add_recording`). ``plot``: also draw the search of t
    there (PNG, :func:`ecgedge.calibration_plot.plot_calibration`).
    """
    rec = read_wfdb(record, lead)
    bundle = load_bundle(bundle_dir)
    n = int(minutes * 60 * rec.fs) if minutes > 0 else rec.signal.shape[0]
    if labels is not None:
        stretches = read_labels(labels, bundle.manifest.classes, rec.signal.shape[0] / rec.fs)
        intervals = labels_within(stretches, n / rec.fs, f"--labels {labels}", minutes)
    elif rec.rhythm:  # the first minutes are what the command calibrates on: no word of the rest
        annotated = [(s / rec.fs, e / rec.fs, rhythm_class(lab)) for s, e, lab in rec.rhythm]
        source = f"{record}: rhythm annotations"
        intervals = labels_within(annotated, n / rec.fs, source, minutes, say_cut=False)
    else:
        print(
            f"{record}: no rhythm annotations to calibrate on (give --labels FILE)",
            file=sys.stderr,
        )
        return 2
    if intervals is None:
        return 2
    cal = Calibrator(
        bundle,
        objective=objective,
        **budgets(max_evals, len(bundle.manifest.modalities)),
        max_seconds=max_seconds,
        threads=1,
        anchors=anchors or DEFAULT_ANCHORS,
        denoise=denoise,
    )
    try:  # lost samples: each stretch without them is windowed on its own
        windows = cal.add_recording(rec.signal[:n], rec.fs, intervals, source=str(record))
    except ConfigError as exc:
        if exc.field != "signal":
            raise
        print(f"{record}: {exc}", file=sys.stderr)
        return 2

    def progress(i: int, t: dict[str, int], score: float) -> None:
        most = f" (at most {max_evals})" if max_evals is not None else ""
        line = f"evaluation {i:2d}{most}  t={t}  {objective}={score:.4g}"
        if sys.stdout.isatty():  # one line, redrawn; a log gets a line per evaluation
            print(f"\r  {line}  ", end="", flush=True)
        else:
            print(f"  {line}", flush=True)

    result = cal.calibrate(user=user, progress=progress)
    path = save_profile(result.profile, out)
    counts = result.profile.calibration["label_counts"]
    rejected = result.profile.calibration["windows_rejected_quality"]
    used = result.profile.calibration["anchors"]
    print(
        f"\ncalibrated {user!r} on {windows} windows {counts} of {record.name} "
        f"({rejected} left out by the quality check) and {used['windows']} of the "
        f"bundle's anchor windows ({used['mode']}"
        + (f": {used['skipped']}" if "skipped" in used else "")
        + ") in "
        f"{result.seconds:.1f} s ({result.extractor_evaluations} extractor evaluations, "
        f"stopped: {result.search.stopped}): t={result.profile.t} -> {path}"
    )
    if plot is not None:
        from ecgedge.calibration_plot import plot_calibration

        drawn = plot_calibration(
            result.profile.calibration,
            plot,
            chosen=result.profile.t,
            default_t=bundle.manifest.default_t,
            title=f"{user} on {record.name}",
        )
        print(f"search of t drawn -> {drawn}")
    return 0
