"""Window → class probabilities with a bundle's embedder and head (ONNX Runtime)."""

from __future__ import annotations

import numpy as np

from sdk.bundle import Bundle
from sdk.errors import ConfigError
from sdk.runtime import OnnxModel


class WindowClassifier:
    """Runs ``embedder(x, t, noise) ++ rr_features → head`` on standardized windows.

    Parameters
    ----------
    bundle : a verified bundle.
    precision : embedder precision to load (``None`` = the most compact in the bundle).
    threads, backend : see :class:`sdk.runtime.OnnxModel`.
    """

    def __init__(
        self,
        bundle: Bundle,
        *,
        precision: str | None = None,
        threads: int = 1,
        backend: str = "cpu",
    ) -> None:
        m = bundle.manifest
        self.manifest = m
        emb_spec = m.file("embedder", precision)
        head_spec = m.file("head")
        self.precision = emb_spec.precision
        self.embedder = OnnxModel(
            bundle.path_of(emb_spec), threads=threads, backend=backend, spec=emb_spec
        )
        self.head = OnnxModel(
            bundle.path_of(head_spec), threads=threads, backend=backend, spec=head_spec
        )
        self.noise = bundle.inference_noise()
        self.n_rr = len(m.head_features.get("rr_features", []))

    def check_t(self, t: int) -> int:
        if not 0 <= int(t) <= self.manifest.t_max:
            raise ConfigError(f"t must lie in 0..{self.manifest.t_max}, got {t}", field="t")
        return int(t)

    def embed(self, windows: np.ndarray, t: int) -> np.ndarray:
        """(B, leads, L) standardized windows → (B, D) embeddings at step ``t``."""
        b = windows.shape[0]
        feeds: dict[str, np.ndarray] = {
            "x": np.ascontiguousarray(windows, dtype=np.float32),
            "t": np.full(b, self.check_t(t), dtype=np.int64),
            "noise": np.ascontiguousarray(
                np.broadcast_to(self.noise, windows.shape), dtype=np.float32
            ),
        }
        return self.embedder.run(feeds, ["embedding"])[0]

    def classify(self, windows: np.ndarray, rr: np.ndarray, t: int) -> np.ndarray:
        """(B, leads, L) windows and (B, K_rr) RR features → (B, n_classes) probabilities."""
        if rr.shape != (windows.shape[0], self.n_rr):
            raise ConfigError(
                f"rr features must be ({windows.shape[0]}, {self.n_rr}), got {rr.shape}", field="rr"
            )
        feats = np.concatenate([self.embed(windows, t), rr.astype(np.float32)], axis=1)
        return self.head.run({"features": feats}, ["probabilities"])[0]
