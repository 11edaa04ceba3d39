"""``ecgedge calibrate --max-evals N`` runs up to N objective evaluations on a bundle of
several modalities, and ``stream --user-profile`` uses the profile it writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ecgedge.calibrate import budgets
from ecgedge.cli import main
from sdk.bundle import default_bundle_path, load_bundle

EVALS = 11  # above the 10 the Calibrator's default extractor budget allows three modalities


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(record, profile): 2 min of the synthetic ECG (sinus, AF) with rhythm annotations,
    calibrated by ``ecgedge calibrate --max-evals EVALS``."""
    wfdb = pytest.importorskip("wfdb")
    from sdk.synthetic import synthetic_ecg
    from tests.wfdb_records import write_record

    folder = tmp_path_factory.mktemp("calibrate")
    ecg = synthetic_ecg((("sinus", 60.0), ("af", 60.0)), fs=250.0, seed=1)
    write_record(folder, "rec", ecg.signal)
    starts = np.array([s for s, _, _ in ecg.rhythm])
    notes = [f"({'AFIB' if lab.startswith('AF') else 'N'}" for _, _, lab in ecg.rhythm]
    wfdb.wrann(
        "rec", "atr", starts, symbol=["+"] * len(starts), aux_note=notes, write_dir=str(folder)
    )
    profile = folder / "p.json"
    argv = ["calibrate", str(folder / "rec"), "--out", str(profile), "--minutes", "0"]
    assert main([*argv, "--max-evals", str(EVALS)]) == 0
    return folder / "rec", profile


def test_max_evals_is_the_number_of_objective_evaluations(calibrated, capsys) -> None:
    _, profile = calibrated
    assert len(load_bundle(default_bundle_path()).manifest.modalities) == 3
    calibration = json.loads(profile.read_text())["calibration"]
    assert calibration["objective_evaluations"] == EVALS
    assert calibration["stopped"] == "budget"
    assert calibration["extractor_evaluations"] <= EVALS * 3


def test_the_extractor_budget_never_binds_before_max_evals_and_the_default_is_the_sdks() -> None:
    assert budgets(30, 3) == {"max_evals": 30, "max_extractor_evals": 90}
    assert budgets(1, 1) == {"max_evals": 1, "max_extractor_evals": 1}
    assert budgets(None, 3) == {}  # the Calibrator's own budgets


def test_stream_uses_a_profile_from_calibrate(calibrated, capsys) -> None:
    record, profile = calibrated
    argv = ["stream", "--record", str(record), "--speed", "0", "--seconds", "20"]
    assert main([*argv, "--user-profile", str(profile)]) == 0
    captured = capsys.readouterr()
    assert "user profile" not in captured.err
    windows = [line for line in captured.out.splitlines() if " HR " in line]
    assert windows and all(" user" in line for line in windows)
    assert main(argv) == 0  # without the profile no window says so
    assert not any(" user" in line for line in capsys.readouterr().out.splitlines())
