"""Which parts of the diffusion-pretrained U-Net make the best frozen features?

DiffECG found its extractor (contracting path + two attention bottleneck layers, no
decoder) by architecture search. This is our small, honest version of that search on the
pretrained cpu U-Net: one forward pass at the probe's t collects every stage's output,
each candidate structure pools a different subset of them, and a linear probe (the
shipped head: embedding ++ RR features) scores it. The structure is chosen on an inner
split of the training records; the validation split is reported beside it, never used to
choose. Depth is probed by truncating the pretrained encoder (the first k levels), not by
retraining smaller networks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from sdk.head import fit_softmax_head
from trainer.bench.report import md_table, write_result
from trainer.checkpoint import load_checkpoint
from trainer.data.datasets import WindowSet, cinc2017_split
from trainer.data.splits import stratified_split
from trainer.diffusion import alphas_cumprod, linear_betas
from trainer.metrics import CLASSES, aggregate_by_record, encode, rhythm_report
from trainer.models.unet1d import UNet1d, timestep_embedding
from trainer.probe import load_head


def _mean(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=-1)


def _mean_max(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x.mean(dim=-1), x.amax(dim=-1)], dim=-1)


@torch.no_grad()
def stage_outputs(unet: UNet1d, x_t: torch.Tensor, t: torch.Tensor) -> dict[str, torch.Tensor]:
    """Pooled output of every stage: ``level{i}``, ``bottleneck{1,2}``, ``decoder``."""
    enc = unet.encoder
    temb = enc.time_mlp(timestep_embedding(t, enc.time_dim))
    h = enc.stem(x_t)
    out, skips = {}, []
    for i, (level, down) in enumerate(zip(enc.levels, enc.downs)):
        h = level(h, temb)
        skips.append(h)
        out[f"level{i + 1}"] = _mean(h)
        h = down(h)
    for j, layer in enumerate(enc.bottleneck):
        h = layer(h, temb)
        out[f"bottleneck{j + 1}"] = _mean_max(h)
    for i, (dec, up) in enumerate(zip(unet.dec, unet.ups)):
        h = dec(torch.cat([h, skips[-1 - i]], dim=1), temb)
        if not isinstance(up, torch.nn.Identity):
            h = up(torch.nn.functional.interpolate(h, scale_factor=2.0, mode="nearest"))
    out["decoder"] = _mean(h)
    return out


def candidates(n_levels: int) -> dict[str, list[str]]:
    levels = [f"level{i + 1}" for i in range(n_levels)]
    return {
        "encoder levels + 2 attention bottleneck layers (shipped)": [*levels, "bottleneck2"],
        "2 attention bottleneck layers only": ["bottleneck2"],
        "encoder levels + 1 attention bottleneck layer": [*levels, "bottleneck1"],
        "encoder levels only (no bottleneck)": levels,
        "deepest two levels + 2 bottleneck layers": [*levels[-2:], "bottleneck2"],
        "first two levels only (a shallower encoder)": levels[:2],
        "encoder + bottleneck + decoder output": [*levels, "bottleneck2", "decoder"],
    }


def _features(
    run: Path, splits: dict[str, WindowSet]
) -> tuple[dict[str, dict[str, np.ndarray]], int, int]:
    cfg, state, _ = load_checkpoint(run / "diffecg.pt")
    unet = UNet1d(cfg.model)
    unet.load_state_dict(state)
    unet.eval()
    _, t, noise = load_head(run / "head.npz")
    abar = torch.from_numpy(alphas_cumprod(linear_betas(cfg.train.diffusion_steps))).float()
    a = abar[t]
    feats: dict[str, dict[str, list[np.ndarray]]] = {}
    eps = torch.from_numpy(noise)
    for name, ws in splits.items():
        for i in tqdm(range(0, len(ws.windows), 256), desc=f"stages {name}", leave=False):
            x0 = torch.from_numpy(ws.windows[i : i + 256])
            x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps.expand_as(x0)
            tt = torch.full((x0.shape[0],), t, dtype=torch.int64)
            for stage, v in stage_outputs(unet, x_t, tt).items():
                feats.setdefault(stage, {}).setdefault(name, []).append(v.numpy())
    out = {s: {n: np.concatenate(v) for n, v in d.items()} for s, d in feats.items()}
    return out, t, len(cfg.model.dims)


def _probe(x_fit: np.ndarray, fit: WindowSet, x_eval: np.ndarray, ev: WindowSet) -> dict[str, Any]:
    head = fit_softmax_head(np.c_[x_fit, fit.rr], encode(fit.window_labels), CLASSES)
    p = aggregate_by_record(
        head.predict_proba(np.c_[x_eval, ev.rr]), ev.record_index, len(ev.names)
    )
    return rhythm_report(encode(ev.labels), p)


HEADER = ["structure", "dim", "inner challenge F1", "val challenge F1", "val macro F1"]
HEADER += ["val AUROC N vs A+O"]


def run(run_dir: Path, out_dir: Path) -> dict[str, Any]:
    """Score every candidate; write ``structure_search.{json,md}`` to ``out_dir``."""
    cfg, _, _ = load_checkpoint(run_dir / "diffecg.pt")
    train, val = cinc2017_split(cfg.data)
    fit_names, inner_names = stratified_split(
        train.names, train.labels, val_fraction=0.25, seed=cfg.data.split_seed + 1
    )
    fit, inner = train.subset(fit_names), train.subset(inner_names)
    stages, t, n_levels = _features(run_dir, {"train": train, "val": val})
    # subsets keep their windows in the training set's order, so a mask selects them
    in_fit = np.isin(np.asarray(train.names)[train.record_index], fit_names)
    for by_split in stages.values():
        by_split["fit"], by_split["inner"] = by_split["train"][in_fit], by_split["train"][~in_fit]
    rows = {}
    for name, parts in tqdm(candidates(n_levels).items(), desc="candidates"):
        block = {s: np.concatenate([stages[p][s] for p in parts], axis=1) for s in stages["level1"]}
        inner_report = _probe(block["fit"], fit, block["inner"], inner)
        rows[name] = {
            "stages": parts,
            "dim": int(block["fit"].shape[1]),
            "inner_challenge_f1": inner_report["challenge_f1"]["value"],
            "inner_macro_f1": inner_report["macro_f1"]["value"],
            "val": _probe(block["train"], train, block["val"], val),
        }
    result = {"run": str(run_dir), "t": t, "n_levels": n_levels, "candidates": rows}
    result["chosen"] = choose(rows, n_levels)
    write_result(out_dir, "structure_search", result, render(result))
    return result


#: Candidates this close to the best inner F1 are treated as tied (the inner split's
#: bootstrap interval is about ±0.03 wide); among them the cheapest wins.
TIE_TOLERANCE = 0.01


def _depth(stages: list[str], n_levels: int) -> int:
    """How far into the U-Net a candidate must run: levels 1…L, bottleneck L+1, L+2,
    the decoder (a second pass as long as the encoder) L+3."""
    rank = {f"level{i + 1}": i + 1 for i in range(n_levels)}
    rank |= {"bottleneck1": n_levels + 1, "bottleneck2": n_levels + 2, "decoder": n_levels + 3}
    return max(rank[s] for s in stages)


def choose(rows: dict[str, Any], n_levels: int, tolerance: float = TIE_TOLERANCE) -> str:
    """The cheapest candidate within ``tolerance`` of the best inner challenge F1 (then the
    higher inner F1, then the smaller feature vector)."""
    best = max(r["inner_challenge_f1"] for r in rows.values())
    tied = [k for k, r in rows.items() if r["inner_challenge_f1"] >= best - tolerance]
    return min(
        tied,
        key=lambda k: (
            _depth(rows[k]["stages"], n_levels),
            -rows[k]["inner_challenge_f1"],
            rows[k]["dim"],
        ),
    )


def render(result: dict[str, Any]) -> str:
    rows, chosen = result["candidates"], result["chosen"]
    table = [
        [
            name + (" ←" if name == chosen else ""),
            r["dim"],
            r["inner_challenge_f1"],
            r["val"]["challenge_f1"]["value"],
            r["val"]["macro_f1"]["value"],
            r["val"]["auroc_normal_vs_af_other"]["value"],
        ]
        for name, r in rows.items()
    ]
    return f"""# structure search — which U-Net stages feed the frozen features

Command: `ecgedge structure-search --run {result["run"]}` (pretrained cpu U-Net,
t={result["t"]}). Each candidate pools a subset of stage outputs (levels: time-mean;
bottleneck: mean and max) and is scored by the linear probe (features ++ RR) fitted on 75%
of the CinC 2017 training records and evaluated on the other 25% (inner challenge F1: the
choice). Validation-split figures (1194 records) are reported, not used to choose. Depth is
probed by truncating the pretrained encoder, not by retraining.

{md_table(HEADER, table)}

Rule: candidates within {TIE_TOLERANCE} of the best inner challenge F1 are tied (the inner
split's bootstrap interval is about ±0.03 wide); the one that runs least of the network wins.
Chosen: **{chosen}**.
"""
