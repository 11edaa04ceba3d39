"""``ecgedge bench denoise``: NSTDB noise on held-out clean ECG, CD-ECGNet vs filters.

For each trained denoiser run (1-, 2- or 12-lead), windows of its evaluation records
(``data.val_fraction`` of its record split, never trained on) get evaluation noise (last 20%
of each noise source) in two modes: CD-ECGNet's (noise × U(0.2, 1.5) on a random subset of
leads) and fixed input SNR (−6 … 24 dB on every lead, SNR measured on the device
representation). Metrics are computed on the leads that received noise (flat leads, clean
RMS < 0.02 mV, excluded), each 10 s window after removing its mean, against these
references:

- ``device``: the clean record through the device's own preprocessing (resample, causal
  0.5–40 Hz band-pass): what the pipeline would have seen without the noise; the denoiser's
  training target.
- ``medfilt``: the clean record minus its baseline from 200 ms then 600 ms median filters
  (de Chazal; BENCHMARKS.md's reference), which favours zero-phase filters.
- ``zerophase``: the clean record through the device band-pass's magnitude response with
  zero phase (``device`` without its phase shift).
- ``matched``: each method against the reference of its own phase behaviour, ``device`` for
  the causal paths (device band-pass, CD-ECGNet) and ``zerophase`` for the zero-phase filters
  (FIR, IIR, NeuroKit2). Both have the same magnitude response, so no method is scored on
  matching a phase it was never meant to have; this is the fair comparison.

Methods: the device band-pass alone (no denoiser), FIR band-pass 0.67–40 Hz and IIR
(Butterworth, order 4) band-pass 0.5–40 Hz (scipy, zero-phase ``filtfilt``), NeuroKit2's
``ecg_clean``, CD-ECGNet in PyTorch FP32, and the bundle's denoiser through the SDK in its
shipped precision (when its lead count matches).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import signal
from tqdm.auto import tqdm

from sdk.filters import design_bandpass
from sdk.preprocess import PreprocessSpec
from trainer.bench.report import md_table, write_result
from trainer.data.denoise_data import Examples, PairSampler, clean_signals, record_split
from trainer.data.noise import NOISE_PARTS, NOISE_TYPES, SNR_LEVELS_DB
from trainer.denoise_config import DenoiseRunConfig, build_denoise_config
from trainer.denoise_metrics import summarize, window_metrics
from trainer.train_denoiser import CHECKPOINT_NAME, load_denoiser, selection_records, spec_of

POST_S = 2.0
MIN_REF_RMS_MV = 0.02
PAPER = {  # CD-ECGNet paper, amplitude factor 0.2–1.5 (their data and lead systems)
    "CD-ECGNet (paper, wearable test set)": {
        "ssd": 27.02,
        "prd": 34.51,
        "cos": 99.25,
        "snr_out": 18.81,
        "rmse": 0.20,
    },
    "CD-ECGNet (paper, PTB-XL)": {
        "ssd": 23.52,
        "prd": 35.61,
        "cos": 99.21,
        "snr_out": 17.95,
        "rmse": 0.22,
    },
    "FIR (paper, PTB-XL)": {
        "ssd": 305.76,
        "prd": 90.48,
        "cos": 88.36,
        "snr_out": 4.73,
        "rmse": 0.43,
    },
}
SHOWN = ("ssd", "mad", "prd", "cos", "snr_out", "snr_imp", "rmse")


def medfilt_reference(raw_clean: np.ndarray, fs: float) -> np.ndarray:
    """Raw clean (…, n) minus its 200 ms → 600 ms median-filter baseline (de Chazal)."""
    k1 = int(round(0.2 * fs)) | 1
    k2 = int(round(0.6 * fs)) | 1
    flat = raw_clean.reshape(-1, raw_clean.shape[-1])
    base = np.stack([signal.medfilt(signal.medfilt(x, k1), k2) for x in flat])
    return (flat - base).reshape(raw_clean.shape)


def zerophase_reference(raw_clean: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Raw clean (…, n) through the device band-pass's magnitude response, zero phase.

    Filtered in the frequency domain after odd reflection at both ends (no wrap-around jump).
    """
    n = raw_clean.shape[-1]
    head = 2 * raw_clean[..., :1] - raw_clean[..., :0:-1]
    tail = 2 * raw_clean[..., -1:] - raw_clean[..., -2::-1]
    ext = np.concatenate([head, raw_clean, tail], axis=-1).astype(np.float64)
    freqs = np.fft.rfftfreq(ext.shape[-1], d=1.0 / spec.fs)
    sos = design_bandpass(spec.fs, spec.low_hz, spec.high_hz, spec.order)
    _, h = signal.sosfreqz(sos, worN=freqs, fs=spec.fs)
    out = np.fft.irfft(np.fft.rfft(ext, axis=-1) * np.abs(h), n=ext.shape[-1], axis=-1)
    return out[..., head.shape[-1] : head.shape[-1] + n]


