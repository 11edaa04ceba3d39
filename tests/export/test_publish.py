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


def _left(folder: Path) -> list[str]:
    """What an export left in ``folder`` besides its (empty, lasting) lock files."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


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
    outer = tmp_path / "outer"  # a bundle folder holding the source being read
    shutil.copytree(bundle, outer)
    (outer / "inner").mkdir()
    reads = "which it reads"
    for out, sources, match in [
        (notes, (), "folder that is not a bundle"),
        (tmp_path / "file.txt", (), "is a file"),
        (bundle, (bundle,), reads),  # the bundle being read
        (run / "bundle", (run,), reads),  # inside the run being read
        (outer, (outer / "inner",), reads),  # around the source being read
    ]:
        if out.suffix == ".txt":
            out.write_text("x")
        with pytest.raises(ExportError, match=match):
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
    assert _left(tmp_path) == ["bundle", "out"]


def test_a_bundle_changed_in_place_is_replaced_by_its_verified_copy(tmp_path: Path, bundle: Path):
    """``export --run R --denoiser D --out B`` builds B, then adds the denoiser to B in place."""
    (bundle / "MODEL_CARD.md").write_text("old card")
    with bundle_copy(bundle, bundle) as tmp:
        (tmp / "MODEL_CARD.md").write_text("changed")
    assert load_bundle(bundle) and (bundle / "MODEL_CARD.md").read_text() != "old card"
    assert _left(tmp_path) == ["bundle"]


def test_symbolic_links_and_a_source_named_like_the_staging_folder_are_refused(
    tmp_path: Path, bundle: Path
):
    link = tmp_path / "current"
    link.symlink_to(bundle)
    with pytest.raises(ExportError, match="symbolic link"):
        check_bundle_out(link)
    dangling = tmp_path / "gone"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(ExportError, match="symbolic link"):
        check_bundle_out(dangling)
    staged_name = tmp_path / "x.partial"
    shutil.copytree(bundle, staged_name)
    with pytest.raises(ExportError), staged_bundle(tmp_path / "x", staged_name):
        pass
    assert load_bundle(staged_name)  # the source was not removed


def test_a_failed_swap_puts_the_old_bundle_back(tmp_path: Path, bundle: Path, monkeypatch):
    from export import publish

    out = tmp_path / "out"
    shutil.copytree(bundle, out)
    before = load_bundle(out).manifest_sha256
    real_rename = Path.rename

    def failing(self: Path, target):
        if self.name == "out.partial":
            raise OSError("disk full")
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", failing)
    with pytest.raises(OSError, match="disk full"), publish.staged_bundle(out, bundle) as tmp:
        shutil.copytree(bundle, tmp, dirs_exist_ok=True)
    monkeypatch.undo()
    assert load_bundle(out).manifest_sha256 == before
    assert _left(tmp_path) == ["bundle", "out"]


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="the lock is POSIX flock")
def test_a_second_export_to_the_same_out_is_refused_while_the_first_writes(
    tmp_path: Path, bundle: Path
):
    """Two exports staged into one <out>.partial mixed their files (the first reported the
    second's bundle as its own); now the second is refused before it touches anything."""
    out = tmp_path / "out"
    with staged_bundle(out, bundle) as tmp:
        shutil.copytree(bundle, tmp, dirs_exist_ok=True)
        (tmp / "mine.txt").write_text("first export")
        with pytest.raises(ExportError, match="another export is writing it"):
            with staged_bundle(out, bundle):
                pass
        assert (tmp / "mine.txt").read_text() == "first export"  # untouched by the second
        (tmp / "mine.txt").unlink()
    assert load_bundle(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "out", "out.lock"]
    assert (tmp_path / "out.lock").stat().st_size == 0  # the lock file stays, empty


def test_a_killed_exports_staging_folder_is_replaced_under_the_lock(tmp_path: Path, bundle):
    """A .partial folder with no manifest (an export killed mid-way, or one still writing
    when seen before the lock was taken) no longer blocks every later export."""
    out = tmp_path / "out"
    stale = tmp_path / "out.partial"
    stale.mkdir()
    (stale / "embedder.fp32.onnx").write_text("half written")
    with staged_bundle(out, bundle) as tmp:
        assert tmp == stale and not any(tmp.iterdir())
        shutil.copytree(bundle, tmp, dirs_exist_ok=True)
    assert load_bundle(out)


@pytest.mark.parametrize("name, kind", [("diffae-lru-cpu", "DiffAE-LRU"), ("dacl-cpu", "DACL")])
def test_diffecg_only_exports_refuse_another_kind_of_bundle_before_any_work(
    tmp_path: Path, name: str, kind: str
):
    """--denoiser / --refit-head / --add-anchors / --rpeak-rule and export-multimodal build on
    a DiffECG bundle; on a DiffAE-LRU or DACL one they failed late with a KeyError."""
    from export.bundle_copy import require_diffecg
    from export.multimodal import build_multimodal_bundle
    from sdk.bundle import bundle_path

    other = bundle_path(name)
    with pytest.raises(ExportError, match=f"is a {kind} bundle: this export builds on a DiffECG"):
        require_diffecg(other)
    with pytest.raises(ExportError, match=f"is a {kind} bundle"):
        with bundle_copy(other, tmp_path / "out"):
            pass
    with pytest.raises(ExportError, match=f"is a {kind} bundle"):
        build_multimodal_bundle(other, tmp_path, tmp_path / "mm")
    with pytest.raises(ExportError, match="holds no modalities.json"):
        build_multimodal_bundle(default_bundle_path(), tmp_path, tmp_path / "mm")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_bundle_moved_aside_by_a_killed_export_is_put_back(tmp_path: Path, bundle: Path):
    """Killed between moving the old bundle aside and moving the new one in, an export left
    no bundle at ``out``, and the next export never looked for it."""
    out = tmp_path / "out"
    aside = tmp_path / ".out.export-aside"
    shutil.copytree(bundle, aside)  # as the killed export left it
    before = load_bundle(aside).manifest_sha256
    with pytest.raises(RuntimeError), staged_bundle(out, bundle):
        raise RuntimeError("this export fails too")
    assert load_bundle(out).manifest_sha256 == before
    assert _left(tmp_path) == ["bundle", "out"]


def test_a_bundle_left_aside_after_its_successor_moved_in_is_removed(tmp_path: Path, bundle: Path):
    out = tmp_path / "out"
    shutil.copytree(bundle, out)
    (out / "new.txt").write_text("the successor")
    shutil.copytree(bundle, tmp_path / ".out.export-aside")  # killed before removing it
    with staged_bundle(out, bundle) as tmp:
        shutil.copytree(bundle, tmp, dirs_exist_ok=True)
    assert load_bundle(out) and _left(tmp_path) == ["bundle", "out"]


def test_a_users_folder_beside_the_bundle_is_never_taken_for_one_moved_aside(
    tmp_path: Path, bundle: Path
):
    """The aside folder had a plain name (``<out>.old``): an export removed a user's backup of
    that name, even the very bundle it was reading."""
    out = tmp_path / "default"
    shutil.copytree(bundle, out)
    backup = tmp_path / "default.old"
    shutil.copytree(bundle, backup)
    with staged_bundle(out, backup) as tmp:
        assert load_bundle(backup)  # the source is still there while the export reads it
        shutil.copytree(backup, tmp, dirs_exist_ok=True)
    assert load_bundle(backup) and load_bundle(out)
    with pytest.raises(ExportError):  # reading the aside folder itself is refused
        with staged_bundle(out, tmp_path / ".default.export-aside"):
            pass
