"""Raw bundle + multimodal run → a multimodal DiffECG bundle.

Starts from a verified raw-ECG bundle (its geometry, schedule, classes, provenance) and
writes a new bundle with one FP32 embedder per modality (raw re-exported with a ``tokens``
output), the cross-modal ``fusion`` graph, the multimodal head and each modality's fixed
inference noise. Every new graph passes a torch-vs-ONNX Runtime parity check on real
CinC 2017 validation windows, and the bundle is reloaded through the SDK before it is
reported. The quantized raw embedder is not carried over: its INT8 layers were chosen for
the raw-only head (state in the manifest which precisions exist).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from export.bundle_copy import require_diffecg
from export.errors import ExportError, ParityError
from export.jetson_rules import require_tensorrt_ready
from export.model_card import write_model_card
from export.onnx_export import compare, export_head, export_module
from export.publish import staged_bundle
from export.quantize import bar_progress, mixed_precision_int8, quantizable_nodes
from sdk.bundle import load_bundle, sha256_file
from sdk.classifier import WindowClassifier, WindowInputs
from sdk.modalities import MODALITIES, LorenzSpec, SpectrogramSpec
from sdk.rr import RR_FEATURE_NAMES
from trainer.checkpoint import load_checkpoint
from trainer.data.datasets import cinc2017_split
from trainer.fusion import MODALITIES_FILE, N_TOKENS, load_fusion, verified_inputs
from trainer.metrics import aggregate_by_record, encode, rhythm_report
from trainer.probe import build_extractor, load_head, read_head

FP32_PARITY_TOL = 1e-4
CALIBRATION_WINDOWS = 256
INT8_BUDGET = 0.02  # mean max |Δp| of the head on calibration windows (as raw bundles)
INT8_WORST_BUDGET = 0.05  # the same per-window change on the worst calibration window
INT8_LIMIT = 0.01  # largest validation drop of challenge F1 / AUROC the INT8 file may cost
GATED_METRICS = ("challenge_f1", "auroc_normal_vs_af_other")


def _tensor(name: str, shape: list[Any], dtype: str = "float32") -> dict[str, Any]:
    return {"name": name, "dtype": dtype, "shape": shape}


def _entry(root: Path, name: str, role: str, inputs: list, outputs: list, **extra: Any) -> dict:
    return {
        "path": name,
        "role": role,
        "precision": "fp32",
        "sha256": sha256_file(root / name),
        "bytes": (root / name).stat().st_size,
        "inputs": inputs,
        "outputs": outputs,
        **extra,
    }


def _check_parity(name: str, reference: list[np.ndarray], got: list[np.ndarray]) -> float:
    worst = max(compare(r, g).max_rel for r, g in zip(reference, got))
    if worst > FP32_PARITY_TOL:
        raise ParityError(f"{name}: torch vs ONNX Runtime max relative error {worst:.2e}")
    return worst


def build_multimodal_bundle(
    raw_bundle: Path, run: Path, out_dir: Path, *, int8: bool = True
) -> dict[str, Any]:
    """Write the multimodal bundle to ``out_dir`` (all or nothing:
    :func:`export.publish.staged_bundle`); return parity and SDK validation figures (and,
    with ``int8``, the gated mixed-precision INT8 raw embedder's)."""
    require_diffecg(raw_bundle)
    if not (Path(run) / MODALITIES_FILE).is_file():
        raise ExportError(
            f"--run {run} holds no {MODALITIES_FILE}: give the folder a finished ecgedge "
            "train-fusion wrote"
        )
    with staged_bundle(out_dir, raw_bundle, run) as out:
        return _write_multimodal(raw_bundle, run, out, int8=int8)


def _write_multimodal(raw_bundle: Path, run: Path, out: Path, *, int8: bool) -> dict[str, Any]:
    import onnxruntime as ort

    base = load_bundle(raw_bundle)
    meta = json.loads((run / MODALITIES_FILE).read_text())
    folders = verified_inputs(run)
    exported = base.manifest.provenance.get("checkpoint_sha256")
    if exported != meta["inputs"]["raw"]["diffecg_sha256"]:
        raise ExportError(
            f"--bundle {raw_bundle} was not exported from the raw run the fusion {run} was "
            f"trained on ({folders['raw']}): export that run (ecgedge export --run "
            f"{folders['raw']}) and give its bundle"
        )
    raw_cfg, _, _ = load_checkpoint(folders["raw"] / "diffecg.pt")
    _, val = cinc2017_split(raw_cfg.data)
    sample = val.subset(val.names[:8])
    files, parity, tokens_ref = [], {}, {}
    for mod in MODALITIES:
        cfg, state, _ = load_checkpoint(folders[mod] / "diffecg.pt")
        _, t, noise = load_head(folders[mod] / "head.npz")
        extractor = build_extractor(cfg, state, N_TOKENS[mod])
        x = sample.modality(mod)
        x = np.ascontiguousarray(
            x[..., : x.shape[-1] // cfg.model.downsample_factor * cfg.model.downsample_factor]
        )
        name = "embedder.fp32.onnx" if mod == "raw" else f"embedder.{mod}.fp32.onnx"
        tt = torch.full((x.shape[0],), t, dtype=torch.int64)
        xx, nn_ = torch.from_numpy(x), torch.from_numpy(noise).expand(x.shape[0], *noise.shape[1:])
        export_module(
            extractor,
            (xx, tt, nn_.contiguous()),
            out / name,
            ["x", "t", "noise"],
            ["embedding", "tokens"],
        )
        with torch.no_grad():
            ref = [r.numpy() for r in extractor(xx, tt, nn_.contiguous())]
        sess = ort.InferenceSession(str(out / name), providers=["CPUExecutionProvider"])
        got = sess.run(None, {"x": x, "t": tt.numpy(), "noise": nn_.contiguous().numpy()})
        parity[mod] = _check_parity(name, ref, got)
        tokens_ref[mod] = ref[1]
        noise_name = "noise.npy" if mod == "raw" else f"noise.{mod}.npy"
        np.save(out / noise_name, noise.astype(np.float32))
        x_shape = ["batch", int(x.shape[1]), int(x.shape[2])]
        emb_dim, tok = int(ref[0].shape[1]), list(ref[1].shape[1:])
        files.append(
            _entry(
                out,
                name,
                "embedder",
                [
                    _tensor("x", x_shape),
                    _tensor("t", ["batch"], "int64"),
                    _tensor("noise", x_shape),
                ],
                [_tensor("embedding", ["batch", emb_dim]), _tensor("tokens", ["batch", *tok])],
                modality=mod,
            )
        )
        files.append(_entry(out, noise_name, "inference_noise", [], [], modality=mod))
    fusion = load_fusion(run / "fusion.pt")
    args = tuple(torch.from_numpy(tokens_ref[m]) for m in MODALITIES)
    names = [f"tokens_{m}" for m in MODALITIES]
    export_module(fusion, args, out / "fusion.onnx", names, ["fused"])
    with torch.no_grad():
        ref_fused = fusion(*args).numpy()
    sess = ort.InferenceSession(str(out / "fusion.onnx"), providers=["CPUExecutionProvider"])
    parity["fusion"] = _check_parity(
        "fusion.onnx",
        [ref_fused],
        sess.run(None, {n: tokens_ref[m] for n, m in zip(names, MODALITIES)}),
    )
    files.append(
        _entry(
            out,
            "fusion.onnx",
            "fusion",
            [_tensor(n, ["batch", *tokens_ref[m].shape[1:]]) for n, m in zip(names, MODALITIES)],
            [_tensor("fused", ["batch", fusion.cfg.out_dim])],
        )
    )
    head = read_head(run / "head.npz")
    w, b = head.folded()
    export_head(w, b, out / "head.onnx")
    n_feat, n_cls = w.shape
    files.append(
        _entry(
            out,
            "head.onnx",
            "head",
            [_tensor("features", ["batch", n_feat])],
            [_tensor("logits", ["batch", n_cls]), _tensor("probabilities", ["batch", n_cls])],
        )
    )
    manifest = json.loads((raw_bundle / "manifest.json").read_text())
    manifest.update(
        {
            "name": f"{base.manifest.name}-multimodal",
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "files": files,
            "modalities": {
                "spectrogram": dataclasses.asdict(SpectrogramSpec()),
                "lorenz": dataclasses.asdict(LorenzSpec()),
            },
            "head_features": {
                "embedding_dims": meta["dims"],
                "fused_dim": meta["fused_dim"],
                "rr_features": list(RR_FEATURE_NAMES),
            },
        }
    )
    manifest["diffusion"]["default_t"] = {m: int(meta["t"][m]) for m in MODALITIES}
    manifest["provenance"]["multimodal_run"] = str(run)
    manifest["provenance"]["modality_runs"] = meta["runs"]
    manifest["provenance"]["modality_inputs"] = meta["inputs"]
    manifest["metrics"] = {
        "multimodal_probe": json.loads((run / "probe.json").read_text())["rows"],
        "parity": {"max_rel": parity},  # torch vs ONNX of each graph, on validation windows
    }
    if manifest["provenance"].get("target") == "jetson":  # before the slow gates
        require_tensorrt_ready(sorted(out.glob("*.onnx")))
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    fp32_val = _sdk_val(out, val, "fp32")
    figures: dict[str, Any] = {"parity_max_rel": parity, "sdk_val": fp32_val}
    if int8:
        train, _ = cinc2017_split(raw_cfg.data)
        figures["int8"] = _add_int8(out, manifest, train, val, fp32_val, meta["t"]["raw"])
    write_model_card(out)
    return figures


def search_int8_layers(
    root: Path,
    inputs: WindowInputs,
    t: int,
    *,
    budget: float = INT8_BUDGET,
    worst_budget: float = INT8_WORST_BUDGET,
    target: str = "cpu",
) -> tuple[list[str], float, float]:
    """Write ``root/embedder.int8.onnx``: the raw embedder with INT8 on the layers the head
    in ``root`` tolerates: per window, the largest change of its class probabilities (max
    |Δp|) on ``inputs``, whose mean must lie within ``budget`` and whose largest value (the
    worst window) within ``worst_budget`` (other modalities and the fusion stay FP32). Works
    for raw-only bundles (no ``tokens`` output) and multimodal ones; ``target`` as in
    :func:`export.quantize.mixed_precision_int8`. Returns the nodes kept in float, the mean
    and the worst window's change of the written file (over a budget when no layer fits)."""
    import onnxruntime as ort

    bundle = load_bundle(root)
    if "x" not in [i.name for i in bundle.manifest.file("embedder", "fp32").inputs]:
        raise ValueError(f"{root}: the raw embedder takes no ECG input x (a DACL bundle?)")
    clf = WindowClassifier(bundle, precision="fp32", threads=2)
    steps = clf.resolve_t(None)
    fixed = {m: clf.embed_modality(m, inputs, steps[m]) for m in clf.modalities if m != "raw"}
    noise = clf.noise["raw"]

    def proba(raw_part: tuple[np.ndarray, np.ndarray | None]) -> np.ndarray:
        feats = clf.combine({"raw": raw_part, **fixed}, inputs.rr)
        return clf.head.run({"features": feats}, ["probabilities"])[0]

    reference = proba(clf.embed_modality("raw", inputs, t))

    def error_of(path: Path) -> float:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        x = inputs.windows
        names = [o.name for o in sess.get_outputs() if o.name in ("embedding", "tokens")]
        out = sess.run(
            names,
            {
                "x": x,
                "t": np.full(len(x), t, np.int64),
                "noise": np.broadcast_to(noise, x.shape).copy(),
            },
        )
        raw = (out[0], out[1] if len(out) > 1 else None)
        change = np.abs(proba(raw) - reference).max(axis=1)
        mean, worst = float(change.mean()), float(change.max())
        # a file over the worst-window budget counts as over budget, however small its mean
        score = mean if worst <= worst_budget else budget + worst
        trials[score] = (mean, worst)
        return score

    trials: dict[float, tuple[float, float]] = {}  # score → (mean, worst) of each trial
    with tqdm(desc="INT8 layer sensitivity", unit="trial", leave=False) as bar:
        kept, score = mixed_precision_int8(
            root / "embedder.fp32.onnx",
            root / "embedder.int8.onnx",
            inputs.windows,
            t,
            noise,
            error_of,
            budget=budget,
            progress=bar_progress(bar),
            target=target,
        )
    # the written file's figures; when no layer fits, the least sensitive layer's (the score
    # mixed_precision_int8 returns), not those of the float file it leaves behind
    mean, worst = trials[score]
    return kept, mean, worst


def _add_int8(
    out: Path, manifest: dict[str, Any], train: Any, val: Any, fp32_val: dict, t: int
) -> dict[str, Any]:
    """Mixed-precision INT8 for the raw embedder (the layers the head's probabilities
    tolerate, as for raw bundles), kept only if the validation metrics hold within
    ``INT8_LIMIT``; otherwise the bundle stays FP32 and the figures say why."""
    rng = np.random.default_rng(0)
    n = min(CALIBRATION_WINDOWS, len(train.windows))
    idx = np.sort(rng.choice(len(train.windows), n, replace=False))
    inputs = WindowInputs(train.windows[idx], train.rr[idx], train.lorenz[idx])
    target = manifest["provenance"].get("target", "cpu")  # the raw bundle's: its INT8 form
    kept, err, worst = search_int8_layers(out, inputs, t, target=target)
    if target == "jetson":
        require_tensorrt_ready([out / "embedder.int8.onnx"])
    entry = dict(manifest["files"][0], path="embedder.int8.onnx", precision="int8")
    entry["sha256"] = sha256_file(out / "embedder.int8.onnx")
    entry["bytes"] = (out / "embedder.int8.onnx").stat().st_size
    manifest["files"].append(entry)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    int8_val = _sdk_val(out, val, "int8")
    drop = {k: fp32_val[k]["value"] - int8_val[k]["value"] for k in GATED_METRICS}
    result = {
        "layers_kept_float": kept,
        "mean_max_prob_change": err,
        "worst_max_prob_change": worst,
        "budget": INT8_BUDGET,
        "worst_budget": INT8_WORST_BUDGET,
        "sdk_val": int8_val,
        "drop": drop,
        "limit": INT8_LIMIT,
    }
    nothing_quantized = set(quantizable_nodes(out / "embedder.fp32.onnx")) <= set(kept)
    if nothing_quantized or not max(drop.values()) <= INT8_LIMIT:  # refused: stays FP32
        manifest["files"].remove(entry)
        (out / "embedder.int8.onnx").unlink()
        result["shipped"] = False
    else:
        result["shipped"] = True
    manifest["provenance"]["int8_calibration"] = {
        "windows": int(n),
        "layers_kept_float": kept,
        "budget_mean_max_prob_change": INT8_BUDGET,
        "mean_max_prob_change": err,
        "budget_worst_max_prob_change": INT8_WORST_BUDGET,
        "worst_max_prob_change": worst,
        "shipped": result["shipped"],
    }
    manifest["metrics"]["rhythm_val_sdk"] = {
        "val_fp32": fp32_val,
        "val_int8": int8_val,
        "int8_drop": drop,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return result


def _sdk_val(out: Path, val: Any, precision: str) -> dict[str, Any]:
    """Validation metrics with the bundle run by the SDK (window batches, as the probe)."""
    clf = WindowClassifier(load_bundle(out), precision=precision, threads=2)
    proba = np.concatenate(
        [
            clf.classify(
                WindowInputs(val.windows[i : i + 256], val.rr[i : i + 256], val.lorenz[i : i + 256])
            )
            for i in range(0, len(val.windows), 256)
        ]
    )
    p = aggregate_by_record(proba, val.record_index, len(val.names))
    return rhythm_report(encode(val.labels), p)
