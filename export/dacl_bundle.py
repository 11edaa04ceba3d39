"""Bundle of a DACL encoder: scattering features (numpy, in the SDK) → ONNX embedder → head.

The embedder graph takes ``features`` (B, 250) raw scattering features of
:func:`sdk.scattering.scattering_features` and ``t`` (B,) int64 (DACL's t = 1 is table index
0, the bundle default), standardizes them with the training statistics, and runs the VAE
encoder's μ and Enc(z_0, t). :class:`sdk.classifier.WindowClassifier` computes the features
when an embedder has a ``features`` input. The head is a softmax probe on embedding ++ RR
fitted on the training windows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from export.build import _code_version, _sdk_scores, _tensor
from export.errors import ParityError
from export.lru_bundle import bundle_manifest
from export.lru_export import export_dacl_embedder, session
from export.onnx_export import compare, export_head
from export.publish import staged_bundle
from sdk import scattering
from sdk.bundle import sha256_file
from sdk.head import fit_softmax_head
from trainer.checkpoint import load_weights
from trainer.config import DataConfig, build_sections
from trainer.dacl import EXPERIMENTS, read_results, train_command
from trainer.data.datasets import cinc2017_split
from trainer.errors import CheckpointError, ConfigError
from trainer.metrics import CLASSES, encode, rhythm_metrics
from trainer.models.dacl import VAE, DACLConfig, DACLEmbedder, LatentUNetEncoder
from trainer.scattering import cached_features

FP32_PARITY_TOL = 1e-4
T_STEPS = 50


def load_embedder(run_dir: Path, name: str) -> DACLEmbedder:
    """VAE (``vae.pt``) + encoder (``<name>.pt``) of an ``ecgedge train-dacl`` run."""
    vae_ckpt = load_weights(run_dir / "vae.pt", "config", "vae", "mean", "std")
    enc_ckpt = load_weights(run_dir / f"{name}.pt", "encoder")
    if enc_ckpt.get("vae_sha256") != sha256_file(run_dir / "vae.pt"):
        raise CheckpointError(
            "this encoder was not trained on the latents of the vae.pt beside it (another "
            "SHA-256, or none recorded: an older train-dacl); train-dacl again",
            path=str(run_dir / f"{name}.pt"),
        )
    try:
        cfg = DACLConfig(**vae_ckpt["config"])
        vae = VAE(cfg)
        vae.load_state_dict(vae_ckpt["vae"])
        enc = LatentUNetEncoder(cfg)
        enc.load_state_dict(enc_ckpt["encoder"])
        return DACLEmbedder(vae, enc, vae_ckpt["mean"], vae_ckpt["std"]).eval()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"invalid DACL run: {exc!r}", path=str(run_dir)) from exc


def _card(root: Path, figures: dict[str, Any]) -> None:
    m = json.loads((root / "manifest.json").read_text())
    prov, v = m["provenance"], figures["val_fp32"]
    text = f"""# {m["name"]}

DACL (diffusion-augmented contrastive learning): wavelet-scattering features of the window
(computed in the SDK in numpy, kymatio's Scattering1D, J {m["front_end"]["J"]}, Q
{m["front_end"]["Q"]}: {m["front_end"]["features"]} features) → VAE μ (z_0) → the
`{prov["encoder"]}` encoder at t = 1, with a linear head on embedding ++ RR features. FP32 only
(no INT8 graph).

- Train: `{prov["commands"]["train"]}`
- Export: `{prov["commands"]["export"]}`
- Validation (SDK, FP32, {prov["training_data"]["val_records"]} records of CinC 2017, seed
  {prov["training_data"]["split_seed"]}): challenge F1 {v["challenge_f1"]:.3f}, macro F1
  {v["macro_f1"]:.3f}, AUROC N vs (A+O) {v["auroc_normal_vs_af_other"]:.3f}.
- ONNX parity (max relative): {figures["parity"]["fp32_max_rel"]:.1e}.
- The embedder's input is the scattering features and `t` (index 0 is the paper's t = 1); the
  bundle's noise file is unused.
