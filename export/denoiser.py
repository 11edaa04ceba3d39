"""Add a trained CD-ECGNet to a bundle as its ``denoiser``: ONNX export, parity, precision.

The shipped precision is chosen by a gate on the denoising metrics (output SNR and cosine
similarity of the noisy leads against the clean reference, on the run's checkpoint-selection
records with selection noise, never the benchmarks' evaluation data): INT8 (static QDQ, per-
channel weights, calibrated on training windows) when it costs at most
``INT8_MAX_SNR_DROP_DB`` of output SNR and ``INT8_MAX_COS_DROP`` of cosine similarity;
otherwise FP32 (FP16 is slower than FP32 in ONNX Runtime's CPU provider, so it is not a CPU
candidate). The choice and its figures are written into the manifest.

:func:`set_rpeak_rule` sets the R-peak detector's search-back threshold for the denoiser's
output from an ``ecgedge bench rpeak-tuning`` report; :func:`stale_features` marks what was
computed with the old denoiser or rule (a refitted head, anchor windows) when either changes.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from export.bundle_copy import bundle_copy
from export.errors import ParityError
from export.onnx_export import OPSET, compare
from sdk.bundle import (
    DENOISED_SEARCH_BACK_KEY,
    PRECISIONS,
    load_bundle,
    manifest_number,
    sha256_file,
)
from sdk.rpeaks import SEARCH_BACK_THRESHOLD
from trainer.data.denoise_data import Examples, PairSampler, clean_signals, record_split
from trainer.denoise_config import DenoiseRunConfig, train_command
from trainer.denoise_metrics import window_metrics
from trainer.models.cdecgnet import CDECGNet, Denoiser
from trainer.train_denoiser import CHECKPOINT_NAME, load_denoiser, spec_of

DENOISER_PARITY_TOL = 1e-4
INT8_MAX_SNR_DROP_DB = 0.5
INT8_MAX_COS_DROP = 0.1  # percentage points


def export_denoiser(net: CDECGNet, path: Path) -> None:
    """Write ``x`` (batch, leads, window) → ``y`` (same shape), opset 17."""
    cfg = net.cfg
    x = torch.zeros(2, cfg.leads, cfg.window)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Denoiser(net).eval(),
            (x,),
            str(path),
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )


def _session(path: Path, threads: int = 1):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run_onnx(path: Path, x: np.ndarray, batch: int = 64) -> np.ndarray:
    sess = _session(path, threads=2)
    return np.concatenate(
        [sess.run(["y"], {"x": x[i : i + batch]})[0] for i in range(0, len(x), batch)]
    )


def ms_per_window(path: Path, leads: int, window: int, repeats: int = 200) -> float:
    """Median ONNX Runtime latency (ms) of one window on ONE thread."""
    sess = _session(path, threads=1)
    x = np.random.default_rng(0).standard_normal((1, leads, window)).astype(np.float32)
    for _ in range(20):
        sess.run(["y"], {"x": x})
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        sess.run(["y"], {"x": x})
        times.append(time.perf_counter() - tic)
    return 1000.0 * float(np.median(times))


def gate_examples(cfg: DenoiseRunConfig, n: int = 256, seed: int = 1) -> Examples:
    """Selection records of the run's databases, selection noise, every lead noisy."""
    clean = []
    d = cfg.data
    for db in d.databases:
        split = record_split(db, d.val_fraction, d.split_seed, d.select_fraction)
        clean += clean_signals(db, split.select, d.fs, cfg.model.leads)
    sampler = PairSampler(
        clean, spec_of(cfg), "select", window=d.window, context=d.context, seed=seed
    )
    return sampler.draw(n, p_noisy=1.0, p_snr_mode=cfg.data.p_snr_mode)


def gate_metrics(ex: Examples, y: np.ndarray) -> dict[str, float]:
    m = window_metrics(ex.target, y, ex.x)
    return {k: float(np.mean(m[k])) for k in ("snr_out", "cos", "prd", "rmse")}


