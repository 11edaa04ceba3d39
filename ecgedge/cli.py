"""``ecgedge`` command line. Subcommands import their packages lazily."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from sdk.bundle import Bundle
    from sdk.calibration.profile import UserProfile

_OUR_PACKAGES = {"sdk", "trainer", "export", "firmware_bridge", "ecgedge"}


class _Parser(argparse.ArgumentParser):
    """Bad input gives one line, ``ecgedge CMD: error: ...``, and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _number(text: str, *, zero_ok: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
        raise argparse.ArgumentTypeError(
            f"{text!r} must be a finite number {'>= 0' if zero_ok else '> 0'}"
        )
    return value


def _nonnegative(text: str) -> float:
    """argparse type: a finite number >= 0."""
    return _number(text, zero_ok=True)


def _positive(text: str) -> float:
    """argparse type: a finite number > 0."""
    return _number(text, zero_ok=False)


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 1")
    return value


def _check_output(path: Path, option: str, *, folder: bool) -> None:
    """Refuse, before any work, an output the command could not write: a file where a folder
    is wanted or the reverse, or a location without write permission."""
    if path.exists() and path.is_dir() != folder:
        raise ValueError(f"{option} {path}: {'not a folder' if folder else 'is a folder'}")
    if path.exists() and not folder and not path.is_file():  # a device, a FIFO, a socket
        raise ValueError(f"{option} {path}: not a regular file, which the output would replace")
    # an existing file is replaced by a rename in its folder: the folder must be writable
    existing = path if path.is_dir() else next(p for p in path.parents if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {path}: cannot write in {existing}")
    try:  # the permission bits do not bind root, nor say anything of /proc or a full disk
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        why = exc.strerror or exc
        raise ValueError(f"{option} {path}: cannot write in {existing} ({why})") from None


_PRESET_HELP = "smoke | cpu | gpu | path/to.toml; override any field with --section.key=value"


def _cmd_train(args: argparse.Namespace, extra: list[str]) -> int:
    from trainer.config import load_preset, parse_overrides
    from trainer.distributed import is_main_process
    from trainer.probe import run_probe
    from trainer.train_diffusion import train

    cfg = load_preset(args.preset, parse_overrides(extra))
    if args.data_source:
        cfg.data.source = args.data_source
    result = train(cfg)
    if not is_main_process():  # under torchrun only rank 0 reports and probes
        return 0
    print(
        f"pretrained {result.steps} steps in {result.seconds:.0f} s, loss {result.final_loss:.4f} "
        f"-> {result.checkpoint}"
    )
    if result.checkpoint.is_file() and not args.no_probe:
        probe = run_probe(result.checkpoint, result.checkpoint.parent)
        print(f"probe: t={probe.t}, val {probe.report['embedding_plus_rr']}")
    return 0


def _cmd_probe(args: argparse.Namespace, extra: list[str]) -> int:
    from trainer.probe import run_probe
    from trainer.train_diffae import CHECKPOINT as DIFFAE_CHECKPOINT

    path = Path(args.checkpoint)
    if path.name == DIFFAE_CHECKPOINT:  # a train-diffae run (e.g. --no-probe): its own probe
        from trainer.train_diffae import run_probe as run_diffae_probe

        report = run_diffae_probe(path.parent)
        print(f"probe: val {json.dumps(report['embedding_plus_rr'])[:2000]}")
        return 0
    probe = run_probe(path, path.parent)
    print(f"t={probe.t} scores={probe.t_scores}\n{probe.report}")
    return 0


def _check_export_action(args: argparse.Namespace) -> None:
    """One export action per call, and only the options it uses (others were ignored)."""
    copies = [
        flag
        for flag, on in (
            ("--refit-head", args.refit_head),
            ("--rpeak-rule", args.rpeak_rule),
            ("--add-anchors", args.add_anchors),
            ("--denoiser", args.denoiser and args.base_bundle),
        )
        if on
    ]
    if len(copies) > 1:
        raise ValueError(f"give one of {', '.join(copies)} per export (each writes a bundle)")
    if args.base_bundle and not copies:
        raise ValueError(
            "--base-bundle applies with --denoiser, --refit-head, --add-anchors or --rpeak-rule "
            "(an export of a --run starts from the run)"
        )
    if copies:
        used = {"calibration_windows"} if copies == ["--refit-head"] else set()
        stray = [
            f"--{k.replace('_', '-')}"
            for k, v in args.int8_defaults.items()
            if k not in used and getattr(args, k) != v
        ]
        stray += ["--encoder"] * bool(args.encoder) + ["--target"] * (args.target != "cpu")
        if stray:
            verb = "does" if len(stray) == 1 else "do"
            raise ValueError(f"{', '.join(stray)} {verb} not apply to {copies[0]}")


def _cmd_export(args: argparse.Namespace, extra: list[str]) -> int:
    from export.build import build_bundle
    from export.publish import check_bundle_out

    _check_export_action(args)
    if args.base_bundle:  # a folder or a shipped bundle's name, as --bundle elsewhere
        args.base_bundle = str(_bundle_path(args.base_bundle, "--base-bundle"))
    # before any work: --out must be new or a bundle, and not what the export reads
    sources = [Path(p) for p in (args.base_bundle, args.denoiser) if p]
    if args.out:
        from_run = not (
            args.base_bundle
            and (args.refit_head or args.rpeak_rule or args.add_anchors or args.denoiser)
        )
        check_bundle_out(Path(args.out), *sources, *([Path(args.run)] if from_run else []))
    if args.refit_head:
        if not args.base_bundle or not args.out:
            raise ValueError(
                "--refit-head needs --base-bundle (the bundle whose head to refit) "
                "and --out (the bundle to write)"
            )
        from export.refit_head import refit_head

        info = refit_head(
            Path(args.base_bundle), Path(args.out), calibration_windows=args.calibration_windows
        )
        print(
            f"bundle with the refitted head written to {args.out}: {info['windows']} windows of "
            f"{info['records']} records, {info['seconds']:.0f} s"
        )
        return 0
    if args.rpeak_rule:
        if not args.base_bundle or not args.out:
            raise ValueError("--rpeak-rule needs --base-bundle and --out (the bundle to write)")
        from export.denoiser import set_rpeak_rule

        rule = set_rpeak_rule(Path(args.base_bundle), Path(args.rpeak_rule), Path(args.out))
        print(f"bundle with search-back threshold {rule['threshold']:g} written to {args.out}")
        return 0
    if args.add_anchors:
        if not args.base_bundle or not args.out:
            raise ValueError("--add-anchors needs --base-bundle and --out (the bundle to write)")
        from export.anchors import add_anchors

        info = add_anchors(Path(args.base_bundle), Path(args.out))
        print(f"bundle with {info['per_class']} anchor windows per class written to {args.out}")
        return 0
    if args.denoiser and args.base_bundle:  # add a denoiser to an existing bundle
        from export.denoiser import add_denoiser

        if not args.out:
            raise ValueError("--denoiser with --base-bundle needs --out (the bundle to write)")
        figures = add_denoiser(Path(args.base_bundle), Path(args.denoiser), Path(args.out))
        print(f"bundle with denoiser written to {args.out}: {figures}")
        return 0
    run = Path(args.run)
    kind = _run_kind(run)
    if kind != "diffecg":
        return _export_embedder_run(args, run, kind)
    if args.encoder:
        raise ValueError("--encoder names an encoder of a DACL run; this is a DiffECG run")
    if not args.out:  # the default, checked here (a given --out was checked above)
        args.out = "bundles/diffecg-cpu"
        check_bundle_out(Path(args.out), Path(args.run), *sources)
    if args.denoiser:  # a bad denoiser run is refused before the bundle is built
        from trainer.train_denoiser import CHECKPOINT_NAME, load_denoiser

        load_denoiser(Path(args.denoiser) / CHECKPOINT_NAME)
    result = build_bundle(
        Path(args.run),
        Path(args.out),
        int8_limit=args.int8_limit,
        calibration_windows=args.calibration_windows,
        int8_budget=args.int8_budget,
        target=args.target,
    )
    print(result.summary())
    if args.denoiser:
        from export.denoiser import add_denoiser

        combined = f"ecgedge export --run {args.run} --denoiser {args.denoiser} --out {args.out}"
        print(add_denoiser(Path(args.out), Path(args.denoiser), Path(args.out), command=combined))
    return 0


#: What marks each kind of training run ``ecgedge export --run`` turns into a bundle.
RUN_MARKERS = {"diffecg": "diffecg.pt", "diffae-lru": "diffae.pt", "dacl": "dacl.json"}


def _run_kind(run: Path) -> str:
    """``diffecg`` (``ecgedge train``), ``diffae-lru`` (``train-diffae``) or ``dacl``
    (``train-dacl``), from the files in ``run``."""
    kinds = [k for k, marker in RUN_MARKERS.items() if (run / marker).is_file()]
    if len(kinds) != 1:
        found = "none of" if not kinds else "more than one of"
        raise ValueError(
            f"--run {run}: holds {found} {sorted(RUN_MARKERS.values())}; give the folder of one "
            "ecgedge train, train-diffae or train-dacl run"
        )
    return kinds[0]


def _export_embedder_run(args: argparse.Namespace, run: Path, kind: str) -> int:
    """A DiffAE-LRU or DACL run → an FP32 bundle (no INT8, Jetson form or denoiser)."""
    unsupported = [
        flag
        for flag, used in (
            ("--denoiser", bool(args.denoiser)),
            ("--target jetson", args.target != "cpu"),
            ("--encoder", kind != "dacl" and bool(args.encoder)),
            *(
                (f"--{dest.replace('_', '-')}", getattr(args, dest) != default)
                for dest, default in args.int8_defaults.items()
            ),
        )
        if used
    ]
    if unsupported:
        raise ValueError(f"{', '.join(unsupported)}: not for a {kind} run")
    if not args.out:
        raise ValueError(f"exporting a {kind} run needs --out (the bundle to write)")
    import torch

    torch.set_num_threads(1)
    if kind == "diffae-lru":
        from export.lru_bundle import build_lru_bundle

        figures = build_lru_bundle(run, Path(args.out))
    else:
        from export.dacl_bundle import build_dacl_bundle

        figures = build_dacl_bundle(run, Path(args.out), args.encoder or "dacl")
    print(f"{kind} bundle written to {args.out}\n{json.dumps(figures, indent=1)}")
    return 0


def _cmd_train_diffae(args: argparse.Namespace, extra: list[str]) -> int:
    from trainer.config import parse_overrides
    from trainer.distributed import is_main_process
    from trainer.train_diffae import load_diffae_preset, run_probe, train

    cfg = load_diffae_preset(args.preset, parse_overrides(extra))
    path = train(cfg)
    if not is_main_process():  # under torchrun only rank 0 saves and probes
        return 0
    print(f"trained -> {path}")
    if not args.no_probe:
        report = run_probe(path.parent)
        print(f"probe: val {json.dumps(report['embedding_plus_rr'])[:2000]}")
    return 0


def _cmd_train_dacl(args: argparse.Namespace, extra: list[str]) -> int:
    from trainer.config import parse_overrides
    from trainer.dacl import load_dacl_preset, train_dacl

    cfg = load_dacl_preset(args.preset, parse_overrides(extra))
    train_dacl(cfg)
    print(f"DACL run written to {cfg.run.out_dir} (table: ecgedge bench dacl --run ...)")
    return 0


def _cmd_train_denoiser(args: argparse.Namespace, extra: list[str]) -> int:
    from trainer.train_denoiser import main as train_denoiser_main

    return train_denoiser_main(["--preset", args.preset, *extra])


def _bundle_summary(root: Path) -> tuple[bool, str]:
    """(verified, one paragraph) of a bundle: what it runs, its size, its recorded figures."""
    from sdk.bundle import load_bundle
    from sdk.errors import BundleError

    try:
        m = load_bundle(root).manifest  # every file's SHA-256 checked
    except BundleError as exc:
        return False, f"  NOT VERIFIED: {exc}"
    raw = json.loads((root / "manifest.json").read_text())
    kib = sum((root / f.path).stat().st_size for f in m.files) / 1024
    embedders = [f for f in m.files if f.role == "embedder"]
    modalities = sorted({f.modality or "raw" for f in embedders})
    parts = [
        f"embedders: {', '.join(modalities)} "
        f"({', '.join(sorted({f.precision for f in embedders}))})",
        f"{m.preprocess.fs:g} Hz, window {m.window_samples / m.preprocess.fs:g} s, "
        f"hop {m.hop_samples / m.preprocess.fs:g} s; classes {' '.join(m.classes)}",
        f"{kib:.0f} KiB in {len(m.files)} files",
    ]
    if any(f.role == "denoiser" for f in m.files):
        parts.append("denoiser (CD-ECGNet) in front")
    streaming = _dig(raw, "streaming")
    if streaming is not None:
        hop = _dig(raw, "streaming", "hop_samples")
        path = _dig(raw, "streaming", "path")
        step = root / path if isinstance(path, str) else None
        step_kib = step.stat().st_size / 1024 if step is not None and step.is_file() else None
        parts.append(
            f"stateful step model ({hop if isinstance(hop, int) else '?'} samples per step)"
            + (f", {step_kib:.0f} KiB more" if step_kib is not None else "")
        )
    if _dig(raw, "front_end") is not None:
        from sdk.errors import MissingDependencyError
        from sdk.scattering import require_kymatio

        try:
            require_kymatio()
            needs = ""
        except MissingDependencyError as exc:
            needs = f" ({exc})"
        parts.append(f"front end: {_dig(raw, 'front_end', 'kind') or '?'}{needs}")
    val = _dig(raw, "metrics", "rhythm_val_sdk", "val_fp32")
    f1, macro = (_figure(_dig(val, k)) for k in ("challenge_f1", "macro_f1"))
    parts.append(
        f"validation (SDK, FP32): challenge F1 {f1:.3f}, macro F1 {macro:.3f}"
        if f1 is not None and macro is not None
        else "figures: its MODEL_CARD.md"
    )
    return True, "\n".join(f"  {p}" for p in parts)


def _dig(value: object, *keys: str) -> Any:
    """``value[k0][k1]...`` through JSON objects, or None where one is missing or no object
    (a bundle's optional manifest entries are summarized as far as they make sense)."""
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _figure(value: object) -> float | None:
    """A recorded figure: a number, or a ``{"value": ..., "ci95": ...}`` record of one."""
    if isinstance(value, dict):
        value = value.get("value")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _cmd_bundles(args: argparse.Namespace, extra: list[str]) -> int:
    from sdk.bundle import shipped_bundles

    given = [b for b in args.bundle.split(",") if b] if args.bundle else []
    roots = {b: _bundle_path(b) for b in given} or shipped_bundles()
    ok = True
    for name, root in roots.items():
        verified, text = _bundle_summary(root)
        ok &= verified
        print(f"{name}  ({root})\n{text}")
    return 0 if ok else 1


def _cmd_engines(args: argparse.Namespace, extra: list[str]) -> int:
    from export.jetson_rules import check_bundle
    from sdk.bundle import load_bundle

    root = _bundle_path(args.bundle)
    load_bundle(root)  # every file's SHA-256 first: no graph of a tampered bundle is read
    if args.check:
        found = check_bundle(root)
        print("\n".join(str(v) for v in found) or f"{root}: every graph passes the TensorRT rules")
        return 1 if found else 0
    from export.tensorrt_build import build_bundle_engines
    from sdk.trt_runtime import default_engine_dir

    out = Path(args.out) if args.out else default_engine_dir()
    for path in build_bundle_engines(
        root, tuple(args.precision), cache_dir=out, max_batch=args.max_batch, force=args.force
    ):
        print(path)
    return 0


#: ``train-fusion``'s modality runs: option → the preset that trains one
FUSION_PRESETS = {"raw": "cpu", "spectrogram": "cpu-spectrogram", "lorenz": "cpu-lorenz"}


def _cmd_train_fusion(args: argparse.Namespace, extra: list[str]) -> int:
    from trainer.fusion import run_fusion

    runs = {
        "raw": Path(args.raw),
        "spectrogram": Path(args.spectrogram),
        "lorenz": Path(args.lorenz),
    }
    for modality, run in runs.items():
        if not (run / "diffecg.pt").is_file():
            made_by = "ecgedge train --preset " + FUSION_PRESETS[modality]
            raise ValueError(
                f"--{modality} {run}: no diffecg.pt there; give the folder of a finished "
                f"`{made_by}` run (or train it)"
            )
    report = run_fusion(runs, Path(args.out), epochs=args.epochs)
    for name, row in report["rows"].items():
        print(f"{name:45s} challenge F1 {row['challenge_f1']['value']:.3f}")
    return 0


def _cmd_structure_search(args: argparse.Namespace, extra: list[str]) -> int:
    from trainer.structure_search import run as run_search

    result = run_search(Path(args.run), Path(args.out))
    print(f"chosen: {result['chosen']} (table in {args.out}/structure_search.md)")
    return 0


def _cmd_export_multimodal(args: argparse.Namespace, extra: list[str]) -> int:
    from export.multimodal import build_multimodal_bundle
    from export.publish import check_bundle_out

    bundle = _bundle_path(args.bundle)
    check_bundle_out(Path(args.out), bundle, Path(args.run))
    figures = build_multimodal_bundle(bundle, Path(args.run), Path(args.out))
    print(f"bundle written to {args.out}\n{json.dumps(figures, indent=2)}")
    return 0


#: ``ecgedge bench`` benchmarks: name → what it measures (``bench --help`` lists them).
BENCHMARKS = {
    "rhythm": "CinC 2017 rhythm classification: linear probe and the bundle end to end",
    "stream": "the device path: 30 min through the SDK, one thread, beside PyTorch/NeuroKit2",
    "bridge": "sensor bridge: decoding cost, loss/jitter/disconnects, frame-to-event latency",
    "personalize": "per-subject AF detection with on-device calibration of t",
    "denoise": "NSTDB noise on held-out clean ECG: CD-ECGNet denoisers vs filters",
    "noise-stress": "R-peak detection on nstdb 118e*/119e* with and without the denoiser",
    "rpeak-tuning": "choose the R-peak search-back rule on mitdb records with added noise",
    "episodes": "AF episodes as a stream reports them, against the annotations",
    "rhythm-noise": "the rhythm benchmark on clean and noise-corrupted records (--levels)",
    "lru": "per-hop embedding cost: whole-window re-encode vs the LRU step model",
    "dacl": "DACL, its two baselines and the timestep ablation (a train-dacl --run)",
    "anomaly": "DACL-style anomaly AUROC for any bundle's embedder",
}

BUNDLE_HELP = (
    "bundle folder, or the name of a shipped bundle: default (DiffECG, the default), "
    "diffae-lru-cpu, dacl-cpu"
)

#: ``bench anomaly`` without ``--bundle``: these, those that exist (README's commands make them)
ANOMALY_BUNDLES = (
    "sdk/default_bundle",
    "bundles/diffecg-cpu",
    "sdk/bundles/diffae-lru-cpu",
    "sdk/bundles/dacl-cpu",
    "bundles/dacl-paper",
)


def _levels(text: str) -> tuple[float | None, ...]:
    """``--levels clean,6,0`` → (None, 6.0, 0.0)."""
    try:
        levels = tuple(None if v == "clean" else float(v) for v in text.split(","))
    except ValueError:
        levels = (math.nan,)
    if not all(v is None or math.isfinite(v) for v in levels):
        raise ValueError(
            f"--levels {text!r}: give finite SNR levels in dB or 'clean', e.g. clean,6"
        )
    return levels


def _cmd_bench(args: argparse.Namespace, extra: list[str]) -> int:
    _check_output(Path(args.out), "--out", folder=True)
    for bundle in args.bundle.split(",") if args.bundle else ():
        if not (_bundle_path(bundle) / "manifest.json").is_file():
            raise ValueError(f"--bundle {bundle}: no manifest.json (not a bundle)")
    for run in args.run.split(",") if args.run else ():  # a missing run silently lost its row
        if not Path(run).is_dir():
            raise ValueError(f"--run {run}: no such folder (give a training run's folder)")
    if args.name == "bridge":
        from ecgedge.demo import demo_recording
        from firmware_bridge.bench import run as run_bridge
        from sdk.bundle import load_bundle
        from trainer.bench.report import provenance

        spec = load_bundle(_bundle_path(args.bundle)).manifest.preprocess
        recording, source, _ = demo_recording(True, spec)
        run_bridge(
            _bundle_path(args.bundle),
            Path(args.out),
            recording.signal,
            recording.fs,
            source,
            minutes=min(args.minutes, 30.0),
            provenance=provenance(),
        )
        return 0
    if args.name == "personalize":
        from trainer.bench.personalize import run as run_personalize

        run_personalize(
            _bundle_path(args.bundle), Path(args.out), report=args.report or "personalize"
        )
        return 0
    if args.name == "denoise":
        from trainer.bench.denoise import run as run_denoise

        readme_runs = "runs/denoise-1lead-d4,runs/denoise-2lead-d4,runs/denoise-12lead-40"
        # --bundle alone: the bundle's denoiser on the protocol its manifest records
        runs = args.run or ("" if args.bundle else readme_runs)
        run_denoise(
            [Path(r) for r in runs.split(",") if r],
            Path(args.out),
            bundle_dir=_bundle_path(args.bundle) if args.bundle else None,
            report=args.report or "denoise",
        )
        return 0
    if args.name == "rhythm-noise":
        from trainer.bench.rhythm_noise import run as run_rhythm_noise

        levels = _levels(args.levels)
        run_rhythm_noise(_bundle_path(args.bundle), Path(args.out), levels=levels)
        return 0
    if args.name == "noise-stress":
        from trainer.bench.noise_stress import run as run_noise_stress

        run_noise_stress(
            Path(args.out),
            bundle_dir=_bundle_path(args.bundle) if args.bundle else None,
            peers=not args.no_peers,
            report=args.report or "noise_stress",
        )
        return 0
    if args.name == "rpeak-tuning":
        from trainer.bench.rpeak_tuning import run as run_rpeak_tuning

        run_rpeak_tuning(
            Path(args.out),
            bundle_dir=_bundle_path(args.bundle) if args.bundle else None,
            report=args.report or "rpeak_tuning",
        )
        return 0
    if args.name == "episodes":
        from trainer.bench.episodes import run as run_episodes

        run_episodes(_bundle_path(args.bundle), Path(args.out), report=args.report or "episodes")
        return 0
    if args.name == "anomaly":
        from trainer.bench.anomaly import run as run_anomaly

        given = args.bundle.split(",") if args.bundle else []
        paths = [_bundle_path(b) for b in given] or [Path(b) for b in ANOMALY_BUNDLES]
        run_anomaly(
            {p.name: p for p in paths if args.bundle or (p / "manifest.json").is_file()},
            Path(args.out),
            report=args.report or "anomaly",
            denoise=not args.no_denoise,
        )
        return 0
    if args.name == "dacl":
        from trainer.bench.dacl import run as run_dacl

        run_dacl(Path(args.run or "runs/dacl"), Path(args.out))
        return 0
    if args.name == "lru":
        from trainer.bench.lru import run as run_lru

        others = {"DiffECG": _bundle_path(None), "DACL": _bundle_path("dacl-cpu")}
        run_lru(
            _bundle_path(args.bundle or "diffae-lru-cpu"),
            Path(args.out),
            {k: v for k, v in others.items() if (v / "manifest.json").is_file()},
        )
        return 0
    if args.name == "rhythm":
        from trainer.bench.rhythm import run as run_rhythm

        run_rhythm(
            _bundle_path(args.bundle),
            Path(args.out),
            run_dir=Path(args.run) if args.run else None,
            report=args.report or "rhythm",
        )
    else:
        from trainer.bench.stream import run as run_stream

        run_stream(
            _bundle_path(args.bundle),
            Path(args.out),
            minutes=args.minutes,
            peers=not args.no_peers,
            run_dir=Path(args.run or "runs/cpu"),
            report=args.report or "stream",
            hop_s=args.hop,
            paced_minutes=args.paced_minutes,
        )
    if args.card:
        from export.model_card import write_model_card

        write_model_card(_bundle_path(args.bundle), Path(args.out))
    return 0


def _cmd_calibrate(args: argparse.Namespace, extra: list[str]) -> int:
    from ecgedge.calibrate import calibrate_record

    _check_output(Path(args.out), "--out", folder=False)
    record = Path(args.record)
    inputs = {
        p.resolve(): "one of the record's files" for p in record.parent.glob(f"{record.name}.*")
    }
    if args.labels:
        inputs[Path(args.labels).resolve()] = "--labels"
    if args.plot:  # refused before the search, not after it
        from ecgedge.calibration_plot import require_matplotlib

        _check_output(Path(args.plot), "--plot", folder=False)
        if Path(args.plot).suffix.lower() != ".png":
            raise ValueError(f"--plot {args.plot}: the plot is a PNG file; give a name ending .png")
        if Path(args.plot).resolve() in {Path(args.out).resolve(), *inputs}:
            raise ValueError(f"--plot {args.plot}: is --out or an input; give another file")
        require_matplotlib()
    if Path(args.out).resolve() in inputs:
        raise ValueError(
            f"--out {args.out}: is {inputs[Path(args.out).resolve()]}, which the profile would "
            "replace; give another file"
        )
    return calibrate_record(
        Path(args.record),
        Path(args.out),
        bundle_dir=_bundle_path(args.bundle),
        user=args.user,
        minutes=args.minutes,
        lead=args.lead,
        objective=args.objective,
        max_evals=args.max_evals,
        max_seconds=args.max_seconds,
        anchors=args.anchors,
        denoise=not args.no_denoise,
        labels=Path(args.labels) if args.labels else None,
        plot=Path(args.plot) if args.plot else None,
    )


def _pipeline_options(args: argparse.Namespace) -> dict[str, Any]:
    """StreamPipeline keywords from ``stream``'s --hop, --stateful and --no-denoise."""
    stateful = {"auto": None, "on": True, "off": False}[args.stateful]
    return {"hop_s": args.hop, "stateful": stateful, "denoise": not args.no_denoise}


#: ``stream`` options that apply to some sources only: option → the sources it applies to.
STREAM_OPTION_SOURCES: dict[str, tuple[str, ...]] = {
    "--record": ("replay", "simulate"),
    "--speed": ("replay", "simulate"),
    "--seconds": ("replay", "simulate"),
    "--save": ("simulate", "ble"),
    **{
        option: ("simulate",)
        for option in (
            "--loss",
            "--jitter",
            "--duplicate",
            "--corrupt",
            "--timestamp-glitch",
            "--disconnect-every",
            "--compressed",
            "--seed",
        )
    },
    "--profile": ("ble",),
    "--allow": ("ble",),
}
#: How errors name each ``stream`` source.
STREAM_SOURCE_NAMES = {"replay": "a --record replay", "simulate": "--simulate", "ble": "--ble"}


def _dest(option: str) -> str:
    """``--timestamp-glitch`` → ``timestamp_glitch``, the argparse attribute."""
    return option.lstrip("-").replace("-", "_")


def _stream_source(args: argparse.Namespace) -> str:
    """``ble``, ``simulate`` or ``replay`` (a ``--record`` alone); refuse options that do not
    apply to it rather than ignore them."""
    source = "ble" if args.ble else "simulate" if args.simulate else "replay" if args.record else ""
    if not source:
        raise ValueError("give --record PATH, --simulate or --ble ADDRESS")
    if source == "ble" and args.record:
        raise ValueError(
            "--record does not apply to --ble, a live sensor (give --record alone to replay "
            "it, or with --simulate to play it through a virtual strap)"
        )
    for option, sources in STREAM_OPTION_SOURCES.items():
        if source not in sources and getattr(args, _dest(option)) != args.stream_defaults[option]:
            where = " or ".join(STREAM_SOURCE_NAMES[s] for s in sources)
            raise ValueError(
                f"{option} does not apply to {STREAM_SOURCE_NAMES[source]} (only to {where})"
            )
    return source


def _check_save_folder(value: str) -> None:
    """``stream --save``: a writable folder that holds no saved session yet (refused before
    streaming: a new session would replace it, or mix its files with the old one's)."""
    from ecgedge.live import saved_session
    from sdk.errors import require_package

    # found out at the end, the whole session would be lost
    require_package("wfdb", "replay", hint="--save writes a WFDB record")
    folder = Path(value)
    _check_output(folder, "--save", folder=True)
    existing = saved_session(folder)
    if existing:
        raise ValueError(
            f"--save {folder}: already holds a saved session "
            f"({', '.join(p.name for p in existing)}); give another folder or remove them"
        )


def _user_profile(value: str | None, bundle: Bundle) -> UserProfile | None:
    """The ``--user-profile`` to stream with. The SDK runs on the bundle's defaults when a
    profile cannot be used; a profile named on the command line must be used, or it is an
    error."""
    if value is None:
        return None
    from sdk.calibration.profile import load_profile
    from sdk.errors import ProfileError

    try:
        return load_profile(value, bundle)
    except ProfileError as exc:  # its message starts with the path
        raise ValueError(f"--user-profile {exc}") from exc


def _check_lead(lead: int, n_leads: int, sensor: str, hint: str = "") -> None:
    """``--lead`` must be a lead of a ``sensor`` that streams ``n_leads``."""
    if not 0 <= lead < n_leads:
        has = "one lead" if n_leads == 1 else f"{n_leads} leads"
        raise ValueError(f"--lead {lead}: {sensor} has {has}{f' ({hint})' if hint else ''}")


def _cmd_stream(args: argparse.Namespace, extra: list[str]) -> int:
    import numpy as np

    from ecgedge.demo import LiveView
    from ecgedge.live import ble, run_live, simulated
    from ecgedge.replay import check_playable, play, read_wfdb
    from firmware_bridge.simulator import Impairments
    from sdk.bundle import load_bundle
    from sdk.pipeline import StreamPipeline
    from sdk.synthetic import synthetic_ecg

    source = _stream_source(args)
    if source == "simulate" and not args.record:
        hint = "give --record PATH to simulate a lead of a record"
        _check_lead(args.lead, 1, "the simulated strap", hint)
    if args.save:
        _check_save_folder(args.save)
    bundle = load_bundle(_bundle_path(args.bundle))
    user_profile = _user_profile(args.user_profile, bundle)
    view = LiveView()
    # the lead the pipeline takes from each sample: a simulated strap plays the chosen lead
    lead = args.lead
    if source == "ble":
        transport, profile = ble(args.ble, args.profile, args.allow)
        _check_lead(args.lead, profile.n_leads, f"the --profile {args.profile} sensor")
    elif source == "simulate":
        if args.record:
            rec = read_wfdb(Path(args.record), args.lead)
            check_playable(Path(args.record), rec.fs, bundle.manifest.preprocess)
            signal, fs = rec.signal, rec.fs
            lost = int(np.count_nonzero(~np.isfinite(signal)))
            if lost:
                raise ValueError(
                    f"{args.record}: {lost} lost (NaN) samples, which a virtual strap cannot "
                    "send; replay it without --simulate"
                )
            lead = 0
        else:
            ecg = synthetic_ecg()
            signal, fs = ecg.signal, ecg.fs
        if args.seconds:
            signal = signal[: int(args.seconds * fs)]
        imp = Impairments(
            loss=args.loss,
            jitter_ms=args.jitter,
            disconnect_every_s=args.disconnect_every,
            duplicate=args.duplicate,
            corrupt=args.corrupt,
            timestamp_glitch=args.timestamp_glitch,
            seed=args.seed,
        )
        transport, profile = simulated(
            signal, fs, imp, speed=args.speed, compressed=args.compressed
        )
        played = args.record or "the built-in synthetic ECG (1 min sinus, 1 min AF, 1 min sinus)"
        played += f", its first {args.seconds:g} s" if args.seconds else ""
        print(f"ecgedge stream: {played} through a simulated Polar H10 (PMD frames, 130 Hz)")
    else:
        recording = read_wfdb(Path(args.record), args.lead)
        pipeline = StreamPipeline(
            bundle,
            fs_in=recording.fs,
            on_event=view,
            profile=user_profile,
            **_pipeline_options(args),
        )
        play(recording, pipeline, speed=args.speed, seconds=args.seconds)
        stats_in = pipeline.stats
        print(view.summary(stats_in.samples_in / recording.fs, None, stats_in.share("A"), stats_in))
        return 0
    pipeline, stats, saved = run_live(
        transport,
        profile,
        bundle,
        on_event=view,
        save=Path(args.save) if args.save else None,
        user_profile=user_profile,
        options={**_pipeline_options(args), "lead": lead},
    )
    print(
        view.summary(
            pipeline.stats.samples_in / profile.fs,
            stats,
            pipeline.stats.share("A"),
            pipeline.stats,
        )
    )
    print(f"  counters        {stats.to_dict()}")
    if saved is not None:
        print(f"  saved           {saved} (WFDB; gaps annotated in .gap)")
    return 0


def _cmd_sensors(args: argparse.Namespace, extra: list[str]) -> int:
    import asyncio

    from firmware_bridge.ble import scan
    from firmware_bridge.hrs import HEART_RATE_SERVICE_UUID
    from firmware_bridge.polar_pmd import PMD_SERVICE_UUID

    uuids = () if args.all else (PMD_SERVICE_UUID, HEART_RATE_SERVICE_UUID)
    found = asyncio.run(scan(args.timeout, name_prefix=args.name_prefix, service_uuids=uuids))
    for d in found:
        print(f"{d.address}  {d.name or '?':<24} rssi {d.rssi}  {' '.join(d.service_uuids)}")
    print(f"{len(found)} sensor(s) found")
    return 0


def _cmd_demo(args: argparse.Namespace, extra: list[str]) -> int:
    from ecgedge.demo import run_demo

    if args.fast and args.speed is not None:  # it was ignored without a word
        raise ValueError("--speed does not apply with --fast (which plays as fast as possible)")
    return run_demo(
        _bundle_path(args.bundle),
        fast=args.fast,
        seconds=args.seconds,
        use_data=not args.synthetic,
        speed=20.0 if args.speed is None else args.speed,
    )


def _bundle_path(value: str | None, option: str = "--bundle") -> Path:
    """``--bundle`` (or ``option``): a folder, the name of a shipped bundle, or (None) the
    default bundle."""
    from sdk.bundle import bundle_path, shipped_bundles
    from sdk.errors import BundleError

    try:
        return bundle_path(value)
    except BundleError:
        names = ", ".join(shipped_bundles())
        raise ValueError(
            f"{option} {value}: no such folder, and no shipped bundle of that name ({names})"
        ) from None


def _version() -> str:
    """The installed distribution's version (``unknown`` when run from an uninstalled tree)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ecgedge")
    except PackageNotFoundError:
        return "unknown"


def _where_runs_go(section: str, **folders: str) -> str:
    """A training command's description: where each preset writes its run and how to move it."""
    listed = ", ".join(f"{preset}: {folder}" for preset, folder in folders.items())
    return (
        f"Writes the run to the preset's {section}.out_dir ({listed}); "
        f"--{section}.out_dir=PATH writes it elsewhere."
    )


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ecgedge", description=__doc__)
    p.add_argument("--version", action="version", version=f"ecgedge {_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser(
        "train",
        help="pretrain DiffECG and fit the probe head (needs ecgedge[train])",
        description=_where_runs_go(
            "train",
            smoke="runs/smoke",
            cpu="runs/cpu",
            **{"cpu-spectrogram": "runs/cpu-spectrogram", "cpu-lorenz": "runs/cpu-lorenz"},
            gpu="runs/gpu",
        ),
    )
    t.add_argument(
        "--preset",
        default="cpu",
        help="smoke | cpu | cpu-spectrogram | cpu-lorenz | gpu | path/to.toml; override any "
        "field with --section.key=value",
    )
    t.add_argument("--data-source", choices=("shared", "synthetic"), help="override data.source")
    t.add_argument(
        "--no-probe", action="store_true", help="skip the linear probe after pretraining"
    )
    t.set_defaults(func=_cmd_train, extra_ok=True)

    pr = sub.add_parser("probe", help="choose t and fit the head on a checkpoint")
    pr.add_argument(
        "checkpoint",
        help="a train run's diffecg.pt (choose t, fit the head) or a train-diffae run's "
        "diffae.pt (fit its head)",
    )
    pr.set_defaults(func=_cmd_probe)

    e = sub.add_parser(
        "export", help="turn a training run into a model bundle (needs ecgedge[export])"
    )
    e.add_argument(
        "--run",
        default="runs/cpu",
        help="a training run: ecgedge train (diffecg.pt, head.npz), train-diffae (diffae.pt, "
        "head.npz: bundle with the LRU step model) or train-dacl (dacl.json: scattering in the "
        "SDK); the last two give FP32 bundles and need --out",
    )
    e.add_argument(
        "--encoder",
        help="with a train-dacl --run: which of its encoders (default dacl; a baseline or "
        "ablation name from its dacl.json)",
    )
    e.add_argument(
        "--out", help="bundle directory to write (default with --run: bundles/diffecg-cpu)"
    )
    e.add_argument(
        "--int8-limit",
        type=_nonnegative,
        default=0.01,
        help="largest allowed FP32→INT8 metric drop",
    )
    e.add_argument(
        "--calibration-windows",
        type=_positive_int,
        default=256,
        help="real ECG windows for INT8 calibration",
    )
    e.add_argument(
        "--int8-budget",
        type=_nonnegative,
        default=0.02,
        help="largest mean change of the max class probability the INT8 layers may cause",
    )
    e.add_argument(
        "--target",
        choices=("cpu", "jetson"),
        default="cpu",
        help="jetson: TensorRT-form INT8, an FP16 graph, and refuse graphs TensorRT cannot run",
    )
    e.add_argument("--denoiser", help="denoiser run folder (denoiser.pt) to add as the denoiser")
    e.add_argument(
        "--base-bundle",
        help="a bundle folder or a shipped bundle's name (`ecgedge bundles`); with --denoiser: "
        "copy this bundle and only add (or replace) the denoiser; "
        "with --refit-head: the bundle whose head to refit; with --add-anchors: the bundle "
        "to add anchor windows to; with --rpeak-rule: the bundle to set the rule of",
    )
    e.add_argument(
        "--rpeak-rule",
        metavar="REPORT",
        help="copy --base-bundle with the search-back threshold an `ecgedge bench rpeak-tuning "
        "--bundle` report (JSON) of its denoiser chose, for R peaks on the denoiser's output",
    )
    e.add_argument(
        "--add-anchors",
        action="store_true",
        help="copy --base-bundle with anchor windows of every class (CinC 2017 training "
        "records, device path) that per-user calibration fits the user's head on too",
    )
    e.add_argument(
        "--refit-head",
        action="store_true",
        help="refit the head of --base-bundle on the features its device path computes "
        "(its denoiser included) on the head's CinC 2017 training records",
    )
    e.set_defaults(
        func=_cmd_export,
        # options of a DiffECG export only: a DiffAE-LRU or DACL run refuses them when set
        int8_defaults={
            d: e.get_default(d) for d in ("int8_limit", "int8_budget", "calibration_windows")
        },
    )

    td = sub.add_parser(
        "train-denoiser",
        help="train CD-ECGNet on clean ECG + NSTDB noise (--model.leads=N)",
        description=_where_runs_go(
            "train", smoke="runs/denoise-smoke", cpu="runs/denoise-1lead", gpu="runs/denoise-gpu"
        ),
    )
    td.add_argument("--preset", default="cpu", help=_PRESET_HELP)
    td.set_defaults(func=_cmd_train_denoiser, extra_ok=True)

    tdae = sub.add_parser(
        "train-diffae",
        help="DiffAE-LRU: LRU semantic encoder + conditioned U-Net, then the linear probe",
        description=_where_runs_go(
            "train", smoke="runs/diffae-smoke", cpu="runs/diffae-cpu", gpu="runs/diffae-gpu"
        ),
    )
    tdae.add_argument("--preset", default="cpu", help=_PRESET_HELP)
    tdae.add_argument("--no-probe", action="store_true", help="skip the probe after training")
    tdae.set_defaults(func=_cmd_train_diffae, extra_ok=True)

    tdacl = sub.add_parser(
        "train-dacl",
        help="DACL: scattering features, VAE, triplet encoder, both baselines and the ablation",
        description=_where_runs_go(
            "run", smoke="runs/dacl-smoke", cpu="runs/dacl", gpu="runs/dacl-paper"
        ),
    )
    tdacl.add_argument("--preset", default="cpu", help=_PRESET_HELP)
    tdacl.set_defaults(func=_cmd_train_dacl, extra_ok=True)

    f = sub.add_parser(
        "train-fusion", help="DiffECG multimodal: cross-modal fusion and head on frozen extractors"
    )
    f.add_argument("--raw", default="runs/cpu", help="raw-ECG run (ecgedge train --preset cpu)")
    f.add_argument("--spectrogram", default="runs/cpu-spectrogram", help="--preset cpu-spectrogram")
    f.add_argument("--lorenz", default="runs/cpu-lorenz", help="--preset cpu-lorenz run")
    f.add_argument("--out", default="runs/cpu-multimodal", help="folder to write")
    f.add_argument("--epochs", type=_positive_int, default=25, help="fusion training epochs")
    f.set_defaults(func=_cmd_train_fusion)

    ss = sub.add_parser(
        "structure-search", help="which pretrained U-Net stages make the best frozen features"
    )
    ss.add_argument("--run", default="runs/cpu", help="pretrained run with diffecg.pt, head.npz")
    ss.add_argument("--out", default="bench", help="folder for the JSON result and Markdown table")
    ss.set_defaults(func=_cmd_structure_search)

    em = sub.add_parser(
        "export-multimodal", help="raw bundle + train-fusion run -> a multimodal bundle"
    )
    em.add_argument("--bundle", default="bundles/diffecg-cpu", help="the raw-ECG bundle")
    em.add_argument("--run", default="runs/cpu-multimodal", help="the train-fusion folder")
    em.add_argument("--out", default="bundles/diffecg-cpu-multimodal", help="bundle to write")
    em.set_defaults(func=_cmd_export_multimodal)

    b = sub.add_parser(
        "bench",
        help=f"measure bundles and runs: {len(BENCHMARKS)} benchmarks ({', '.join(BENCHMARKS)})",
        description="Benchmarks (results as JSON and Markdown in --out):\n"
        + "\n".join(f"  {name:<13} {what}" for name, what in BENCHMARKS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    b.add_argument(
        "name", metavar="NAME", choices=tuple(BENCHMARKS), help="the benchmark (listed above)"
    )
    b.add_argument(
        "--levels",
        default="clean,6",
        help="rhythm-noise: input SNR levels in dB, 'clean' for no added noise",
    )
    b.add_argument(
        "--bundle",
        help=BUNDLE_HELP + "; anomaly: a comma-separated list",
    )
    b.add_argument(
        "--run",
        help="training run folder(s): rhythm, the FP32 linear-probe row; denoise, the runs to "
        "evaluate, comma-separated (without --run, denoise evaluates --bundle's denoiser alone "
        "on the protocol its manifest records)",
    )
    b.add_argument("--out", default="bench", help="folder for the JSON result and Markdown report")
    b.add_argument(
        "--minutes", type=_positive, default=30.0, help="stream: minutes of ECG to stream"
    )
    b.add_argument("--hop", type=_positive, help="stream: window hop in s (default: the bundle's)")
    b.add_argument(
        "--paced-minutes",
        type=_nonnegative,
        default=2.0,
        help="stream: minutes pushed at the sensor's pace (real time; 0 skips the paced row)",
    )
    b.add_argument(
        "--no-peers", action="store_true", help="stream: skip the PyTorch/NeuroKit2 peers"
    )
    b.add_argument("--card", action="store_true", help="refresh the bundle's MODEL_CARD.md")
    b.add_argument(
        "--report",
        help="rhythm, stream, noise-stress, rpeak-tuning, episodes, anomaly, denoise, "
        "personalize: name of the report "
        "files (default: the benchmark's)",
    )
    b.add_argument(
        "--no-denoise",
        action="store_true",
        help="anomaly: embed the windows without the bundle's denoiser",
    )
    b.set_defaults(func=_cmd_bench)

    c = sub.add_parser(
        "calibrate", help="per-user calibration of t and the head from a labelled recording"
    )
    c.add_argument(
        "record",
        help="WFDB record path without extension, with rhythm annotations (or --labels)",
    )
    c.add_argument(
        "--labels",
        metavar="CSV",
        help="labelled stretches instead of the record's annotations, one start_s,end_s,class "
        "per line (classes of the bundle, e.g. N, A): for a session saved by stream --save",
    )
    c.add_argument("--out", required=True, help="profile file to write (JSON, mode 0600)")
    c.add_argument("--user", default="user", help="an opaque user identifier stored in the profile")
    c.add_argument("--bundle", help=BUNDLE_HELP)
    c.add_argument(
        "--minutes",
        type=_nonnegative,
        default=10.0,
        help="use the record's first N minutes (0 = all)",
    )
    c.add_argument("--lead", type=int, default=0, help="lead index")
    c.add_argument("--objective", default="gamma", help="gamma | delta_acc | delta_f1 | delta_loss")
    c.add_argument(
        "--max-evals",
        type=_positive_int,
        default=None,
        help="objective evaluations of the search of t at most (each runs the extractor of "
        "every modality whose t is new); default: the SDK's budgets, 30 evaluations and 30 "
        "extractor runs (10 to 15 evaluations of the shipped three-modality bundle)",
    )
    c.add_argument("--max-seconds", type=_positive, help="wall-time budget of the search")
    c.add_argument(
        "--plot",
        metavar="PNG",
        help="also draw the search of t: the objective at each t tried per modality, the "
        "chosen and the bundle's t, the best so far (needs ecgedge[plot])",
    )
    c.add_argument(
        "--no-denoise",
        action="store_true",
        help="calibrate without the bundle's denoiser (for `stream --no-denoise`)",
    )
    c.add_argument(
        "--anchors",
        choices=("missing", "all", "none"),  # sdk.anchors.ANCHOR_MODES (a test checks)
        help="the bundle's anchor windows the user's head is also fitted on: those of the "
        "classes the recording has none of (e.g. O, ~), all, or none (default: the "
        "Calibrator's, sdk.calibration.calibrator.DEFAULT_ANCHORS)",
    )
    c.set_defaults(func=_cmd_calibrate)

    s = sub.add_parser("stream", help="stream a WFDB record, a simulated strap or a BLE sensor")
    src = s.add_mutually_exclusive_group()
    src.add_argument("--ble", metavar="ADDRESS", help="BLE sensor address or name")
    src.add_argument("--simulate", action="store_true", help="a virtual Polar H10 (PMD frames)")
    s.add_argument("--record", help="WFDB record path without extension (played, or simulated)")
    s.add_argument("--user-profile", help="a profile from `ecgedge calibrate` (t and head)")
    s.add_argument("--bundle", help=BUNDLE_HELP)
    s.add_argument(
        "--speed",
        type=_nonnegative,
        default=1.0,
        help="record, simulate: 1 = real time; 0 = as fast as possible (a simulation then runs "
        "on virtual time)",
    )
    s.add_argument("--lead", type=int, default=0, help="lead index to stream")
    s.add_argument(
        "--seconds",
        type=_nonnegative,
        default=0.0,
        help="record, simulate: stop after this much ECG (0 = all)",
    )
    s.add_argument("--profile", choices=("h10", "open"), default="h10", help="BLE sensor profile")
    s.add_argument("--hop", type=_positive, help="seconds between windows (default: the bundle's)")
    s.add_argument(
        "--stateful",
        choices=("auto", "on", "off"),
        default="auto",
        help="embed with the bundle's step model per block (DiffAE-LRU); auto: when the hop is "
        "one block",
    )
    s.add_argument(
        "--no-denoise", action="store_true", help="skip the bundle's denoiser, if it has one"
    )
    s.add_argument("--allow", nargs="*", help="BLE allow-list of addresses or names")
    s.add_argument(
        "--loss", type=float, default=0.0, help="simulate: notification loss probability"
    )
    s.add_argument("--jitter", type=float, default=0.0, help="simulate: mean extra delay, ms")
    s.add_argument("--duplicate", type=float, default=0.0, help="simulate: duplication probability")
    s.add_argument("--corrupt", type=float, default=0.0, help="simulate: corruption probability")
    s.add_argument(
        "--timestamp-glitch",
        type=float,
        default=0.0,
        help="simulate: probability that a frame's sensor timestamp has one bit flipped",
    )
    s.add_argument(
        "--disconnect-every", type=_nonnegative, default=0.0, help="simulate: link drop period, s"
    )
    s.add_argument(
        "--compressed", action="store_true", help="simulate: delta-compressed PMD frames"
    )
    s.add_argument("--seed", type=int, default=0, help="simulate: impairment seed")
    s.add_argument(
        "--save",
        help="simulate, BLE: write what was received as a WFDB record (session.hea, .dat, "
        ".gap) in this folder, which must not hold one yet",
    )
    s.set_defaults(
        func=_cmd_stream,
        stream_defaults={o: s.get_default(_dest(o)) for o in STREAM_OPTION_SOURCES},
    )

    sc = sub.add_parser("sensors", help="BLE sensors: scan (needs ecgedge[ble])")
    sc.add_argument("action", choices=("scan",))
    sc.add_argument("--timeout", type=_positive, default=5.0, help="scan duration, s")
    sc.add_argument("--name-prefix", help="only names starting with this, e.g. 'Polar H10'")
    sc.add_argument("--all", action="store_true", help="list every device, not only ECG/HR ones")
    sc.set_defaults(func=_cmd_sensors)

    d = sub.add_parser("demo", help="live rhythm, heart rate, quality and latency in the terminal")
    d.add_argument("--bundle", help=BUNDLE_HELP)
    d.add_argument("--fast", action="store_true", help="no real-time pacing")
    d.add_argument(
        "--seconds",
        type=_nonnegative,
        default=0.0,
        help="stop after this much ECG (0 = whole record)",
    )
    d.add_argument(
        "--synthetic",
        action="store_true",
        help="use the built-in synthetic ECG even if data exists",
    )
    d.add_argument(
        "--speed",
        type=_positive,
        default=None,
        help="times real time (default 20; --fast instead plays as fast as possible)",
    )
    d.set_defaults(func=_cmd_demo)

    bl = sub.add_parser(
        "bundles", help="the shipped bundles (or --bundle ones): verified, what they run"
    )
    bl.add_argument("--bundle", help="comma-separated bundle folders or shipped names")
    bl.set_defaults(func=_cmd_bundles)

    en = sub.add_parser(
        "engines", help="TensorRT: check a bundle's graphs, build its engines on this device"
    )
    en.add_argument("--bundle", help=BUNDLE_HELP)
    en.add_argument(
        "--precision", nargs="+", choices=("fp32", "fp16", "int8"), default=["fp16", "int8"]
    )
    en.add_argument(
        "--out", help="engine cache (default: $ECGEDGE_ENGINES or ~/.cache/ecgedge/engines)"
    )
    en.add_argument(
        "--max-batch", type=_positive_int, default=8, help="largest batch of the profile"
    )
    en.add_argument("--force", action="store_true", help="rebuild even if a cached engine exists")
    en.add_argument("--check", action="store_true", help="only check the graphs (no GPU needed)")
    en.set_defaults(func=_cmd_engines)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "extra_ok", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command in ("bench", "structure-search"):
        from trainer.bench.report import record_invocation

        record_invocation(["ecgedge", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.func(args, extra) or 0)
    except KeyboardInterrupt:
        hint = {  # what an interrupted training leaves in its folder
            "train": ": the run folder keeps the last checkpoint written (every "
            "train.ckpt_every steps), marked unfinished: probe and export refuse it until the "
            "run is trained again",
            "train-denoiser": ": the run folder keeps the best checkpoint validated so far, "
            "marked unfinished: export refuses it until the run is trained again",
        }.get(args.command, "")
        print(f"\necgedge {args.command}: interrupted{hint}", file=sys.stderr)
        return 130
    except Exception as exc:
        ours = type(exc).__module__.split(".")[0] in _OUR_PACKAGES
        if not (ours or isinstance(exc, (ValueError, OSError, ImportError))):
            raise
        print(f"ecgedge {args.command}: error: {_missing_extra(exc) or exc}", file=sys.stderr)
        return 2


#: optional packages a command may need → the extra that installs them
_EXTRA_OF = {
    "torch": "train",
    "tqdm": "train",
    "kymatio": "dacl",
    "onnx": "export",
    "onnxscript": "export",
    "onnxconverter_common": "export",
    "wfdb": "replay",
    "bleak": "ble",
    "matplotlib": "plot",
    "tensorrt": "tensorrt",
    "cuda": "tensorrt",
    "sklearn": "dev",
    "neurokit2": "dev",
}


def _missing_extra(exc: BaseException) -> str | None:
    """For an optional package that is not installed: which extra installs it."""
    if not isinstance(exc, ModuleNotFoundError) or not exc.name:
        return None
    top = exc.name.split(".")[0]
    extra = _EXTRA_OF.get(top)
    if extra is None:
        return None
    hint = (
        " (first the torch build for your machine: `pip install torch==2.13.0` for the CPU, "
        "README › Install for CUDA)"
        if top == "torch"
        else ""
    )
    return f"{top} is not installed: pip install 'ecgedge[{extra}]'{hint}"


if __name__ == "__main__":
    sys.exit(main())
