"""``ecgedge train-diffae`` / ``train-dacl`` smoke runs exported by ``ecgedge export --run``:
the bundles load, stream, and record the commands that made them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ecgedge.cli import main
from sdk.bundle import load_bundle
from sdk.events import WindowEvent
from sdk.pipeline import StreamPipeline
from sdk.synthetic import synthetic_ecg


def _streams(bundle: Path, **kw: bool) -> int:
    """Windows a bundle's pipeline classifies on 30 s of synthetic ECG."""
    pipe = StreamPipeline(bundle, fs_in=250.0, **kw)
    x = synthetic_ecg((("sinus", 30.0),), fs=250.0, seed=1).signal
    events = [e for i in range(0, len(x), 250) for e in pipe.push(x[i : i + 250])]
    windows = [e for e in events if isinstance(e, WindowEvent)]
    for e in windows:
        assert np.isclose(sum(e.probabilities.values()), 1.0, atol=1e-4)
    return len(windows)


@pytest.mark.data("cinc2017")
def test_diffae_smoke_run_exports_a_streaming_bundle(tmp_path: Path, capsys) -> None:
    run, out = tmp_path / "diffae", tmp_path / "lru-bundle"
    assert main(["train-diffae", "--preset", "smoke", f"--train.out_dir={run}"]) == 0
    assert (run / "diffae.pt").is_file() and (run / "head.npz").is_file()
    assert main(["export", "--run", str(run), "--out", str(out)]) == 0
    b = load_bundle(out)
    assert b.manifest.name == "diffae-lru-smoke"
    commands = json.loads((out / "manifest.json").read_text())["provenance"]["commands"]
    assert commands == {
        "train": f"ecgedge train-diffae --preset smoke --train.out_dir={run}",
        "export": f"ecgedge export --run {run} --out {out}",
    }
    step = json.loads((out / "manifest.json").read_text())["streaming"]
    assert step["hop_samples"] == 128 and (out / step["path"]).is_file()
    assert _streams(out, stateful=True) >= 3
    payload = torch.load(run / "diffae.pt", weights_only=True)  # retrained, not probed again
    payload["step"] += 1
    torch.save(payload, run / "diffae.pt")
    capsys.readouterr()
    assert main(["export", "--run", str(run), "--out", str(out)]) == 2
    assert "head was fitted on another diffae.pt" in capsys.readouterr().err


@pytest.mark.data("cinc2017")
def test_dacl_smoke_run_exports_the_chosen_encoder(tmp_path: Path, capsys) -> None:
    run, out = tmp_path / "dacl", tmp_path / "dacl-bundle"
    assert main(["train-dacl", "--preset", "smoke", f"--run.out_dir={run}"]) == 0
    results = json.loads((run / "dacl.json").read_text())
    assert results["preset"] == "smoke" and results["data"]["max_records"] == 24
    assert {"dacl", "dae"} <= set(results)
    capsys.readouterr()
    for name in ("ablation_mid", "vae"):  # not trained; not an encoder
        assert main(["export", "--run", str(run), "--encoder", name, "--out", str(out)]) == 2
        assert f"has no encoder '{name}'; it has ['dacl', 'dae']" in capsys.readouterr().err
        assert not out.exists() and not (run / name).exists()
    assert main(["export", "--run", str(run), "--encoder", "dae", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["name"] == "dacl-dae"
    assert manifest["provenance"]["commands"]["train"] == (
        f"ecgedge train-dacl --preset smoke --run.out_dir={run}"
    )
    assert _streams(out) >= 3
    # the torch probe rows `bench rhythm --run` reads come from training, not from an export
    assert json.loads((run / "dacl" / "probe.json").read_text()) == results["dacl"]
    # files of another run or generation beside each other are refused
    enc = torch.load(run / "dae.pt", weights_only=True)
    enc["encoder"] = {k: v * 1.01 for k, v in enc["encoder"].items()}
    torch.save(enc, run / "dae.pt")  # figures in dacl.json are no longer this encoder's
    assert main(["export", "--run", str(run), "--encoder", "dae", "--out", str(out)]) == 2
    assert "dacl.json's figures are not those of the dae.pt" in capsys.readouterr().err
    vae = torch.load(run / "vae.pt", weights_only=True)
    vae["mean"] = vae["mean"] + 1.0
    torch.save(vae, run / "vae.pt")  # the encoders trained on another VAE's latents
    assert main(["export", "--run", str(run), "--encoder", "dacl", "--out", str(out)]) == 2
    assert "not trained on the latents of the vae.pt beside it" in capsys.readouterr().err


def test_export_refuses_a_folder_of_no_run_and_flags_of_another_kind(
    tmp_path: Path, capsys
) -> None:
    run, out = tmp_path / "run", str(tmp_path / "b")
    run.mkdir()
    assert main(["export", "--run", str(run), "--out", out]) == 2
    assert "holds none of" in capsys.readouterr().err
    (run / "diffae.pt").write_bytes(b"")
    argv = ["export", "--run", str(run), "--out", out, "--target", "jetson"]
    assert main(argv) == 2
    assert "--target jetson: not for a diffae-lru run" in capsys.readouterr().err
    assert main([*argv[:-2], "--int8-limit", "0.05"]) == 2
    assert "--int8-limit: not for a diffae-lru run" in capsys.readouterr().err
    assert main(["export", "--run", str(run), "--out", str(run / "bundle")]) == 2
    assert "lies inside" in capsys.readouterr().err
    (run / "dacl.json").write_text("{}")
    assert main(["export", "--run", str(run), "--out", out]) == 2
    assert "more than one of" in capsys.readouterr().err
