"""Export: torch vs ONNX parity, INT8 calibration, the accuracy gate, a verifiable bundle."""

from __future__ import annotations

import json

import numpy as np
import pytest

from export.build import FP32_PARITY_TOL, build_bundle
from export.errors import AccuracyGateError
from sdk.bundle import default_bundle_path, load_bundle
from trainer.config import load_preset
from trainer.probe import run_probe
from trainer.train_diffusion import train

#: INT8 vs FP32 class probabilities of the shipped bundle, worst window (max |Δp|; measured
#: 0.044 on the synthetic record below, denoised)
INT8_PROB_TOL = 0.05


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cfg = load_preset("smoke", {"data.source": "synthetic", "train.out_dir": str(out)})
    result = train(cfg)
    run_probe(result.checkpoint, out)
    return out


@pytest.mark.slow
def test_bundle_from_a_run_has_parity_and_verifies(smoke_run, tmp_path):
    result = build_bundle(
        smoke_run, tmp_path / "bundle", int8_limit=1.0, calibration_windows=16, int8_budget=1.0
    )
    parity = result.figures["parity"]
    assert parity["fp32_max_rel"] <= FP32_PARITY_TOL
    bundle = load_bundle(tmp_path / "bundle")
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert manifest["metrics"]["rhythm_val_sdk"]["int8_drop"].keys() >= {"challenge_f1"}
    assert {f.precision for f in bundle.manifest.files if f.role == "embedder"} == {"fp32", "int8"}
    card = (tmp_path / "bundle" / "MODEL_CARD.md").read_text()
    assert card.startswith("# Model card")
    # a synthetic-data run says so, never that it saw CinC 2017
    assert manifest["provenance"]["training_data"]["source"] == "synthetic"
    assert "Trained and validated on synthetic ECG only" in card
    assert "## Validation (synthetic windows, record level)" in card
    assert "AliveCor" not in card and "seen no recording of any device" in card


def test_the_cards_limits_name_the_data_the_model_was_pretrained_on():
    from export.model_card import _limits

    only = _limits({"source": "shared", "pretrain": ["cinc2017"]})
    assert "(CinC 2017);" in only and "pretrained also" not in only
    more = _limits({"source": "shared", "pretrain": ["cinc2017", "mitdb", "cpsc2021"]})
    assert "pretrained also on MIT-BIH Arrhythmia and CPSC 2021" in more


@pytest.mark.slow
def test_accuracy_gate_refuses_and_publishes_nothing(smoke_run, tmp_path):
    with pytest.raises(AccuracyGateError) as err:
        build_bundle(
            smoke_run, tmp_path / "bundle", int8_limit=-1.0, calibration_windows=16, int8_budget=1.0
        )
    assert err.value.limit == -1.0
    assert not (tmp_path / "bundle").exists()


@pytest.mark.slow
def test_mixed_precision_keeps_the_most_sensitive_layers_in_float(smoke_run, tmp_path):
    import onnx

    from export.onnx_export import export_extractor
    from export.quantize import mixed_precision_int8, quantizable_nodes
    from trainer.checkpoint import load_checkpoint
    from trainer.probe import build_extractor, inference_noise

    cfg, state, _ = load_checkpoint(smoke_run / "diffecg.pt")
    fp32 = tmp_path / "fp32.onnx"
    export_extractor(build_extractor(cfg, state), cfg.data.window, 1, fp32)
    nodes = quantizable_nodes(fp32)
    penalty = {n: (i + 1) / len(nodes) for i, n in enumerate(nodes)}  # later = more sensitive

    def error_of(path):
        model = onnx.load(str(path))
        dequantized = {
            i for n in model.graph.node if n.op_type == "DequantizeLinear" for i in n.output
        }
        quantized = [
            n.name
            for n in model.graph.node
            if n.name in penalty and any(i in dequantized for i in n.input[1:2])
        ]
        return sum(penalty[n] for n in quantized) / len(nodes)

    windows = np.random.default_rng(0).standard_normal((8, 1, cfg.data.window)).astype(np.float32)
    calls: list[tuple[int, int]] = []
    kept, err = mixed_precision_int8(
        fp32,
        tmp_path / "int8.onnx",
        windows,
        1,
        inference_noise(1, cfg.data.window),
        error_of,
        budget=0.2,
        progress=lambda done, most: calls.append((done, most)),
    )
    assert err <= 0.2 and kept  # the budget holds and some layers had to stay float
    # every trial reported, counted up to within the bound the bar shows as its total
    assert [d for d, _ in calls] == list(range(1, len(calls) + 1))
    assert len({m for _, m in calls}) == 1 and len(nodes) + 1 < len(calls) <= calls[0][1]
    cheapest_kept = min(penalty[n] for n in kept)
    assert all(
        penalty[n] < cheapest_kept for n in nodes if n not in kept
    )  # least sensitive go INT8
    # a budget no single layer meets: nothing is quantized and the error says by how much
    kept, err = mixed_precision_int8(
        fp32,
        tmp_path / "int8.onnx",
        windows,
        1,
        inference_noise(1, cfg.data.window),
        lambda path: 1.0 + error_of(path),
        budget=0.5,
    )
    assert set(kept) == set(nodes) and err >= 1.0


