"""DACL: diffusion-augmented contrastive learning on scattering features (Zewail 2025).

Stage I: a VAE (latent 32) on the standardized scattering features of every training window
(all classes); μ is the clean latent z_0. Stage II: Enc(z_t, t) trained with the triplet
margin loss ``max(0, ‖e_A − e_P‖² − ‖e_A − e_N‖² + m)`` where anchor and positive are two
diffusion-forward views of the same z_0 (independent t, ε; T = 50) and the negative is a
view of a window of another class. Inference: Enc(z_0, t = 1).

Evaluation on the CinC 2017 validation split: the anomaly score (Euclidean distance to the
mean embedding of normal training windows, averaged over a record's windows) scored as AUROC
N vs (A+O), and linear probes (embedding, embedding ++ RR) with record-level metrics.
Baselines on the same latents: supervised contrastive with Gaussian views z_0 + σ ε
(``views="gaussian"``), and a denoising autoencoder reconstructing z_0 from the same diffusion
views (``views="dae"``). The timestep ablation restricts t to Early 1–16, Mid 17–33, Late 34–50.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from sdk.bundle import sha256_file
from sdk.head import fit_softmax_head
from trainer.checkpoint import load_weights, write_atomic, write_text_atomic
from trainer.checks import check_out_dir, check_range
from trainer.config import (
    DataConfig,
    build_sections,
    command_with_overrides,
    preset_names,
    read_preset,
)
from trainer.data.datasets import WindowSet
from trainer.diffusion import alphas_cumprod, linear_betas
from trainer.errors import CheckpointError, ConfigError
from trainer.metrics import (
    CLASSES,
    aggregate_by_record,
    auroc,
    bootstrap_ci,
    encode,
    rhythm_report,
)
from trainer.models.dacl import VAE, DACLConfig, LatentDecoder, LatentUNetEncoder, vae_loss

VIEWS = ("diffusion", "gaussian", "dae")


@dataclass
class DACLTrainConfig:
    views: str = "diffusion"
    t_lo: int = 1  # DACL's 1-based steps, inclusive
    t_hi: int = 50
    diffusion_steps: int = 50
    sigma: float = 0.5  # Gaussian-view baseline
    margin: float = 1.0
    # "scaled": DDPM's linear betas stretched so T = 50 spans the noise of 1000 steps
    # (ᾱ_50 ≈ 8e-6, late views are almost pure noise); "ddpm": betas 1e-4 … 0.02 over the
    # 50 steps unchanged (ᾱ_50 ≈ 0.60, every view keeps most of the signal)
    schedule: str = "scaled"
    steps: int = 4000
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.views not in VIEWS:
            raise ConfigError(f"views must be one of {VIEWS}", key="views")
        if self.schedule not in ("scaled", "ddpm"):
            raise ConfigError("schedule must be 'scaled' or 'ddpm'", key="schedule")
        if not 1 <= self.t_lo <= self.t_hi <= self.diffusion_steps:
            raise ConfigError("need 1 <= t_lo <= t_hi <= diffusion_steps", key="t_lo")
        check_range(
            "train",
            self,
            positive=("sigma", "margin", "steps", "batch_size", "lr", "diffusion_steps"),
            seeds=("seed",),
        )


def standardize(train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = train.mean(axis=0)
    std = train.std(axis=0) + 1e-6
    return mean.astype(np.float32), std.astype(np.float32)


def train_vae(
    feats: np.ndarray, cfg: DACLConfig, steps: int = 3000, batch: int = 256, beta: float = 1.0
) -> tuple[VAE, dict[str, float]]:
    """Fit the VAE on standardized features (N, F); return it (eval mode) and the last losses."""
    torch.manual_seed(0)
    vae = VAE(cfg)
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    x_all = torch.from_numpy(feats)
    gen = torch.Generator().manual_seed(0)
    hist = []
    for _ in tqdm(range(steps), desc="DACL VAE", unit="step", mininterval=10, leave=False):
        x = x_all[torch.randint(0, len(x_all), (batch,), generator=gen)]
        recon, mu, logvar = vae(x)
        loss, rec, kl = vae_loss(x, recon, mu, logvar, beta)
        opt.zero_grad()
        loss.backward()
        opt.step()
        hist.append((rec.item(), kl.item()))
    rec, kl = np.mean(hist[-100:], axis=0)
    return vae.eval(), {"reconstruction": float(rec), "kl": float(kl)}


def sample_triplets(
    labels: np.ndarray, batch: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(anchor, negative) indices: the negative is always from another class than its anchor."""
    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        raise ConfigError("triplets need at least two classes", key="labels")
    anchor = rng.integers(0, len(labels), batch)
    negative = rng.integers(0, len(labels), batch)
    same = labels[negative] == labels[anchor]
    while same.any():
        negative[same] = rng.integers(0, len(labels), int(same.sum()))
        same = labels[negative] == labels[anchor]
    return anchor, negative


