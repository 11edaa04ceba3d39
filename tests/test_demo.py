"""The main job runs end to end (fast mode, a few seconds of ECG) from the command line."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ecgedge", *args], capture_output=True, text=True, timeout=300
    )


def test_demo_on_synthetic_ecg_prints_windows_and_a_summary():
    out = run_cli("demo", "--fast", "--synthetic", "--seconds", "40")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "synthetic" in lines[0]
    assert sum(" HR " in line for line in lines) >= 6  # one line per 5 s window
    assert any(line.strip().startswith("window latency") for line in lines)


def test_cli_reports_a_bad_bundle_as_an_error_not_a_traceback(tmp_path):
    out = run_cli("demo", "--fast", "--synthetic", "--seconds", "5", "--bundle", str(tmp_path))
    assert out.returncode == 2
    assert "manifest.json not found" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.data("mitdb")
def test_stream_replays_a_wfdb_record(data_root):
    record = data_root / "mitdb" / "201"
    out = run_cli("stream", "--record", str(record), "--speed", "0", "--seconds", "30")
    assert out.returncode == 0, out.stderr
    windows = [line for line in out.stdout.splitlines() if " HR " in line]
    assert len(windows) >= 4


@pytest.mark.data("mitdb")
def test_simulated_strap_with_loss_saves_a_replayable_record(data_root, tmp_path):
    wfdb = pytest.importorskip("wfdb")
    out = run_cli(
        "stream",
        "--simulate",
        "--record",
        str(data_root / "mitdb" / "201"),
        "--seconds",
        "60",
        "--loss",
        "0.05",
        "--jitter",
        "50",
        "--seed",
        "3",
        "--speed",
        "0",  # virtual time: the run repeats exactly, whatever the host's load
        "--save",
        str(tmp_path),
    )
    assert out.returncode == 0, out.stderr
    rec = wfdb.rdrecord(str(tmp_path / "session"))
    ann = wfdb.rdann(str(tmp_path / "session"), "gap")
    # deterministic on virtual time: the first and last frames arrive, 6 between are lost
    assert rec.fs == 130 and rec.sig_len == 60 * 130
    lost = sum(int(note.split()[1]) for note in ann.aux_note)
    assert lost == int(np.isnan(rec.p_signal[:, 0]).sum()) == 6 * 73  # every gap annotated


@pytest.mark.data("mitdb")
@pytest.mark.parametrize("flags, denoised", [((), True), (("--no-denoise",), False)])
def test_calibrate_writes_a_profile_that_says_whether_it_denoised(
    data_root, tmp_path, flags, denoised
):
    out_path = tmp_path / "p.json"
    args = ["--minutes", "10", "--max-evals", "3", "--out", str(out_path), *flags]
    out = run_cli("calibrate", str(data_root / "mitdb" / "201"), *args)
    assert out.returncode == 0, out.stderr
    assert "calibrated 'user'" in out.stdout
    profile = json.loads(out_path.read_text())
    assert profile["calibration"]["denoised"] is denoised