class Baselines:
    """Zero-phase FIR/IIR band-passes (scipy) and NeuroKit2's ``ecg_clean`` on raw segments."""

    NAMES = ("FIR band-pass 0.67-40 Hz", "IIR band-pass 0.5-40 Hz", "NeuroKit2 ecg_clean")

    def __init__(self, fs: float) -> None:
        self.fs = fs
        self.fir = signal.firwin(int(fs) | 1, [0.67, 40.0], pass_zero=False, fs=fs)
        self.iir = signal.butter(4, [0.5, 40.0], btype="bandpass", fs=fs, output="sos")

    def __call__(self, raw: np.ndarray) -> dict[str, np.ndarray]:
        import neurokit2 as nk

        flat = raw.reshape(-1, raw.shape[-1])
        nk_out = np.stack([nk.ecg_clean(x, sampling_rate=int(self.fs)) for x in flat])
        outs = (
            signal.filtfilt(self.fir, [1.0], raw, axis=-1),
            signal.sosfiltfilt(self.iir, raw, axis=-1),
            nk_out.reshape(raw.shape),
        )
        return dict(zip(self.NAMES, outs, strict=True))


def _outputs(
    ex: Examples, net: torch.nn.Module | None, sdk_den: Any, base: Baselines, ctx: int
) -> dict[str, np.ndarray]:
    """Every method's output window (B, leads, L) in mV of the device representation."""
    win = ex.x.shape[-1]
    outs = {"device band-pass only (no denoiser)": ex.noisy_bp}
    if net is not None:
        with torch.no_grad():
            outs["CD-ECGNet torch FP32"] = net(torch.from_numpy(ex.x)).numpy() * ex.std + ex.mean
    if sdk_den is not None:
        outs[f"CD-ECGNet via SDK ({sdk_den.precision.upper()})"] = (
            sdk_den.denoise(ex.x) * ex.std + ex.mean
        )
    for name, full in base(ex.raw).items():
        outs[name] = full[..., ctx : ctx + win]
    return outs


def evaluate(
    ex: Examples, outs: dict[str, np.ndarray], refs: dict[str, np.ndarray]
) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """{reference: {method: per-window metrics}} over the leads that received noise.

    Leads whose clean signal is flat (RMS below ``MIN_REF_RMS_MV``; some challenge2021 records
    hold an empty lead) are left out: SNR and PRD are undefined against a zero reference.
    """
    m = ex.noisy & (ex.clean_bp.std(-1) >= MIN_REF_RMS_MV)
    return {
        rname: {name: window_metrics(ref[m], out[m], ex.noisy_bp[m]) for name, out in outs.items()}
        for rname, ref in refs.items()
    }


