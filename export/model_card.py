"""MODEL_CARD.md of a bundle, rendered from its manifest and any benchmark results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, dict) and "value" in value:
        lo, hi = value.get("ci95", [float("nan")] * 2)
        return f"{value['value']:.4f} [{lo:.3f}, {hi:.3f}]"
    return str(value)


def _table(rows: dict[str, dict[str, Any]], columns: list[str]) -> list[str]:
    lines = ["| | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(_fmt(row.get(c, "")) for c in columns) + " |")
    return lines


_INTRO = """\
DiffECG raw-ECG path: a 1D U-Net pretrained as a DDPM noise predictor (self-supervised)
whose contracting path and two attention bottleneck layers are a frozen feature extractor;
a linear softmax head on the extractor embedding plus RR-interval features classifies
10 s windows of single-lead ECG as N (normal), A (atrial fibrillation), O (other rhythm)
or ~ (noisy).

**Not a medical device.** Research software; not validated for diagnosis."""

_DATABASE_NAMES = {
    "cinc2017": "CinC 2017",
    "mitdb": "MIT-BIH Arrhythmia",
    "cpsc2021": "CPSC 2021",
    "afdb": "MIT-BIH AF",
}


def _limits(data: dict[str, Any]) -> str:
    """The card's limits, from what the model was trained on (``training_data``)."""
    if data.get("source") == "synthetic":
        first = (
            "- Trained and validated on synthetic ECG only (sums of Gaussian waves): it has\n"
            "  seen no recording of any device, lead or person; for tests of the pipeline."
        )
    else:
        others = [_DATABASE_NAMES.get(d, d) for d in data.get("pretrain", []) if d != "cinc2017"]
        first = (
            "- Trained and validated on AliveCor single-lead recordings (CinC 2017)"
            + (f", pretrained also on {' and '.join(others)}" if others else "")
            + ";\n  other devices, leads and populations are untested."
        )
    return "\n".join(
        [
            "## Limits",
            "",
            first,
            "- The ~ (noisy) class is rare (3% of CinC 2017) and weakly learnt; the SDK's quality",
            "  flags are the better guard against unusable signal.",
            "- Data: PhysioNet (Goldberger et al., Circulation 2000); CinC 2017 (Clifford et al.,",
            "  CinC 2017), ODC-By 1.0.",
        ]
    )


def _provenance(m: dict[str, Any]) -> list[str]:
    prov, data, pre = m["provenance"], m["provenance"]["training_data"], m["preprocess"]
    q = prov["int8_calibration"]
    minutes = prov["train_seconds"] and round(prov["train_seconds"] / 60, 1)
    return [
        f"- Train: `{prov['commands']['train']}`",
        f"- Export: `{prov['commands']['export']}`",
        *_multimodal_recipe_lines(prov),
        f"- Pretraining data: {', '.join(data['pretrain'])}"
        + ("" if data.get("source") == "synthetic" else " (CinC 2017: train split only)"),
        f"- Head: {data['head']}, {data['train_records']} records; validation "
        f"{data['val_records']} records (seed {data['split_seed']})",
        f"- Pretraining: {prov['pretrain_steps']} steps, {minutes} min; code "
        f"{prov['code_version'][:12]}",
        f"- INT8 (raw embedder): static QDQ, per-channel weights, calibrated on "
        f"{q['windows']} real windows; {len(q.get('layers_kept_float', []))} layers kept in float "
        f"where INT8 moved the class probabilities (budget {q.get('budget_mean_max_prob_change')}, "
        f"reached {q.get('mean_max_prob_change', float('nan')):.4f} mean max |Δp|"
        + (
            f"; worst window {q['worst_max_prob_change']:.4f}, budget "
            f"{q.get('budget_worst_max_prob_change')}"
            if "worst_max_prob_change" in q
            else f"; 99th percentile {q['p99_max_prob_change']:.4f}, budget "
            f"{q.get('budget_p99_max_prob_change')}"  # a bundle from before the worst bound
            if "p99_max_prob_change" in q
            else ""
        )
        + ")"
        + (
            "; not shipped: no layer on the signal's path stayed within the bounds, "
            "the least sensitive one's figures above"
            if q.get("shipped") is False
            else ""
        ),
        f"- Input: {pre['fs']:.0f} Hz, band-pass {pre['low_hz']}–{pre['high_hz']} Hz, window "
        f"{m['window_samples']}, hop {m['hop_samples']} samples; default t = "
        f"{m['diffusion']['default_t']['raw']}",
        *_head_refit_lines(prov.get("head_refit")),
        *_anchor_lines(prov.get("anchors")),
    ]


