"""Exports write all or nothing and never over anything but a bundle (export.publish)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ecgedge.cli import main
from export.bundle_copy import bundle_copy
from export.errors import ExportError
from export.publish import check_bundle_out, staged_bundle
from sdk.bundle import default_bundle_path, load_bundle
from sdk.errors import BundleError


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    dst = tmp_path / "bundle"
    shutil.copytree(default_bundle_path(), dst)
    return dst


def test_an_out_that_is_not_a_bundle_or_is_a_source_is_refused(tmp_path: Path, bundle: Path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "notes.txt").write_text("mine")
    run = tmp_path / "run"
    run.mkdir()
    for out, sources in [
        (notes, ()),  # a folder that is not a bundle
        (tmp_path / "file.txt", ()),  # a file
        (bundle, (bundle,)),  # the bundle being read
        (run / "bundle", (run,)),  # inside the run being read
        (tmp_path, (bundle,)),  # around the bundle being read
    ]:
        if out.suffix == ".txt":
            out.write_text("x")
        with pytest.raises(ExportError):
            check_bundle_out(out, *sources)
    assert (notes / "notes.txt").read_text() == "mine"
    check_bundle_out(tmp_path / "new", bundle)  # absent: fine
    check_bundle_out(bundle, tmp_path / "other")  # an existing bundle is replaced


def test_the_cli_refuses_before_any_work_and_deletes_nothing(tmp_path: Path, bundle: Path, capsys):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "notes.txt").write_text("mine")
    argv = ["export", "--add-anchors", "--base-bundle", str(bundle), "--out", str(notes)]
    assert main(argv) == 2
    assert "is a folder that is not a bundle" in capsys.readouterr().err
    assert (notes / "notes.txt").read_text() == "mine"
    argv = ["export", "--rpeak-rule", "r.json", "--base-bundle", str(bundle), "--out", str(bundle)]
    assert main(argv) == 2
    assert "which it reads" in capsys.readouterr().err
    assert load_bundle(bundle)  # untouched


def test_a_failed_change_leaves_the_old_bundle_and_no_partial_folder(tmp_path: Path, bundle):
    out = tmp_path / "out"
    shutil.copytree(bundle, out)
    before = load_bundle(out).manifest_sha256
    with pytest.raises(RuntimeError), bundle_copy(bundle, out) as tmp:
        (tmp / "head.onnx").write_bytes(b"changed")
        raise RuntimeError("the change failed")
    assert load_bundle(out).manifest_sha256 == before
    assert not (tmp_path / "out.partial").exists()
    with pytest.raises(BundleError), bundle_copy(bundle, out) as tmp:  # fails verification
        (tmp / "head.onnx").write_bytes(b"tampered")
    assert load_bundle(out).manifest_sha256 == before


def test_a_verified_bundle_replaces_the_old_one(tmp_path: Path, bundle: Path):
    out = tmp_path / "out"
    shutil.copytree(bundle, out)
    (out / "stale.txt").write_text("from the old bundle")
    with staged_bundle(out, bundle) as tmp:
        shutil.copytree(bundle, tmp, dirs_exist_ok=True)
    assert load_bundle(out) and not (out / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "out"]
