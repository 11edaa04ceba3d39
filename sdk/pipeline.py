"""The streaming path: samples in, typed rhythm events out.

``push`` blocks of any size → streaming resample + band-pass → ring buffers → every hop,
the newest window → quality check → embedder at the user's t → head → a
:class:`~sdk.events.WindowEvent`; rhythm episodes are smoothed from window results into
:class:`~sdk.events.EpisodeEvent` s. Events go to callbacks and to async iterators.

A window is analysed once the R-peak detector can no longer add a beat inside it
(``PEAK_LAG_S`` after its end), so its RR features equal those computed offline on the
whole record. A pipeline that runs the bundle's denoiser finds each window's beats (heart
rate, RR features, Lorenz image) in the denoised window instead
(:func:`sdk.rpeaks.denoised_window_rpeaks`) and analyses a window as soon as it is complete.
At the end of a stream :meth:`StreamPipeline.close` analyses the tail the way training
windows were cut (a last window aligned to the end; a stream shorter than a window gives
one zero-padded window, flagged ``too_short`` only under the quality check's 2 s).

With a bundle that has a stateful step model (manifest ``streaming``, e.g. DiffAE-LRU) the
raw embedding is updated per block of the step model's hop instead of re-encoding each
window; normalization, resets at gaps and the windows served are described in
:mod:`sdk.step_stream`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sdk.bundle import Bundle, load_bundle
from sdk.calibration.profile import UserProfile, load_profile
from sdk.classifier import WindowClassifier, WindowInputs, t_mapping
from sdk.denoiser import WindowDenoiser
from sdk.episodes import AF_EPISODE_MIN_S, EpisodeTracker
from sdk.errors import BlockError, BundleError, ConfigError, ProfileError, SampleRateError
from sdk.events import Event, WindowEvent
from sdk.lru_step import streaming_spec
from sdk.modalities import lorenz_image, rr_from_peaks
from sdk.preprocess import Preprocessor, check_input_rate, is_real_number, standardize_window
from sdk.quality import MAX_ABS_MV, assess_quality, settle_envelope, settling_look_back
from sdk.ringbuffer import GAP_BEFORE, RingBuffer
from sdk.rpeaks import StreamingRPeakDetector, denoised_window_rpeaks, heart_rate_bpm
from sdk.rr import rr_features
from sdk.step_stream import StepStream, step_model_problem
from sdk.windowing import denoised_context

_log = logging.getLogger(__name__)

#: Seconds after a window's end before it is analysed (R-peak confirmation and search-back).
PEAK_LAG_S = 2.5
#: Input gathered before it is processed: one batch pays the per-call costs of filtering and
#: buffering once, however small the sensor's packets. Events come at most this much later.
PROCESS_BATCH_S = 1.0
#: Model-rate samples gathered before R-peak detection runs (amortizes its per-call cost).
RPEAK_BATCH_S = 2.0
#: A timestamp later than expected by more than this many sample periods opens a gap
#: (timestamps must be sample-accurate: derive them from the sensor clock, not arrival times).
GAP_TOLERANCE_SAMPLES = 0.5
#: Timestamps must resolve this fraction of a sample period in float64 (|t| up to about
#: 3e10 s at 250 Hz: epoch seconds pass, epoch microseconds do not).
TIMESTAMP_RESOLUTION = 1e-3
#: The class whose episodes (onset, offset) the pipeline tracks: atrial fibrillation.
EPISODE_LABEL = "A"
#: Window latencies kept in :attr:`StreamStats.latencies_ms` (the most recent).
LATENCY_HISTORY = 100_000


@dataclass
class StreamStats:
    """Counters of one stream; read them at any time."""

    samples_in: int = 0
    blocks_in: int = 0
    blocks_rejected: int = 0
    #: NaN/inf input values, and values beyond ±:data:`MAX_ABS_MV` (held, flagged)
    nonfinite_samples: int = 0
    gaps: int = 0
    gap_s: float = 0.0
    windows: int = 0
    windows_flagged: int = 0
    #: windows whose model raised or gave non-finite output (label ``""``, flagged; a broken
    #: bundle): the stream goes on
    model_failures: int = 0
    callback_errors: int = 0
    #: analysis latency of the most recent :data:`LATENCY_HISTORY` windows
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_HISTORY))
    #: seconds of signal by window label: each window not flagged adds the signal no earlier
    #: window covered (its first hop's worth after the first window) to its label
    label_s: dict[str, float] = field(default_factory=dict)

    def share(self, label: str) -> float | None:
        """The fraction of the analysed, unflagged signal whose windows were labelled
        ``label`` (e.g. ``"A"``: the AF burden by windows), or None before any window."""
        total = sum(self.label_s.values())
        return self.label_s.get(label, 0.0) / total if total > 0 else None


#: quality flags that say nothing about the signal's content (a gap is its own reset; a short
#: tail window is the end of the stream)
NOT_SIGNAL_FLAGS = frozenset({"gap", "too_short"})


#: Longest history a pipeline keeps (its buffers are allocated up front).
MAX_BUFFER_S = 3600.0
#: Most leads a stream may carry (a 12-lead ECG).
MAX_LEADS = 12


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_buffer(buffer_s: object) -> None:
    """``buffer_s`` must be a positive duration of at most :data:`MAX_BUFFER_S`."""
    if not is_real_number(buffer_s) or not 0 < float(buffer_s) <= MAX_BUFFER_S:
        raise ConfigError(
            f"buffer_s must be a number of seconds in (0, {MAX_BUFFER_S:g}], got {buffer_s!r}",
            field="buffer_s",
        )


class StreamPipeline:
    """Live rhythm analysis of one ECG stream with a model bundle.

    Parameters
    ----------
    bundle : a :class:`~sdk.bundle.Bundle` or a bundle directory (verified on load).
    fs_in : input sample rate in Hz; blocks at another rate are refused.
    n_leads : leads per input sample; ``lead`` selects the one the model sees.
    t : diffusion step of the raw embedder, or a ``{modality: t}`` mapping (default: the
        profile's, else the bundle's ``default_t``).
    profile : a :class:`~sdk.calibration.profile.UserProfile` or its file: the user's t and
        head. A profile that cannot be used (corrupt, tampered, another bundle's) is not
        fatal: the pipeline falls back to the bundle's defaults, logs a warning and keeps the
        reason in :attr:`profile_error`.
    precision : embedder precision (default: the most compact in the bundle).
    threads, backend : threads, and where the models run: ONNX Runtime's ``"cpu"``, ``"cuda"``
        or ``"tensorrt"`` provider, ``"trt-engine"`` (prebuilt TensorRT engines from
        ``engine_dir``) or ``"auto"`` (:func:`sdk.runtime.select_backend`).
    engine_dir : where ``"trt-engine"`` finds the bundle's TensorRT engines and ``"tensorrt"``
        caches ONNX Runtime's (default :func:`sdk.trt_runtime.default_engine_dir`).
    buffer_s : ring-buffer length in seconds; must hold a window plus the peak lag (if any).
    on_event : callback receiving every event (more with :meth:`add_callback`).
    denoise : run the bundle's ``denoiser`` (if it has one) on each window before the embedder;
        the window's beats (heart rate, RR features, Lorenz image) then come from the denoised
        window (every lead a multi-lead denoiser cleans, placed on the selected one), and
        windows are analysed without waiting ``PEAK_LAG_S`` for the stream's R-peak
        detector.
    stateful : embed with the bundle's step model, one block at a time (:mod:`sdk.step_stream`).
        ``None``: when the bundle has one it can use (raw-only bundle, no denoiser running)
        and the window hop is one step block (at a longer hop several step calls cost more
        than one re-encode: ``ecgedge bench lru``);
        ``True``: required, else :class:`~sdk.errors.ConfigError` (``field="stateful"``);
        ``False``: re-encode each whole window. :attr:`step_stream` is the streamer or None.
    hop_s : seconds between window starts (default: the bundle's hop). The episode tracker's
        smoothing is rescaled so that its time constant stays the same in seconds.
    episode_min_s : shortest AF episode reported, in seconds (default: the bundle's
        ``episode_min_s`` threshold, else :data:`sdk.episodes.AF_EPISODE_MIN_S` = 30 s, the
        clinical definition); 0 reports an onset as soon as the smoothed probability crosses.
    episode_gap_s : shortest interruption (another rhythm) that ends an AF episode, in seconds
        (default: the bundle's ``episode_gap_s`` threshold, else the same 30 s); runs of AF
        closer than that are one episode, and its offset event comes with the first window
        starting that long after the time it carries (:class:`sdk.episodes.EpisodeTracker`).
        0 ends an episode at the first window whose smoothed probability falls below the
        ``episode_off`` threshold.

    Not thread-safe: push from one thread (or the event loop that iterates :meth:`events`).
    """

    def __init__(
        self,
        bundle: Bundle | str | Path,
        *,
        fs_in: float,
        n_leads: int = 1,
        lead: int = 0,
        t: int | Mapping[str, int] | None = None,
        profile: UserProfile | str | Path | None = None,
        precision: str | None = None,
        threads: int = 1,
        backend: str = "cpu",
        engine_dir: str | Path | None = None,
        buffer_s: float = 60.0,
        on_event: Callable[[Event], None] | None = None,
        denoise: bool = True,
        stateful: bool | None = None,
        hop_s: float | None = None,
        episode_min_s: float | None = None,
        episode_gap_s: float | None = None,
    ) -> None:
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        m = self.bundle.manifest
        if EPISODE_LABEL not in m.classes:
            raise BundleError(
                f"the bundle's classes {list(m.classes)} lack {EPISODE_LABEL!r}, the rhythm "
                "whose episodes the pipeline tracks",
                path=str(self.bundle.root),
                reason="inconsistent",
            )
        if not (_is_int(n_leads) and 1 <= n_leads <= MAX_LEADS):
            raise ConfigError(
                f"n_leads must be an integer from 1 to {MAX_LEADS}, got {n_leads!r}",
                field="n_leads",
            )
        if not (_is_int(lead) and 0 <= lead < n_leads):
            raise ConfigError(f"0 <= lead ({lead!r}) < n_leads ({n_leads}) must hold", field="lead")
        check_input_rate(fs_in, m.preprocess)
        _check_buffer(buffer_s)
        if not isinstance(denoise, (bool, np.bool_)):  # 'no' would be true
            raise ConfigError(f"denoise must be True or False, got {denoise!r}", field="denoise")
        self.fs_in, self.fs, self.n_leads, self.lead = float(fs_in), m.fs, n_leads, lead
        self.window = m.window_samples
        self.hop = self._hop_samples(hop_s)
        self._settle = settle_envelope(self.bundle.manifest.preprocess, self.fs_in)
        look_back = int(math.ceil(self._settle.size * self.fs / self.fs_in))
        # the stream's R-peaks must be final inside a window before it is analysed; a denoising
        # pipeline finds each window's beats in the denoised window instead, without waiting
        lag_s = 0.0 if denoise and any(f.role == "denoiser" for f in m.files) else PEAK_LAG_S
        self._lag = int(round(lag_s * self.fs))
        if buffer_s * self.fs < self.window + self._lag + self.hop + look_back:
            lag = f", the R-peak lag ({lag_s} s)" if lag_s else ""
            raise ConfigError(
                f"buffer_s ({buffer_s}) must hold a window, a hop{lag} and the filters' "
                f"settling time ({look_back / self.fs:.2f} s)",
                field="buffer_s",
            )
        self.classifier = WindowClassifier(
            self.bundle,
            precision=precision,
            threads=threads,
            backend=backend,
            engine_dir=Path(engine_dir) if engine_dir is not None else None,
        )
        self.denoiser = (
            WindowDenoiser.from_bundle(
                self.bundle,
                n_leads,
                threads=threads,
                backend=self.classifier.backend,
                engine_dir=self.classifier.engine_dir,
            )
            if denoise
            else None
        )
        self.step_stream = self._open_step_stream(stateful, threads)
        self._check_head_refit()
        self.profile, self.profile_error = self._open_profile(profile)
        if self.profile is not None:
            calibrated = bool(self.profile.calibration.get("denoised", False))
            if calibrated != (self.denoiser is not None):
                _log.warning(
                    "user profile was calibrated %s the denoiser but this pipeline runs %s it; "
                    "its head sees embeddings unlike those it was fitted on",
                    "with" if calibrated else "without",
                    "with" if self.denoiser is not None else "without",
                )
        chosen = {**(self.profile.t if self.profile is not None else {}), **t_mapping(t)}
        self.t_steps = self.classifier.resolve_t(chosen)
        unset = [m for m in self.classifier.modalities if m not in chosen]
        if self.profile is not None and unset:
            _log.warning(
                "the user profile gives no t for %s: the bundle's default t is used (%s)",
                ", ".join(unset),
                ", ".join(f"{m}={self.t_steps[m]}" for m in unset),
            )
        self.t = self.t_steps["raw"]
        self._pre = Preprocessor(fs_in, m.preprocess, n_leads)
        self._model_buf = RingBuffer(int(buffer_s * self.fs), n_leads)
        # the selected lead as received (column 0, for the quality check: its INVALID flags are
        # that lead's own, a dead lead the model does not use flags nothing) and as the
        # filters received it, invalid values held (column 1, for the settling look-back)
        self._raw_buf = RingBuffer(int(buffer_s * self.fs_in), 2)
        self._chunk_in = max(1, int(self.hop * self.fs_in / self.fs))
        self._batch_in = max(1, int(PROCESS_BATCH_S * self.fs_in))
        self._staged: list[tuple[np.ndarray, np.ndarray, bool]] = []
        self._staged_n = 0
        self._rpeaks = StreamingRPeakDetector(self.fs)
        self._rpeak_origin = 0  # model index of the detector's first sample (a gap restarts it)
        self._rpeak_batch = int(RPEAK_BATCH_S * self.fs)
        self._peaks = np.zeros(0, dtype=np.int64)
        self._last_valid = np.zeros(n_leads)
        self._n_in = 0
        self._offset_s: float | None = None
        self._gaps: list[tuple[float, float]] = []  # (last time before, first time after) a gap
        self._failure_kinds: set[str] = set()  # kinds of model failure logged at WARNING
        self._next_start = 0
        self._last_end = 0
        self._denoised_prev: tuple[int, np.ndarray] | None = None  # start, denoised samples
        self._closed = False
        self._in_callback = 0  # callbacks running now (a close() from one waits for push)
        self._close_requested = False
        # the tracker's smoothing is per window; keep its time constant at another hop
        for name, value in (("episode_min_s", episode_min_s), ("episode_gap_s", episode_gap_s)):
            if value is not None and not (is_real_number(value) and 0.0 <= float(value) < math.inf):
                raise ConfigError(
                    f"{name} must be None or a finite number of seconds >= 0, got {value!r}",
                    field=name,
                )
        alpha = 1.0 - (1.0 - EpisodeTracker.alpha) ** (self.hop / m.hop_samples)
        self.episodes = EpisodeTracker(
            label=EPISODE_LABEL,
            alpha=alpha,
            on=m.thresholds.get("episode_on", 0.6),
            off=m.thresholds.get("episode_off", 0.4),
            min_duration_s=(
                m.thresholds.get("episode_min_s", AF_EPISODE_MIN_S)
                if episode_min_s is None
                else float(episode_min_s)
            ),
            min_gap_s=(
                m.thresholds.get("episode_gap_s", AF_EPISODE_MIN_S)
                if episode_gap_s is None
                else float(episode_gap_s)
            ),
        )
        self.stats = StreamStats()
        self._callbacks: list[Callable[[Event], None]] = [on_event] if on_event else []
        # the events() iterators: each one's queue and the event loop it waits in
        self._queues: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue[Event | None]]] = []

    def _hop_samples(self, hop_s: float | None) -> int:
        if hop_s is None:
            return self.bundle.manifest.hop_samples
        if not is_real_number(hop_s) or not math.isfinite(hop_s):
            raise ConfigError(
                f"hop_s must be a finite number of seconds, got {hop_s!r}", field="hop_s"
            )
        hop_s = float(hop_s)
        if not 0 < hop_s * self.fs <= self.window + 1:  # before rounding: 1e307 s overflows
            raise ConfigError(
                f"hop_s ({hop_s}) must be > 0 and <= the window ({self.window / self.fs:g} s)",
                field="hop_s",
            )
        hop = int(round(hop_s * self.fs))
        if not 0 < hop <= self.window or abs(hop - hop_s * self.fs) > 1e-6 * self.fs:
            raise ConfigError(
                f"hop_s ({hop_s}) must be a whole number of samples at {self.fs:g} Hz, "
                f"> 0 and <= the window ({self.window / self.fs:g} s)",
                field="hop_s",
            )
        return hop

    def _open_step_stream(self, stateful: bool | None, threads: int) -> StepStream | None:
        if stateful is not None and not isinstance(stateful, (bool, np.bool_)):
            raise ConfigError(
                f"stateful must be None (automatic), True or False, got {stateful!r}",
                field="stateful",
            )
        if stateful is not None and not stateful:
            return None
        problem = step_model_problem(
            self.bundle, denoising=self.denoiser is not None, hop_samples=self.hop
        )
        if problem is None and stateful is None:
            spec = streaming_spec(self.bundle)
            if self.hop > spec.hop_samples:
                return None  # measured: several step calls per hop cost more than one re-encode
        if problem is None:
            return StepStream(
                self.bundle,
                lead=self.lead,
                hop_samples=self.hop,
                threads=threads,
                backend=self.classifier.backend,
                engine_dir=self.classifier.engine_dir,
            )
        if stateful:
            raise ConfigError(f"stateful=True, but {problem[1]}", field="stateful")
        if problem[0] != "missing":
            _log.warning("step model not used, re-encoding whole windows: %s", problem[1])
        return None

    def _open_profile(
        self, profile: UserProfile | str | Path | None
    ) -> tuple[UserProfile | None, ProfileError | None]:
        if profile is None:
            return None, None
        try:
            if isinstance(profile, UserProfile):
                profile.check_bundle(self.bundle)
                return profile, None
            return load_profile(profile, self.bundle), None
        except ProfileError as exc:
            _log.warning("user profile not used, running with the bundle's defaults: %s", exc)
            return None, exc

    # -- delivery -----------------------------------------------------------------------------
    def _check_head_refit(self) -> None:
        """Warn when the bundle's head was refitted behind a denoiser this pipeline does not
        run, or behind a denoiser the bundle no longer has (``ecgedge export --refit-head``)."""
        refit = self.bundle.manifest.provenance.get("head_refit")
        if not isinstance(refit, dict):
            return
        if refit.get("stale"):
            _log.warning("the bundle's head is stale: %s", refit["stale"])
        elif refit.get("denoiser_sha256") and self.denoiser is None:
            _log.warning(
                "the bundle's head was fitted on denoised windows but this pipeline does not "
                "denoise; its head sees embeddings unlike those it was fitted on"
            )

    def add_callback(self, callback: Callable[[Event], None]) -> None:
        """Call ``callback(event)`` for every event, in order, from within :meth:`push` and
        :meth:`close` (so on the thread that pushes). An exception it raises is logged and
        counted in ``stats.callback_errors``; the stream goes on. It may call :meth:`close`:
        the stream then ends when the :meth:`push` that dispatched the event returns."""
        self._callbacks.append(callback)

    async def events(self) -> AsyncIterator[Event]:
        """Async iterator over events until :meth:`close`, in any event loop: one running
        in another thread than the pushes gets them handed over thread-safely.

        Started after :meth:`close`, it ends at once (no event comes any more)."""
        if self._closed:
            return
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self._queues.append((asyncio.get_running_loop(), queue))
        if self._closed:  # closed by another thread since the check above: nothing will come
            return
        while (event := await queue.get()) is not None:
            yield event

    def _emit(self, event: Event, out: list[Event]) -> None:
        out.append(event)
        for callback in self._callbacks:
            self._in_callback += 1
            try:
                callback(event)
            except Exception:  # a faulty consumer must not stop the stream
                self.stats.callback_errors += 1
                # the first failure with its traceback; later ones only at debug level
                level = logging.WARNING if self.stats.callback_errors == 1 else logging.DEBUG
                _log.log(level, "on_event callback %r failed", callback, exc_info=True)
            finally:
                self._in_callback -= 1
        self._post(event)

    def _post(self, item: Event | None) -> None:
        """Hand ``item`` to every :meth:`events` iterator, thread-safely when its event loop
        runs in another thread (an asyncio queue is not thread-safe); ``None`` ends them."""
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for loop, queue in list(self._queues):
            if loop is running:
                queue.put_nowait(item)
                continue
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # that loop is closed: nobody waits there any more
                self._queues.remove((loop, queue))

    # -- input --------------------------------------------------------------------------------
    def _as_block(self, samples: np.ndarray) -> np.ndarray:
        try:
            block = np.asarray(samples)
        except (ValueError, TypeError) as exc:  # ragged nested lists, odd objects
            raise BlockError(f"samples are no array: {exc}", reason="shape") from exc
        if block.dtype.kind not in "fiu":
            raise BlockError(f"samples must be numeric, got dtype {block.dtype}", reason="dtype")
        if isinstance(samples, np.ma.MaskedArray):  # masked samples are missing ones
            block = np.ma.filled(samples.astype(np.float64), np.nan)
        if block.ndim == 1 and self.n_leads == 1:
            block = block[:, None]
        if block.ndim != 2 or block.shape[1] != self.n_leads:
            raise BlockError(
                f"block must be (n, {self.n_leads}), got {block.shape}", reason="shape"
            )
        return block.astype(np.float64)

    def _stamp(self, timestamp_s: float | None) -> float:
        """Check a block's timestamp; return the gap before it in seconds (0.0: none). Changes
        nothing but the stream's start time on its first block."""
        expected = (self._offset_s or 0.0) + self._n_in / self.fs_in
        if timestamp_s is None:
            t0 = expected if self._offset_s is not None else 0.0
        else:
            if not is_real_number(timestamp_s):  # a string or a bool is no time
                raise BlockError(
                    f"timestamp {timestamp_s!r} is not a number", reason="timestamp_type"
                )
            t0 = float(timestamp_s)
            if not math.isfinite(t0):
                raise BlockError(f"timestamp {t0} is not finite", reason="nonfinite_timestamps")
        horizon = max(abs(t0), abs(expected)) + 86_400.0  # a day of stream after this block
        if np.spacing(horizon) > TIMESTAMP_RESOLUTION / self.fs_in:
            raise BlockError(
                f"timestamp {t0:g} s is too large to place samples at {self.fs_in:g} Hz "
                "(give seconds from a recent epoch, e.g. the stream's start)",
                reason="timestamp_range",
            )
        if self._offset_s is None:
            self._offset_s = t0
        elif t0 < expected - 0.5 / self.fs_in:
            raise BlockError(
                f"block starts at {t0:.6f} s, before the stream's next sample at {expected:.6f} s",
                reason="non_monotonic_timestamps",
            )
        elif t0 > expected + GAP_TOLERANCE_SAMPLES / self.fs_in:
            return t0 - expected
        return 0.0

    def push(
        self, samples: np.ndarray, *, timestamp_s: float | None = None, fs: float | None = None
    ) -> list[Event]:
        """Append a block; return (and dispatch) the events it completes.

        Parameters
        ----------
        samples : (n,) or (n, n_leads) millivolts (an array or anything ``numpy.asarray``
            takes, any real dtype: integer ADC counts must be scaled to mV first, or every
            window is flagged ``high_amplitude``); NaN/inf are counted, flagged and held.
            An empty block is accepted and changes nothing.
        timestamp_s : time of the block's first sample (s); later than expected opens a gap.
        fs : the block's sample rate, checked against ``fs_in`` when given.

        Raises
        ------
        SampleRateError, BlockError
            The block is refused and nothing of it is kept; the stream stays usable.
        """
        try:
            out = self._push(samples, timestamp_s, fs)
        except BaseException:
            if self._close_requested:  # by a callback before the failure: it still holds
                self.close()
            raise
        if self._close_requested:  # by a callback of this push: now, outside the analysis
            out += self.close()
        return out

    def _push(
        self, samples: np.ndarray, timestamp_s: float | None, fs: float | None
    ) -> list[Event]:
        if self._closed:
            self.stats.blocks_rejected += 1
            raise BlockError("the stream is closed", reason="closed")
        if fs is not None and not (
            is_real_number(fs)
            and math.isfinite(fs)
            and abs(float(fs) - self.fs_in) <= 1e-9 * self.fs_in
        ):
            self.stats.blocks_rejected += 1
            raise SampleRateError(
                f"block at {fs} Hz, stream at {self.fs_in} Hz", expected_hz=self.fs_in, got_hz=fs
            )
        try:
            block = self._as_block(samples)
            n = block.shape[0]
            gap_s = self._stamp(timestamp_s) if n else 0.0  # an empty block says nothing
        except BlockError:
            self.stats.blocks_rejected += 1
            raise
        self.stats.blocks_in += 1
        if n == 0:
            return []
        out: list[Event] = []
        if gap_s > 0.0:
            self._flush(out)  # the samples before the gap keep their times
            assert self._offset_s is not None
            before = self._offset_s + self._n_in / self.fs_in
            self._gaps.append((before, before + gap_s))
            self.stats.gaps += 1
            self.stats.gap_s += gap_s
            self._offset_s += gap_s
        assert self._offset_s is not None
        times = self._offset_s + (self._n_in + np.arange(n)) / self.fs_in
        self._n_in += n
        self.stats.samples_in += n
        self._staged.append((block, times, gap_s > 0.0))
        self._staged_n += n
        if self._staged_n >= self._batch_in:
            self._flush(out)
        return out

    def _flush(self, out: list[Event]) -> None:
        """Process the staged input (per-call costs are paid once per batch, not per packet)."""
        if not self._staged:
            return
        block = np.concatenate([b for b, _, _ in self._staged])
        times = np.concatenate([t for _, t, _ in self._staged])
        gap = self._staged[0][2]
        self._staged, self._staged_n = [], 0
        step = self._chunk_in  # a block longer than the buffers goes in in pieces
        for i in range(0, block.shape[0], step):
            self._ingest(block[i : i + step], times[i : i + step], gap and i == 0, out)

    def _ingest(self, block: np.ndarray, times: np.ndarray, gap: bool, out: list[Event]) -> None:
        with np.errstate(invalid="ignore"):
            valid = np.abs(block) <= MAX_ABS_MV  # False for NaN and inf too
        if gap:  # leads resume at their first valid value after the gap, not the last before
            first = np.argmax(valid, axis=0)
            resumed = valid[first, np.arange(self.n_leads)]
            self._last_valid[resumed] = block[first, np.arange(self.n_leads)][resumed]
        held = self._hold_invalid(block, valid)
        if gap:  # no filter transient from the jump of the offset across the gap
            self._end_segment(self._model_buf.total_written, out)  # before any sample after it
            self._pre.settle_at(held[0])
        lead = self.lead
        raw = np.where(valid[:, lead], block[:, lead], np.nan)  # out of range: invalid too
        self._raw_buf.write(np.stack([raw, held[:, lead]], axis=1), times, gap_before=gap)
        y = self._pre.process(held)
        k0 = self._model_buf.total_written
        offset = self._offset_s or 0.0
        self._model_buf.write(y, offset + (k0 + np.arange(y.shape[0])) / self.fs, gap_before=gap)
        if self.step_stream is not None:
            if gap:
                self.step_stream.reset(k0, grid_origin=k0)  # no state crosses a gap
            self.step_stream.feed(self._model_buf)
        self._drain(out, final=False)

    def _hold_invalid(self, block: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Replace the values ``valid`` rejects (NaN/inf, beyond ±:data:`MAX_ABS_MV`) by the
        lead's last valid value (so the filter state stays finite and does not ring)."""
        if valid.all():
            self._last_valid = block[-1].copy()
            return block
        self.stats.nonfinite_samples += int((~valid).sum())
        out = block.copy()
        for lead in range(self.n_leads):
            col, ok = out[:, lead], valid[:, lead]
            idx = np.where(ok, np.arange(col.size), -1)
            np.maximum.accumulate(idx, out=idx)
            col[:] = np.where(idx >= 0, col[np.maximum(idx, 0)], self._last_valid[lead])
            self._last_valid[lead] = col[-1]
        return out

    def _add_peaks(self, new: np.ndarray) -> None:
        if new.size:
            oldest = self._model_buf.oldest_index
            self._peaks = np.concatenate([self._peaks[self._peaks >= oldest], new])

    # -- windows ------------------------------------------------------------------------------
    def _feed_rpeaks(self, *, force: bool) -> None:
        """R-peak detection runs in batches (its result does not depend on the split); a
        denoising pipeline detects in each denoised window instead."""
        if self.denoiser is not None:
            return
        done = self._rpeak_origin + self._rpeaks.n_processed
        pending = self._model_buf.total_written - done
        if pending and (force or pending >= self._rpeak_batch):
            y, _, _ = self._model_buf.read_range(done, pending)
            self._add_peaks(self._rpeaks.process(y[:, self.lead]) + self._rpeak_origin)

    def _end_segment(self, end: int, out: list[Event]) -> None:
        """At a gap (model index ``end``): analyse the signal before it to its end (its beats
        decided, a last window aligned to its end, as :meth:`close` does), then restart the
        window grid at ``end``. No window spans this gap, and no signal beside it is left to
        windows flagged for it; only a stretch between two gaps shorter than a window is
        analysed in a window reaching back across the earlier one (flagged ``gap``)
        (:meth:`_analyse_tail`)."""
        if self.denoiser is None:
            self._restart_rpeaks(end)
        self._analyse_grid(end, out)
        self._analyse_tail(end, out)
        self._next_start = end

    def _analyse_grid(self, ready: int, out: list[Event]) -> None:
        """Analyse every window of the grid that ends by model index ``ready``."""
        while self._next_start + self.window <= ready:
            self._analyse(self._next_start, self.window, out)
            self._next_start += self.hop

    def _analyse_tail(self, end: int, out: list[Event]) -> None:
        """The last window of the signal before ``end`` (a gap or the stream's end) when no
        window reached it: aligned to ``end`` (reaching back across an earlier gap, flagged,
        when the stretch since is shorter), or zero-padded when the stream holds less than a
        window in all."""
        if self._last_end >= end or end <= 0:
            return
        if end < self.window:
            self._analyse(0, end, out)
        else:
            self._analyse(end - self.window, self.window, out)

    def _restart_rpeaks(self, at: int) -> None:
        """At a gap (model index ``at``): decide the beats before it, then detect afresh, as a
        new stream would (thresholds and RR averages learnt before the gap do not carry
        over)."""
        self._feed_rpeaks(force=True)
        self._add_peaks(self._rpeaks.flush() + self._rpeak_origin)
        self._rpeaks.reset()
        self._rpeak_origin = at

    def _drain(self, out: list[Event], *, final: bool) -> None:
        total = self._model_buf.total_written
        ready = total if final else total - self._lag
        window_due = self._next_start + self.window <= ready
        self._feed_rpeaks(force=window_due or final)
        if final and self.denoiser is None:
            self._add_peaks(self._rpeaks.flush() + self._rpeak_origin)
        self._analyse_grid(ready, out)
        if final:
            self._analyse_tail(total, out)

    def _analyse(self, start: int, n: int, out: list[Event]) -> None:
        tic = time.perf_counter()
        seg, times, flags = self._model_buf.read_range(start, n)
        raw_start = int(round(start * self.fs_in / self.fs))
        raw_n = min(int(round(n * self.fs_in / self.fs)), self._raw_buf.total_written - raw_start)
        raw, _, raw_flags = self._raw_buf.read_range(raw_start, raw_n)
        quality = assess_quality(
            raw[:, 0],
            self.fs_in,
            flags_in=raw_flags,
            before=self._held_before(raw_start, raw_flags),
            settle=self._settle,
        )
        step = self.step_stream.take(start, n) if self.step_stream is not None else None
        classes = self.bundle.manifest.classes
        error: Exception | None = None
        try:
            peaks, proba = self._window_model(start, seg, flags, step)
        except Exception as exc:  # one window's model error must not stop the stream
            peaks, proba, error = np.zeros(0, np.int64), np.full(len(classes), np.nan), exc
        latency_ms = 1000.0 * (time.perf_counter() - tic) + (step[1] if step else 0.0)
        failed = error is not None or not np.all(np.isfinite(proba))
        if failed:  # flagged and counted; each new kind of failure logged with its cause,
            # repeats at debug level (a broken bundle fails every window)
            kind = type(error).__name__ if error else "non-finite"
            level = logging.DEBUG if kind in self._failure_kinds else logging.WARNING
            self._failure_kinds.add(kind)
            what = "the model failed" if error else "the model gave non-finite probabilities"
            _log.log(level, "window %d: %s", self.stats.windows, what, exc_info=error)
            self.stats.model_failures += 1
        flagged = failed or not quality.ok
        bad = failed or bool(set(quality.flags) - NOT_SIGNAL_FLAGS)
        if bad and self.step_stream is not None:
            # what made this window bad must not reach later windows through the step model's
            # carried state or its blocks' normalization statistics: restart after it
            if start >= self.step_stream.reset_at:
                self.step_stream.reset(start + n)
                self.step_stream.feed(self._model_buf)
            else:  # it began before the last restart (a gap): what came after is fresh, but
                # embeddings kept from before the restart went through this window
                self.step_stream.discard(after=start + n)
        event = WindowEvent(
            index=self.stats.windows,
            start_s=float(times[0]),
            end_s=float(times[-1] + 1.0 / self.fs),
            label="" if failed else classes[int(np.argmax(proba))],
            probabilities={c: float(p) for c, p in zip(classes, proba)},
            quality=quality,
            flagged=flagged,
            heart_rate_bpm=heart_rate_bpm(peaks, self.fs),
            n_beats=int(peaks.size),
            t=self.t,
            denoised=self.denoiser is not None,
            personalized=self.profile is not None,
            latency_ms=latency_ms,
            stateful=step is not None,
            longest_rr_s=float(np.diff(peaks).max()) / self.fs if peaks.size >= 2 else None,
        )
        self.stats.windows += 1
        self.stats.windows_flagged += int(flagged)
        self.stats.latencies_ms.append(latency_ms)
        # share of a hop of new data: < 1 only for the tail window close() aligns to the end
        fresh = 1.0 if self._last_end == 0 else min(1.0, (start + n - self._last_end) / self.hop)
        if not flagged:  # the signal this window adds to what earlier windows covered
            new_s = (start + n - max(self._last_end, start)) / self.fs
            self.stats.label_s[event.label] = self.stats.label_s.get(event.label, 0.0) + new_s
        self._last_end = start + n
        self._interrupt_episodes(before_s=event.start_s, out=out)  # events stay in time order
        self._emit(event, out)
        if not flagged:
            for episode in self.episodes.update(
                event.probabilities.get(self.episodes.label, 0.0),
                event.start_s,
                event.end_s,
                weight=fresh,
            ):
                self._emit(episode, out)

    def _window_model(
        self,
        start: int,
        seg: np.ndarray,
        flags: np.ndarray,
        step: tuple[np.ndarray, float] | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """A window's R peaks (samples from its start) and class probabilities: on the
        denoised window when the bundle has a denoiser, else on the standardized window or the
        step model's embedding."""
        n = seg.shape[0]
        x: np.ndarray | None = None
        if step is None and self.denoiser is not None:
            # every lead the denoiser cleans gives the beats (the selected one first)
            denoised = self.denoiser.denoise_leads(seg, self.lead)
            x = denoised.embedder_input(self.window)
            beats_in = denoised.beat_signal()
            context = self._denoised_context(start, flags)
            peaks = denoised_window_rpeaks(
                beats_in,
                seg.shape[0],
                self.fs,
                context,
                search_back_threshold=self.denoiser.search_back_threshold,
                min_qrs_energy=denoised.min_qrs_energy,
            )
            self._denoised_prev = (start, beats_in)
        else:
            if step is None:
                x = np.zeros((1, 1, self.window), dtype=np.float32)
                x[0, 0, : seg.shape[0]] = standardize_window(seg[:, self.lead])
            peaks = self._peaks[(self._peaks >= start) & (self._peaks < start + n)] - start
        return peaks, self._probabilities(x, peaks, step)

    def _denoised_context(self, start: int, window_flags: np.ndarray) -> np.ndarray | None:
        """The last denoised window's samples before the window at ``start``, as
        :func:`sdk.windowing.record_windows` takes them; none across a gap."""
        context = denoised_context(self._denoised_prev, start)
        if context is None or (window_flags.size and window_flags[0] & GAP_BEFORE):
            return None
        # the buffer holds a window, the lag and a hop beyond: the context is still in it
        m = context.shape[0]
        _, _, flags = self._model_buf.read_range(start - m + 1, m - 1)
        return None if np.any(flags & GAP_BEFORE) else context

    def _held_before(self, raw_start: int, window_flags: np.ndarray) -> np.ndarray:
        """The selected lead as the filters received it before a window, back to the settling
        look-back or the last gap (the filters restart there); at the stream's start, the
        filters' zero state as a sample of 0 mV."""
        if window_flags.size and window_flags[0] & GAP_BEFORE:
            return np.zeros(0)
        start = max(raw_start - self._settle.size + 1, self._raw_buf.oldest_index)
        before, _, flags = self._raw_buf.read_range(start, raw_start - start)
        gaps = np.flatnonzero(flags & GAP_BEFORE)  # the filters restarted settled there
        received = before[gaps[-1] :, 1] if gaps.size else before[:, 1]
        return settling_look_back(
            received, self._settle, from_zero_state=start == 0 and not gaps.size
        )

    def _probabilities(
        self, x: np.ndarray | None, peaks: np.ndarray, step: tuple[np.ndarray, float] | None
    ) -> np.ndarray:
        """A window's class probabilities: the head on the step model's embedding (``step``)
        or on the whole-window embedders' of ``x`` (the window standardized, or the selected
        lead denoised)."""
        head = self.profile.head if self.profile is not None else None
        rr = rr_features(peaks, self.fs)[None]
        if step is not None:
            feats = self.classifier.combine({"raw": (step[0], None)}, rr)
            return self.classifier.head_probabilities(feats, head)[0]
        assert x is not None
        lorenz = (
            lorenz_image(rr_from_peaks(peaks, self.fs))[None]
            if "lorenz" in self.classifier.modalities
            else None
        )
        return self.classifier.classify(WindowInputs(x, rr, lorenz), self.t_steps, head)[0]

    def _interrupt_episodes(self, *, before_s: float, out: list[Event]) -> None:
        """End the open episode at each gap that lies before ``before_s``: no episode spans
        time without data, and smoothing restarts after it."""
        while self._gaps and self._gaps[0][1] <= before_s + 0.5 / self.fs:
            last_before, _ = self._gaps.pop(0)
            for ended in self.episodes.interrupt(last_before):
                self._emit(ended, out)

    def close(self) -> list[Event]:
        """End the stream: decide the last beats, analyse the tail, close open episodes.

        The :meth:`events` iterators end even if this raises. Called from an event callback
        (within :meth:`push`), it only asks: the stream ends when that push returns, and its
        events are then that push's."""
        if self._closed:
            return []
        if self._in_callback:  # ending the stream mid-window would analyse windows twice
            self._close_requested = True
            return []
        self._closed = True
        out: list[Event] = []
        try:
            self._flush(out)
            self._drain(out, final=True)
            end_s = (self._offset_s or 0.0) + self._model_buf.total_written / self.fs
            self._interrupt_episodes(before_s=end_s, out=out)
            for closing in self.episodes.close(end_s):
                self._emit(closing, out)
        finally:
            self._post(None)
        return out