def triplet_loss(
    ea: torch.Tensor, ep: torch.Tensor, en: torch.Tensor, margin: float
) -> torch.Tensor:
    """DACL's Eq. 2 with squared Euclidean distances."""
    d_pos = ((ea - ep) ** 2).sum(dim=1)
    d_neg = ((ea - en) ** 2).sum(dim=1)
    return torch.relu(d_pos - d_neg + margin).mean()


def schedule_betas(tc: DACLTrainConfig) -> np.ndarray:
    if tc.schedule == "ddpm":
        return np.linspace(1e-4, 0.02, tc.diffusion_steps, dtype=np.float64)
    return linear_betas(tc.diffusion_steps)


class _Views:
    """Noisy views of latents: diffusion forward process (table index = t − 1) or Gaussian."""

    def __init__(self, tc: DACLTrainConfig, gen: torch.Generator) -> None:
        self.tc, self.gen = tc, gen
        self.abar = torch.from_numpy(alphas_cumprod(schedule_betas(tc))).float()

    def __call__(self, z0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        eps = torch.randn(z0.shape, generator=self.gen)
        if self.tc.views == "gaussian":
            return z0 + self.tc.sigma * eps, torch.zeros(len(z0), dtype=torch.int64)
        t = torch.randint(self.tc.t_lo - 1, self.tc.t_hi, (len(z0),), generator=self.gen)
        a = self.abar[t][:, None]
        return a.sqrt() * z0 + (1 - a).sqrt() * eps, t


def train_encoder(
    z0: np.ndarray, labels: np.ndarray, cfg: DACLConfig, tc: DACLTrainConfig
) -> LatentUNetEncoder:
    """Stage II: triplet training (``diffusion``/``gaussian`` views) or the DAE baseline."""
    torch.manual_seed(tc.seed)
    gen = torch.Generator().manual_seed(tc.seed)
    rng = np.random.default_rng(tc.seed)
    enc = LatentUNetEncoder(cfg)
    dec = LatentDecoder(cfg) if tc.views == "dae" else None
    params = list(enc.parameters()) + (list(dec.parameters()) if dec else [])
    opt = torch.optim.Adam(params, lr=tc.lr)
    views = _Views(tc, gen)
    z_all = torch.from_numpy(z0)
    desc = f"DACL encoder ({tc.views} views, t {tc.t_lo}-{tc.t_hi})"
    for _ in tqdm(range(tc.steps), desc=desc, unit="step", mininterval=10, leave=False):
        a_idx, n_idx = sample_triplets(labels, tc.batch_size, rng)
        za = z_all[torch.from_numpy(a_idx)]
        if dec is not None:
            zt, t = views(za)
            loss = torch.mean((dec(enc(zt, t)) - za) ** 2)
        else:
            z3 = torch.cat([za, za, z_all[torch.from_numpy(n_idx)]])  # anchor, positive, negative
            ea, ep, en = enc(*views(z3)).chunk(3)  # one pass; every view has its own t and ε
            loss = triplet_loss(ea, ep, en, tc.margin)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return enc.eval()


@torch.no_grad()
def embed(enc: LatentUNetEncoder, z0: np.ndarray, t_index: int = 0) -> np.ndarray:
    z = torch.from_numpy(z0)
    return enc(z, torch.full((len(z),), t_index, dtype=torch.int64)).numpy()


@torch.no_grad()
def latents(vae: VAE, feats: np.ndarray) -> np.ndarray:
    return vae.encode(torch.from_numpy(feats))[0].numpy()


DISTANCES = ("euclidean", "z_scored", "mahalanobis", "knn")
AGGREGATIONS = ("mean", "median", "max")
KNN_K = 10


def _knn_distance(ref: np.ndarray, query: np.ndarray, k: int, batch: int = 1024) -> np.ndarray:
    """Mean Euclidean distance of each query row to its ``k`` nearest rows of ``ref``."""
    k = min(k, len(ref))
    ref_sq = np.einsum("ij,ij->i", ref, ref)
    out = np.empty(len(query))
    for i in range(0, len(query), batch):
        q = query[i : i + batch]
        d2 = np.einsum("ij,ij->i", q, q)[:, None] - 2.0 * q @ ref.T + ref_sq[None]
        near = np.partition(np.maximum(d2, 0.0), k - 1, axis=1)[:, :k]
        out[i : i + batch] = np.sqrt(near).mean(axis=1)
    return out


def prototype_distance(
    emb_train: np.ndarray, emb_val: np.ndarray, normal: np.ndarray, metric: str = "euclidean"
) -> np.ndarray:
    """Distance of each validation embedding to the normal training windows (rows of
    ``emb_train`` where ``normal``): a one-class score, no other label used.

    ``euclidean``: to their mean (DACL's score). ``z_scored``: the same after dividing each
    dimension by the normal windows' standard deviation. ``mahalanobis``: with their
    covariance -- a one-class Gaussian model of normal windows; the covariance is estimated
    on the normal windows z-scored per dimension and shrunk towards the identity
    (Ledoit-Wolf, scikit-learn), so that it stays invertible and the shrinkage does not depend
    on each dimension's scale. ``knn``: mean z-scored distance to the :data:`KNN_K` nearest
    normal windows (no single prototype: a normal class with several modes).
    """
    if metric not in DISTANCES:
        raise ValueError(f"metric must be one of {DISTANCES}, got {metric!r}")
    ref = np.asarray(emb_train[normal], dtype=np.float64)
    if len(ref) == 0:
        raise ValueError("no normal training windows to build the score from")
    query = np.asarray(emb_val, dtype=np.float64)
    if metric == "euclidean":
        return np.linalg.norm(query - ref.mean(axis=0), axis=1)
    mean, std = ref.mean(axis=0), ref.std(axis=0) + 1e-6
    ref, query = (ref - mean) / std, (query - mean) / std
    if metric == "z_scored":
        return np.linalg.norm(query, axis=1)
    if metric == "knn":
        return _knn_distance(ref, query, KNN_K)
    from sklearn.covariance import LedoitWolf

    fit = LedoitWolf().fit(ref)
    d = query - fit.location_
    return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", d, fit.precision_, d), 0.0))


def record_scores(dist: np.ndarray, ws: WindowSet, aggregate: str = "mean") -> np.ndarray:
    """One score per record of ``ws`` from its windows' distances: their mean, median or max
    (NaN for a record without windows)."""
    if aggregate not in AGGREGATIONS:
        raise ValueError(f"aggregate must be one of {AGGREGATIONS}, got {aggregate!r}")
    out = np.full(len(ws.names), np.nan)
    order = np.argsort(ws.record_index, kind="stable")
    starts = np.searchsorted(ws.record_index[order], np.arange(len(ws.names) + 1))
    reduce = {"mean": np.mean, "median": np.median, "max": np.max}[aggregate]
    for r in range(len(ws.names)):
        if starts[r + 1] > starts[r]:
            out[r] = reduce(dist[order[starts[r] : starts[r + 1]]])
    return out


def auroc_report(score: np.ndarray, ws: WindowSet) -> dict[str, Any]:
    """AUROC N vs (A+O) of per-record ``score`` over the records of ``ws`` (noisy records and
    records without a score excluded), with a 95% bootstrap interval."""
    labels = np.asarray(ws.labels)
    keep = (labels != "~") & np.isfinite(score)
    pos, s = np.isin(labels[keep], ["A", "O"]), score[keep]
    value = auroc(pos, s)
    lo, hi = bootstrap_ci(lambda i: auroc(pos[i], s[i]), len(s))
    return {"value": value, "ci95": [lo, hi], "records": int(keep.sum())}


def anomaly_report(
    emb_train: np.ndarray,
    emb_val: np.ndarray,
    train: WindowSet,
    val: WindowSet,
    metric: str = "euclidean",
    aggregate: str = "mean",
) -> dict[str, Any]:
    """:func:`auroc_report` of each validation record's ``aggregate`` of its windows'
    distances to the normal training windows (:func:`prototype_distance` with ``metric``)."""
    dist = prototype_distance(emb_train, emb_val, train.window_labels == "N", metric)
    return auroc_report(record_scores(dist, val, aggregate), val)


def probe_report(
    emb_train: np.ndarray, emb_val: np.ndarray, train: WindowSet, val: WindowSet
) -> dict[str, Any]:
    y = encode(train.window_labels)
    out = {}
    for key, xt, xv in (
        ("embedding_plus_rr", np.c_[emb_train, train.rr], np.c_[emb_val, val.rr]),
        ("embedding_only", emb_train, emb_val),
    ):
        head = fit_softmax_head(xt, y, CLASSES)
        proba = aggregate_by_record(head.predict_proba(xv), val.record_index, len(val.names))
        out[key] = rhythm_report(encode(val.labels), proba)
    return out


def evaluate(
    emb_train: np.ndarray, emb_val: np.ndarray, train: WindowSet, val: WindowSet
) -> dict[str, Any]:
    return {
        "anomaly_auroc": anomaly_report(emb_train, emb_val, train, val),
        **probe_report(emb_train, emb_val, train, val),
    }


EXPERIMENTS: dict[str, dict[str, Any]] = {
    "dacl": {},
    "contrastive_gaussian": {"views": "gaussian"},
    "dae": {"views": "dae"},
    "ablation_early": {"t_lo": 1, "t_hi": 16},
    "ablation_mid": {"t_lo": 17, "t_hi": 33},
    "ablation_late": {"t_lo": 34, "t_hi": 50},
}


def run_all(
    train: WindowSet,
    val: WindowSet,
    feats_train: np.ndarray,
    feats_val: np.ndarray,
    out_dir: Path,
    *,
    base: DACLTrainConfig | None = None,
    vae_steps: int = 3000,
    experiments: tuple[str, ...] = tuple(EXPERIMENTS),
    reuse_vae: bool = False,
    recorded: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """VAE once, then every experiment; writes ``dacl.json`` (with ``recorded``: the run's
    preset and its ``data`` and ``run`` sections, so the run can be rebuilt) and each
    encoder's weights."""
    base = base or DACLTrainConfig()
    out_dir.mkdir(parents=True, exist_ok=True)
    mean, std = standardize(feats_train)
    xs_train, xs_val = (feats_train - mean) / std, (feats_val - mean) / std
    cfg = DACLConfig(n_features=feats_train.shape[1])
    tic = time.perf_counter()
    if reuse_vae and (out_dir / "vae.pt").is_file():
        vae, vae_losses = _load_vae(out_dir / "vae.pt", cfg, mean, std)
    else:
        vae, vae_losses = train_vae(xs_train, cfg, steps=vae_steps)
    z_train, z_val = latents(vae, xs_train), latents(vae, xs_val)
    with torch.no_grad():
        xv = torch.from_numpy(xs_val)
        _, rec_val, kl_val = vae_loss(xv, *vae(xv), beta=1.0)
    vae_losses = {**vae_losses, "val_reconstruction": rec_val.item(), "val_kl": kl_val.item()}
    results: dict[str, Any] = {
        "vae": {
            **vae_losses,
            "seconds": time.perf_counter() - tic,
            "steps": None if "reused" in vae_losses else vae_steps,
        },
        "reference_vae_latent": evaluate(z_train, z_val, train, val),
        "config": asdict(cfg),
        "train": asdict(base),
        **(recorded or {}),
    }
    vae_payload = {
        "kind": "dacl",
        "config": asdict(cfg),
        "vae": vae.state_dict(),
        "mean": torch.from_numpy(mean),
        "std": torch.from_numpy(std),
        "losses": vae_losses,
    }
    # rewritten after each encoder it lists: gone from the moment the first file is replaced
    (out_dir / "dacl.json").unlink(missing_ok=True)
    write_atomic(out_dir / "vae.pt", partial(torch.save, vae_payload))
    vae_sha256 = sha256_file(out_dir / "vae.pt")
    labels = train.window_labels
    for name in experiments:
        tc = replace(base, **EXPERIMENTS[name])
        tic = time.perf_counter()
        enc = train_encoder(z_train, labels, cfg, tc)
        seconds = time.perf_counter() - tic
        results[name] = {
            **evaluate(embed(enc, z_train), embed(enc, z_val), train, val),
            "train_seconds": seconds,
            "views": tc.views,
            "t_range": [tc.t_lo, tc.t_hi],
        }
        payload = {"kind": "dacl-encoder", "encoder": enc.state_dict(), "vae_sha256": vae_sha256}
        write_atomic(out_dir / f"{name}.pt", partial(torch.save, payload))
        results[name]["sha256"] = sha256_file(out_dir / f"{name}.pt")
        # the torch linear-probe rows for `ecgedge bench rhythm --run <out_dir>/<name>`
        write_text_atomic(out_dir / name / "probe.json", json.dumps(results[name], indent=2))
        write_text_atomic(out_dir / "dacl.json", json.dumps(results, indent=2))
        print(name, json.dumps(_short(results[name])), flush=True)
    return results


def _load_vae(
    path: Path, cfg: DACLConfig, mean: np.ndarray, std: np.ndarray
) -> tuple[VAE, dict[str, float]]:
    """A VAE saved by an earlier run on the same features (checked by the standardization)."""
    ckpt = load_weights(path, "mean", "std", "vae")
    try:
        same = np.allclose(ckpt["mean"].numpy(), mean) and np.allclose(ckpt["std"].numpy(), std)
    except (AttributeError, ValueError, TypeError):
        same = False
    if not same:
        raise ConfigError(f"{path} was trained on other features", key="reuse_vae")
    vae = VAE(cfg)
    try:
        vae.load_state_dict(ckpt["vae"])
    except (TypeError, RuntimeError) as exc:
        raise CheckpointError(f"invalid VAE checkpoint: {exc!r}", path=str(path)) from exc
    losses = {k: float(v) for k, v in dict(ckpt.get("losses", {})).items()}
    return vae.eval(), {**losses, "reused": 1.0}


def _short(r: dict[str, Any]) -> dict[str, float]:
    return {
        "anomaly_auroc": r["anomaly_auroc"]["value"],
        "probe_macro_f1": r["embedding_plus_rr"]["macro_f1"]["value"],
        "probe_auroc": r["embedding_plus_rr"]["auroc_normal_vs_af_other"]["value"],
    }


@dataclass
class DACLRunOptions:
    """``[run]`` of a DACL preset: the VAE, which experiments, where, threads."""

    vae_steps: int = 3000
    experiments: tuple[str, ...] = tuple(EXPERIMENTS)
    reuse_vae: bool = False
    threads: int = 1
    out_dir: str = "runs/dacl"

    def __post_init__(self) -> None:
        self.experiments = tuple(self.experiments)
        unknown = [e for e in self.experiments if e not in EXPERIMENTS]
        if unknown or not self.experiments:
            raise ConfigError(
                f"run.experiments must be from {list(EXPERIMENTS)}, got {list(self.experiments)}",
                key="run.experiments",
            )
        if self.vae_steps <= 0 or self.threads <= 0:
            raise ConfigError("run.vae_steps and run.threads must be positive", key="run")


@dataclass
class DACLRunConfig:
    """A DACL preset: ``[data]`` (:class:`~trainer.config.DataConfig`: the CinC 2017 split),
    ``[train]`` (:class:`DACLTrainConfig`, each experiment's base) and ``[run]``."""

    data: DataConfig = field(default_factory=DataConfig)
    train: DACLTrainConfig = field(default_factory=DACLTrainConfig)
    run: DACLRunOptions = field(default_factory=DACLRunOptions)
    preset: str = "custom"


DACL_SECTIONS = {"data": DataConfig, "train": DACLTrainConfig, "run": DACLRunOptions}


def load_dacl_preset(name: str, overrides: dict[str, str] | None = None) -> DACLRunConfig:
    """``smoke``/``cpu``/``gpu`` (``trainer/presets/dacl_<name>.toml``) or a TOML path."""
    table, preset = read_preset(name, "dacl_")
    return DACLRunConfig(**build_sections(table, overrides, DACL_SECTIONS), preset=preset)


def train_dacl(cfg: DACLRunConfig) -> dict[str, Any]:
    """Scattering features of the CinC 2017 split (cached), the VAE, then every experiment of
    ``cfg.run`` (:func:`run_all`) into ``cfg.run.out_dir``; the results of ``dacl.json``."""
    from trainer.data.datasets import cinc2017_split
    from trainer.scattering import cached_features

    check_out_dir(cfg.run.out_dir, "run.out_dir", "dacl.json")
    torch.set_num_threads(cfg.run.threads)
    train, val = cinc2017_split(cfg.data)
    f_train, f_val = cached_features(train.windows), cached_features(val.windows)
    return run_all(
        train,
        val,
        f_train,
        f_val,
        Path(cfg.run.out_dir),
        base=cfg.train,
        vae_steps=cfg.run.vae_steps,
        experiments=cfg.run.experiments,
        reuse_vae=cfg.run.reuse_vae,
        recorded={"preset": cfg.preset, "data": asdict(cfg.data), "run": asdict(cfg.run)},
    )


def read_results(run_dir: Path) -> dict[str, Any]:
    """``dacl.json`` of a ``train-dacl`` run, a JSON object, or :class:`ConfigError` (key
    ``run``) saying what is wrong: no such file (not a DACL run, or one that has not finished
    its first encoder), not JSON, or not an object."""
    path = run_dir / "dacl.json"
    if not path.is_file():
        raise ConfigError(
            f"{path}: not found; --run must be an `ecgedge train-dacl` run that finished at "
            "least one encoder",
            key="run",
        )
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not readable JSON ({exc})", key="run") from exc
    if not isinstance(results, dict):
        raise ConfigError(f"{path}: not a train-dacl results object", key="run")
    return results


def train_command(results: dict[str, Any], run_dir: Path) -> str:
    """The ``ecgedge train-dacl`` command that trains a run like the one whose ``dacl.json``
    gave ``results``: its preset (``cpu`` when it recorded none or a file) plus an override
    for each value of its ``data``, ``train`` and ``run`` sections that differs from the
    preset's (a run from before ``data`` and ``run`` were recorded: ``train`` and the folder)."""
    preset = results.get("preset", "cpu")
    preset = preset if preset in preset_names("dacl_") else "cpu"
    base = load_dacl_preset(preset)
    run = dict(results.get("run", {"out_dir": str(run_dir)}))
    run["out_dir"] = str(run_dir)  # where the run is now
    values = {"data": results.get("data", {}), "train": results.get("train", {}), "run": run}
    base_values = {"data": asdict(base.data), "train": asdict(base.train), "run": asdict(base.run)}
    return command_with_overrides("ecgedge train-dacl", preset, values, base_values)
