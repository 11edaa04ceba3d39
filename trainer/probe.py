"""Linear probe on the frozen DiffECG extractor: choose t, fit the head, score CinC 2017.

The head input is the extractor embedding followed by the window's RR features
(:data:`sdk.rr.RR_FEATURE_NAMES`), both computed as on the device. The diffusion step
t is chosen on an inner split of the training records; the validation split is only
scored, once, at the end.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from sdk.bundle import sha256_file
from sdk.head import SoftmaxHead, fit_softmax_head
from trainer.checkpoint import load_checkpoint, write_atomic
from trainer.config import RunConfig
from trainer.data.datasets import WindowSet, cinc2017_split
from trainer.data.splits import stratified_split
from trainer.diffusion import alphas_cumprod, linear_betas
from trainer.errors import CheckpointError
from trainer.metrics import CLASSES, aggregate_by_record, encode, rhythm_metrics, rhythm_report
from trainer.models.unet1d import DiffusionFeatureExtractor, UNet1d

NOISE_SEED = 20240229


@dataclass
class ProbeResult:
    t: int
    head: SoftmaxHead
    t_scores: dict[int, float]
    report: dict[str, object]


def build_extractor(
    cfg: RunConfig, state_dict: dict[str, torch.Tensor], n_tokens: int = 0
) -> DiffusionFeatureExtractor:
    """The deployable extractor (encoder + bottleneck) with the run's ᾱ table, in eval mode."""
    unet = UNet1d(cfg.model)
    unet.load_state_dict(state_dict)
    abar = torch.from_numpy(alphas_cumprod(linear_betas(cfg.train.diffusion_steps))).float()
    return DiffusionFeatureExtractor(unet.encoder, abar, n_tokens).eval()


def inference_noise(channels: int, length: int, seed: int = NOISE_SEED) -> np.ndarray:
    """The fixed inference noise ε (1, C, L) float32 stored in the bundle."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn((1, channels, length), generator=gen).numpy()


@torch.no_grad()
def embed(
    extractor: torch.nn.Module, windows: np.ndarray, t: int, noise: np.ndarray, batch: int = 256
) -> np.ndarray:
    """(N, C, L) model inputs → (N, D) embeddings at step ``t`` with the fixed noise."""
    out = []
    eps = torch.from_numpy(noise)
    for i in tqdm(range(0, len(windows), batch), desc=f"embed t={t}", unit="batch", leave=False):
        x = torch.from_numpy(windows[i : i + batch])
        tt = torch.full((x.shape[0],), t, dtype=torch.int64)
        out.append(extractor(x, tt, eps.expand_as(x)).numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def head_inputs(emb: np.ndarray, ws: WindowSet) -> np.ndarray:
    return np.concatenate([emb, ws.rr], axis=1)


def record_scores(head: SoftmaxHead, x: np.ndarray, ws: WindowSet) -> tuple[np.ndarray, np.ndarray]:
    """(true labels (R,), record probabilities (R, K)) by averaging window probabilities."""
    proba = aggregate_by_record(head.predict_proba(x), ws.record_index, len(ws.names))
    return encode(ws.labels), proba


def choose_t(
    extractor: torch.nn.Module, train: WindowSet, cfg: RunConfig, noise: np.ndarray
) -> dict[int, float]:
    """Challenge F1 on an inner split of the training records, per candidate t."""
    inner_fit, inner_val = stratified_split(
        train.names, train.labels, val_fraction=0.25, seed=cfg.data.split_seed + 1
    )
    fit_ws, val_ws = train.subset(inner_fit), train.subset(inner_val)
    scores = {}
    for t in cfg.train.probe_t:
        modality = cfg.data.modality
        xf = head_inputs(embed(extractor, fit_ws.modality(modality), t, noise), fit_ws)
        xv = head_inputs(embed(extractor, val_ws.modality(modality), t, noise), val_ws)
        head = fit_softmax_head(xf, encode(fit_ws.window_labels), CLASSES)
        y, p = record_scores(head, xv, val_ws)
        scores[t] = rhythm_metrics(y, p)["challenge_f1"]
    return scores


def run_probe(checkpoint: Path, out_dir: Path | None = None) -> ProbeResult:
    """Choose t, fit the head on all training records, report on the validation split."""
    cfg, state, _ = load_checkpoint(checkpoint)
    extractor = build_extractor(cfg, state)
    train, val = cinc2017_split(cfg.data)
    x_train, x_val = train.modality(cfg.data.modality), val.modality(cfg.data.modality)
    factor = cfg.model.downsample_factor
    x_train = x_train[..., : x_train.shape[-1] // factor * factor]
    x_val = x_val[..., : x_val.shape[-1] // factor * factor]
    noise = inference_noise(x_train.shape[1], x_train.shape[-1])
    t_scores = choose_t(extractor, train, cfg, noise)
    t = max(t_scores, key=lambda k: t_scores[k])
    emb_train, emb_val = (
        embed(extractor, x_train, t, noise),
        embed(extractor, x_val, t, noise),
    )
    y_train = encode(train.window_labels)
    head = fit_softmax_head(head_inputs(emb_train, train), y_train, CLASSES)
    y, p = record_scores(head, head_inputs(emb_val, val), val)
    emb_only = fit_softmax_head(emb_train, y_train, CLASSES)
    y2, p2 = record_scores(emb_only, emb_val, val)
    rr_only = fit_softmax_head(train.rr, y_train, CLASSES)
    y3, p3 = record_scores(rr_only, val.rr, val)
    report = {
        "t": t,
        "t_scores_inner_split": {str(k): v for k, v in t_scores.items()},
        "embedding_plus_rr": rhythm_report(y, p),
        "embedding_only": rhythm_report(y2, p2),
        "rr_only": rhythm_report(y3, p3),
        "split": {
            "train_records": len(train.names),
            "val_records": len(val.names),
            "seed": cfg.data.split_seed,
            "val_fraction": cfg.data.val_fraction,
        },
    }
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_head(
            out_dir / "head.npz",
            head,
            t=np.asarray(t),
            noise=noise,
            checkpoint=np.asarray(checkpoint.name),
            checkpoint_sha256=np.asarray(sha256_file(checkpoint)),
        )
        (out_dir / "probe.json").write_text(json.dumps(report, indent=2))
    return ProbeResult(t, head, t_scores, report)


def save_head(path: Path, head: SoftmaxHead, **extra: np.ndarray) -> None:
    """Write ``head.npz``: the head's arrays and ``extra`` ones (e.g. ``t``, ``noise``)."""
    arrays = dict(
        weight=head.weight,
        bias=head.bias,
        mean=head.mean,
        scale=head.scale,
        classes=np.asarray(head.classes),
        **extra,
    )
    write_atomic(path, partial(np.savez, **arrays))