def test_parity_of_nan_or_misshapen_outputs_fails_every_tolerance():
    from export.onnx_export import compare

    ref = np.ones((2, 4), np.float32)
    assert compare(ref, ref + 1e-6).ok(1e-4)
    for other in (np.full((2, 4), np.nan, np.float32), np.ones((1, 4), np.float32)):
        assert not compare(ref, other).ok(1e30)


@pytest.mark.slow
@pytest.mark.data("mitdb", "nstdb")  # the smoke denoiser trains on them
def test_the_cli_builds_a_bundle_with_a_denoiser_in_one_command(smoke_run, tmp_path, capsys):
    """``export --run R --denoiser D --out B`` builds B, then adds D to B in place."""
    from ecgedge.cli import main
    from trainer.denoise_config import load_denoise_preset
    from trainer.train_denoiser import train_denoiser

    den = tmp_path / "den"
    train_denoiser(load_denoise_preset("smoke", {"train.out_dir": str(den), "train.steps": "2"}))
    out = tmp_path / "bundle"
    argv = ["export", "--run", str(smoke_run), "--denoiser", str(den), "--out", str(out)]
    gates = ["--int8-limit", "1.0", "--int8-budget", "1.0", "--calibration-windows", "16"]
    assert main([*argv, *gates]) == 0
    bundle = load_bundle(out)
    assert bundle.manifest.has("denoiser")
    # the command recorded is the one that ran (not an in-place form the CLI refuses)
    recorded = bundle.manifest.provenance["denoiser"]["commands"]["export"]
    assert recorded == f"ecgedge export --run {smoke_run} --denoiser {den} --out {out}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "bundle.lock", "den"]
    (den / "denoiser.pt").write_bytes(b"truncated")  # a bad denoiser: refused before building
    capsys.readouterr()
    assert main([*argv, *gates]) == 2
    assert "denoiser.pt" in capsys.readouterr().err
    assert load_bundle(out).manifest.has("denoiser")  # the bundle there is untouched


def test_the_multimodal_card_has_one_row_per_modality():
    """The raw modality's FP32 and INT8 embedders are one row (the card listed raw twice)."""
    from export.model_card import _multimodal_section

    manifest = json.loads((default_bundle_path() / "manifest.json").read_text())
    fp32 = next(f for f in manifest["files"] if f["path"] == "embedder.fp32.onnx")
    manifest["files"].append(fp32 | {"path": "embedder.int8.onnx", "precision": "int8"})
    section = _multimodal_section(manifest)
    rows = [line for line in section if line.startswith("| raw |") and "embedder" in line]
    assert len(rows) == 1 and "`embedder.fp32.onnx`, `embedder.int8.onnx`" in rows[0]


def test_layers_fed_only_by_the_diffusion_step_are_never_int8(tmp_path):
    """The shipped INT8 graph's one INT8 layer was the time-embedding MLP, calibrated at one t:
    at t = 10 it clipped half the embedding and changed 12% of the predicted classes."""
    import onnx

    from export.quantize import float_only_nodes, mixed_precision_int8, quantizable_nodes

    fp32 = default_bundle_path() / "embedder.fp32.onnx"
    candidates, kept_float = quantizable_nodes(fp32), float_only_nodes(fp32)
    assert candidates and not any("time" in n for n in candidates)
    assert "/encoder/time_mlp/time_mlp.0/Gemm" in kept_float
    rng = np.random.default_rng(0)
    windows = rng.standard_normal((4, 1, 1280)).astype(np.float32)
    noise = rng.standard_normal((1, 1, 1280)).astype(np.float32)
    out = tmp_path / "int8.onnx"
    kept, _ = mixed_precision_int8(fp32, out, windows, 1, noise, lambda _: 0.0, budget=1.0)
    assert kept == []  # every signal layer fits this budget: all of them INT8
    graph = onnx.load(str(out)).graph
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    by_name = {n.name: n for n in graph.node}
    for name in kept_float:  # no time-embedding layer reads a dequantized tensor
        assert not set(by_name[name].input) & dequantized, name
    assert any(set(by_name[n].input) & dequantized for n in candidates if n in by_name)


def test_the_card_says_when_no_int8_graph_ships(tmp_path):
    """The card listed the INT8 search's figures as if an INT8 graph shipped, and claimed that
    it 'passed the accuracy gate' while the bundle had none."""
    import shutil

    from export.model_card import write_model_card

    root = tmp_path / "b"
    shutil.copytree(default_bundle_path(), root)
    card = write_model_card(root).read_text()
    line = next(x for x in card.splitlines() if x.startswith("- INT8 (raw embedder)"))
    assert "not shipped" in line
    assert "no INT8 graph ships" in card and "passed the accuracy gate" not in card
