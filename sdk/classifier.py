"""Windows → class probabilities with a bundle's embedders, optional fusion, and head.

A bundle has one embedder per modality (``raw`` always; ``spectrogram`` and ``lorenz`` in
multimodal bundles), each conditioned on its own diffusion step t. The head sees the
embeddings in modality order, the fused cross-modal features when the bundle has a
``fusion`` model, and the window's RR features. A user profile replaces the bundle's head
by the user's (a numpy :class:`~sdk.head.SoftmaxHead`) and sets each modality's t.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from sdk.bundle import Bundle
from sdk.errors import ConfigError
from sdk.head import SoftmaxHead
from sdk.modalities import spectrogram
from sdk.runtime import Model, open_model, select_backend


@dataclass(frozen=True)
class WindowInputs:
    """A batch of analysed windows.

    windows : (B, 1, L) float32 standardized ECG.
    rr : (B, K) float32 RR features (:data:`sdk.rr.RR_FEATURE_NAMES`).
    lorenz : (B, G, G) float32 Lorenz images; needed only by bundles with that modality.
    """

    windows: np.ndarray
    rr: np.ndarray
    lorenz: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.windows.shape[0])

    def take(self, idx: np.ndarray) -> WindowInputs:
        """The windows at ``idx`` (integer indices)."""
        lorenz = self.lorenz[idx] if self.lorenz is not None else None
        return WindowInputs(self.windows[idx], self.rr[idx], lorenz)


def t_mapping(t: Mapping[str, int] | int | None) -> dict[str, int]:
    """``{modality: t}`` from what a caller gave: a mapping, an int (the raw embedder's t) or
    ``None`` (no override); any other type is a :class:`ConfigError`."""
    if t is None:
        return {}
    if isinstance(t, Mapping):
        return dict(t)
    if isinstance(t, (int, np.integer)) and not isinstance(t, bool):
        return {"raw": int(t)}
    raise ConfigError(f"t must be an integer or a {{modality: t}} mapping, got {t!r}", field="t")


class WindowClassifier:
    """Runs ``embedders(x_m, t_m, noise_m) [→ fusion] ++ rr → head`` on :class:`WindowInputs`.

    Parameters
    ----------
    bundle : a verified bundle.
    precision : embedder precision to load (``None`` = the most compact in the bundle).
    threads, backend, engine_dir : see :func:`sdk.runtime.open_model` (backends ``cpu``,
        ``cuda``, ``tensorrt``, ``trt-engine``, ``auto``: by the bundle's export target).
    """

    def __init__(
        self,
        bundle: Bundle,
        *,
        precision: str | None = None,
        threads: int = 1,
        backend: str = "cpu",
        engine_dir: Path | None = None,
    ) -> None:
        m = bundle.manifest
        self.backend = backend = select_backend(backend, m)
        self.engine_dir = engine_dir
        load = partial(open_model, threads=threads, backend=backend, engine_dir=engine_dir)
        self.manifest = m
        self.modalities = m.modalities
        self.embedders: dict[str, Model] = {}
        self.noise: dict[str, np.ndarray] = {}
        for modality in self.modalities:
            spec = m.file("embedder", precision if modality == "raw" else None, modality)
            self.embedders[modality] = load(
                bundle.path_of(spec), spec=spec, data=bundle.verified_bytes(spec)
            )
            if "features" in self.embedders[modality].input_names:
                from sdk.scattering import require_kymatio

                require_kymatio()  # a DACL bundle: found out now, not at the first window
            self.noise[modality] = bundle.inference_noise(modality)
        self.precision = m.file("embedder", precision).precision
        self.fusion = None
        if m.has("fusion"):
            fusion_spec = m.file("fusion")
            self.fusion = load(
                bundle.path_of(fusion_spec),
                spec=fusion_spec,
                data=bundle.verified_bytes(fusion_spec),
            )
        head_spec = m.file("head")
        self.head = load(
            bundle.path_of(head_spec), spec=head_spec, data=bundle.verified_bytes(head_spec)
        )
        self.n_rr = len(m.head_features.get("rr_features", []))

    def check_t(self, t: int) -> int:
        """``t`` as an int in 0 … t_max; anything else (2.5, "3", True) is a ConfigError."""
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)):
            raise ConfigError(f"t must be an integer diffusion step, got {t!r}", field="t")
        if not 0 <= int(t) <= self.manifest.t_max:
            raise ConfigError(f"t must lie in 0..{self.manifest.t_max}, got {t}", field="t")
        return int(t)

    def resolve_t(self, t: Mapping[str, int] | int | None) -> dict[str, int]:
        """Every modality's t: bundle defaults, overridden by ``t`` (an int sets raw's)."""
        out = {mod: self.manifest.default_t[mod] for mod in self.modalities}
        given = t_mapping(t)
        unknown = sorted(set(given) - set(out))
        if unknown:
            raise ConfigError(
                f"t given for {unknown}; this bundle's modalities are {list(self.modalities)}",
                field="t",
            )
        out.update({mod: self.check_t(v) for mod, v in given.items()})
        return out

    def modality_input(self, modality: str, inputs: WindowInputs) -> np.ndarray:
        """The model input of ``modality`` for a batch: (B, C, L) float32."""
        if modality == "raw":
            return np.ascontiguousarray(inputs.windows, dtype=np.float32)
        if modality == "spectrogram":
            return spectrogram(inputs.windows[:, 0])
        if inputs.lorenz is None:
            raise ConfigError(
                "this bundle needs Lorenz images (WindowInputs.lorenz)", field="lorenz"
            )
        return np.ascontiguousarray(inputs.lorenz, dtype=np.float32)

    def embed_modality(
        self, modality: str, inputs: WindowInputs, t: int
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(embedding (B, D), tokens (B, C, N) or None) of one modality at step ``t``."""
        x = self.modality_input(modality, inputs)
        model = self.embedders[modality]
        feeds = {
            "x": x,
            "t": np.full(x.shape[0], self.check_t(t), dtype=np.int64),
            "noise": np.ascontiguousarray(
                np.broadcast_to(self.noise[modality], x.shape), dtype=np.float32
            ),
        }
        if "features" in model.input_names:  # DACL: scattering front end in numpy, no noise
            from sdk.scattering import scattering_features

            feeds = {"features": scattering_features(x), "t": feeds["t"]}
        wanted = ["embedding", "tokens"] if "tokens" in model.output_names else ["embedding"]
        out = model.run(feeds, wanted)
        return out[0], (out[1] if len(out) > 1 else None)

    def combine(
        self, parts: Mapping[str, tuple[np.ndarray, np.ndarray | None]], rr: np.ndarray
    ) -> np.ndarray:
        """Head input from per-modality (embedding, tokens) and RR features: (B, D_head)."""
        feats = [parts[mod][0] for mod in self.modalities]
        if self.fusion is not None:
            feeds = {}
            for mod in self.modalities:
                tokens = parts[mod][1]
                if tokens is None:
                    raise ConfigError(f"the {mod} embedder has no tokens output", field="fusion")
                feeds[f"tokens_{mod}"] = tokens
            feats.append(self.fusion.run(feeds, ["fused"])[0])
        if rr.shape != (feats[0].shape[0], self.n_rr):
            raise ConfigError(
                f"rr features must be ({feats[0].shape[0]}, {self.n_rr}), got {rr.shape}",
                field="rr",
            )
        return np.concatenate([*feats, rr.astype(np.float32)], axis=1)

    def features(self, inputs: WindowInputs, t: Mapping[str, int] | int | None) -> np.ndarray:
        """Head input of a batch at the given t's: (B, D_head)."""
        steps = self.resolve_t(t)
        parts = {mod: self.embed_modality(mod, inputs, steps[mod]) for mod in self.modalities}
        return self.combine(parts, inputs.rr)

    def classify(
        self,
        inputs: WindowInputs,
        t: Mapping[str, int] | int | None = None,
        head: SoftmaxHead | None = None,
    ) -> np.ndarray:
        """(B, n_classes) probabilities, with the bundle's head or a user's ``head``."""
        return self.head_probabilities(self.features(inputs, t), head)

    def head_probabilities(self, feats: np.ndarray, head: SoftmaxHead | None = None) -> np.ndarray:
        """(B, n_classes) probabilities of head inputs ``feats`` (:meth:`combine`), with the
        bundle's head or a user's ``head``."""
        if head is not None:
            return head.predict_proba(feats).astype(np.float32)
        return self.head.run({"features": feats}, ["probabilities"])[0]