def _open_head(path: Path) -> Any:
    """``head.npz`` opened without pickle; :class:`CheckpointError` naming it if it is not a
    readable archive."""
    if not path.is_file():
        raise CheckpointError("head file not found", path=str(path))
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise CheckpointError("not a readable head.npz (no pickled data)", path=str(path)) from exc


def read_head(path: Path) -> SoftmaxHead:
    """The head of a ``head.npz`` (no pickle); :class:`CheckpointError` naming the file when
    it lacks an array or the shapes do not make a head (weight (F, K), bias (K,), mean and
    scale (F,), K classes), or when it records the SHA-256 of the checkpoint it was fitted on
    and that checkpoint, beside it, is another (retrained without fitting the head again)."""
    return _head_of(_open_head(path), path)


def _head_of(z: Any, path: Path) -> SoftmaxHead:
    """:func:`read_head` of the opened archive ``z``."""
    _check_fitted_on(z, path)
    try:
        weight, bias, mean, scale = (np.asarray(z[k]) for k in ("weight", "bias", "mean", "scale"))
        classes = tuple(str(c) for c in z["classes"])
    except (KeyError, ValueError, OSError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"head file lacks or cannot read {exc}", path=str(path)) from exc
    if not (
        weight.ndim == 2
        and bias.shape == (weight.shape[1],)
        and mean.shape == scale.shape == (weight.shape[0],)
        and len(classes) == weight.shape[1]
    ):
        raise CheckpointError(
            f"head arrays do not fit: weight {weight.shape}, bias {bias.shape}, mean "
            f"{mean.shape}, scale {scale.shape}, {len(classes)} classes",
            path=str(path),
        )
    return SoftmaxHead(weight, bias, mean, scale, classes)


#: How to fit a head again after its checkpoint changed, per checkpoint file.
_FIT_AGAIN = {
    "diffecg.pt": "probe again: ecgedge probe {checkpoint}",
    "diffae.pt": "train it again (train-diffae probes after training)",
    "fusion.pt": "run ecgedge train-fusion again",
}


def _check_fitted_on(z: Any, path: Path) -> None:
    if "checkpoint_sha256" not in z.files:
        return
    if "checkpoint" not in z.files:
        raise CheckpointError("head file names no checkpoint beside its hash", path=str(path))
    checkpoint = path.parent / str(z["checkpoint"])
    if not checkpoint.is_file() or sha256_file(checkpoint) != str(z["checkpoint_sha256"]):
        again = _FIT_AGAIN.get(checkpoint.name, "fit it again").format(checkpoint=checkpoint)
        raise CheckpointError(
            f"head was fitted on another {checkpoint.name}; {again}", path=str(path)
        )


def load_head(path: Path) -> tuple[SoftmaxHead, int, np.ndarray]:
    """Head, t and inference noise of a probe's ``head.npz`` (written by :func:`run_probe`).

    A head that records its checkpoint's SHA-256 is refused (:class:`CheckpointError`) unless
    that checkpoint, beside it, is the one it was fitted on: a retrained run must be probed
    again before export or fusion.
    """
    z = _open_head(path)  # once: the head, t and noise come from one version of the file
    head = _head_of(z, path)
    try:
        return head, int(z["t"]), np.asarray(z["noise"])
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"head file lacks or cannot read {exc}", path=str(path)) from exc
