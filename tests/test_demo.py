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


def test_demo_without_data_says_where_it_looked(tmp_path):
    """It played the synthetic ECG without saying why, so a wrong ECGEDGE_DATA went unseen."""
    import os

    env = {**os.environ, "ECGEDGE_DATA": str(tmp_path / "nowhere")}
    out = subprocess.run(
        [sys.executable, "-m", "ecgedge", "demo", "--fast", "--seconds", "5"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    first = out.stdout.splitlines()[0]
    assert "synthetic" in first and f"no {tmp_path / 'nowhere' / 'mitdb' / '201'}.hea" in first
    assert "set ECGEDGE_DATA" in first


def test_a_record_the_sdk_would_refuse_is_not_played_by_a_virtual_strap(tmp_path):
    """The strap resampled a 50 Hz record to its 130 Hz and streamed it; stream --record
    refused the same record."""
    from sdk.synthetic import synthetic_ecg
    from tests.wfdb_records import write_record

    ecg = synthetic_ecg((("sinus", 60.0),), fs=250.0, seed=2)
    write_record(tmp_path, "slow", ecg.signal[::5], fs=50)  # 50 Hz: below the SDK's 80 Hz
    out = run_cli("stream", "--simulate", "--record", str(tmp_path / "slow"), "--speed", "0")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"{tmp_path / 'slow'}.hea: " in out.stderr and "50 Hz" in out.stderr


def test_a_truncated_signal_file_is_named_as_such(tmp_path):
    """wfdb's own error was numpy's ("operands could not be broadcast together ...")."""
    from tests.wfdb_records import write_record
    from trainer.data.records import read_signal
    from trainer.errors import DataError

    write_record(tmp_path, "rec", np.zeros(5000))
    dat = tmp_path / "rec.dat"
    size = dat.stat().st_size
    dat.write_bytes(dat.read_bytes()[:1001])
    with pytest.raises(DataError, match=rf"rec.dat holds 1001 of the {size} bytes its header"):
        read_signal(tmp_path / "rec", database="x")


def test_the_fallback_reason_is_apart_from_what_is_played(tmp_path, monkeypatch):
    """bench bridge wrote the reason into its report's source line."""
    from ecgedge.demo import demo_recording
    from sdk.bundle import default_bundle_path, load_bundle

    monkeypatch.setenv("ECGEDGE_DATA", str(tmp_path))
    spec = load_bundle(default_bundle_path()).manifest.preprocess
    recording, source, why = demo_recording(True, spec)
    assert recording.name == "synthetic" and source == "built-in synthetic ECG (sinus → AF → sinus)"
    assert why.startswith(f"; no {tmp_path / 'mitdb' / '201'}.hea")
    assert demo_recording(False, spec)[2] == ""  # --synthetic asked for it: nothing to explain


def test_stream_simulate_says_what_it_plays():
    out = run_cli("stream", "--simulate", "--seconds", "12", "--speed", "0")
    assert out.returncode == 0, out.stderr
    first = out.stdout.splitlines()[0]
    assert "built-in synthetic ECG" in first and "its first 12 s" in first


def test_the_live_view_shows_a_pause(capsys):
    from ecgedge.demo import LiveView
    from sdk.events import WindowEvent
    from sdk.quality import QualityReport

    def window(longest_rr_s):
        return WindowEvent(
            index=0,
            start_s=0.0,
            end_s=10.0,
            label="N",
            probabilities={"N": 1.0},
            quality=QualityReport(ok=True, score=1.0, flags=()),
            flagged=False,
            heart_rate_bpm=75.0,
            n_beats=9,
            t=1,
            denoised=True,
            latency_ms=5.0,
            longest_rr_s=longest_rr_s,
        )

    view = LiveView()
    view(window(0.8))
    view(window(6.0))
    lines = capsys.readouterr().out.splitlines()
    assert "pause" not in lines[0] and "75 bpm (pause 6.0 s)" in lines[1]