def _multimodal_recipe_lines(prov: dict[str, Any]) -> list[str]:
    """Where the other modalities and the fusion of a multimodal bundle came from."""
    runs = prov.get("modality_runs")
    if not runs or "multimodal_run" not in prov:
        return []
    others = ", ".join(f"{k} `{v}`" for k, v in runs.items() if k != "raw")
    return [
        f"- The lines above make the raw extractor; the other modalities' extractors ({others}) "
        f"and the fusion (`ecgedge train-fusion`, `{prov['multimodal_run']}`, then "
        "`ecgedge export-multimodal`) come from their own runs: every command of the recipe is "
        "in the project README, 'Training, export, benchmarks'"
    ]


def _anchor_lines(anchors: dict[str, Any] | None) -> list[str]:
    if not anchors:
        return []
    through = "through the bundle's denoiser" if anchors.get("denoiser_sha256") else "no denoiser"
    return [
        f"- Anchor windows (`{anchors['command']}`): {anchors['per_class']} per class from "
        f"{anchors['source']}, {through}; a user's head is fitted on them and the user's "
        "windows (`sdk.anchors`)"
    ]


def _head_refit_lines(refit: dict[str, Any] | None) -> list[str]:
    if not refit:
        return []
    line = (
        f"- Head refitted (`{refit['command']}`): {refit['what']}; {refit['windows']} windows of "
        f"{refit['records']} records, embedders in {refit['embedder_precision'].upper()}"
    )
    if refit.get("stale"):
        line += f". **Stale:** {refit['stale']}"
    return [line]


def _precision_sentence(m: dict[str, Any]) -> str:
    """What precisions the bundle's files carry, read from its file list."""
    per: dict[str, list[str]] = {}
    for f in m["files"]:
        if f["role"] == "embedder":
            per.setdefault(f.get("modality", "raw"), []).append(f["precision"])
    others = sorted({f["precision"] for f in m["files"] if f["role"] in ("fusion", "head")})
    said = "; ".join(f"{mod}: {', '.join(p)}" for mod, p in per.items())
    cal = m["provenance"].get("int8_calibration", {})
    gate = cal.get("validation_gate")
    layers = (
        f"; {cal['int8_layers']} of the {cal['candidate_layers']} layers on the signal's path "
        "in INT8"
        if "int8_layers" in cal
        else ""
    )
    if any(f["precision"] == "int8" for f in m["files"]):
        int8 = (
            "an INT8 graph ships only if it passed the accuracy gate "
            f"(`provenance.int8_calibration`{layers}"
            + (f"; validation gate {gate}" if gate else "")
            + ")"
        )
    elif cal:
        int8 = (
            "no INT8 graph ships: no INT8 layer set stayed within the accuracy budget "
            f"(`provenance.int8_calibration`{layers})"
        )
    else:
        int8 = "no INT8 graph was made"
    return (
        f"Extractor precisions: {said}; fusion and head: {', '.join(others)}. The SDK runs "
        f"the most compact precision present unless told otherwise (`precision=`); {int8}."
    )


