"""Writing a bundle all or nothing, and never over anything but a bundle.

Every export writes into ``<out>.partial`` (:func:`staged_bundle`); only a copy that
:func:`sdk.bundle.load_bundle` verifies replaces ``out``. Before any work,
:func:`check_bundle_out` refuses an ``out`` the export could not replace safely: an existing
path that is not a bundle folder (a folder of notes, a training run), or one that is, holds or
lies inside the run or bundle being read.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from export.errors import ExportError
from sdk.bundle import load_bundle

_log = logging.getLogger(__name__)


def check_bundle_out(out_dir: Path, *sources: Path) -> None:
    """Raise :class:`ExportError` unless ``out_dir`` is absent or a bundle folder (it holds a
    ``manifest.json``) other than, outside and not around each of ``sources``."""
    if Path(out_dir).is_symlink():
        raise ExportError(f"--out {out_dir} is a symbolic link; give the folder it names")
    out = Path(out_dir).resolve()
    if out.exists() and not (out.is_dir() and (out / "manifest.json").is_file()):
        kind = "a folder that is not a bundle" if out.is_dir() else "a file"
        raise ExportError(
            f"--out {out_dir} is {kind}; an export replaces only a bundle: give a new folder"
        )
    _check_not_a_source(out_dir, sources)


def _check_not_a_source(out_dir: Path, sources: tuple[Path, ...]) -> None:
    """Raise :class:`ExportError` if ``out_dir`` is, holds or lies inside a source."""
    out = Path(out_dir).resolve()
    for source in sources:
        src = Path(source).resolve()
        if out == src or out in src.parents or src in out.parents:
            raise ExportError(f"--out {out_dir} is, holds or lies inside {source}, which it reads")


@contextmanager
def staged_bundle(out_dir: Path, *sources: Path) -> Iterator[Path]:
    """A fresh, empty ``<out_dir>.partial`` folder for the block to write a bundle into.

    ``out_dir`` is checked first (:func:`check_bundle_out`). When the block ends the folder
    is verified as a device would verify it (:func:`sdk.bundle.load_bundle`) and replaces
    ``out_dir``; if the block or the check fails it is removed and ``out_dir`` is untouched.
    One export at a time per ``out_dir`` (an advisory lock on ``<out_dir>.lock``, a file that
    stays); a ``.partial`` folder left by an export that was killed is replaced, and a bundle
    it had moved aside (``.<out_dir name>.export-aside``) is put back or, when its successor
    is in place, removed.
    """
    check_bundle_out(out_dir, *sources)
    tmp = out_dir.with_name(out_dir.name + ".partial")
    with _exclusive(out_dir):  # first: a .partial folder seen under the lock is no live one's
        if tmp.is_symlink():
            raise ExportError(f"{tmp} is a symbolic link; an export stages its bundle there")
        _check_not_a_source(tmp, sources)  # the staging folder is never one the export reads
        _check_not_a_source(_aside(out_dir), sources)  # nor the one it moves a bundle aside to
        _recover(out_dir)
        shutil.rmtree(tmp, ignore_errors=True)  # a killed export's, or a stray folder
        tmp.mkdir(parents=True)
        try:
            yield tmp
            load_bundle(tmp)
            _replace(tmp, out_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


@contextmanager
def _exclusive(out_dir: Path) -> Iterator[None]:
    """One export at a time per ``out_dir``: an advisory lock on ``<out_dir>.lock`` (released
    by the system if the export dies); a second export is refused at once, before it touches
    the staging folder the first one is writing."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock (one export at a time is then the user's care)
        yield
        return
    # the lock file stays (empty): a path unlinked while held would let a waiting export lock
    # the orphaned file and a later one a new file, both at once
    lock = out_dir.with_name(out_dir.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ExportError(
                f"--out {out_dir}: another export is writing it (lock {lock.name}); wait for it "
                "or give another folder"
            ) from None
        yield


def _aside(out_dir: Path) -> Path:
    """Where :func:`_replace` moves the bundle it replaces while the new one moves in: a
    hidden name no one gives a folder of their own (an export removes or restores it)."""
    return out_dir.with_name(f".{out_dir.name}.export-aside")


def _recover(out_dir: Path) -> None:
    """After an export killed inside :func:`_replace`: put the bundle it had moved aside back
    (nothing took its place), or remove it (its successor is in place). Under the lock."""
    old = _aside(out_dir)
    if old.is_symlink() or not old.is_dir():
        return
    if out_dir.exists():
        shutil.rmtree(old, ignore_errors=True)
    elif (old / "manifest.json").is_file():
        old.rename(out_dir)
        _log.warning("%s: put back the bundle an interrupted export had moved aside", out_dir)


def _replace(new: Path, out_dir: Path) -> None:
    """``new`` takes ``out_dir``'s place; an old bundle there is moved aside first, put back
    if the move fails, and removed only once the new one is in place."""
    old = _aside(out_dir)
    shutil.rmtree(old, ignore_errors=True)  # not left by a live export: we hold the lock
    if out_dir.exists():
        out_dir.rename(old)
    try:
        new.rename(out_dir)
    except BaseException:
        if old.exists():
            old.rename(out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)