def _pool(parts: list[dict]) -> dict:
    """Concatenate per-window metric arrays of several conditions."""
    out: dict = {}
    for part in parts:
        for r, methods in part.items():
            for meth, metrics in methods.items():
                slot = out.setdefault(r, {}).setdefault(meth, {})
                for k, v in metrics.items():
                    slot[k] = np.concatenate([slot.get(k, np.zeros(0)), v])
    return out


def _with_matched(pooled: dict) -> dict:
    """``pooled`` plus ``matched``: each method against the reference of its phase."""
    matched = {
        m: pooled["zerophase" if m in Baselines.NAMES else "device"][m] for m in pooled["device"]
    }
    return {**pooled, "matched": matched}


def _summaries(pooled: dict) -> dict:
    return {r: {m: summarize(v) for m, v in methods.items()} for r, methods in pooled.items()}


@dataclass(frozen=True)
class Source:
    """One denoiser to benchmark: a training run (the PyTorch model, and the bundle's
    denoiser beside it when the lead counts match) or a bundle's denoiser alone, on the
    protocol (databases, record split, window) of the run it was trained in."""

    name: str
    cfg: DenoiseRunConfig
    net: torch.nn.Module | None
    selection_records: list[str] | None
    train_steps: int | None


def run_source(run_dir: Path) -> Source:
    """A training run's checkpoint (``weights_only`` load)."""
    cfg, net, payload = load_denoiser(run_dir / CHECKPOINT_NAME)
    # absent in runs from before the selection split: those chose on the evaluation data
    chosen = payload.get("extra", {}).get("selection_records")
    return Source(str(run_dir), cfg, net, chosen, payload["step"])


def bundle_source(bundle: Any, bundle_dir: Path) -> Source:
    """A bundle's denoiser alone, on the protocol its manifest records (no training run)."""
    info = bundle.manifest.provenance.get("denoiser") or {}
    raw = info.get("config")
    if not isinstance(raw, dict) or not all(k in raw for k in ("data", "model", "train")):
        raise ValueError(
            f"{bundle_dir}: the manifest records no denoiser configuration to evaluate on "
            "(provenance.denoiser.config); give the training run with --run"
        )
    table = {k: raw[k] for k in ("data", "model", "train")}
    cfg = build_denoise_config(table, preset=str(raw.get("preset", "custom")))
    name = f"bundle {bundle_dir}, denoiser of run {info.get('run', '?')}"
    return Source(name, cfg, None, selection_records(cfg), info.get("steps"))


