"""Command-line input checks, the CLI's handling of saved sessions with lost samples, and
the stream summary's accounting of a simulated strap's lost samples."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from ecgedge import calibrate as calibrate_mod
from ecgedge.cli import main
from ecgedge.replay import read_wfdb
from sdk.bundle import default_bundle_path
from tests.wfdb_records import write_record


def _session_with_gap(folder: Path) -> np.ndarray:
    """A 2-minute synthetic recording (sinus then AF) with 2 s lost (NaN), saved as WFDB with
    rhythm annotations, like ``stream --save`` plus an annotator."""
    wfdb = pytest.importorskip("wfdb")
    from sdk.synthetic import synthetic_ecg

    ecg = synthetic_ecg((("sinus", 60.0), ("af", 60.0)), fs=250.0, seed=1)
    x = ecg.signal.astype(np.float64)
    x[7000:7500] = np.nan
    write_record(folder, "session", x)
    starts = np.array([s for s, _, _ in ecg.rhythm])
    notes = [f"({'AFIB' if lab.startswith('AF') else 'N'}" for _, _, lab in ecg.rhythm]
    wfdb.wrann(
        "session", "atr", starts, symbol=["+"] * len(starts), aux_note=notes, write_dir=str(folder)
    )
    return x


def test_replay_keeps_lost_samples_for_the_sdk_to_flag(tmp_path: Path) -> None:
    x = _session_with_gap(tmp_path)
    rec = read_wfdb(tmp_path / "session")
    assert np.array_equal(np.isnan(rec.signal), np.isnan(x))


def test_a_replay_ends_with_a_summary_that_counts_the_lost_samples(tmp_path: Path, capsys) -> None:
    from ecgedge.cli import main

    _session_with_gap(tmp_path)
    assert main(["stream", "--record", str(tmp_path / "session"), "--speed", "0"]) == 0
    out = capsys.readouterr().out
    assert "Summary" in out and "streamed        2.0 min" in out
    assert "input           500 lost or non-finite samples" in out
    assert "bridge" not in out  # no sensor link in a replay


def test_calibrate_uses_only_received_samples(tmp_path: Path) -> None:
    """A saved session with 2 s lost calibrates (each stretch windowed on its own by
    Calibrator.add_recording, tested in tests/sdk/test_calibrator.py)."""
    import json

    _session_with_gap(tmp_path)
    code = calibrate_mod.calibrate_record(
        tmp_path / "session",
        tmp_path / "p.json",
        bundle_dir=default_bundle_path(),
        minutes=0,
        max_evals=2,
    )
    assert code == 0
    # 0-28 s: 2 windows and one ending at 28 s; 30-120 s: 9
    assert json.loads((tmp_path / "p.json").read_text())["calibration"]["windows"] == 3 + 9


def _cli_error(capsys, *argv: str) -> str:
    """Run ``ecgedge argv`` in-process; it must fail with status 2 and one stderr line, before
    any output."""
    from ecgedge.cli import main

    code: int | str | None
    try:
        code = main(list(argv))
    except SystemExit as stop:  # argparse's own refusals
        code = stop.code
    out, err = capsys.readouterr()
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert out == "", out
    return err


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (("stream", "--record", "x", "--seconds", "-5"), "--seconds"),
        (("stream", "--record", "x", "--speed", "-3"), "--speed"),
        (("stream", "--record", "x", "--hop", "nan"), "--hop"),
        (("demo", "--seconds", "-5"), "--seconds"),
        (("calibrate", "r", "--out", "p.json", "--minutes", "-1"), "--minutes"),
        (("calibrate", "r", "--out", "p.json", "--minutes", "nan"), "--minutes"),
        (("bench", "bridge", "--minutes", "-1"), "--minutes"),
        (("bench", "bridge", "--minutes", "0"), "--minutes"),
        (("bench", "stream", "--hop", "-1"), "--hop"),
        (("train-fusion", "--epochs", "0"), "--epochs"),
        (("export", "--calibration-windows", "0"), "--calibration-windows"),
        (("export", "--calibration-windows", "-5"), "--calibration-windows"),
        (("export", "--int8-limit", "nan"), "--int8-limit"),
        (("export", "--int8-budget", "-1"), "--int8-budget"),
        (("engines", "--max-batch", "0"), "--max-batch"),
    ],
)
def test_bad_numbers_are_refused_naming_the_option(capsys, argv, option) -> None:
    assert option in _cli_error(capsys, *argv)


def test_outputs_and_bundles_are_checked_before_any_work(capsys, tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("")
    assert "--save" in _cli_error(capsys, "stream", "--simulate", "--save", str(a_file))
    assert "--out" in _cli_error(capsys, "calibrate", "rec", "--out", str(tmp_path))
    missing = str(tmp_path / "absent")
    assert "--bundle" in _cli_error(capsys, "bench", "anomaly", "--bundle", missing)
    assert "--levels" in _cli_error(capsys, "bench", "rhythm-noise", "--levels", "abc")
    for levels in ("nan", "clean,inf", "6,-inf"):  # accepted: the benchmark ran at +nan dB
        assert "finite SNR levels" in _cli_error(
            capsys, "bench", "rhythm-noise", "--levels", levels
        )
    # a missing --run was ignored: rhythm fell back to the manifest's figures under its name
    for name in ("rhythm", "stream", "denoise"):
        assert f"--run {missing}: no such folder" in _cli_error(
            capsys, "bench", name, "--run", missing, "--out", str(tmp_path)
        )


def test_an_existing_output_file_may_be_replaced(tmp_path: Path) -> None:
    """Re-calibrating a user into the same profile path (it was refused as unwritable)."""
    from ecgedge.cli import _check_output

    profile = tmp_path / "u.json"
    profile.write_text("{}")
    _check_output(profile, "--out", folder=False)  # no error
    with pytest.raises(ValueError, match="not a folder"):
        _check_output(profile, "--out", folder=True)
    with pytest.raises(ValueError, match="cannot write in"):
        _check_output(profile / "x.json", "--out", folder=False)  # under a file


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_an_output_in_a_folder_nothing_can_be_created_in_is_refused_even_for_root(
    tmp_path: Path,
) -> None:
    """The permission bits let root "write" in /proc; creating a file there fails."""
    from ecgedge.cli import _check_output

    with pytest.raises(ValueError, match="--out /proc/x.json: cannot write in /proc"):
        _check_output(Path("/proc/x.json"), "--out", folder=False)
    (tmp_path / "ok").mkdir()
    _check_output(tmp_path / "ok" / "new" / "p.json", "--out", folder=False)  # creatable
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["ok"]  # and nothing left behind


def test_bench_child_failure_shows_the_childs_message(monkeypatch, tmp_path: Path) -> None:
    import subprocess

    from trainer.bench import stream
    from trainer.errors import BenchError

    def failing(cmd, **kw):
        return subprocess.CompletedProcess(cmd, 2, "", "Traceback ...\nConfigError: hop bad\n")

    monkeypatch.setattr(stream.subprocess, "run", failing)
    with pytest.raises(BenchError, match="ConfigError: hop bad"):
        stream.sdk_runs(tmp_path, np.zeros(10, np.float32), 128.0, "fp32", 1)


def test_simulating_a_strap_from_a_record_with_lost_samples_is_refused(
    capsys, tmp_path: Path
) -> None:
    _session_with_gap(tmp_path)
    err = _cli_error(capsys, "stream", "--simulate", "--record", str(tmp_path / "session"))
    assert "500 lost (NaN) samples" in err


def test_stream_simulated_at_speed_0_keeps_outages_short_and_reports_the_lost_tail(capsys):
    """60 s of the synthetic ECG as fast as possible, the link dropping every 20 s for 2 s:
    the drops at 20 s and 40 s cost the outage and the reconnection backoff of simulated
    time, not the host's computing × 5000, and the drop at 60 s takes the last frame, which
    no later frame reveals as a gap: the summary counts it as lost at the end."""
    from ecgedge.cli import main

    argv = ["stream", "--simulate", "--seconds", "60", "--speed", "0", "--disconnect-every", "20"]
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    line = next(line for line in out if line.strip().startswith("counters"))
    counters = ast.literal_eval(line.split(None, 1)[1])
    a = counters["assembly"]
    assert counters["reconnects"] == 3 and a["gaps"] == 2
    assert a["samples_lost"] <= 2 * 5.0 * 130  # 2 s outage + backoff, per drop
    assert a["samples_lost"] == 15 * 73  # exactly, as virtual time makes it deterministic
    assert counters["samples_lost_at_end"] == 60 * 130 % 73  # the last (short) frame
    assert a["samples"] + a["samples_lost"] + counters["samples_lost_at_end"] == 60 * 130
    assert "  lost at end     62 samples, never delivered after the last one received" in out


def test_the_stream_summary_has_no_lost_tail_line_for_a_live_sensor() -> None:
    from ecgedge.demo import LiveView
    from firmware_bridge.session import SessionStats

    assert "lost at end" not in LiveView().summary(60.0, SessionStats(), None)
    assert "lost at end     7 samples" in LiveView().summary(
        60.0, SessionStats(samples_lost_at_end=7), 0.25
    )
    assert "25% of the analysed time in windows labelled AF" in LiveView().summary(
        60.0, SessionStats(), 0.25
    )
    assert "no window analysed" in LiveView().summary(60.0, SessionStats(), None)


def test_demo_checks_the_bundle_before_its_banner(capsys, tmp_path: Path) -> None:
    err = _cli_error(capsys, "demo", "--fast", "--synthetic", "--bundle", str(tmp_path))
    assert "manifest.json not found" in err  # and no banner (_cli_error checks)


def test_bench_help_describes_every_benchmark(capsys) -> None:
    import re

    from ecgedge.cli import BENCHMARKS, main

    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    text = capsys.readouterr().out
    for name, what in BENCHMARKS.items():
        assert re.search(rf"^  {re.escape(name)} +{re.escape(what)}$", text, re.M), name
    refused = _cli_error(capsys, "bench", "no-such-benchmark")  # the choices are the list
    assert refused.count("'") == 2 * (len(BENCHMARKS) + 1)
    assert all(f"'{name}'" in refused for name in BENCHMARKS)
    with pytest.raises(SystemExit):
        main(["--help"])
    assert f"{len(BENCHMARKS)} benchmarks" in capsys.readouterr().out


def test_the_train_extra_reads_toml_on_every_python_the_package_allows() -> None:
    """trainer/config.py reads its presets with tomllib, in the standard library from 3.11."""
    import tomllib

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    lowest = tuple(int(v) for v in project["requires-python"].lstrip(">=").split("."))
    if lowest < (3, 11):
        train = [dep.replace(" ", "") for dep in project["optional-dependencies"]["train"]]
        assert any(d.startswith("tomli") and "python_version<'3.11'" in d for d in train)


def test_bundles_lists_the_shipped_bundles_and_refuses_a_tampered_one(capsys, tmp_path: Path):
    import shutil

    from sdk.bundle import default_bundle_path

    assert main(["bundles"]) == 0
    out = capsys.readouterr().out
    for name in ("default", "diffae-lru-cpu", "dacl-cpu"):
        assert f"{name}  (" in out
    assert "stateful step model (128 samples per step)" in out
    assert "denoiser (CD-ECGNet) in front" in out and "front end: wavelet scattering" in out
    copy = tmp_path / "copy"
    shutil.copytree(default_bundle_path(), copy)
    with open(copy / "head.onnx", "ab") as f:
        f.write(b"tampered")
    assert main(["bundles", "--bundle", f"dacl-cpu,{copy}"]) == 1
    out = capsys.readouterr().out
    assert "dacl-cpu  (" in out and "NOT VERIFIED" in out and "head.onnx" in out


@pytest.mark.parametrize(
    "missing, extra",
    [("torch", "train"), ("onnx", "export"), ("kymatio", "dacl"), ("bleak.backends", "ble")],
)
def test_a_missing_optional_package_names_its_extra(capsys, monkeypatch, missing, extra):
    """A command whose optional package is not installed says which extra installs it."""
    import ecgedge.cli as cli

    def needs(args, extra_args):  # noqa: ANN001, ANN202
        raise ModuleNotFoundError(f"No module named '{missing}'", name=missing)

    monkeypatch.setattr(cli, "_cmd_bundles", needs)
    assert cli.main(["bundles"]) == 2
    err = capsys.readouterr().err
    assert f"{missing.split('.')[0]} is not installed: pip install 'ecgedge[{extra}]'" in err
    assert ("torch build for your machine" in err) == (missing == "torch")


def test_version_is_the_installed_distributions(capsys) -> None:
    from importlib.metadata import version

    from ecgedge.cli import main

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"ecgedge {version('ecgedge')}"


def test_bundles_reads_figures_recorded_with_their_intervals(tmp_path: Path, capsys) -> None:
    """export-multimodal records {value, ci95} per figure (bundles crashed on it)."""
    import json
    import shutil

    from ecgedge.cli import main

    copy = tmp_path / "mm"
    shutil.copytree(default_bundle_path(), copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["metrics"]["rhythm_val_sdk"] = {
        "val_fp32": {
            "challenge_f1": {"value": 0.7123, "ci95": [0.69, 0.73]},
            "macro_f1": {"value": 0.6543, "ci95": [0.63, 0.67]},
        }
    }
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert main(["bundles", "--bundle", str(copy)]) == 0
    assert "challenge F1 0.712, macro F1 0.654" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("bundle", "edit"),
    [
        ("diffae-lru-cpu", lambda m: m["streaming"].pop("hop_samples")),
        ("diffae-lru-cpu", lambda m: m.update(streaming=["a list"])),
        ("default", lambda m: m["metrics"].update(rhythm_val_sdk="a string")),
        ("default", lambda m: m["metrics"].update(rhythm_val_sdk={"val_fp32": [1, 2]})),
        ("dacl-cpu", lambda m: m["front_end"].update(kind=["a list"])),  # J, Q as the SDK
    ],
)
def test_bundles_summarizes_odd_optional_entries_and_goes_on_to_the_next_bundle(
    tmp_path: Path, capsys, bundle, edit
) -> None:
    """Such a bundle verifies and streams, but its summary raised a KeyError, TypeError or
    AttributeError and stopped the listing of the others."""
    import json
    import shutil

    from sdk.bundle import bundle_path

    copy = tmp_path / "odd"
    shutil.copytree(bundle_path(bundle), copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    edit(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    code = main(["bundles", "--bundle", f"{copy},dacl-cpu"])
    out = capsys.readouterr().out
    assert "dacl-cpu  (" in out and "Traceback" not in out  # the next bundle is listed too
    assert code == 0 and "NOT VERIFIED" not in out  # the odd bundle verifies, as it loads
    odd = out.split("dacl-cpu  (")[0]  # the odd bundle's own summary
    assert f"{copy}  (" in odd and "classes N A O ~" in odd and "KiB in" in odd


def test_engines_check_refuses_a_tampered_bundle_before_reading_its_graphs(
    tmp_path: Path, capsys
) -> None:
    import shutil

    from ecgedge.cli import main

    copy = tmp_path / "b"
    shutil.copytree(default_bundle_path(), copy)
    head = copy / "head.onnx"
    data = bytearray(head.read_bytes())
    data[len(data) // 2] ^= 0xFF
    head.write_bytes(bytes(data))
    assert main(["engines", "--check", "--bundle", str(copy)]) == 2
    assert "head.onnx" in capsys.readouterr().err


def test_an_interrupted_training_says_what_it_left(capsys, monkeypatch) -> None:
    import ecgedge.cli as cli

    def interrupted(args, extra):  # noqa: ANN001, ANN202
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_cmd_train", interrupted)
    monkeypatch.setattr(cli, "_cmd_train_diffae", interrupted)
    assert cli.main(["train", "--preset", "smoke"]) == 130
    err = capsys.readouterr().err
    assert "ecgedge train: interrupted: the run folder keeps the last checkpoint" in err
    assert cli.main(["train-diffae", "--preset", "smoke"]) == 130  # saves only at its end
    assert capsys.readouterr().err.strip() == "ecgedge train-diffae: interrupted"


@pytest.mark.parametrize(
    ("command", "prefix"),
    [
        ("train", ""),
        ("train-denoiser", "denoise_"),
        ("train-diffae", "lru_"),
        ("train-dacl", "dacl_"),
    ],
)
def test_a_training_commands_help_says_where_each_preset_writes(command, prefix):
    import tomllib

    from ecgedge.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    description = sub.choices[command].description
    presets = Path(__file__).resolve().parents[1] / "trainer" / "presets"
    names = ["smoke", "cpu", "gpu"] + (["cpu-spectrogram", "cpu-lorenz"] if not prefix else [])
    for preset in names:
        toml = tomllib.loads((presets / f"{prefix}{preset}.toml").read_text())
        section, out_dir = next((k, v["out_dir"]) for k, v in toml.items() if "out_dir" in v)
        assert f"{preset}: {out_dir}" in description
        assert f"--{section}.out_dir=PATH" in description


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--add-anchors", "--refit-head"], "give one of --refit-head, --add-anchors per export"),
        (["--rpeak-rule", "r.json", "--denoiser", "d"], "give one of --rpeak-rule, --denoiser"),
        ([], "--base-bundle applies with --denoiser"),  # with a run: it was ignored
        (["--add-anchors", "--target", "jetson"], "--target does not apply to --add-anchors"),
        (["--add-anchors", "--int8-limit", "0.9"], "--int8-limit does not apply"),
        (["--refit-head", "--encoder", "zzz"], "--encoder does not apply to --refit-head"),
    ],
)
def test_export_takes_one_action_and_only_its_options(capsys, tmp_path, argv, message) -> None:
    """Every action but the first, and every option the chosen one does not use, was dropped
    without a word."""
    base = ["export", "--base-bundle", str(default_bundle_path()), "--out", str(tmp_path / "b")]
    assert message in _cli_error(capsys, *base, *argv)
    assert not (tmp_path / "b").exists()


def test_train_fusion_names_the_option_of_a_missing_modality_run(tmp_path: Path, capsys) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "diffecg.pt").write_bytes(b"")  # only existence is checked before training
    argv = ["train-fusion", "--raw", str(raw), "--out", str(tmp_path / "f")]
    err = _cli_error(capsys, *argv, "--spectrogram", str(tmp_path / "nope"))
    assert f"--spectrogram {tmp_path / 'nope'}: no diffecg.pt there" in err
    assert "`ecgedge train --preset cpu-spectrogram` run" in err
    err = _cli_error(capsys, "train-fusion", "--raw", str(tmp_path / "x"), "--out", str(tmp_path))
    assert f"--raw {tmp_path / 'x'}: no diffecg.pt" in err and "--preset cpu`" in err
    assert not (tmp_path / "f").exists()


def test_export_takes_a_shipped_bundle_name_as_base_bundle(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    from ecgedge.cli import main
    from export import anchors
    from sdk.bundle import default_bundle_path

    seen = []
    monkeypatch.setattr(
        anchors, "add_anchors", lambda base, out: seen.append(base) or {"per_class": 1}
    )
    assert (
        main(["export", "--base-bundle", "default", "--add-anchors", "--out", str(tmp_path / "b")])
        == 0
    )
    assert seen == [default_bundle_path()]
    assert "anchor windows per class written to" in capsys.readouterr().out
    err = _cli_error(
        capsys, "export", "--base-bundle", "nope", "--add-anchors", "--out", str(tmp_path / "c")
    )
    assert "--base-bundle nope: no such folder, and no shipped bundle of that name (default," in err


def test_demo_refuses_speed_with_fast(capsys) -> None:
    err = _cli_error(capsys, "demo", "--fast", "--speed", "1", "--synthetic")
    assert "--speed does not apply with --fast" in err