def _multimodal_section(m: dict[str, Any]) -> list[str]:
    """The three modalities, their extractors and t, and the fusion ablation of the run."""
    t = m["diffusion"]["default_t"]
    lines = [
        "## Modalities",
        "",
        "Each modality has its own diffusion-pretrained extractor and its own t; the bottleneck",
        "maps (pooled to tokens) are fused by one cross-modal attention layer (`fusion.onnx`);",
        "the head sees every embedding, the fused features and the RR features.",
        _precision_sentence(m),
        "",
        "| modality | input | extractor | default t | run |",
        "|---|---|---|---|---|",
    ]
    inputs = {
        "raw": "standardized 10 s window",
        "spectrogram": f"STFT, Hann: {m['modalities']['spectrogram']}",
        "lorenz": f"Lorenz plot of ΔRR from beat times: {m['modalities']['lorenz']}",
    }
    files: dict[str, list[str]] = {}  # one row per modality, its FP32 and INT8 files together
    for f in m["files"]:
        if f["role"] == "embedder":
            files.setdefault(f.get("modality", "raw"), []).append(f"`{f['path']}`")
    for mod, paths in files.items():
        run = m["provenance"].get("modality_runs", {}).get(mod, "")
        lines.append(f"| {mod} | {inputs[mod]} | {', '.join(paths)} | {t[mod]} | `{run}` |")
    probe = m.get("metrics", {}).get("multimodal_probe", {})
    if probe:
        lines += ["", "Linear probes on the CinC 2017 validation split (features ++ RR):", ""]
        lines += _table(probe, ["challenge_f1", "macro_f1", "auroc_normal_vs_af_other"])
    return lines


def _tensorrt_section(m: dict[str, Any]) -> list[str]:
    """How to build the engines on the device (engines are tied to TensorRT version and GPU)."""
    from export.tensorrt_build import trtexec_lines

    lines = trtexec_lines(m)
    return [
        "## TensorRT engines (build on the device)",
        "",
        "Engines only run on the TensorRT version and GPU that built them, so build them on the",
        "Jetson itself. With the SDK, cuda-python and JetPack's TensorRT (README, Jetson):",
        "",
        "```sh",
        "ecgedge engines --bundle . --precision fp16 int8   # cached in ~/.cache/ecgedge/engines",
        "```",
        "",
        "or with `trtexec` (JetPack: `/usr/src/tensorrt/bin/trtexec`) in the bundle folder, then",
        "pass the folder holding the `.engine` files as `engine_dir` (backend `trt-engine`).",
        "INT8 comes from the graph's Q/DQ nodes (explicit quantization, no calibration cache);",
        "FP16 from `embedder.fp16.onnx`, whose input preparation stays FP32 (`--stronglyTyped`",
        "keeps it; a plain `--fp16` build would demote it).",
        "",
        "TensorRT 10 (JetPack 6.x):",
        "",
        "```sh",
        *lines[10],
        "```",
        "",
        "TensorRT 11 (strongly typed only; `--fp16`/`--int8` were removed):",
        "",
        "```sh",
        *lines[11],
        "```",
    ]


def denoiser_section(m: dict[str, Any]) -> list[str]:
    """The card's section on the bundle's denoiser, from ``provenance`` and ``metrics``."""
    prov, figures = m["provenance"]["denoiser"], m["metrics"]["denoiser"]
    g32, g8, ms = figures["gate_fp32"], figures["gate_int8"], figures["ms_per_window_1thread"]
    limits = figures.get("gate_limits", {})
    window_s = m["window_samples"] / m["preprocess"]["fs"]
    return [
        "## Denoiser (CD-ECGNet)",
        "",
        f"{prov['model']}; {prov['placement']}. Checkpoint of training step {prov['steps']}",
        "(chosen on the selection data), trained on clean",
        f"{', '.join(prov['config']['data']['databases'])} with NSTDB noise ({prov['noise']}).",
        "Two adaptations of the paper: the decoder's correction is added to the input through a",
        "per-lead gate computed from E_lead's features, and E_noise learns the noise residual",
        "(it has no loss of its own in the paper). The pipeline runs it on every window before",
        "the embedders (`StreamPipeline(denoise=False)` skips it)"
        + (
            "; validation figures recorded at export (`metrics.rhythm_val_sdk`) were measured "
            "without it."
            if "rhythm_val_sdk" in m["metrics"]
            else "."
        ),
        "Shipped precision:",
        f"**{figures['shipped_precision'].upper()}** ({figures['precision_reason']}).",
        f"Gate on {figures['gate_data']}: FP32 output SNR {g32['snr_out']:.2f} dB, cos",
        f"{g32['cos']:.2f}%; INT8 {g8['snr_out']:.2f} dB, cos {g8['cos']:.2f}% (limits: SNR drop",
        f"{limits.get('snr_drop_db', '?')} dB, cos drop {limits.get('cos_drop_pct', '?')} points).",
        f"One-thread cost per {window_s:g} s window: FP32 {ms['fp32']:.2f} ms, INT8",
        f"{ms['int8']:.2f} ms.",
        f"Commands: `{prov['commands']['train']}`, `{prov['commands']['export']}`. Benchmarks:",
        "`ecgedge bench denoise`, `ecgedge bench noise-stress`, `ecgedge bench rhythm-noise`.",
        *_rpeak_rule_lines(prov.get("rpeak_rule")),
    ]


