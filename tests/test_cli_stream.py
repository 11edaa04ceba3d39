"""``ecgedge stream``: the lead a simulated strap plays, saved sessions never overwritten,
options refused for a source they do not apply to, and an unusable ``--user-profile``: each
refused before anything streams (``_cli_error`` checks that nothing was printed)."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from ecgedge import live
from ecgedge.cli import STREAM_OPTION_SOURCES, main
from tests.test_cli import _cli_error
from tests.wfdb_records import write_record


def _two_lead_record(folder: Path) -> np.ndarray:
    """40 s of the synthetic ECG at 250 Hz as lead 0, the same halved as lead 1 (WFDB)."""
    from sdk.synthetic import synthetic_ecg

    x = synthetic_ecg((("sinus", 40.0),), fs=250.0, seed=2).signal.astype(np.float64)
    signal = np.stack([x, 0.5 * x], axis=1)
    write_record(folder, "two", signal)
    return signal


def test_a_simulated_strap_plays_the_chosen_lead_of_a_record(tmp_path, monkeypatch, capsys):
    signal = _two_lead_record(tmp_path)
    played: list[np.ndarray] = []
    original = live.simulated

    def spy(signal_mv, fs, impairments, **kw):
        played.append(np.asarray(signal_mv))
        return original(signal_mv, fs, impairments, **kw)

    monkeypatch.setattr(live, "simulated", spy)
    argv = ["stream", "--simulate", "--record", str(tmp_path / "two"), "--lead", "1"]
    assert main([*argv, "--speed", "0", "--seconds", "20"]) == 0, capsys.readouterr().err
    assert np.allclose(played[0], signal[: 20 * 250, 1], atol=1e-3)  # lead 1, not lead 0
    assert "Summary" in capsys.readouterr().out


def test_a_lead_the_sensor_does_not_have_is_refused(capsys, monkeypatch):
    from firmware_bridge.profiles import PolarH10

    err = _cli_error(capsys, "stream", "--simulate", "--lead", "1")
    assert "--lead 1: the simulated strap has one lead" in err
    monkeypatch.setattr(live, "ble", lambda *a: (SimpleNamespace(), PolarH10()))
    err = _cli_error(capsys, "stream", "--ble", "AA:BB", "--lead", "1")
    assert "--lead 1: the --profile h10 sensor has one lead" in err


@pytest.mark.parametrize("existing", [("hea", "dat"), ("hea", "dat", "gap"), ("gap",)])
def test_save_refuses_a_folder_that_holds_a_session_before_streaming(capsys, tmp_path, existing):
    for suffix in existing:
        (tmp_path / f"session.{suffix}").write_text("old")
    err = _cli_error(capsys, "stream", "--simulate", "--speed", "0", "--save", str(tmp_path))
    names = ", ".join(f"session.{s}" for s in existing)
    assert f"--save {tmp_path}: already holds a saved session ({names})" in err  # no output
    assert all((tmp_path / f"session.{s}").read_text() == "old" for s in existing)


def _recorder(*blocks: tuple[float, int]) -> live.Recorder:
    """A recorder (no pipeline) holding 1-lead blocks of ``n`` samples at 130 Hz."""
    rec = live.Recorder(SimpleNamespace(), 130.0)  # type: ignore[arg-type]
    rec.blocks = [(ts, np.full((n, 1), 0.1, np.float32)) for ts, n in blocks]
    return rec


def test_a_session_without_gaps_leaves_no_stale_gap_file(tmp_path):
    wfdb = pytest.importorskip("wfdb")
    _recorder((0.0, 130), (2.0, 130)).save_wfdb(tmp_path)  # 1 s lost → session.gap
    assert (tmp_path / "session.gap").is_file()
    _recorder((0.0, 130), (1.0, 130), (2.0, 130)).save_wfdb(tmp_path)  # no gap
    assert not (tmp_path / "session.gap").exists()
    assert wfdb.rdrecord(str(tmp_path / "session")).sig_len == 3 * 130
    assert live.saved_session(tmp_path) == [tmp_path / "session.hea", tmp_path / "session.dat"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--record", "r", "--save", "d"), "--save does not apply to a --record replay"),
        (("--record", "r", "--loss", "0.1"), "--loss does not apply to a --record replay"),
        (("--record", "r", "--compressed"), "--compressed does not apply to a --record replay"),
        (("--record", "r", "--seed", "3"), "--seed does not apply to a --record replay"),
        (("--record", "r", "--profile", "open"), "--profile does not apply to a --record"),
        (("--simulate", "--allow", "x"), "--allow does not apply to --simulate (only to --ble)"),
        (("--ble", "AA", "--seconds", "5"), "--seconds does not apply to --ble"),
        (("--ble", "AA", "--speed", "0"), "--speed does not apply to --ble"),
        (("--ble", "AA", "--jitter", "5"), "--jitter does not apply to --ble"),
        (("--ble", "AA", "--record", "r"), "--record does not apply to --ble"),
    ],
)
def test_options_that_do_not_apply_to_the_source_are_refused(capsys, argv, message):
    assert message in _cli_error(capsys, "stream", *argv)


def test_every_source_specific_option_is_a_stream_option(capsys):
    with pytest.raises(SystemExit):
        main(["stream", "--help"])
    usage = capsys.readouterr().out
    assert all(f"[{option}" in usage for option in STREAM_OPTION_SOURCES)


def test_an_unusable_user_profile_is_an_error_not_a_silent_fallback(capsys, tmp_path):
    run = ("stream", "--simulate", "--speed", "0", "--seconds", "10", "--user-profile")
    missing = tmp_path / "absent.json"
    err = _cli_error(capsys, *run, str(missing))
    assert err == f"ecgedge stream: error: --user-profile {missing}: no such profile\n"
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    os.chmod(bad, 0o600)
    assert f"--user-profile {bad}: not valid JSON" in _cli_error(capsys, *run, str(bad))


def test_stream_takes_a_shipped_bundle_by_name(capsys) -> None:
    argv = ["stream", "--simulate", "--bundle", "diffae-lru-cpu", "--seconds", "25"]
    assert main([*argv, "--speed", "0", "--hop", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sum(line.rstrip().endswith("ms step") for line in lines) >= 10  # the step model ran


def test_a_saved_session_is_the_users_alone_and_replays_its_gaps_as_gaps(tmp_path):
    """Saved files are 0600 (health data, as profiles); a replay skips the lost samples the
    .gap annotation names, so the pipeline sees the gap in the timestamps as it did live."""
    pytest.importorskip("wfdb")
    from ecgedge.replay import blocks, read_wfdb

    _recorder((0.0, 260), (3.0, 130)).save_wfdb(tmp_path)  # 1 s lost at 2 s
    assert all((tmp_path / f"session.{s}").stat().st_mode & 0o777 == 0o600 for s in SESSION)
    rec = read_wfdb(tmp_path / "session")
    assert rec.gaps == ((260, 130),) and np.isnan(rec.signal[260:390]).all()
    played = list(blocks(rec, block_s=1.0))
    assert [t for t, _ in played] == [0.0, 1.0, 3.0]  # the lost second is skipped
    assert all(np.isfinite(b).all() and b.size == 130 for _, b in played)


SESSION = ("hea", "dat", "gap")


def test_a_gap_annotation_of_another_kind_is_refused(tmp_path):
    wfdb = pytest.importorskip("wfdb")
    from ecgedge.replay import read_wfdb

    _recorder(
        (0.0, 260),
    ).save_wfdb(tmp_path)
    wfdb.wrann(
        "session", "gap", np.array([5]), symbol=['"'], aux_note=["lost"], write_dir=str(tmp_path)
    )
    with pytest.raises(ValueError, match="not a saved session's gap"):
        read_wfdb(tmp_path / "session")


def test_save_without_wfdb_is_refused_before_streaming(capsys, tmp_path, hide_package):
    hide_package("wfdb")
    err = _cli_error(capsys, "stream", "--simulate", "--speed", "0", "--save", str(tmp_path))
    assert "wfdb is not installed: pip install 'ecgedge[replay]'" in err


def test_a_saved_session_keeps_samples_of_any_amplitude_and_marks_unusable_ones(tmp_path):
    """A corrupted PMD frame can decode to volts: the old 16-bit format (±32.767 mV) made
    wfdb refuse the whole session at the end of a stream."""
    wfdb = pytest.importorskip("wfdb")
    from ecgedge.replay import read_wfdb

    rec = _recorder((0.0, 130), (1.0, 130))
    rec.blocks[1][1][:4, 0] = [40.0, -8388.607, np.inf, np.nan]
    rec.save_wfdb(tmp_path)
    back = read_wfdb(tmp_path / "session").signal.reshape(-1)
    np.testing.assert_allclose(back[130:132], [40.0, -8388.607], atol=1e-6)
    assert np.isnan(back[132:134]).all() and np.isfinite(back[134:]).all()
    comments = wfdb.rdheader(str(tmp_path / "session")).comments
    assert any("2 received samples not finite" in c for c in comments)


def test_a_session_that_cannot_be_written_leaves_no_part_of_it(tmp_path, monkeypatch):
    wfdb = pytest.importorskip("wfdb")

    def disk_full(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(wfdb, "wrann", disk_full)  # after the header and signal are written
    with pytest.raises(OSError, match="No space left"):
        _recorder((0.0, 130), (2.0, 130)).save_wfdb(tmp_path)
    assert list(tmp_path.iterdir()) == []  # no stray session.hea to block the next --save


def test_the_recorder_keeps_only_blocks_the_pipeline_accepted():
    from sdk.errors import BlockError

    class Picky:
        def push(self, samples, *, timestamp_s=None, fs=None):  # noqa: ANN001, ANN202
            if np.iscomplexobj(samples):
                raise BlockError("complex samples", reason="dtype")
            return []

    rec = live.Recorder(Picky(), 130.0)  # type: ignore[arg-type]
    rec.push(np.zeros(130), timestamp_s=0.0)
    with pytest.raises(BlockError):
        rec.push(np.zeros(130, complex), timestamp_s=1.0)
    assert [(ts, b.shape) for ts, b in rec.blocks] == [(0.0, (130, 1))]
    masked = np.ma.masked_array(np.full(130, 99.0), mask=np.arange(130) < 5)
    rec.push(masked, timestamp_s=1.0)  # the pipeline took masked samples as missing: so here
    assert np.isnan(rec.blocks[1][1][:5]).all() and (rec.blocks[1][1][5:] == 99.0).all()


def test_a_damaged_gap_file_is_an_error_naming_it(tmp_path):
    pytest.importorskip("wfdb")
    from ecgedge.replay import read_wfdb

    _recorder((0.0, 130), (2.0, 130)).save_wfdb(tmp_path)
    (tmp_path / "session.gap").write_bytes(b"\x01\x02\x03\x04\x05\x06\x07\x08\x09")
    with pytest.raises(ValueError, match=r"session.gap: not a readable WFDB annotation file"):
        read_wfdb(tmp_path / "session")
