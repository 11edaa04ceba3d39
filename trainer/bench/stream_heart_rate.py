"""The heart rate a stream reports on nstdb 118e*/119e*: every ``WindowEvent.heart_rate_bpm``
of :class:`sdk.pipeline.StreamPipeline` (the bundle's window and hop) against the reference
beats of that window, with and without the bundle's denoiser.

Without the denoiser a window's beats come from the stream's R-peak detector on the
band-passed signal; with it, from the denoised window (:func:`sdk.rpeaks.denoised_window_rpeaks`).
Reference: 60 / median RR of the annotated beats inside the window (windows with fewer than
3 beats are skipped). A window without a heart rate counts as outside every tolerance.
Spans: all windows, and windows lying wholly inside a noisy segment.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sdk.bundle import Bundle
from sdk.events import WindowEvent
from sdk.pipeline import StreamPipeline
from sdk.preprocess import Preprocessor
from trainer.bench.report import md_table
from trainer.data.records import Record

TOLERANCE_BPM = 5.0
MIN_REFERENCE_BEATS = 3
MODES = {"stream, without denoiser": False, "stream, with denoiser": True}


def window_errors(
    events: list[WindowEvent], ref_s: np.ndarray, delay_s: float, noisy: list[tuple[float, float]]
) -> dict[str, list[float]]:
    """|heart rate − reference| (bpm, ``inf`` when the window has none) per span."""
    out: dict[str, list[float]] = {"whole": [], "noisy": []}
    for e in events:
        a, b = e.start_s - delay_s, e.end_s - delay_s
        beats = ref_s[(ref_s >= a) & (ref_s < b)]
        if beats.size < MIN_REFERENCE_BEATS:
            continue
        hr_ref = 60.0 / float(np.median(np.diff(beats)))
        err = np.inf if e.heart_rate_bpm is None else abs(e.heart_rate_bpm - hr_ref)
        out["whole"].append(err)
        if any(s <= a and b <= t for s, t in noisy):
            out["noisy"].append(err)
    return out


def record_errors(
    bundle: Bundle, leads: int, r: Record, noisy: list[tuple[float, float]]
) -> dict[str, dict[str, list[float]]]:
    """Per mode (:data:`MODES`) and span, the window errors of record ``r``, streamed at its
    own rate with its first ``leads`` leads (as many as the bundle's denoiser takes; lead 0
    selected)."""
    assert r.annotations is not None
    x = r.signal[:, :leads].astype(np.float64)
    delay_s = Preprocessor(r.fs, bundle.manifest.preprocess, leads).delay_s
    ref_s = r.annotations.beat_samples / r.fs
    out = {}
    for mode, denoise in MODES.items():
        p = StreamPipeline(bundle, fs_in=r.fs, n_leads=leads, denoise=denoise)
        events = [e for e in p.push(x) + p.close() if isinstance(e, WindowEvent)]
        out[mode] = window_errors(events, ref_s, delay_s, noisy)
    return out


def summarize(errors: list[float]) -> dict[str, Any]:
    e = np.asarray(errors, dtype=np.float64)
    return {
        "windows": int(e.size),
        "within_pct": float(100.0 * np.mean(e <= TOLERANCE_BPM)) if e.size else float("nan"),
        "median_abs_bpm": float(np.median(e)) if e.size else float("nan"),
    }


def markdown(summary: dict[str, dict[str, dict[str, dict]]]) -> str:
    """``summary[level][mode][span]`` → the report's section."""
    levels = list(summary)
    parts = [
        "## Heart rate as a stream reports it\n",
        __doc__.split("\n\n", 1)[1].strip(),
        f"\nCells: % of windows within ±{TOLERANCE_BPM:g} bpm (median |error| in bpm), 118 and "
        "119 pooled.\n",
    ]
    for span, title in (("whole", "All windows"), ("noisy", "Windows inside noisy segments")):
        rows = []
        for mode in MODES:
            row = [mode]
            for lv in levels:
                c = summary[lv][mode][span]
                row.append(
                    f"{c['within_pct']:.1f} ({c['median_abs_bpm']:.2f})" if c["windows"] else ""
                )
            rows.append(row)
        parts.append(f"{title}:\n\n" + md_table(["heart rate", *levels], rows) + "\n")
    return "\n".join(parts)
