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


def test_a_saved_session_calibrates_from_a_labels_file(tmp_path: Path, capsys) -> None:
    from sdk.synthetic import synthetic_ecg
    from tests.wfdb_records import write_record

    ecg = synthetic_ecg((("sinus", 60.0), ("af", 60.0)), fs=250.0, seed=3)
    x = ecg.signal.astype(np.float64)
    x[5000:5400] = np.nan  # lost samples, as a saved session keeps them
    write_record(tmp_path, "session", x)  # no annotations
    argv = ["calibrate", str(tmp_path / "session"), "--out", str(tmp_path / "p.json")]
    assert main([*argv, "--minutes", "0", "--max-evals", "4"]) == 2
    assert "give --labels FILE" in capsys.readouterr().err
    labels = tmp_path / "labels.csv"
    labels.write_text("# start_s,end_s,class\n0,60,N\n\n60,120,A  # the AF minute\n")
    assert main([*argv, "--minutes", "0", "--max-evals", "4", "--labels", str(labels)]) == 0
    counts = json.loads((tmp_path / "p.json").read_text())["calibration"]["label_counts"]
    assert counts["N"] > 0 and counts["A"] > 0 and set(counts) <= {"N", "A"}


def test_labels_beyond_minutes_are_reported_and_none_left_names_minutes(
    tmp_path: Path, capsys
) -> None:
    from sdk.synthetic import synthetic_ecg
    from tests.wfdb_records import write_record

    ecg = synthetic_ecg((("sinus", 60.0), ("af", 60.0)), fs=250.0, seed=3)
    write_record(tmp_path, "session", ecg.signal.astype(np.float64))
    labels = tmp_path / "labels.csv"
    labels.write_text("70,120,A\n")
    argv = ["calibrate", str(tmp_path / "session"), "--out", str(tmp_path / "p.json")]
    argv += ["--max-evals", "2", "--labels", str(labels)]
    assert main([*argv, "--minutes", "1"]) == 2
    err = capsys.readouterr().err
    assert "no labelled stretch starts within the first --minutes 1" in err
    assert "the first starts at 70 s" in err and "--minutes 0" in err
    assert not (tmp_path / "p.json").exists()
    labels.write_text("0,60,N\n60,120,A\n")
    assert main([*argv, "--minutes", "1.5"]) == 0
    assert "30 s of labelled ECG lie beyond the first --minutes 1.5" in capsys.readouterr().err
    counts = json.loads((tmp_path / "p.json").read_text())["calibration"]["label_counts"]
    assert counts["N"] > 0 and counts["A"] > 0


def test_a_labels_file_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    from ecgedge.calibrate import read_labels

    path = tmp_path / "labels.csv"
    path.write_bytes("0,60,N\r\n60,90,A\r\n".encode("utf-8-sig"))  # as a spreadsheet saves it
    assert read_labels(path, ("N", "A"), 120.0) == [(0.0, 60.0, "N"), (60.0, 90.0, "A")]


@pytest.mark.parametrize(
    "text, message",
    [
        ("0,60,X\n", "line 1: class 'X' is not one of"),
        ("0,60\n", "line 1: expected start_s,end_s,class"),
        ("a,60,N\n", "line 1: start and end must be seconds"),
        ("60,0,N\n", "line 1: need 0 <= start < end"),
        ("0,nan,N\n", "line 1: need 0 <= start < end"),
        ("0,500,N\n", "line 1: ends at 500 s, the record lasts 120 s"),
        ("0,60,N\n30,90,A\n", "lines 1 and 2: stretches overlap at 30 s"),
        ("# nothing\n", "no labelled stretch"),
    ],
)
def test_a_bad_labels_file_is_refused_naming_the_line(tmp_path: Path, text, message) -> None:
    from ecgedge.calibrate import read_labels

    path = tmp_path / "labels.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_labels(path, ("N", "A", "O", "~"), 120.0)