def _rpeak_rule_lines(rule: dict[str, Any] | None) -> list[str]:
    if not rule:
        return []
    return [
        f"R peaks on its output use the search-back threshold I2 / I1 = {rule['threshold']:g},",
        f"chosen on tuning records ({', '.join(rule['records'])}) by `{rule['report_command']}`",
        f"and set by `{rule['command']}`.",
    ]


def write_model_card(root: Path, bench_dir: Path | None = None) -> Path:
    """Write ``root/MODEL_CARD.md``, with ``bench_dir``'s rhythm/stream reports if given."""
    m = json.loads((root / "manifest.json").read_text())
    metrics = m["metrics"]
    cols = ["challenge_f1", "macro_f1", "auroc_normal_vs_af_other"]
    synthetic = m["provenance"]["training_data"].get("source") == "synthetic"
    lines = [f"# Model card: {m['name']}", ""]
    if synthetic:
        lines += [
            "**Trained and validated on synthetic ECG only (`data.source = synthetic`): a test",
            "artifact of the pipeline, not a model of any real rhythm. Its figures below are on",
            "synthetic windows.**",
            "",
        ]
    lines += [_INTRO, "", "## How it was made", ""]
    lines += _provenance(m)
    if "modalities" in m:
        lines += ["", *_multimodal_section(m)]
    where = "synthetic windows" if synthetic else "CinC 2017, our split"
    lines += ["", f"## Validation ({where}, record level)", ""]
    sdk_rows = metrics.get("rhythm_val_sdk", {})
    rows = {
        f"bundle via SDK, {k[4:].upper()}": v for k, v in sdk_rows.items() if k.startswith("val_")
    }
    probe = metrics.get("linear_probe", {})
    for key in ("embedding_plus_rr", "embedding_only"):
        if key in probe:
            rows[f"linear probe (torch FP32), {key.replace('_', ' ')}"] = probe[key]
    benched = bench_dir is not None and (bench_dir / "rhythm.md").is_file()
    if rows:
        lines += _table(rows, cols)
    else:
        lines.append(
            "No export-time figures for this head (it was refitted after export); "
            + (
                "the rhythm benchmark below measures it."
                if benched
                else "`ecgedge bench rhythm --bundle B --card` measures it."
            )
        )
    drop = sdk_rows.get("int8_drop", {})
    if drop:
        lines += ["", "FP32 → INT8 change: " + ", ".join(f"{k} {-v:+.4f}" for k, v in drop.items())]
    if "denoiser" in m["provenance"]:
        lines += ["", *denoiser_section(m)]
    for name in ("rhythm", "stream"):
        path = bench_dir / f"{name}.md" if bench_dir else None
        if path is not None and path.is_file():
            lines += ["", path.read_text().strip().replace("# ", "## Benchmark: ", 1)]
    if m["provenance"].get("target") == "jetson":
        lines += ["", *_tensorrt_section(m)]
    lines += ["", _limits(m["provenance"]["training_data"]), ""]
    out = root / "MODEL_CARD.md"
    out.write_text("\n".join(lines))
    return out
