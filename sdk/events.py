"""Typed events a :class:`~sdk.pipeline.StreamPipeline` emits.

The event interface is deliberately small: every consumer (apps, the demo, benchmarks,
the firmware bridge) relies on these fields, so fields are only ever added, last and with a
default (as ``denoised``, ``personalized``, ``stateful`` were); none is renamed or removed.
"""

from __future__ import annotations

from dataclasses import dataclass

from sdk.quality import QualityReport


@dataclass(frozen=True)
class WindowEvent:
    """The result of one analysed window.

    Attributes
    ----------
    index : window number in the stream, from 0.
    start_s, end_s : stream time (s) of the window's first sample and just past its last.
    label : most probable class (``probabilities`` argmax); ``""`` when the model raised or
        gave non-finite probabilities (the window is then flagged, its probabilities NaN, and
        counted in ``StreamStats.model_failures``).
    probabilities : class name → probability, in the bundle's class order.
    quality : signal-quality report of the raw samples under the window.
    flagged : True when the quality check failed, the window holds a gap or the model failed;
        episodes ignore it.
    heart_rate_bpm : from the window's R-peaks (found in the denoised window when ``denoised``,
        else by the streaming detector): ``60 / median RR`` over RR intervals of 0.25-2 s
        (30-240 bpm), None if too few beats or none in that range (a rhythm slower than
        30 bpm: ``longest_rr_s`` still shows it).
    n_beats : R-peaks inside the window (the same source).
    longest_rr_s : the longest interval between consecutive R-peaks inside the window
        (seconds; None with fewer than 2 beats), whatever its length: a pause (sinus arrest,
        AV block) shows here although the median RR, and so the heart rate, looks normal.
    t : diffusion step the raw-ECG embedder ran at (a multimodal bundle's other modalities
        have their own: ``StreamPipeline.t_steps``).
    denoised : whether a denoiser ran before the embedder.
    personalized : whether a user profile's head and t produced it.
    latency_ms : compute time of this window (model + features), milliseconds; with a step
        model, including the step calls of the blocks since the previous window.
    stateful : whether the embedding came from the bundle's step model (updated per block)
        rather than a whole-window re-encode (:mod:`sdk.step_stream`).
    """

    index: int
    start_s: float
    end_s: float
    label: str
    probabilities: dict[str, float]
    quality: QualityReport
    flagged: bool
    heart_rate_bpm: float | None
    n_beats: int
    t: int
    denoised: bool
    latency_ms: float
    personalized: bool = False
    kind: str = "window"
    stateful: bool = False
    longest_rr_s: float | None = None


@dataclass(frozen=True)
class EpisodeEvent:
    """An episode of ``label`` began (``phase="onset"``) or ended (``"offset"``); seconds.

    ``time_s`` is when it began or ended, on the stream's clock; the event comes later (see
    :class:`sdk.episodes.EpisodeTracker`): an onset once the episode holds 30 s of AF, an
    offset once another rhythm has lasted 30 s (about 40 s after ``time_s`` with 10 s
    windows). ``duration_s`` (offsets) spans the whole episode, short interruptions joined
    into it included.
    """

    label: str
    phase: str
    time_s: float
    duration_s: float | None = None
    kind: str = "episode"


Event = WindowEvent | EpisodeEvent