def test_calibrate_draws_the_search_of_t(calibrated, tmp_path: Path, capsys) -> None:
    """--plot: one panel per modality and the best-so-far panel, the chosen t as a red star."""
    pytest.importorskip("matplotlib")
    from matplotlib import image

    record, _ = calibrated
    png = tmp_path / "search.png"
    argv = ["calibrate", str(record), "--out", str(tmp_path / "p.json"), "--minutes", "0"]
    assert main([*argv, "--max-evals", "3", "--plot", str(png)]) == 0
    assert f"search of t drawn -> {png}" in capsys.readouterr().out
    pixels = image.imread(png)
    assert pixels.shape[1] == round(3.4 * 4 * 110)  # 3 modalities + the best-so-far panel
    crimson = np.all(np.abs(pixels[..., :3] - np.array([220, 20, 60]) / 255) < 0.05, axis=-1)
    assert crimson.sum() > 50  # the stars and the best-so-far line


def test_a_plot_without_matplotlib_is_refused_before_the_search(
    calibrated, tmp_path: Path, hide_package, capsys
) -> None:
    hide_package("matplotlib")
    record, _ = calibrated
    out = tmp_path / "p.json"
    argv = ["calibrate", str(record), "--out", str(out), "--plot", str(tmp_path / "s.png")]
    assert main(argv) == 2
    assert "pip install 'ecgedge[plot]'" in capsys.readouterr().err
    assert not out.exists()


def test_a_profile_without_a_trace_cannot_be_drawn(tmp_path: Path) -> None:
    from ecgedge.calibration_plot import plot_calibration
    from sdk.errors import ConfigError

    with pytest.raises(ConfigError, match="no search trace"):
        plot_calibration({"trace": []}, tmp_path / "x.png", chosen={"raw": 1})


@pytest.mark.parametrize("target", ["labels", "header", "plot", "fifo", "plot-not-png"])
def test_calibrate_refuses_an_output_that_would_replace_an_input_or_a_special_file(
    calibrated, capsys, tmp_path, target
) -> None:
    """--out lab.csv turned the labels into a profile, --out rec.hea replaced the record's
    header, --out equal to --plot lost the profile, a FIFO or device node was replaced."""
    import os

    record, _ = calibrated
    labels = tmp_path / "lab.csv"
    labels.write_text("0,60,N\n60,120,A\n")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    plot = tmp_path / "s.png"
    out, extra, message = {
        "labels": (labels, [], "is --labels"),
        "header": (record.with_suffix(".hea"), [], "is one of the record's files"),
        "plot": (plot, ["--plot", str(plot)], "is --out or an input"),
        "fifo": (fifo, [], "not a regular file"),
        "plot-not-png": (tmp_path / "p.json", ["--plot", str(tmp_path / "x.txt")], "ending .png"),
    }[target]
    before = {p: p.stat().st_mtime_ns for p in (labels, record.with_suffix(".hea"))}
    argv = ["calibrate", str(record), "--labels", str(labels), "--out", str(out), *extra]
    capsys.readouterr()
    assert main(argv) == 2 and message in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in before} == before and fifo.is_fifo()
    assert not (tmp_path / "p.json").exists()


def test_annotations_all_after_minutes_are_refused_naming_minutes(tmp_path: Path, capsys) -> None:
    """The error came from the Python API ("no labelled interval: give (start_s, end_s,
    class) tuples") and did not say that --minutes cut them."""
    wfdb = pytest.importorskip("wfdb")
    from sdk.synthetic import synthetic_ecg
    from tests.wfdb_records import write_record

    ecg = synthetic_ecg((("sinus", 120.0),), fs=250.0, seed=5)
    write_record(tmp_path, "rec", ecg.signal)
    wfdb.wrann(
        "rec",
        "atr",
        np.array([int(70 * 250)]),
        symbol=["+"],
        aux_note=["(N"],
        write_dir=str(tmp_path),
    )
    argv = ["calibrate", str(tmp_path / "rec"), "--out", str(tmp_path / "p.json")]
    assert main([*argv, "--minutes", "1"]) == 2
    err = capsys.readouterr().err
    assert "rhythm annotations: no labelled stretch starts within the first --minutes 1" in err
    assert "the first starts at 70 s" in err and not (tmp_path / "p.json").exists()
