"""Anchor windows: read only as verified plain arrays, and a user's head keeps every class."""

from __future__ import annotations

import io
import json
import logging
import pathlib
import shutil
import zipfile

import numpy as np
import pytest

from ecgedge.cli import build_parser
from sdk.anchors import ANCHOR_MODES, Anchors, anchors_mismatch, load_anchors, select_anchors
from sdk.bundle import default_bundle_path, load_bundle, sha256_file
from sdk.calibration import Calibrator
from sdk.classifier import WindowClassifier, WindowInputs
from sdk.errors import BundleError, ConfigError
from sdk.synthetic import synthetic_ecg

INTERVALS = [(0.0, 60.0, "N"), (60.0, 120.0, "A"), (120.0, 180.0, "N"), (180.0, 240.0, "A")]


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(default_bundle_path())


@pytest.fixture(scope="module")
def recording():
    segments = (("sinus", 60.0), ("af", 60.0), ("sinus", 60.0), ("af", 60.0))
    ecg = synthetic_ecg(segments, fs=250.0, seed=11)
    return ecg.signal, ecg.fs


def _with_anchors(root, arrays=None, raw: bytes | None = None):
    """A copy of the shipped bundle whose anchors file holds ``arrays`` (or ``raw`` bytes),
    its manifest entry updated so the checksum matches."""
    shutil.copytree(default_bundle_path(), root)
    if raw is None:
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        raw = buf.getvalue()
    (root / "anchors.npz").write_bytes(raw)
    manifest = json.loads((root / "manifest.json").read_text())
    entry = next(f for f in manifest["files"] if f["role"] == "anchors")
    entry["sha256"] = sha256_file(root / "anchors.npz")
    entry["bytes"] = len(raw)
    (root / "manifest.json").write_text(json.dumps(manifest))
    return load_bundle(root)


def _arrays(bundle):
    a = load_anchors(bundle)
    return {
        "windows": a.inputs.windows.astype(np.float16),
        "rr": a.inputs.rr,
        "lorenz": a.inputs.lorenz.astype(np.float16),
        "labels": a.labels,
    }


def test_the_shipped_bundle_has_denoised_anchors_of_every_class(bundle):
    a = load_anchors(bundle)
    m = bundle.manifest
    assert a is not None
    counts = np.bincount(a.labels, minlength=len(m.classes))
    assert counts.min() == counts.max() > 0  # the same number per class, every class
    assert a.inputs.windows.shape == (len(a), 1, m.window_samples)
    assert a.inputs.windows.dtype == np.float32 and np.all(np.isfinite(a.inputs.windows))
    # they went through the bundle's denoiser, as the calibration windows do
    assert a.denoiser_sha256 == m.file("denoiser").sha256
    # device-path windows: standardized (clipping and a short record's zero padding
    # lower a few), as the embedders take them
    std = a.inputs.windows.std(axis=-1)
    assert np.all(std <= 1.001) and np.median(std) > 0.99


def test_a_bundle_without_anchors_gives_none_and_calibration_says_so(tmp_path, recording):
    root = tmp_path / "b"
    shutil.copytree(default_bundle_path(), root)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["files"] = [f for f in manifest["files"] if f["role"] != "anchors"]
    (root / "manifest.json").write_text(json.dumps(manifest))
    b = load_bundle(root)
    assert load_anchors(b) is None
    cal = Calibrator(b, t_box=(1, 20), max_evals=2, n_init=2, anchors="all")
    cal.add_recording(*recording, INTERVALS)
    info = cal.calibrate().profile.calibration["anchors"]
    assert info == {"mode": "all", "windows": 0, "skipped": "the bundle has no anchors"}


def test_a_changed_anchors_file_is_refused(tmp_path, bundle):
    root = tmp_path / "b"
    shutil.copytree(default_bundle_path(), root)
    data = bytearray((root / "anchors.npz").read_bytes())
    data[-100] ^= 0xFF
    (root / "anchors.npz").write_bytes(bytes(data))
    with pytest.raises(BundleError) as err:  # checked when the bundle is opened
        load_bundle(root)
    assert err.value.reason == "checksum"
    ok = tmp_path / "ok"
    shutil.copytree(default_bundle_path(), ok)
    b = load_bundle(ok)
    (ok / "anchors.npz").write_bytes(bytes(data))  # and replaced after it was opened
    with pytest.raises(BundleError) as err:
        load_anchors(b)
    assert err.value.reason == "checksum"