def bench_run(
    src: Source, sdk_den: Any, n_per_type: int, seed: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(result, example windows for the figure: one per noise type, CD-ECGNet mode)."""
    cfg, net = src.cfg, src.net
    leads, fs = cfg.model.leads, cfg.data.fs
    clean, val_names = [], []
    for db in cfg.data.databases:
        val = record_split(db, cfg.data.val_fraction, cfg.data.split_seed).eval
        clean += clean_signals(db, val, fs, leads)
        val_names += [f"{db}/{n}" for n in val]
    ctx, post = cfg.data.context, int(round(POST_S * fs))
    sampler = PairSampler(
        clean, spec_of(cfg), "eval", window=cfg.data.window, context=ctx, post=post, seed=seed
    )
    if sdk_den is not None and sdk_den.leads != leads:
        sdk_den = None
    if net is None and sdk_den is None:
        raise ValueError(f"{src.name}: nothing to evaluate (no model of {leads} leads)")
    base = Baselines(fs)
    p_subset = 1.0 if leads == 1 else 0.5
    conditions: dict[str, dict] = {}
    examples: list[dict[str, Any]] = []
    modes = [("amplitude", None)] + [(f"{s:+d} dB", float(s)) for s in SNR_LEVELS_DB]
    for mode, snr in tqdm(modes, desc=f"denoise bench {leads}-lead", unit="mode"):
        for kind in NOISE_TYPES:
            ex = sampler.draw(
                n_per_type,
                p_noisy=p_subset if snr is None else 1.0,
                kinds=(kind,),
                snr_db=snr,
                p_snr_mode=0.0,
                want_raw=True,
            )
            cut = slice(ctx, ctx + cfg.data.window)
            refs = {
                "device": ex.clean_bp,
                "medfilt": medfilt_reference(ex.raw_clean, fs)[..., cut],
                "zerophase": zerophase_reference(ex.raw_clean, spec_of(cfg))[..., cut],
            }
            outs = _outputs(ex, net, sdk_den, base, ctx)
            conditions[f"{mode}/{kind}"] = evaluate(ex, outs, refs)
            if snr is None:
                examples.append(_example(ex, outs, refs, kind, fs))
            if snr is None and leads > 1:
                model = _model_fn(net, sdk_den)
                conditions[f"{mode}/{kind}/clean-leads"] = _clean_leads(ex, model, refs["device"])
    result: dict[str, Any] = {
        "run": src.name,
        "leads": leads,
        "databases": list(cfg.data.databases),
        "val_records": val_names,
        "selection_records": src.selection_records,
        "train_steps": src.train_steps,
        "windows_per_type_and_mode": n_per_type,
        "summary": {},
    }
    for mode, _ in modes:
        per_type = {k: conditions[f"{mode}/{k}"] for k in NOISE_TYPES}
        result["summary"][mode] = {
            "pooled": _summaries(_with_matched(_pool(list(per_type.values())))),
            **{k: _summaries(_with_matched(_pool([v]))) for k, v in per_type.items()},
        }
        if mode == "amplitude" and leads > 1:
            result["summary"][mode]["clean_leads"] = _summaries(
                _pool([conditions[f"{mode}/{k}/clean-leads"] for k in NOISE_TYPES])
            )
    return result, examples


def _model_fn(net: torch.nn.Module | None, sdk_den: Any) -> tuple[str, Any]:
    """(name, standardized (B, leads, L) → denoised) of the model a table row shows."""
    if net is not None:

        def torch_fp32(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return net(torch.from_numpy(x)).numpy()

        return "CD-ECGNet torch FP32", torch_fp32
    return f"CD-ECGNet via SDK ({sdk_den.precision.upper()})", sdk_den.denoise


def _example(
    ex: Examples, outs: dict[str, np.ndarray], refs: dict[str, np.ndarray], kind: str, fs: float
) -> dict[str, Any]:
    """The first noisy lead of the first window drawn: what the figure shows."""
    b, lead = (int(v[0]) for v in np.nonzero(ex.noisy))
    shown = {"clean (device reference)": refs["device"][b, lead]}
    shown.update({name: out[b, lead] for name, out in outs.items()})
    return {"kind": kind, "fs": fs, "snr_in": float(ex.snr[b, lead]), "signals": shown}


def _clean_leads(ex: Examples, model: tuple[str, Any], ref: np.ndarray) -> dict:
    """How much CD-ECGNet changes the leads that got no noise (vs their device input)."""
    m = ~ex.noisy & (ex.clean_bp.std(-1) >= MIN_REF_RMS_MV)
    name, denoise = model
    y = denoise(ex.x) * ex.std + ex.mean
    return {"device": {f"{name} (clean leads)": window_metrics(ref[m], y[m])}}


def _metric_rows(summary: dict, ref: str) -> list[list[Any]]:
    rows = []
    for meth, metrics in summary[ref].items():
        rows.append([meth, *(f"{metrics[k]['mean']:.4g} ± {metrics[k]['std']:.2g}" for k in SHOWN)])
    return rows


def _markdown(results: list[dict], command: str, seed: int) -> str:
    header = [
        "method",
        "SSD (mV²)",
        "MAD (mV)",
        "PRD (%)",
        "cos (%)",
        "SNR out (dB)",
        "SNR imp (dB)",
        "RMSE (mV)",
    ]
    parts = [
        "# denoise — NSTDB noise on held-out clean ECG\n",
        __doc__.split("\n\n", 1)[1].strip(),
        f"\nCommand: `{command}` (sampling seed {seed}). SSD is summed over a 10 s window at "
        "128 Hz in mV² (the paper's SSD is on its own scale: compare PRD, cos, SNR, RMSE). "
        "SNR imp is the output SNR minus the input's, the input being the noisy window as the "
        "device has it (causal band-pass): on the `medfilt` reference it is the gain over the "
        "device band-pass row, not over the raw noisy signal; on `zerophase` and `matched` "
        "the input SNR is that of the causal device band-pass, so compare SNR out there.\n",
    ]
    for res in results:
        s = res["summary"]
        parts.append(
            f"## {res['leads']}-lead model ({res['run']}, {', '.join(res['databases'])}; "
            f"evaluation records {', '.join(res['val_records'])}; "
            f"{res['windows_per_type_and_mode']} windows per noise type and mode)\n"
        )
        chosen = res.get("selection_records")
        select_lo, select_hi = NOISE_PARTS["select"]
        parts.append(
            f"Checkpoint chosen on selection records {', '.join(chosen)} with selection noise "
            f"({select_lo:.0%}–{select_hi:.0%} of each source).\n"
            if chosen
            else "Checkpoint chosen on these evaluation records and evaluation noise (a run "
            "from before the selection split): a small optimistic bias.\n"
        )
        for ref in ("matched", "device", "medfilt", "zerophase"):
            parts.append(
                f"CD-ECGNet mode (noise × U(0.2, 1.5)), noise types pooled, reference `{ref}`:\n"
            )
            parts.append(md_table(header, _metric_rows(s["amplitude"]["pooled"], ref)) + "\n")
        parts.append(
            "Per noise type, CD-ECGNet mode, reference `device` — output SNR (dB) / cos (%):\n"
        )
        methods = list(s["amplitude"]["pooled"]["device"])
        rows = []
        for meth in methods:
            rows.append(
                [
                    meth,
                    *(
                        f"{s['amplitude'][k]['device'][meth]['snr_out']['mean']:.2f} / "
                        f"{s['amplitude'][k]['device'][meth]['cos']['mean']:.2f}"
                        for k in NOISE_TYPES
                    ),
                ]
            )
        parts.append(md_table(["method", *NOISE_TYPES], rows) + "\n")
        levels = [f"{v:+d} dB" for v in SNR_LEVELS_DB]
        for ref in ("device", "matched"):
            parts.append(
                f"Fixed input SNR (every lead noisy, types pooled), reference `{ref}` — "
                "output SNR (dB) / cos (%):\n"
            )
            rows = [
                [
                    meth,
                    *(
                        f"{s[lv]['pooled'][ref][meth]['snr_out']['mean']:.2f} / "
                        f"{s[lv]['pooled'][ref][meth]['cos']['mean']:.2f}"
                        for lv in levels
                    ),
                ]
                for meth in methods
            ]
            parts.append(md_table(["method", *levels], rows) + "\n")
        if "clean_leads" in s["amplitude"]:
            c = s["amplitude"]["clean_leads"]["device"]
            parts.append(
                "Leads without noise (CD-ECGNet mode), output vs their clean input: "
                + ", ".join(
                    f"{k} {v['snr_out']['mean']:.2f} dB SNR, cos {v['cos']['mean']:.3f}%"
                    for k, v in c.items()
                )
                + "\n"
            )
    parts.append("Published anchors (other data, lead systems and SSD scale):\n")
    parts.append(
        md_table(
            ["anchor", "SSD", "PRD (%)", "cos (%)", "SNR (dB)", "RMSE"],
            [[k, v["ssd"], v["prd"], v["cos"], v["snr_out"], v["rmse"]] for k, v in PAPER.items()],
        )
    )
    return "\n".join(parts)


def run(
    runs: list[Path],
    out_dir: Path,
    *,
    bundle_dir: Path | None = None,
    n_per_type: int = 128,
    seed: int = 1,
    report: str = "denoise",
) -> dict[str, Any]:
    """Benchmark every run in ``runs`` that has a checkpoint, with the bundle's denoiser beside
    the run of its lead count; with no runs, the bundle's denoiser alone on the protocol its
    manifest records. Writes ``<report>.{json,md,png}`` (the figure: one window per noise
    type, CD-ECGNet mode, of each model)."""
    sdk_den, bundle = None, None
    if bundle_dir is not None:
        from sdk.bundle import load_bundle
        from sdk.denoiser import WindowDenoiser

        bundle = load_bundle(bundle_dir)
        if any(f.role == "denoiser" for f in bundle.manifest.files):
            sdk_den = WindowDenoiser(bundle, threads=1)
    if runs:
        present = [r for r in runs if (r / CHECKPOINT_NAME).is_file()]
        if not present:
            raise FileNotFoundError(f"no {CHECKPOINT_NAME} in any of {[str(r) for r in runs]}")
        sources = [run_source(r) for r in present]
    elif bundle is not None and sdk_den is not None:
        present = []
        sources = [bundle_source(bundle, Path(bundle_dir))]
    else:
        raise ValueError("give --run (training runs) or --bundle (a bundle with a denoiser)")
    measured = [bench_run(src, sdk_den, n_per_type, seed) for src in sources]
    results = [r for r, _ in measured]
    command = (
        "ecgedge bench denoise"
        + (" --run " + ",".join(str(r) for r in present) if present else "")
        + (f" --bundle {bundle_dir}" if bundle_dir else "")
        + (f" --report {report}" if report != "denoise" else "")
    )
    md = _markdown(results, command, seed)
    figure = plot_examples(
        [(r, ex) for r, ex in zip(results, (e for _, e in measured))], out_dir / f"{report}.png"
    )
    md += (
        "\n\nExample windows (first noisy lead of the first window of each noise type, "
        "CD-ECGNet mode; the IIR band-pass is zero-phase, so it runs ahead of the causal "
        f"reference): `{figure.name}`.\n"
    )
    result = {"command": command, "seed": seed, "runs": results, "plot": figure.name}
    write_result(out_dir, report, result, md)
    print(md)
    return result


def plot_examples(measured: list[tuple[dict, list[dict]]], path: Path) -> Path:
    """A row per model and noise type: the clean reference, the noisy input and each
    method's output over the window's middle 4 s (mV, device representation)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    rows = [(res, ex) for res, examples in measured for ex in examples]
    fig, axes = plt.subplots(len(rows), 1, figsize=(11, 2.1 * len(rows)), squeeze=False)
    styles = {
        "clean (device reference)": {"color": "black", "linewidth": 2.2, "alpha": 0.35},
        "device band-pass only (no denoiser)": {"color": "0.6", "linewidth": 0.8},
    }
    shown = ("CD-ECGNet", "IIR band-pass")
    for ax, (res, ex) in zip(axes[:, 0], rows):
        fs = ex["fs"]
        sig = ex["signals"]
        n = next(iter(sig.values())).size
        a, b = n // 2 - int(2 * fs), n // 2 + int(2 * fs)
        t = np.arange(a, b) / fs
        for name, y in sig.items():
            if name in styles or name.startswith(shown):
                label = "noisy input" if name.startswith("device band-pass") else name
                ax.plot(t, y[a:b], label=label, **{"linewidth": 1.0, **styles.get(name, {})})
        ax.set_title(
            f"{res['leads']}-lead model, {ex['kind']} noise, input SNR {ex['snr_in']:.1f} dB",
            fontsize=9,
        )
        ax.set_ylabel("mV")
    axes[-1, 0].set_xlabel("s (window time)")
    axes[0, 0].legend(fontsize=7, ncol=5, loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