"""
    (root / "MODEL_CARD.md").write_text(text)


@torch.no_grad()
def _embed(emb: DACLEmbedder, feats: np.ndarray) -> np.ndarray:
    f = torch.from_numpy(feats)
    return emb(f, torch.zeros(len(f), dtype=torch.int64)).numpy()


def run_data(results: dict[str, Any]) -> DataConfig:
    """The CinC 2017 split a DACL run's features came from (``dacl.json``; runs from before it
    was recorded used the default split)."""
    return build_sections({"data": results.get("data", {})}, None, {"data": DataConfig})["data"]


def build_dacl_bundle(run_dir: Path, out_dir: Path, name: str = "dacl") -> dict[str, Any]:
    """Bundle the ``name`` encoder (an experiment of the run: ``dacl``, a baseline or an
    ablation) of an ``ecgedge train-dacl`` run into ``out_dir``; return parity and validation
    figures (SDK, FP32)."""
    results = read_results(run_dir)
    if name not in EXPERIMENTS or name not in results or not (run_dir / f"{name}.pt").is_file():
        trained = [k for k in EXPERIMENTS if k in results and (run_dir / f"{k}.pt").is_file()]
        raise ConfigError(f"{run_dir} has no encoder {name!r}; it has {trained}", key="encoder")
    recorded = results[name].get("sha256") if isinstance(results[name], dict) else None
    if recorded != sha256_file(run_dir / f"{name}.pt"):
        raise CheckpointError(
            f"dacl.json's figures are not those of the {name}.pt beside it (another SHA-256, or "
            "none recorded: an older train-dacl); train-dacl again",
            path=str(run_dir / f"{name}.pt"),
        )
    data = run_data(results)
    emb = load_embedder(run_dir, name)
    train, val = cinc2017_split(data)
    f_train, f_val = cached_features(train.windows), cached_features(val.windows)
    with staged_bundle(out_dir, run_dir) as tmp:
        export_dacl_embedder(emb, f_train.shape[1], tmp / "embedder.fp32.onnx")
        probe = f_val[:64]
        ref = _embed(emb, probe)
        out = session(tmp / "embedder.fp32.onnx").run(
            ["embedding"], {"features": probe, "t": np.zeros(len(probe), np.int64)}
        )[0]
        parity = compare(ref, out).max_rel
        if parity > FP32_PARITY_TOL:
            raise ParityError(
                f"ONNX parity {parity:.2e}", max_rel=parity, tolerance=FP32_PARITY_TOL
            )
        head = fit_softmax_head(
            np.c_[_embed(emb, f_train), train.rr], encode(train.window_labels), CLASSES
        )
        weight, bias = head.folded()
        export_head(weight, bias, tmp / "head.onnx")
        np.save(tmp / "noise.npy", np.zeros((1, 1, data.window), np.float32))
        emb_dim = emb.encoder.out.out_features
        emb_inputs = [
            _tensor("features", "float32", ["batch", f_train.shape[1]]),
            _tensor("t", "int64", ["batch"]),
        ]
        extra: dict[str, Any] = {
            "front_end": {
                "kind": "wavelet scattering, computed in the SDK (sdk.scattering, kymatio numpy)",
                "J": scattering.J,
                "Q": scattering.Q,
                "features": int(f_train.shape[1]),
            },
            "provenance": {
                "training_data": {
                    "head": "cinc2017 train split",
                    "split_seed": data.split_seed,
                    "val_fraction": data.val_fraction,
                    "train_records": len(train.names),
                    "val_records": len(val.names),
                },
                "code_version": _code_version(),
                "commands": {
                    "train": train_command(results, run_dir),
                    "export": f"ecgedge export --run {run_dir} --encoder {name} --out {out_dir}",
                },
                "encoder": name,
                "target": "cpu",
            },
            "metrics": {"parity": {"fp32_max_rel": parity}},
        }
        kw = dict(
            name=f"dacl-{name}",
            data=data,
            emb_inputs=emb_inputs,
            emb_dim=emb_dim,
            steps=T_STEPS,
            note="DACL: t = 1 of the paper is index 0; the noise file is unused",
        )
        bundle_manifest(tmp, extra=extra, **kw)
        y, p = _sdk_scores(tmp, "fp32", val, 0)
        figures = {"parity": {"fp32_max_rel": parity}, "val_fp32": rhythm_metrics(y, p)}
        extra["metrics"] = {"rhythm_val_sdk": {"val_fp32": figures["val_fp32"]}, **extra["metrics"]}
        bundle_manifest(tmp, extra=extra, **kw)
        _card(tmp, figures)

    return figures