def quantize_denoiser(fp32: Path, out: Path, calib: np.ndarray, *, target: str = "cpu") -> Path:
    """INT8 candidate of a denoiser file, calibrated on ``calib`` (windows × leads × samples),
    in ``target``'s form (:func:`export.quantize.qdq_for_target`; a Jetson form is checked
    against the TensorRT rules)."""
    from onnxruntime.quantization import CalibrationDataReader

    from export.jetson_rules import require_tensorrt_ready
    from export.quantize import qdq_for_target

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter([{"x": calib[i : i + 32]} for i in range(0, len(calib), 32)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    qdq_for_target(fp32, out, Reader(), target=target)
    if target == "jetson":
        require_tensorrt_ready([out])
    return out


def _choose_precision(
    root: Path, cfg: DenoiseRunConfig, net: CDECGNet, *, target: str = "cpu"
) -> dict[str, Any]:
    """Export FP32 (+ parity) and INT8; keep INT8 only if the denoising gate holds."""
    fp32 = root / "denoiser.fp32.onnx"
    export_denoiser(net, fp32)
    ex = gate_examples(cfg)
    with torch.no_grad():
        ref = net(torch.from_numpy(ex.x)).numpy()
    y32 = run_onnx(fp32, ex.x)
    parity = compare(ref, y32).max_rel
    if not parity <= DENOISER_PARITY_TOL:  # NaN fails too
        raise ParityError(
            f"denoiser torch vs ONNX FP32 relative error {parity:.2e} > {DENOISER_PARITY_TOL:.0e}",
            max_rel=parity,
            tolerance=DENOISER_PARITY_TOL,
        )
    train_s, _ = _calibration_sampler(cfg)
    calib = train_s.draw(256, p_noisy=cfg.data.p_noisy, p_snr_mode=cfg.data.p_snr_mode).x
    int8 = quantize_denoiser(fp32, root / "denoiser.int8.onnx", calib, target=target)
    figures: dict[str, Any] = {
        "parity_fp32_max_rel": parity,
        "gate_fp32": gate_metrics(ex, y32),
        "gate_int8": gate_metrics(ex, run_onnx(int8, ex.x)),
        "ms_per_window_1thread": {
            "fp32": ms_per_window(fp32, cfg.model.leads, cfg.model.window),
            "int8": ms_per_window(int8, cfg.model.leads, cfg.model.window),
        },
        "gate_limits": {"snr_drop_db": INT8_MAX_SNR_DROP_DB, "cos_drop_pct": INT8_MAX_COS_DROP},
        "gate_data": "256 windows of the denoiser's selection records, selection noise",
    }
    snr_drop = figures["gate_fp32"]["snr_out"] - figures["gate_int8"]["snr_out"]
    cos_drop = figures["gate_fp32"]["cos"] - figures["gate_int8"]["cos"]
    ok = snr_drop <= INT8_MAX_SNR_DROP_DB and cos_drop <= INT8_MAX_COS_DROP
    faster = figures["ms_per_window_1thread"]["int8"] < figures["ms_per_window_1thread"]["fp32"]
    figures["int8_drop"] = {"snr_out_db": snr_drop, "cos_pct": cos_drop}
    figures["shipped_precision"] = "int8" if ok and faster else "fp32"
    figures["precision_reason"] = (
        "INT8 within the gate and faster"
        if ok and faster
        else ("INT8 not faster than FP32 on one thread" if ok else "INT8 fails the gate")
    )
    if figures["shipped_precision"] == "fp32":
        int8.unlink()
    return figures


def _calibration_sampler(cfg: DenoiseRunConfig) -> tuple[PairSampler, None]:
    clean = []
    for db in cfg.data.databases:
        d = cfg.data
        train = record_split(db, d.val_fraction, d.split_seed, d.select_fraction).train
        clean += clean_signals(db, train, d.fs, cfg.model.leads)
    spec = spec_of(cfg)
    return PairSampler(
        clean, spec, "train", window=cfg.data.window, context=cfg.data.context, seed=7
    ), None


def _entry(root: Path, name: str, precision: str, leads: int, window: int) -> dict[str, Any]:
    shape = ["batch", leads, window]
    return {
        "path": name,
        "role": "denoiser",
        "precision": precision,
        "sha256": sha256_file(root / name),
        "bytes": (root / name).stat().st_size,
        "inputs": [{"name": "x", "dtype": "float32", "shape": shape}],
        "outputs": [{"name": "y", "dtype": "float32", "shape": shape}],
    }


def add_denoiser(
    base_bundle: Path, run_dir: Path, out_dir: Path, *, command: str | None = None
) -> dict[str, Any]:
    """Copy ``base_bundle`` to ``out_dir`` with ``run_dir``'s denoiser added (replacing the
    base's denoiser if it has one); return the precision gate's figures. The model card is
    re-rendered from the manifest (``ecgedge bench stream --card`` adds benchmark sections).
    ``command``: the export command to record (default: ``export --denoiser … --base-bundle
    …``; a combined ``export --run R --denoiser D`` records itself)."""
    cfg, net, payload = load_denoiser(run_dir / CHECKPOINT_NAME)
    base = load_bundle(base_bundle)
    m = base.manifest
    if m.window_samples != cfg.model.window or abs(m.fs - cfg.data.fs) > 1e-9:
        raise ValueError(
            f"denoiser window {cfg.model.window} @ {cfg.data.fs} Hz does not match the bundle's "
            f"{m.window_samples} @ {m.fs} Hz"
        )
    with bundle_copy(base_bundle, out_dir) as tmp:
        figures = _choose_precision(
            tmp,
            cfg,
            net,
            target=m.provenance.get("target", "cpu"),  # the bundle's INT8 form
        )
        manifest = json.loads((tmp / "manifest.json").read_text())
        replaces = any(f["role"] == "denoiser" for f in manifest["files"])
        manifest["files"] = [f for f in manifest["files"] if f["role"] != "denoiser"]
        for precision in ("fp32", "int8"):
            if (tmp / f"denoiser.{precision}.onnx").is_file():
                manifest["files"].append(
                    _entry(
                        tmp,
                        f"denoiser.{precision}.onnx",
                        precision,
                        cfg.model.leads,
                        cfg.model.window,
                    )
                )
        if not replaces:
            manifest["name"] = f"{manifest['name']}-denoise"
        manifest["provenance"]["denoiser"] = {
            "model": "CD-ECGNet (contrastive disentanglement), E_ECG + E_lead + D_ECG exported",
            "placement": "after band-pass and per-window standardization; output re-standardized",
            "shipped_precision": figures["shipped_precision"],
            "precision_reason": figures["precision_reason"],
            "run": str(run_dir),
            "steps": payload["step"],
            "train_seconds": payload.get("extra", {}).get("train_seconds"),
            "validation": payload.get("extra", {}).get("val"),
            "config": cfg.to_dict(),
            "noise": "NSTDB bw, ma, em (em recovered from 118e00 - 118); first 70% for training, "
            "next 10% for checkpoint selection and the export gate",
            "commands": {
                "train": train_command(cfg),
                "export": command
                or f"ecgedge export --denoiser {run_dir} --base-bundle {base_bundle} "
                f"--out {out_dir}",
            },
        }
        manifest["metrics"]["denoiser"] = figures
        refit = manifest["provenance"].get("head_refit")
        denoisers = [f for f in manifest["files"] if f["role"] == "denoiser"]
        # the file the SDK runs by default: the most compact precision (sdk.bundle.Manifest.file)
        shipped = min(denoisers, key=lambda f: PRECISIONS[::-1].index(f["precision"]))["sha256"]
        dropped_rule = manifest["thresholds"].pop(DENOISED_SEARCH_BACK_KEY, None)
        if dropped_rule is not None:
            # the rule was chosen for the replaced denoiser's output (provenance.denoiser is new)
            warnings.warn(
                f"{out_dir}: the R-peak search-back threshold was chosen for the replaced denoiser "
                "and was removed (the SDK's default applies); run `ecgedge bench rpeak-tuning "
                f"--bundle {out_dir}` and `ecgedge export --rpeak-rule` to choose one",
                stacklevel=2,
            )
        anchors = manifest["provenance"].get("anchors")
        stale_features(
            manifest,
            tmp,
            out_dir,
            "another denoiser",
            # the beats change with another denoiser, or with the rule back at the default
            head=bool(refit)
            and (refit.get("denoiser_sha256") != shipped or dropped_rule is not None),
            anchors=bool(anchors)
            and (anchors.get("denoiser_sha256") != shipped or dropped_rule is not None),
        )
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return figures


def stale_features(
    manifest: dict[str, Any], root: Path, out_dir: Path, why: str, *, head: bool, anchors: bool
) -> None:
    """The windows' features are now computed with ``why`` (another denoiser, another R-peak
    rule): mark a refitted head stale (``head``) and remove the anchor windows (``anchors``),
    computed the old way, warning for each."""
    refit = manifest["provenance"].get("head_refit")
    if head and refit:
        refit["stale"] = (
            f"the head was refitted on windows of {why}; run `ecgedge export --refit-head` on "
            "this bundle"
        )
        warnings.warn(f"{out_dir}: {refit['stale']}", stacklevel=3)
    if anchors and manifest["provenance"].get("anchors"):
        for f in [f for f in manifest["files"] if f["role"] == "anchors"]:
            (root / f["path"]).unlink()
        manifest["files"] = [f for f in manifest["files"] if f["role"] != "anchors"]
        del manifest["provenance"]["anchors"]
        one_lead = all(
            f["inputs"][0]["shape"][1] == 1 for f in manifest["files"] if f["role"] == "denoiser"
        )
        hint = (
            f"; run `ecgedge export --add-anchors --base-bundle {out_dir} --out …` to add new ones"
            if one_lead
            else " (anchors need a 1-lead denoiser: CinC 2017 has one lead)"
        )
        warnings.warn(
            f"{out_dir}: the anchor windows were computed with {why} and were removed{hint}",
            stacklevel=3,
        )


def set_rpeak_rule(base_bundle: Path, report: Path, out_dir: Path) -> dict[str, Any]:
    """Copy ``base_bundle`` to ``out_dir`` with the search-back threshold that ``report`` (an
    ``ecgedge bench rpeak-tuning`` report of this bundle's denoiser, JSON) chose on its tuning
    records as the rule the pipeline uses on the denoiser's output
    (``thresholds.denoised_rpeak_search_back``, :class:`sdk.denoiser.WindowDenoiser`). A
    refitted head is marked stale and anchor windows are removed when the rule changes the
    beats they were computed from. Returns ``provenance.denoiser.rpeak_rule``."""
    base = load_bundle(base_bundle)
    m = base.manifest
    if not m.has("denoiser"):
        raise ValueError(f"{base_bundle} has no denoiser: its R peaks use the SDK's rule")
    try:
        chosen = json.loads(report.read_text())
        threshold, pick = chosen["chosen"]
        signal = chosen["signal_for_choice"]
        records = chosen["records"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{report}: not an `ecgedge bench rpeak-tuning` report ({exc!r})") from exc
    if signal != "denoised":
        raise ValueError(f"{report} chose its rule on the {signal!r} signal, not a denoiser's")
    tuned_for = chosen.get("denoiser_sha256")
    if tuned_for is not None and not isinstance(tuned_for, str):
        raise ValueError(f"{report}: denoiser_sha256 must be a SHA-256 string, got {tuned_for!r}")
    shipped = m.file("denoiser").sha256
    if tuned_for != shipped:
        raise ValueError(
            f"{report} chose a rule for "
            + ("an unrecorded denoiser" if tuned_for is None else f"denoiser {tuned_for[:12]}…")
            + f"; this bundle's is {shipped[:12]}…: run `ecgedge bench rpeak-tuning --bundle "
            f"{base_bundle}` first"
        )
    try:
        value = float(manifest_number(threshold, "the chosen threshold"))
    except ValueError as exc:
        raise ValueError(f"{report}: {exc}") from exc
    if pick != "nearest" or not 0.0 <= value <= 1.0:
        raise ValueError(
            f"{report} chose ({threshold}, {pick!r}); the pipeline's denoised path picks "
            "the nearest candidate and takes a threshold in [0, 1]"
        )
    if not (isinstance(records, list) and records and all(isinstance(r, str) for r in records)):
        raise ValueError(f"{report}: its tuning records must be a list of record names")
    old = float(m.thresholds.get(DENOISED_SEARCH_BACK_KEY, SEARCH_BACK_THRESHOLD))
    rule = {
        "threshold": value,
        "pick": pick,
        "records": records,
        "report": str(report),
        "report_command": str(chosen.get("command", "ecgedge bench rpeak-tuning")),
        "command": f"ecgedge export --rpeak-rule {report} --base-bundle {base_bundle} "
        f"--out {out_dir}",
    }
    with bundle_copy(base_bundle, out_dir) as tmp:
        manifest = json.loads((tmp / "manifest.json").read_text())
        manifest["thresholds"][DENOISED_SEARCH_BACK_KEY] = value
        manifest["provenance"]["denoiser"]["rpeak_rule"] = rule
        if value != old:  # the denoised windows' beats, so their RR and Lorenz features, change
            why = f"the R-peak search-back threshold {old:g}"
            stale_features(manifest, tmp, out_dir, why, head=True, anchors=True)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return rule
