"""The stateful step model of an LRU bundle: one hop of samples in, the window's embedding out.

A DiffAE-LRU bundle carries, beside its whole-window embedder, a step model described under
the manifest's ``streaming`` key (path and SHA-256 verified by :func:`sdk.bundle.load_bundle`).
Each call consumes one block of ``hop_samples`` samples and returns the embedding of the last
``blocks_per_window`` blocks; the LRU states carry the whole stream, so a stream started at a
window's first sample gives that window's whole-window embedding.

State layout ``packed-v2`` (two tensors, batch first, float32):

``lru_state`` (B, layers, 2 · d_state)
    per LRU layer the complex state as ``[re | im]``; zeros at the start of a stream.
``reducer`` (B, blocks_per_window, 3, emb_dim)
    per block of the window (oldest first) the Attention Reducer summary (m, s, v); an empty
    slot is m = ``empty_reducer_m``, s = v = 0.

Bundles exported before this layout (per-layer ``state_re_i``/``state_im_i`` and separate
``red_m``/``red_s``/``red_v`` tensors) are refused with a :class:`~sdk.errors.BundleError`
whose reason is ``"streaming_layout"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sdk.bundle import Bundle, ModelFile, TensorSpec, manifest_int, manifest_number
from sdk.errors import BlockError, BundleError
from sdk.runtime import open_model

STATE_LAYOUT = "packed-v2"
STEP_INPUTS = ("x_block", "lru_state", "reducer")
STEP_OUTPUTS = ("embedding", "new_lru_state", "new_reducer")

#: (lru_state, reducer), see the module docstring
StepState = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class StreamingSpec:
    """The manifest's ``streaming`` entry."""

    path: str
    sha256: str
    hop_samples: int
    blocks_per_window: int
    layers: int
    d_state: int
    emb_dim: int
    empty_reducer_m: float


def streaming_spec(bundle: Bundle) -> StreamingSpec:
    """Read and check the ``streaming`` entry of a loaded bundle's manifest.

    Raises
    ------
    BundleError
        reason ``"missing"`` (no step model), ``"streaming_layout"`` (a state layout other than
        ``packed-v2``, e.g. a bundle exported before it), ``"malformed"`` (fields missing or
        of the wrong type).
    """
    path = bundle.root / "manifest.json"
    entry = bundle.streaming
    if entry is None:
        raise BundleError(
            "the bundle has no streaming step model", path=str(path), reason="missing"
        )
    layout = entry.get("state_layout")
    if layout != STATE_LAYOUT:
        found = "per-layer re/im tensors (before packed-v2)" if layout is None else repr(layout)
        raise BundleError(
            f"step model state layout {found} is not supported (expected {STATE_LAYOUT!r}); "
            "rebuild the bundle with ecgedge export --run RUN (a DiffAE-LRU run)",
            path=str(path),
            reason="streaming_layout",
        )
    try:
        sizes = {
            k: manifest_int(entry[k], k)
            for k in ("hop_samples", "blocks_per_window", "layers", "d_state", "emb_dim")
        }
        if min(sizes.values()) < 1:
            raise ValueError(f"sizes must be >= 1, got {sizes}")
        spec = StreamingSpec(
            path=str(entry["path"]),
            sha256=str(entry["sha256"]),
            empty_reducer_m=manifest_number(entry["empty_reducer_m"], "empty_reducer_m"),
            **sizes,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(
            f"streaming entry is malformed: {exc!r}", path=str(path), reason="malformed"
        ) from exc
    if entry.get("inputs") != list(STEP_INPUTS) or entry.get("outputs") != list(STEP_OUTPUTS):
        raise BundleError(
            f"streaming entry must list inputs {list(STEP_INPUTS)} and outputs "
            f"{list(STEP_OUTPUTS)}",
            path=str(path),
            reason="malformed",
        )
    return spec


class StepEmbedder:
    """Run a bundle's step model on a stream, one block of ``spec.hop_samples`` per call.

    Parameters
    ----------
    bundle : a loaded LRU bundle (:func:`sdk.bundle.load_bundle`).
    backend, threads, engine_dir : as :func:`sdk.runtime.open_model`.

    The state is passed in and returned (no hidden state), so one instance serves several
    streams; not thread-safe for concurrent calls on one instance.
    """

    def __init__(
        self,
        bundle: Bundle,
        *,
        backend: str = "cpu",
        threads: int = 1,
        engine_dir: Path | None = None,
    ) -> None:
        self.spec = streaming_spec(bundle)
        path = bundle.root / self.spec.path
        s = self.spec
        state = (
            TensorSpec("lru_state", "float32", ("batch", s.layers, 2 * s.d_state)),
            TensorSpec("reducer", "float32", ("batch", s.blocks_per_window, 3, s.emb_dim)),
        )
        step_file = ModelFile(
            s.path,
            "embedder",
            "fp32",
            s.sha256,
            inputs=(TensorSpec("x_block", "float32", ("batch", 1, s.hop_samples)), *state),
            outputs=(
                TensorSpec("embedding", "float32", ("batch", s.emb_dim)),
                *(TensorSpec(f"new_{t.name}", t.dtype, t.shape) for t in state),
            ),
        )
        self.model = open_model(
            path,
            backend=backend,
            threads=threads,
            spec=step_file,  # the state geometry of the manifest is the model's
            engine_dir=engine_dir,
            data=bundle.verified_bytes(step_file),
        )
        if list(self.model.input_names) != list(STEP_INPUTS) or list(
            self.model.output_names
        ) != list(STEP_OUTPUTS):
            raise BundleError(
                f"step model has inputs {self.model.input_names} and outputs "
                f"{self.model.output_names}; expected {list(STEP_INPUTS)} and "
                f"{list(STEP_OUTPUTS)}",
                path=str(path),
                reason="shape",
            )

    def initial_state(self, batch: int = 1) -> StepState:
        """Zero LRU states and an empty reducer window for ``batch`` streams."""
        s = self.spec
        lru = np.zeros((batch, s.layers, 2 * s.d_state), np.float32)
        reducer = np.zeros((batch, s.blocks_per_window, 3, s.emb_dim), np.float32)
        reducer[:, :, 0] = s.empty_reducer_m
        return lru, reducer

    def step(self, block: np.ndarray, state: StepState) -> tuple[np.ndarray, StepState]:
        """Consume ``block`` (B, 1, hop_samples) float32; return the embedding (B, emb_dim)
        of the last ``blocks_per_window`` blocks and the new state."""
        if block.ndim != 3 or block.shape[1:] != (1, self.spec.hop_samples):
            raise BlockError(
                f"block shape {block.shape} != (batch, 1, {self.spec.hop_samples})",
                reason="shape",
            )
        feeds = dict(zip(STEP_INPUTS, (block.astype(np.float32, copy=False), *state)))
        emb, lru, reducer = self.model.run(feeds, STEP_OUTPUTS)
        return emb, (lru, reducer)
