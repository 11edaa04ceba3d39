"""DiffECG multimodal: frozen raw, spectrogram and Lorenz extractors, cross-modal fusion, head.

Each modality's extractor was diffusion-pretrained on its own input and probed for its t
(``runs/cpu``, ``runs/cpu-spectrogram``, ``runs/cpu-lorenz``). Here the extractors stay
frozen; the :class:`~trainer.models.fusion.CrossModalFusion` module is trained with a
linear classifier on the CinC 2017 training records (early stopping on an inner split),
then the numpy head is fitted on ``embeddings ++ fused ++ RR``. The validation split is
scored once, for every combination of modalities (the ablation that decides whether the
default bundle becomes multimodal).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from sdk.bundle import sha256_file
from sdk.head import fit_softmax_head
from sdk.modalities import MODALITIES
from trainer.checkpoint import load_checkpoint, load_weights, write_atomic, write_text_atomic
from trainer.checks import check_out_dir
from trainer.config import DataConfig
from trainer.data.datasets import WindowSet, cinc2017_split
from trainer.data.splits import stratified_split
from trainer.errors import CheckpointError, ConfigError
from trainer.metrics import CLASSES, aggregate_by_record, encode, rhythm_metrics, rhythm_report
from trainer.models.fusion import CrossModalFusion, FusionConfig
from trainer.probe import build_extractor, load_head, save_head

#: What a fusion run writes last; its ``inputs`` tie the run to its modalities' runs.
MODALITIES_FILE = "modalities.json"

#: Bottleneck tokens kept per modality (raw 160 positions → 20, spectrogram 10, Lorenz 6).
N_TOKENS = {"raw": 20, "spectrogram": 10, "lorenz": 6}
DEFAULT_RUNS = {
    "raw": "runs/cpu",
    "spectrogram": "runs/cpu-spectrogram",
    "lorenz": "runs/cpu-lorenz",
}


@dataclass
class ModalityFeatures:
    t: int
    embedding: dict[str, np.ndarray]  # split → (N, D)
    tokens: dict[str, np.ndarray]  # split → (N, C, n_tokens)


@torch.no_grad()
def _extract(extractor: torch.nn.Module, x: np.ndarray, t: int, noise: np.ndarray, desc: str):
    emb, tok = [], []
    eps = torch.from_numpy(noise)
    for i in tqdm(range(0, len(x), 256), desc=desc, unit="batch", leave=False):
        xb = torch.from_numpy(np.ascontiguousarray(x[i : i + 256]))
        e, k = extractor(xb, torch.full((xb.shape[0],), t, dtype=torch.int64), eps.expand_as(xb))
        emb.append(e.numpy())
        tok.append(k.numpy())
    return np.concatenate(emb), np.concatenate(tok)


def modality_features(run: Path, modality: str, splits: dict[str, WindowSet]) -> ModalityFeatures:
    """Embeddings and tokens of every split at the t the modality's probe chose."""
    cfg, state, _ = load_checkpoint(run / "diffecg.pt")
    if cfg.data.modality != modality:
        raise ValueError(f"{run} holds a {cfg.data.modality} model, not {modality}")
    _, t, noise = load_head(run / "head.npz")
    extractor = build_extractor(cfg, state, N_TOKENS[modality])
    factor = cfg.model.downsample_factor
    emb, tok = {}, {}
    for name, ws in splits.items():
        x = ws.modality(modality)
        x = x[..., : x.shape[-1] // factor * factor]
        emb[name], tok[name] = _extract(extractor, x, t, noise, f"{modality} {name}")
    return ModalityFeatures(t, emb, tok)


def _record_f1(proba: np.ndarray, ws: WindowSet) -> float:
    p = aggregate_by_record(proba, ws.record_index, len(ws.names))
    return rhythm_metrics(encode(ws.labels), p)["challenge_f1"]


def train_fusion(
    feats: dict[str, ModalityFeatures],
    train: WindowSet,
    *,
    epochs: int = 25,
    seed: int = 0,
    split_seed: int = 2018,
) -> tuple[CrossModalFusion, dict[str, Any]]:
    """Fusion + linear classifier on the training records; the epoch with the best inner
    challenge F1 is kept."""
    if epochs < 1:
        raise ConfigError(f"epochs must be >= 1, got {epochs}", key="epochs")
    torch.manual_seed(seed)
    mods = list(feats)
    fit_names, val_names = stratified_split(
        train.names, train.labels, val_fraction=0.25, seed=split_seed
    )
    fit_rec = np.isin(np.asarray(train.names)[train.record_index], fit_names)
    inner_val = train.subset(val_names)
    tokens = [torch.from_numpy(feats[m].tokens["train"]) for m in mods]
    y = torch.from_numpy(encode(train.window_labels))
    cfg = FusionConfig(
        tuple(int(t.shape[1]) for t in tokens), tuple(int(t.shape[2]) for t in tokens)
    )
    model = CrossModalFusion(cfg)
    clf = torch.nn.Linear(cfg.out_dim, len(CLASSES))
    params = list(model.parameters()) + list(clf.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-2)
    counts = torch.bincount(y[fit_rec], minlength=len(CLASSES)).float()
    loss_fn = torch.nn.CrossEntropyLoss(weight=counts.sum() / (len(CLASSES) * counts.clamp(min=1)))
    fit_idx = torch.from_numpy(np.flatnonzero(fit_rec))
    val_idx = torch.from_numpy(np.flatnonzero(~fit_rec))
    gen = torch.Generator().manual_seed(seed)
    best: tuple[float, dict[str, torch.Tensor], int] = (-1.0, {}, -1)
    history = []
    for epoch in tqdm(range(epochs), desc="fusion", unit="epoch"):
        model.train()
        for batch in fit_idx[torch.randperm(len(fit_idx), generator=gen)].split(256):
            loss = loss_fn(clf(model(*(t[batch] for t in tokens))), y[batch])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            proba = torch.softmax(clf(model(*(t[val_idx] for t in tokens))), -1).numpy()
        score = _record_f1(proba, inner_val)
        history.append({"epoch": epoch, "inner_challenge_f1": score, "last_loss": loss.item()})
        if score > best[0]:
            best = (score, {k: v.clone() for k, v in model.state_dict().items()}, epoch)
    model.load_state_dict(best[1])
    return model.eval(), {"best_epoch": best[2], "inner_challenge_f1": best[0], "history": history}


@torch.no_grad()
def fuse(model: CrossModalFusion, tokens: list[np.ndarray]) -> np.ndarray:
    out = []
    for i in range(0, len(tokens[0]), 1024):
        out.append(model(*(torch.from_numpy(t[i : i + 1024]) for t in tokens)).numpy())
    return np.concatenate(out)


def _score_rows(
    blocks: dict[str, dict[str, np.ndarray]], train: WindowSet, val: WindowSet
) -> tuple[dict[str, Any], Any]:
    """Fit a head on each combination of feature blocks (+ RR); report the validation split."""
    combos = {
        "raw": ["raw"],
        "raw + spectrogram": ["raw", "spectrogram"],
        "raw + lorenz": ["raw", "lorenz"],
        "raw + spectrogram + lorenz (concatenated)": ["raw", "spectrogram", "lorenz"],
        "fused only": ["fused"],
        "raw + spectrogram + lorenz + fused": ["raw", "spectrogram", "lorenz", "fused"],
    }
    y_train = encode(train.window_labels)
    rows, heads = {}, {}
    for name, keys in combos.items():
        xtr = np.concatenate([blocks[k]["train"] for k in keys] + [train.rr], axis=1)
        xva = np.concatenate([blocks[k]["val"] for k in keys] + [val.rr], axis=1)
        head = fit_softmax_head(xtr, y_train, CLASSES)
        p = aggregate_by_record(head.predict_proba(xva), val.record_index, len(val.names))
        rows[name] = rhythm_report(encode(val.labels), p)
        heads[name] = head
    return rows, heads["raw + spectrogram + lorenz + fused"]


#: DataConfig fields that decide the CinC 2017 split and the windows every extractor saw.
SPLIT_FIELDS = (
    "source",
    "split_seed",
    "val_fraction",
    "max_records",
    "fs",
    "window_s",
    "hop_s",
    "low_hz",
    "high_hz",
)


def check_same_split(data: dict[str, DataConfig]) -> None:
    """Raise :class:`ConfigError` unless every run's split and window fields equal the raw
    run's: fusion scores on the raw run's validation records, which another split could have
    put in that run's pretraining or probe data."""
    for modality, cfg in data.items():
        for name in SPLIT_FIELDS:
            ours, raw = getattr(cfg, name), getattr(data["raw"], name)
            if ours != raw:
                raise ConfigError(
                    f"the {modality} run has data.{name}={ours!r}, the raw run {raw!r}: "
                    "every run must share the raw run's split and windows",
                    key=f"data.{name}",
                )


def run_fusion(runs: dict[str, Path], out_dir: Path, *, epochs: int = 25) -> dict[str, Any]:
    """Train the fusion, fit the multimodal head, write ``out_dir`` (fusion.pt, head.npz,
    probe.json, modalities.json)."""
    if epochs < 1:
        raise ConfigError(f"epochs must be >= 1, got {epochs}", key="epochs")
    check_out_dir(out_dir, "--out", MODALITIES_FILE)
    for modality, run in runs.items():  # its head.npz and probe.json would be overwritten
        if Path(out_dir).resolve() == Path(run).resolve():
            raise ConfigError(
                f"--out {out_dir} is the {modality} run the fusion reads; give another folder",
                key="--out",
            )
    tic = time.perf_counter()
    data = {m: load_checkpoint(runs[m] / "diffecg.pt")[0].data for m in MODALITIES}
    check_same_split(data)
    train, val = cinc2017_split(data["raw"])
    splits = {"train": train, "val": val}
    feats = {m: modality_features(runs[m], m, splits) for m in MODALITIES}
    inputs = {m: input_record(runs[m], out_dir) for m in MODALITIES}
    model, info = train_fusion(feats, train, epochs=epochs)
    blocks: dict[str, dict[str, np.ndarray]] = {m: f.embedding for m, f in feats.items()}
    blocks["fused"] = {s: fuse(model, [feats[m].tokens[s] for m in MODALITIES]) for s in splits}
    rows, head = _score_rows(blocks, train, val)
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "format_version": 1,
        "config": dataclasses.asdict(model.cfg),
        "state_dict": model.state_dict(),
    }
    # written last, it says the run is whole: gone from the moment the first file is replaced
    (out_dir / MODALITIES_FILE).unlink(missing_ok=True)
    write_atomic(out_dir / "fusion.pt", partial(torch.save, payload))
    save_head(
        out_dir / "head.npz",
        head,
        checkpoint=np.asarray("fusion.pt"),
        checkpoint_sha256=np.asarray(sha256_file(out_dir / "fusion.pt")),
    )
    meta = {
        "runs": {m: str(p) for m, p in runs.items()},
        "inputs": inputs,
        "t": {m: f.t for m, f in feats.items()},
        "n_tokens": N_TOKENS,
        "dims": {m: int(f.embedding["train"].shape[1]) for m, f in feats.items()},
        "fused_dim": model.cfg.out_dim,
    }
    report = {
        "rows": rows,
        "fusion_training": info,
        "t": meta["t"],
        "seconds": time.perf_counter() - tic,
        "split": {"train_records": len(train.names), "val_records": len(val.names)},
    }
    write_text_atomic(out_dir / "probe.json", json.dumps(report, indent=2))
    write_text_atomic(out_dir / MODALITIES_FILE, json.dumps(meta, indent=2))
    return report