def test_pickled_or_non_npz_anchors_are_refused_not_unpickled(tmp_path, bundle):
    objects = {**_arrays(bundle), "windows": np.array([object()], dtype=object)}  # all members
    b = _with_anchors(tmp_path / "pickled", objects)
    with pytest.raises(BundleError, match="windows.npy: object dtype") as err:
        load_anchors(b)
    assert err.value.reason == "malformed"
    b = _with_anchors(tmp_path / "text", raw=b"not a zip file at all")
    with pytest.raises(BundleError, match="plain arrays"):
        load_anchors(b)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda a: a.pop("rr"), r"expected \['labels.npy', 'lorenz.npy', 'rr.npy'"),
        (lambda a: a.pop("lorenz"), r"expected \['labels.npy', 'lorenz.npy'"),
        (lambda a: a.update(extra=np.zeros(3)), r"hold \['extra.npy'"),
        (lambda a: a.update(labels=a["labels"][:, None]), "integer vector"),
        (lambda a: a.update(labels=a["labels"][:0]), "integer vector"),
        (lambda a: a.update(rr=a["rr"].astype(np.int32)), "floating point"),
        (lambda a: a.update(windows=np.zeros((5000, 1, 1280), np.float16)), "more than 4096"),
        (lambda a: a.update(windows=a["windows"][:, :, :100]), "windows shape"),
        (lambda a: a.update(rr=a["rr"][:-1]), "rr shape"),
        (lambda a: a.update(labels=a["labels"] + 10), "must index the classes"),
        (lambda a: a.update(labels=a["labels"].astype(np.float32)), "integer vector"),
        (lambda a: a["windows"].__setitem__((0, 0, 5), np.nan), "NaN or inf"),
    ],
)
def test_anchors_that_do_not_fit_the_bundle_are_refused(tmp_path, bundle, change, match):
    arrays = _arrays(bundle)
    change(arrays)
    b = _with_anchors(tmp_path / "b", arrays)
    with pytest.raises(BundleError, match=match) as err:
        load_anchors(b)
    assert err.value.reason == "malformed"


def test_a_users_head_keeps_the_classes_the_user_did_not_label(bundle, recording):
    m = bundle.manifest
    anchors = load_anchors(bundle)
    o, noisy = m.classes.index("O"), m.classes.index("~")
    unlabelled = int(np.isin(anchors.labels, [o, noisy]).sum())
    expected = {"missing": unlabelled, "all": len(anchors), "none": 0}
    clf = WindowClassifier(bundle, precision="fp32")
    user = Calibrator(bundle)
    user.add_recording(*recording, INTERVALS)
    inputs, y = user._data()
    for mode, n in expected.items():
        cal = Calibrator(bundle, t_box=(1, 20), max_evals=3, n_init=2, anchors=mode)
        cal.add_recording(*recording, INTERVALS)
        profile = cal.calibrate(user="u").profile
        info = profile.calibration["anchors"]
        assert info["mode"] == mode and info["windows"] == n
        assert set(profile.calibration["label_counts"]) == {"N", "A"}  # the user's labels
        if mode == "missing":
            assert set(info["label_counts"]) == {"O", "~"}
        pred = clf.classify(anchors.inputs, profile.t, profile.head).argmax(1)
        for k in (o, noisy):
            said = np.mean(pred[anchors.labels == k] == k)
            if n:  # fitted on the anchors too: most of each class's anchors are recognised
                assert said >= 0.5, (mode, m.classes[k], said)
            else:  # never saw the class: never says it
                assert not np.any(pred == k), m.classes[k]
        # whatever the anchors, the user's own rhythms stay separated
        assert np.mean(clf.classify(inputs, profile.t, profile.head).argmax(1) == y) >= 0.95


