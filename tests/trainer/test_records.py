"""The WFDB loaders read every shared database as documented, and fail with DataError."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tests.wfdb_records import write_record
from trainer.data import records as rec
from trainer.errors import DataError

# no module-wide ``data`` mark: the tests on a throw-away data root below run without the
# shared data (``-m 'not data'``); each test that reads a database carries its own mark

MITDB_DS1 = (
    "101 106 108 109 112 114 115 116 118 119 122 124 201 203 205 207 208 209 215 220 223 230"
).split()
TWELVE_LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")


def _check_episodes(rhythm: list[tuple[int, int, str]]) -> None:
    """Episodes are ordered, contiguous, non-empty, with clean labels."""
    for start, end, label in rhythm:
        assert start < end
        assert label and "\x00" not in label and not label.startswith("(")
    for (_, end, _), (start, _, _) in zip(rhythm, rhythm[1:]):
        assert end == start


def _copy_record(src: Path, dst: Path, name: str) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.glob(f"{name}.*"):
        shutil.copy(f, dst / f.name)
        (dst / f.name).chmod(0o644)


# --- cinc2017 -----------------------------------------------------------------------------


@pytest.mark.data("cinc2017")
def test_cinc2017_labels_and_counts() -> None:
    labels = rec.cinc2017_labels()
    assert len(labels) == 5970
    assert Counter(labels.values()) == {"N": 3553, "A": 531, "O": 1691, "~": 195}
    assert rec.list_records("cinc2017") == sorted(labels)


@pytest.mark.data("cinc2017")
@pytest.mark.parametrize(("name", "label"), [("A00001", "N"), ("A00004", "A")])
def test_cinc2017_record(name: str, label: str) -> None:
    r = rec.read_cinc2017(name)
    assert (r.name, r.database, r.label) == (name, "cinc2017", label)
    assert r.fs == 300.0
    assert r.signal.dtype == np.float32 and r.signal.ndim == 2 and r.signal.shape[1] == 1
    assert 9.0 <= r.duration_s <= 61.0
    assert np.isfinite(r.signal).all() and r.signal.std() > 0.01  # millivolts, not flat


# --- mitdb -------------------------------------------------------------------------------


@pytest.mark.data("mitdb")
def test_mitdb_lists_ds1() -> None:
    assert rec.list_records("mitdb") == MITDB_DS1


@pytest.mark.data("mitdb")
def test_mitdb_201_signal_beats_and_afib() -> None:
    r = rec.read_mitdb("201")
    assert r.fs == 360.0 and r.signal.shape == (650000, 2)
    ann = r.annotations
    assert ann is not None
    # PhysioNet's table for 201: N 1625, V 198, a 97, A 30, j 10, F 2, J 1 = 1963 beats
    # (counted by hand from wfdb.rdann; the 37 'x' non-conducted P waves are not beats).
    assert Counter(ann.beat_symbols) == {
        "N": 1625,
        "V": 198,
        "a": 97,
        "A": 30,
        "j": 10,
        "F": 2,
        "J": 1,
    }
    assert len(ann.beat_samples) == 1963
    assert np.all(np.diff(ann.beat_samples) > 0)
    _check_episodes(ann.rhythm)
    labels = [label for _, _, label in ann.rhythm]
    assert labels[0] == "AFIB" and labels.count("AFIB") == 3
    assert {"AFIB", "N", "NOD", "T", "SVTA"} == set(labels)


@pytest.mark.data("mitdb", "cpsc2021")
@pytest.mark.parametrize(
    ("database", "name"),
    [("mitdb", "201"), ("cpsc2021", "data_92_4"), ("cpsc2021", "data_101_6")],
)
def test_rhythm_episodes_stay_inside_record_and_run_to_its_end(database: str, name: str) -> None:
    """The last rhythm holds until the record ends, and no episode runs past it."""
    r = rec.read_mitdb(name) if database == "mitdb" else rec.read_cpsc2021(name)
    n = r.signal.shape[0]
    rhythm = r.annotations.rhythm
    assert all(0 <= s < e <= n for s, e, _ in rhythm), rhythm[-2:]
    assert rhythm[-1][1] == n, f"last episode {rhythm[-1]} should end at the record end {n}"


# --- nstdb -------------------------------------------------------------------------------


@pytest.mark.data("nstdb")
@pytest.mark.parametrize("name", ["bw", "ma"])
def test_nstdb_noise_records(name: str) -> None:
    r = rec.read_nstdb(name)
    assert r.fs == 360.0 and r.signal.shape[1] == 2 and r.signal.shape[0] == 650000
    assert r.annotations is None


@pytest.mark.data("nstdb", "mitdb")
def test_nstdb_118e06_has_the_beats_of_mitdb_118() -> None:
    noisy = rec.read_nstdb("118e06")
    clean = rec.read_mitdb("118")
    assert noisy.fs == 360.0 and noisy.signal.shape == (650000, 2)
    assert len(noisy.annotations.beat_samples) == 2278  # PhysioNet's total for 118
    np.testing.assert_array_equal(noisy.annotations.beat_samples, clean.annotations.beat_samples)


# --- afdb_rr ------------------------------------------------------------------------------


@pytest.mark.data("afdb_rr")
def test_afdb_rr_has_13_subjects_with_both_files(data_root: Path) -> None:
    names = rec._record_names(data_root / "afdb_rr")
    assert len(names) == 13 and len(set(names)) == 13
    for name in names:
        assert (data_root / "afdb_rr" / f"{name}.qrs").is_file()
        assert (data_root / "afdb_rr" / f"{name}.atr").is_file()


@pytest.mark.data("afdb_rr")
@pytest.mark.parametrize("name", ["00735", "04015", "08455"])
def test_afdb_rr_beats_and_af_episodes(name: str) -> None:
    ann = rec.read_afdb_rr(name)
    assert len(ann.beat_samples) > 30000  # ~10 h of beats at 250 Hz sample numbers
    rr_s = np.diff(ann.beat_samples) / 250.0
    assert np.all(rr_s > 0) and 0.3 < np.median(rr_s) < 1.5
    _check_episodes(ann.rhythm)
    labels = {label for _, _, label in ann.rhythm}
    assert "AFIB" in labels and labels <= {"N", "AFIB", "AFL", "J"}


@pytest.mark.data("afdb_rr")
@pytest.mark.parametrize("name", ["00735", "08455"])
def test_afdb_rr_last_episode_covers_the_remaining_beats(name: str) -> None:
    """The last rhythm change holds to the end of the recording, not for one sample."""
    ann = rec.read_afdb_rr(name)
    start, end, label = ann.rhythm[-1]
    assert end > ann.beat_samples[-1], f"last episode {ann.rhythm[-1]} ends before the last beat"


# --- cpsc2021, challenge2021 ----------------------------------------------------------------


@pytest.mark.data("cpsc2021")
def test_cpsc2021_records_and_af_episodes() -> None:
    names = rec.list_records("cpsc2021")
    assert len(names) == 18
    r = rec.read_cpsc2021("data_92_4")
    assert r.fs == 200.0 and r.signal.shape[1] == 2
    afib = [(s, e) for s, e, label in r.annotations.rhythm if label == "AFIB"]
    assert afib == [(63250, 65213)]
    assert len(r.annotations.beat_samples) == 401
    for no_af in ("data_21_7", "data_35_4"):  # subjects without AF
        assert all(lab != "AFIB" for _, _, lab in rec.read_cpsc2021(no_af).annotations.rhythm)


@pytest.mark.data("challenge2021")
def test_challenge2021_twelve_lead_records_with_dx() -> None:
    names = rec.list_records("challenge2021")
    assert len(names) == 40
    for name in names[:: len(names) // 4] + ["JS20000"]:
        r = rec.read_challenge2021(name)
        assert r.fs == 500.0 and r.signal.shape == (5000, 12)
        assert r.lead_names == TWELVE_LEADS
        assert r.label == r.meta["Dx"]
        codes = r.label.split(",")
        assert codes and all(c.isdigit() for c in codes)
    assert rec.read_challenge2021("E07500").label == "67741000119109,426177001"


# --- one-record folders, ptbxl ------------------------------------------------------------


@pytest.mark.data("qtdb")
def test_qtdb_sel100() -> None:
    r = rec.read_single("qtdb", "sel100")
    assert r.fs == 250.0 and r.signal.shape == (225000, 2)
    assert len(r.annotations.beat_samples) > 1000


@pytest.mark.data("svdb")
def test_svdb_800() -> None:
    r = rec.read_single("svdb", "800")
    assert r.fs == 128.0 and r.signal.shape == (230400, 2)
    assert len(r.annotations.beat_samples) > 1000


@pytest.mark.data("ptbdb")
def test_ptbdb_s0010_re_without_annotations() -> None:
    r = rec.read_single("ptbdb", "s0010_re", extension=None)
    assert r.fs == 1000.0 and r.signal.shape == (38400, 15)
    assert r.lead_names[:2] == ("i", "ii") and r.lead_names[-3:] == ("vx", "vy", "vz")
    assert r.annotations is None
    assert r.meta["age"] == "81"


@pytest.mark.data("ptbxl_meta")
def test_ptbxl_statements() -> None:
    s = rec.ptbxl_statements()
    assert len(s) > 50
    assert s["NORM"] == "NORM" and s["AFIB"] == ""
    assert set(s.values()) <= {"", "NORM", "MI", "STTC", "CD", "HYP"}


# --- bad input ----------------------------------------------------------------------------


def test_missing_database_folder(tmp_data_root: Path) -> None:
    with pytest.raises(DataError) as err:
        rec.read_mitdb("201")
    assert err.value.reason == "missing"
    assert str(tmp_data_root / "mitdb") in str(err.value)


@pytest.mark.data("mitdb")
def test_missing_record_names_header(data_root: Path) -> None:
    with pytest.raises(DataError) as err:
        rec.read_mitdb("999")
    expected = str(data_root / "mitdb" / "999.hea")
    assert err.value.reason == "missing"
    assert err.value.path == expected and expected in str(err.value)


@pytest.mark.data("mitdb")
def test_missing_annotation_file(data_root: Path, tmp_data_root: Path) -> None:
    _copy_record(data_root / "mitdb", tmp_data_root / "mitdb", "201")
    (tmp_data_root / "mitdb" / "201.atr").unlink()
    with pytest.raises(DataError) as err:
        rec.read_mitdb("201")
    assert err.value.reason == "missing"
    assert str(tmp_data_root / "mitdb" / "201.atr") in str(err.value)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:1001])


def _garble(path: Path) -> None:
    path.write_bytes(b"\x00\xffnot a header\n\x01 2 x y\n")


@pytest.mark.data("svdb", "cinc2017")
@pytest.mark.parametrize(
    ("database", "name", "damaged", "damage"),
    [
        ("svdb", "800", "800.dat", _truncate),
        ("svdb", "800", "800.hea", _garble),
        ("svdb", "800", "800.atr", _truncate),
        ("svdb", "800", "800.atr", _garble),
        ("cinc2017", "A00001", "A00001.mat", _truncate),
        ("cinc2017", "A00001", "A00001.hea", _garble),
    ],
)
def test_damaged_files_raise_corrupt(
    data_root: Path, tmp_data_root: Path, database: str, name: str, damaged: str, damage
) -> None:
    _copy_record(data_root / database, tmp_data_root / database, name)
    damage(tmp_data_root / database / damaged)
    with pytest.raises(DataError) as err:
        if database == "svdb":
            rec.read_single("svdb", name)
        else:
            rec.read_cinc2017(name)
    assert err.value.reason == "corrupt"
    assert str(tmp_data_root / database / name) in str(err.value)


@pytest.mark.data("svdb")
def test_missing_signal_file_is_reported_with_its_path(
    data_root: Path, tmp_data_root: Path
) -> None:
    _copy_record(data_root / "svdb", tmp_data_root / "svdb", "800")
    (tmp_data_root / "svdb" / "800.dat").unlink()
    with pytest.raises(DataError) as err:
        rec.read_single("svdb", "800")
    assert str(tmp_data_root / "svdb" / "800.dat") in str(err.value)


@pytest.mark.parametrize("bad_line", ["A00002;N", "A00002,X", "A00002,N,extra", "", "A00002,n"])
def test_malformed_reference_line(tmp_data_root: Path, bad_line: str) -> None:
    folder = tmp_data_root / "cinc2017"
    folder.mkdir()
    (folder / "A00001.hea").write_text("")
    ref = folder / "REFERENCE-v3.csv"
    ref.write_text(f"A00001,N\n{bad_line}\nA00003,A\n")
    with pytest.raises(DataError) as err:
        rec.cinc2017_labels()
    assert err.value.reason == "format"
    assert str(ref) in str(err.value) and "line 2" in str(err.value)


def test_reference_keeps_only_records_present(tmp_data_root: Path) -> None:
    folder = tmp_data_root / "cinc2017"
    folder.mkdir()
    (folder / "A00002.hea").write_text("")
    (folder / "REFERENCE-v3.csv").write_text("A00001,N\nA00002,~\nA00003,A\n")
    assert rec.cinc2017_labels() == {"A00002": "~"}
    (folder / "A00002.hea").unlink()
    with pytest.raises(DataError) as err:
        rec.cinc2017_labels()
    assert err.value.reason == "empty"


def test_missing_reference_file(tmp_data_root: Path) -> None:
    (tmp_data_root / "cinc2017").mkdir()
    with pytest.raises(DataError) as err:
        rec.cinc2017_labels()
    assert err.value.reason == "missing"
    assert str(tmp_data_root / "cinc2017" / "REFERENCE-v3.csv") in str(err.value)


def test_iter_records_rejects_unknown_database() -> None:
    with pytest.raises(ValueError, match="unknown database"):
        next(rec.iter_records("nope"))


# --- lost samples (NaN) ---------------------------------------------------------------------


def _write_record_with_gap(folder: Path, name: str = "rec") -> np.ndarray:
    """A 1-lead WFDB record (250 Hz, 20 s) whose samples 1000..1499 are invalid (NaN)."""
    x = np.sin(np.arange(5000) / 20.0)
    x[1000:1500] = np.nan
    write_record(folder, name, x)
    return x[:, None]


def test_read_signal_keeps_lost_samples_nan(tmp_path: Path) -> None:
    x = _write_record_with_gap(tmp_path)
    r = rec.read_signal(tmp_path / "rec", database="session")
    assert np.array_equal(np.isnan(r.signal), np.isnan(x))  # what `stream --record` replays


def test_training_readers_get_finite_signals(tmp_data_root: Path) -> None:
    x = _write_record_with_gap(tmp_data_root / "ptbdb")
    r = rec.read_single("ptbdb", "rec", extension=None)
    assert np.isfinite(r.signal).all() and (r.signal[np.isnan(x)] == 0.0).all()


def test_only_atrial_fibrillation_is_af_not_flutter():
    from ecgedge.calibrate import rhythm_class
    from trainer.data.records import is_af

    assert is_af("AFIB") and is_af("(AFIB") and is_af("afib ")
    assert not is_af("AFL") and not is_af("N") and not is_af("SVTA")
    assert rhythm_class("AFL") == "N" and rhythm_class("AFIB") == "A"


@pytest.mark.parametrize("fs_field", ["-130", "nan", "0", "abc", "inf/2"])
def test_a_header_whose_sampling_frequency_is_no_positive_number_is_refused(tmp_path, fs_field):
    """wfdb reads such a field as its default 250 Hz: 130 Hz ECG analysed at the wrong rate."""
    write_record(tmp_path, "rec", np.sin(np.arange(1300) / 20.0), fs=130)
    hea = tmp_path / "rec.hea"
    lines = hea.read_text().splitlines()
    lines[0] = f"rec 1 {fs_field} 1300"
    hea.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=f"sampling frequency '{fs_field}' is not a positive"):
        rec.read_signal(tmp_path / "rec", database="session")


def test_a_header_without_a_sampling_frequency_is_250_hz_and_counter_frequencies_are_read(
    tmp_path,
):
    write_record(tmp_path, "rec", np.sin(np.arange(1300) / 20.0), fs=130)
    hea = tmp_path / "rec.hea"
    lines = hea.read_text().splitlines()
    for first, fs in (("rec 1", 250.0), ("rec 1 130/260(0) 1300", 130.0)):
        hea.write_text("\n".join([first, *lines[1:]]) + "\n")
        assert rec.read_signal(tmp_path / "rec", database="session").fs == fs


@pytest.mark.parametrize(("unit", "to_mv"), [("uV", 1e-3), ("V", 1e3), ("mV", 1.0)])
def test_signals_in_other_voltage_units_are_read_in_millivolts(tmp_path, unit, to_mv):
    x = np.sin(np.arange(1300) / 20.0)
    write_record(tmp_path, "rec", x, fs=130)
    hea = tmp_path / "rec.hea"
    hea.write_text(hea.read_text().replace("/mV", f"/{unit}"))
    got = rec.read_signal(tmp_path / "rec", database="session").signal[:, 0]
    np.testing.assert_allclose(got, x * to_mv, atol=1e-3 * to_mv)


def test_a_signal_in_units_that_are_no_voltage_is_refused(tmp_path):
    write_record(tmp_path, "rec", np.sin(np.arange(1300) / 20.0), fs=130)
    hea = tmp_path / "rec.hea"
    hea.write_text(hea.read_text().replace("/mV", "/NU"))
    with pytest.raises(DataError, match=r"units \['NU'\] are not a voltage"):
        rec.read_signal(tmp_path / "rec", database="session")


@pytest.mark.data("mitdb")
def test_an_annotation_file_cut_at_an_even_length_is_refused(
    data_root: Path, tmp_data_root: Path
) -> None:
    """wfdb reads a copy cut at a whole annotation without a word: mitdb 201's third AF
    episode was gone from the demo's reference and from calibration labels."""
    _copy_record(data_root / "mitdb", tmp_data_root / "mitdb", "201")
    atr = tmp_data_root / "mitdb" / "201.atr"
    whole = rec.read_mitdb("201").annotations.rhythm
    data = atr.read_bytes()
    atr.write_bytes(data[: (len(data) * 3 // 4) // 2 * 2])
    with pytest.raises(DataError, match="no end marker") as err:
        rec.read_mitdb("201")
    assert err.value.reason == "corrupt" and str(atr) in str(err.value)
    atr.write_bytes(data)
    assert rec.read_mitdb("201").annotations.rhythm == whole