def input_record(run: Path, out_dir: Path) -> dict[str, str]:
    """Where a modality's run lies relative to the fusion run (so the two move together) and
    absolutely (so the fusion run alone can move), and the SHA-256 of the extractor and head
    the fusion was trained on."""
    try:
        where = os.path.relpath(Path(run).resolve(), Path(out_dir).resolve())
    except ValueError:  # on another drive (Windows): no relative path
        where = str(Path(run).resolve())
    return {
        "path": where,
        "absolute": str(Path(run).resolve()),
        "diffecg_sha256": sha256_file(Path(run) / "diffecg.pt"),
        "head_sha256": sha256_file(Path(run) / "head.npz"),
    }


def verified_inputs(run_dir: Path) -> dict[str, Path]:
    """Each modality's run folder of a fusion run, after checking that its extractor and head
    are the ones the fusion was trained on; :class:`CheckpointError` naming what changed."""
    path = Path(run_dir) / MODALITIES_FILE
    try:
        inputs = json.loads(path.read_text())["inputs"]
        folders = {m: Path(run_dir) / inputs[m]["path"] for m in MODALITIES}
        for m, folder in folders.items():  # the fusion run moved without its runs
            if not folder.is_dir():
                folders[m] = Path(inputs[m]["absolute"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"no readable input record ({exc!r}; a train-fusion of an older ecgedge, or the run "
            "did not finish): run ecgedge train-fusion again",
            path=str(path),
        ) from exc
    for m, folder in folders.items():
        for name, key in (("diffecg.pt", "diffecg_sha256"), ("head.npz", "head_sha256")):
            file = folder / name
            if not file.is_file() or sha256_file(file) != inputs[m][key]:
                raise CheckpointError(
                    f"the {m} run's {file} is not the one this fusion was trained on (missing "
                    "or another SHA-256): run ecgedge train-fusion again",
                    path=str(path),
                )
    return folders


def load_fusion(path: Path) -> CrossModalFusion:
    """Read ``fusion.pt`` (tensors and plain values only: ``weights_only=True``)."""
    payload = load_weights(path, "config", "state_dict")
    try:
        model = CrossModalFusion(FusionConfig(**payload["config"]))
        model.load_state_dict(payload["state_dict"])
    except (TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"invalid fusion checkpoint: {exc!r}", path=str(path)) from exc
    return model.eval()