def test_an_unknown_anchor_mode_is_refused_and_the_cli_offers_the_sdks(bundle):
    with pytest.raises(ConfigError, match="anchors must be one of"):
        Calibrator(bundle, anchors=True)
    parser = build_parser()
    args = parser.parse_args(["calibrate", "rec", "--out", "p.json", "--anchors", "all"])
    assert args.anchors == "all"
    action = next(
        a
        for sub in parser._subparsers._group_actions  # type: ignore[union-attr]
        for name, p in sub.choices.items()
        if name == "calibrate"
        for a in p._actions
        if a.dest == "anchors"
    )
    assert tuple(action.choices) == ANCHOR_MODES


def test_anchors_of_another_denoising_are_left_out_with_a_warning(bundle, recording, caplog):
    cal = Calibrator(bundle, t_box=(1, 20), max_evals=2, n_init=2, denoise=False, anchors="all")
    cal.add_recording(*recording, INTERVALS)
    with caplog.at_level(logging.WARNING, logger="sdk.calibration.calibrator"):
        info = cal.calibrate().profile.calibration["anchors"]
    why = "the anchors are denoised, the calibration windows are not"
    assert info == {"mode": "all", "windows": 0, "skipped": why}
    assert "without the bundle's anchors" in caplog.text


class _Touch:
    """Unpickling this creates a file: proof that something was unpickled."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


def _npz_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _npy(array, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=allow_pickle)
    return buf.getvalue()


def test_a_pickle_inside_the_anchors_is_never_unpickled(tmp_path, bundle):
    marker = tmp_path / "unpickled"
    members = {f"{k}.npy": _npy(v) for k, v in _arrays(bundle).items()}
    members["labels.npy"] = _npy(np.array([_Touch(marker)], dtype=object), allow_pickle=True)
    b = _with_anchors(tmp_path / "b", raw=_npz_bytes(members))
    with pytest.raises(BundleError, match="object dtype"):
        load_anchors(b)
    assert not marker.exists()


def test_compressed_or_lying_members_are_refused_before_any_allocation(tmp_path, bundle):
    arrays = _arrays(bundle)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    b = _with_anchors(tmp_path / "zipped", raw=buf.getvalue())
    with pytest.raises(BundleError, match="compressed or encrypted"):
        load_anchors(b)
    # a header that claims 10 rows of 10**12 values over a few bytes of data
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (10, 10**12)}
    )
    members = {f"{k}.npy": _npy(v) for k, v in arrays.items()}
    members["rr.npy"] = header.getvalue() + b"\0" * 64
    b = _with_anchors(tmp_path / "lying", raw=_npz_bytes(members))
    with pytest.raises(BundleError, match="does not match its data"):
        load_anchors(b)


def test_anchors_fit_only_windows_denoised_the_same_way(bundle):
    a = load_anchors(bundle)
    bundle_denoiser = bundle.manifest.file("denoiser").sha256
    other = Anchors(a.inputs, a.labels, "0" * 64)
    plain = Anchors(a.inputs, a.labels, None)
    assert anchors_mismatch(a, bundle, denoised=True) is None
    assert anchors_mismatch(plain, bundle, denoised=False) is None
    assert "another denoiser" in anchors_mismatch(other, bundle, denoised=True)
    assert anchors_mismatch(plain, bundle, denoised=True) == (
        "the calibration windows are denoised, the anchors are not"
    )
    assert anchors_mismatch(a, bundle, denoised=False) == (
        "the anchors are denoised, the calibration windows are not"
    )
    assert a.denoiser_sha256 == bundle_denoiser


def test_select_anchors_takes_the_missing_classes_all_or_none():
    labels = np.array([0, 1, 2, 3, 2, 0])
    a = Anchors(WindowInputs(np.zeros((6, 1, 8)), np.zeros((6, 9))), labels, None)
    user = np.array([0, 1, 1, 0])
    assert select_anchors(a, user, "missing").tolist() == [2, 3, 4]
    assert select_anchors(a, user, "all").tolist() == list(range(6))
    assert select_anchors(a, user, "none").size == 0
