"""``ecgedge bench dacl``: DACL, its two baselines and the timestep ablation on our split.

Reads ``dacl.json`` of an ``ecgedge train-dacl`` run (every row trained on the same VAE
latents of the same scattering features) and reports, on the CinC 2017 validation records:
the anomaly AUROC (record-mean distance to the normal training prototype, N vs A+O, noisy
excluded) and the linear probes (embedding ++ RR, embedding only), with 95% bootstrap
intervals, beside the paper's figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainer.bench.report import md_table, write_result
from trainer.dacl import read_results, train_command
from trainer.errors import ConfigError

PAPER = {
    "dacl": 0.7815,
    "contrastive_gaussian": 0.6716,
    "dae": 0.7532,
}
LABELS = {
    "reference_vae_latent": "VAE latent z_0 itself (no encoder)",
    "dacl": "DACL (diffusion views, t 1-50)",
    "contrastive_gaussian": "Baseline 1: contrastive, Gaussian views",
    "dae": "Baseline 2: denoising autoencoder",
    "ablation_early": "DACL, Early t 1-16",
    "ablation_mid": "DACL, Mid t 17-33",
    "ablation_late": "DACL, Late t 34-50",
}
#: the training settings the report states
TRAIN_KEYS = {"steps", "batch_size", "lr", "margin", "diffusion_steps"}


def _ci(v: dict[str, Any]) -> str:
    return f"{v['value']:.3f} [{v['ci95'][0]:.3f}, {v['ci95'][1]:.3f}]"


def _row(key: str, r: dict[str, Any]) -> list[Any]:
    p, e = r["embedding_plus_rr"], r["embedding_only"]
    return [
        LABELS.get(key, key),
        _ci(r["anomaly_auroc"]),
        f"{PAPER[key]:.4f}" if key in PAPER else "",
        _ci(e["macro_f1"]),
        _ci(e["auroc_normal_vs_af_other"]),
        _ci(p["challenge_f1"]),
        _ci(p["macro_f1"]),
        _ci(p["auroc_normal_vs_af_other"]),
    ]


def _rows(results: dict[str, Any], keys: list[str], run_dir: Path) -> list[list[Any]]:
    """The table rows of ``keys``, or :class:`ConfigError` naming the first malformed one."""
    rows = []
    for key in keys:
        try:
            rows.append(_row(key, results[key]))
        except (KeyError, TypeError, IndexError, ValueError) as exc:
            raise ConfigError(
                f"{run_dir / 'dacl.json'}: the {key!r} results are malformed ({exc!r})",
                key="run",
            ) from exc
    return rows


def run(run_dir: Path, out_dir: Path) -> dict[str, Any]:
    results = read_results(run_dir)
    keys = [k for k in LABELS if k in results]
    train = results.get("train")
    if not keys or not isinstance(train, dict) or not TRAIN_KEYS <= set(train):
        raise ConfigError(
            f"{run_dir / 'dacl.json'}: no train-dacl results (no experiment rows, or no 'train' "
            f"section with {sorted(TRAIN_KEYS)})",
            key="run",
        )
    header = [
        "model",
        "anomaly AUROC [95% CI]",
        "paper AUROC",
        "probe emb. macro F1",
        "probe emb. AUROC",
        "probe emb.+RR challenge F1",
        "probe emb.+RR macro F1",
        "probe emb.+RR AUROC",
    ]
    main = md_table(header, _rows(results, [k for k in keys if "ablation" not in k], run_dir))
    ablation = [k for k in keys if k == "dacl" or "ablation" in k]
    abl = md_table(header, _rows(results, ablation, run_dir))
    tc = results["train"]
    schedule = tc.get("schedule", "scaled")
    sched_text = (
        "betas 1e-4 … 0.02 over the 50 steps (ᾱ_50 ≈ 0.60)"
        if schedule == "ddpm"
        else "DDPM linear betas stretched so 50 steps span 1000 (ᾱ_50 ≈ 8e-6)"
    )
    md = f"""# dacl — DACL, baselines and timestep ablation (CinC 2017, validation split)

Command: `{train_command(results, run_dir)}` (noise schedule: {sched_text}), then
`ecgedge bench dacl --run {run_dir}`. Features: kymatio Scattering1D (J 6, Q 8) of each
standardized 10 s window, log, time mean and std (250); VAE latent 32 (μ = z_0); encoders
trained {tc["steps"]} steps, batch {tc["batch_size"]}, Adam lr {tc["lr"]}, margin {tc["margin"]},
T = {tc["diffusion_steps"]}; inference at t = 1. Anomaly score: mean over a record's windows of
the distance to the mean embedding of normal training windows; AUROC N vs (A+O), noisy records
excluded. Probes: softmax head on window embeddings (++ RR features), window probabilities
averaged per record. 95% bootstrap intervals over records. The paper's split, protocol and
training length differ (recording-level features, 70/30 patient split, 200 epochs).

{main}

Timestep ablation (views drawn only from the given range of t):

{abl}
"""
    write_result(out_dir, "dacl", {"results": results}, md)
    print(md)
    return results
