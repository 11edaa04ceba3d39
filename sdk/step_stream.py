"""Window embeddings for :class:`~sdk.pipeline.StreamPipeline` from a bundle's step model.

Instead of re-encoding every window, the pipeline feeds each new block of ``hop_samples``
model-rate samples (the step model's hop, 1 s for DiffAE-LRU) to the bundle's stateful step
model (:class:`sdk.lru_step.StepEmbedder`) once the block is in the ring buffer; a window's
embedding is the step model's output after the window's last block.

Normalization (causal)
    A block ending at sample ``e`` is standardized (selected lead) with the mean and standard
    deviation of the ``window_samples`` samples ending at ``e`` -- what the whole-window path
    standardizes a window ending at ``e`` with -- with the floor :data:`~sdk.preprocess.MIN_STD_MV`
    and the clip ``±``:data:`~sdk.preprocess.CLIP_STD` of
    :func:`~sdk.preprocess.standardize_window`. The blocks of the first window after a
    (re)start wait until that window is complete and are all standardized with its statistics,
    so the first window's input equals the whole-window path's exactly. Later windows differ
    from it: each of their blocks carries the statistics of the 10 s ending at that block.

Reset
    A gap in the stream (:class:`~sdk.pipeline.StreamPipeline` opens one when a timestamp is
    later than expected) calls :meth:`StepStream.reset` with the gap's first model-rate
    sample, and so does a flagged window (bad quality or a model failure) with its end: the
    state returns to zeros (``StepEmbedder.initial_state``) at the first window start at or
    after it on the pipeline's window grid (multiples of its hop from the stream's start,
    or from the first sample after the last gap: a gap restarts the grid there); blocks
    before it are not fed, embeddings computed beyond it are dropped, and normalization
    statistics count only samples after the reset. No state crosses a gap or leaves a bad
    window, and the first window after a reset equals the whole-window path's.

Windows served
    Blocks lie on the window grid (from sample 0, moved to the first sample after each gap),
    so the pipeline's hop must be a multiple of the step model's hop and its window
    ``blocks_per_window`` blocks (otherwise :class:`StepStream` refuses with a
    :class:`~sdk.errors.ConfigError`). :meth:`StepStream.take` returns an embedding only for
    a grid window whose blocks were all fed since the last reset; for any other window (the
    last one before a gap or at ``close()``, aligned to the end of the signal; one reaching
    back across a gap; a stream shorter than one window) it returns ``None`` and the pipeline
    runs the whole-window embedder, as without a step model.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from sdk.bundle import Bundle
from sdk.errors import BundleError, ConfigError
from sdk.lru_step import StepEmbedder, StepState, streaming_spec
from sdk.preprocess import CLIP_STD, MIN_STD_MV
from sdk.ringbuffer import RingBuffer


def standardize_block(
    context: np.ndarray, block_samples: int, stop: int | None = None
) -> np.ndarray:
    """``context[stop - block_samples : stop]`` (default: the last block) standardized with the
    mean and std of all of ``context`` (n,), floor and clip as
    :func:`~sdk.preprocess.standardize_window`; float32 (block_samples,)."""
    w = np.asarray(context, dtype=np.float32)
    stop = w.size if stop is None else stop
    std = max(float(w.std()), MIN_STD_MV)
    block = w[stop - block_samples : stop]
    return np.clip((block - w.mean()) / std, -CLIP_STD, CLIP_STD).astype(np.float32)


def step_model_problem(
    bundle: Bundle, *, denoising: bool = False, hop_samples: int | None = None
) -> tuple[str, str] | None:
    """Why a pipeline cannot stream ``bundle`` through its step model: ``(reason, message)``,
    or ``None`` when it can. ``denoising``: the pipeline would run the bundle's denoiser;
    ``hop_samples``: the pipeline's window hop (default: the bundle's).

    Reasons: ``missing`` (no step model), ``streaming_layout`` / ``malformed`` (see
    :func:`~sdk.lru_step.streaming_spec`), ``modalities`` (other embedders or a fusion model
    than a raw one), ``denoiser``, ``window`` / ``hop`` (the block grid does not fit the
    bundle's window / hop).
    """
    try:
        spec = streaming_spec(bundle)
    except BundleError as exc:
        return exc.reason, str(exc)
    m = bundle.manifest
    if m.modalities != ("raw",) or m.has("fusion"):
        extra = " and a fusion model" if m.has("fusion") else ""
        return "modalities", (
            "the step model stands in for a raw embedder only; the bundle has "
            f"{list(m.modalities)}{extra}"
        )
    if denoising:
        return "denoiser", (
            "the bundle's denoiser runs on whole windows; pass denoise=False to stream blocks"
        )
    if spec.hop_samples * spec.blocks_per_window != m.window_samples:
        return "window", (
            f"the step model covers {spec.blocks_per_window} blocks of {spec.hop_samples} "
            f"samples, not the bundle's window of {m.window_samples}"
        )
    hop = m.hop_samples if hop_samples is None else hop_samples
    if hop % spec.hop_samples:
        return "hop", (
            f"the pipeline's hop ({hop} samples) is not a multiple of the step "
            f"model's hop ({spec.hop_samples} samples)"
        )
    return None


class StepStream:
    """Feeds one stream's model-rate samples to a bundle's step model, block by block.

    Parameters
    ----------
    bundle : a loaded bundle whose step model can stream it (:func:`step_model_problem`).
    lead : the lead the model sees.
    hop_samples : the pipeline's window hop (default: the bundle's).
    threads, backend, engine_dir : as :func:`sdk.runtime.open_model`.

    Raises
    ------
    ConfigError
        ``field="stateful"``: the step model cannot stream this bundle (the reason is given).

    Not thread-safe; one instance per stream.
    """

    def __init__(
        self,
        bundle: Bundle,
        *,
        lead: int = 0,
        hop_samples: int | None = None,
        threads: int = 1,
        backend: str = "cpu",
        engine_dir: Path | None = None,
    ) -> None:
        problem = step_model_problem(bundle, hop_samples=hop_samples)
        if problem is not None:
            raise ConfigError(
                f"no stateful streaming with this bundle ({problem[0]}): {problem[1]}",
                field="stateful",
            )
        self.embedder = StepEmbedder(
            bundle, backend=backend, threads=threads, engine_dir=engine_dir
        )
        self.block = self.embedder.spec.hop_samples
        self.window = bundle.manifest.window_samples
        self.hop = bundle.manifest.hop_samples if hop_samples is None else hop_samples
        self.lead = lead
        self.resets = 0
        self._ready: dict[int, tuple[np.ndarray, float]] = {}
        self._step_ms = 0.0
        self._state: StepState = self.embedder.initial_state(1)
        self.reset_at = self._fed = 0
        self._origin = 0  # window starts are this plus multiples of the hop

    def reset(self, index: int, *, grid_origin: int | None = None) -> None:
        """Zero the state; the stream restarts at the first window start >= ``index`` (the
        end of a flagged window) on the pipeline's window grid: multiples of its hop from
        ``grid_origin``, which a gap moves (the grid restarts at the first model-rate sample
        after it; None: the grid stays). Embeddings already computed for windows ending after
        ``index`` are dropped; those of windows ending before it (still waiting for their
        R-peaks) stay."""
        if grid_origin is not None:
            self._origin = int(grid_origin)
        self._ready = {end: v for end, v in self._ready.items() if end <= index}
        ahead = -(-(int(index) - self._origin) // self.hop) * self.hop
        self.reset_at = self._fed = self._origin + ahead
        self._state = self.embedder.initial_state(1)
        self._step_ms = 0.0  # steps before the gap serve no later window
        self.resets += 1

    def discard(self, after: int) -> None:
        """Drop the embeddings kept from before the last reset for windows ending after
        ``after`` (the end of a bad window analysed after that reset: their state went
        through it)."""
        self._ready = {e: v for e, v in self._ready.items() if e <= after or e > self.reset_at}

    def feed(self, buf: RingBuffer) -> None:
        """Step through every block of ``buf`` that is complete and not fed yet."""
        total = buf.total_written
        while self._fed + self.block <= total:
            end = self._fed + self.block
            hi = max(end, self.reset_at + self.window)  # first window: its own statistics
            if hi > total:
                return
            context = buf.read_range(hi - self.window, self.window)[0][:, self.lead]
            tic = time.perf_counter()
            x = standardize_block(context, self.block, self.window - (hi - end))
            emb, self._state = self.embedder.step(x[None, None], self._state)
            self._step_ms += 1000.0 * (time.perf_counter() - tic)
            self._fed = end
            start = end - self.window
            if start >= self.reset_at and (start - self._origin) % self.hop == 0:
                self._ready[end] = (emb, self._step_ms)
                self._step_ms = 0.0

    def take(self, start: int, n: int) -> tuple[np.ndarray, float] | None:
        """The step embedding (1, emb_dim) of window ``[start, start + n)`` and the step-model
        milliseconds spent since the previous one, or ``None`` when the window is not served
        (see the module docstring)."""
        end = start + n
        got = self._ready.pop(end, None) if n == self.window else None
        for key in [k for k in self._ready if k < end]:
            del self._ready[key]
        return got
