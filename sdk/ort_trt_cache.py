"""Integrity of ONNX Runtime's TensorRT engine cache (the ``"tensorrt"`` backend).

ONNX Runtime's TensorRT execution provider deserializes every engine it finds in its cache
directory (``trt_engine_cache_path``) whose name matches the subgraph it is about to build,
and checks neither contents nor origin. A serialized engine can carry plugin code, so the SDK
treats the cache like the native engines of :mod:`sdk.trt_runtime`:

- before a session: the directory must be a real directory owned by this user and writable
  by no one else (it is created ``0700``), else :class:`~sdk.errors.BundleError` (reason
  ``"engine_cache"``); every cache file (``TensorrtExecutionProvider_*``: engines, their
  profiles, the timing cache) must be a regular file with one link, owned by this user and
  writable by no one else, and match the SHA-256 recorded for it in :data:`INDEX_NAME`
  (``sha256sum -c`` format, trusted on the same terms) when the SDK last saw the directory.
  A file that does not -- corrupted, replaced, a symlink or hard link, or written by another
  program -- is removed (ONNX Runtime then rebuilds it) and a warning is logged. Files are
  read through a descriptor opened without following symlinks;
- after the session has built or loaded its engines the index is rewritten from the files
  present, and again after any run that changed them (ONNX Runtime builds engines at session
  creation or at a run with new input shapes; :func:`cache_signature`).

Limits, as for ``<engine>.sha256``: this detects corrupted or swapped cache files and keeps
other users out of a private directory whose parents they cannot write either (the checks
are by path); a process running as the same user can rewrite files and index alike, and
ONNX Runtime re-opens a file after the check. Files without the provider's prefix in the
directory are never read or touched.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import tempfile
from pathlib import Path

from sdk.errors import BundleError

__all__ = [
    "CACHE_PREFIX",
    "INDEX_NAME",
    "cache_signature",
    "check_engine_cache",
    "record_engine_cache",
]

INDEX_NAME = "ecgedge-cache.sha256"
#: every file ONNX Runtime's TensorRT provider writes to its cache starts with this
CACHE_PREFIX = "TensorrtExecutionProvider_"

_log = logging.getLogger(__name__)


def _foreign(st: os.stat_result) -> str | None:
    """Why another user could change this file or directory, or ``None``."""
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        return f"owned by uid {st.st_uid}, not by this user"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"writable by group or others (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def _owned_regular(st: os.stat_result) -> str | None:
    """Why a cache file (or the index) cannot be trusted, or ``None``: it must be a regular
    file with one link, owned by this user and writable by no one else."""
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_nlink != 1:
        return f"{st.st_nlink} hard links"
    return _foreign(st)


def _open_trusted(path: Path) -> tuple[int, str | None]:
    """Open ``path`` read-only without following a symlink; return the descriptor (-1 if it
    could not be opened) and why its contents cannot be trusted (``None`` if they can)."""
    try:
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        fd = os.open(path, flags)  # a FIFO named like an engine must not block the open
    except OSError as exc:
        return -1, f"cannot be opened ({exc.strerror})"
    problem = _owned_regular(os.fstat(fd))
    return fd, problem


def _sha256_fd(fd: int) -> str:
    h = hashlib.sha256()
    while chunk := os.read(fd, 1 << 20):
        h.update(chunk)
    return h.hexdigest()


def _private_dir(cache_dir: Path) -> Path:
    """Create ``cache_dir`` (``0700``) if missing; refuse a symlink, a non-directory, or a
    directory another user owns or may write."""
    cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = os.lstat(cache_dir)
    if stat.S_ISLNK(st.st_mode):
        problem: str | None = "a symlink"
    elif not stat.S_ISDIR(st.st_mode):
        problem = "not a directory"
    else:
        problem = _foreign(st)
    if problem is not None:
        raise BundleError(
            f"TensorRT engine cache is {problem}; use a private directory (chmod 700)",
            path=str(cache_dir),
            reason="engine_cache",
        )
    return cache_dir


def _read_index(cache_dir: Path) -> dict[str, str]:
    """File name → SHA-256 from the index; a missing or untrusted index records nothing."""
    fd, problem = _open_trusted(cache_dir / INDEX_NAME)
    if fd < 0:
        return {}
    try:
        if problem is not None:
            _log.warning("ignoring %s in %s: %s", INDEX_NAME, cache_dir, problem)
            return {}
        text = b"".join(iter(lambda: os.read(fd, 1 << 20), b""))
        lines = text.decode("utf-8", errors="replace").splitlines()
    finally:
        os.close(fd)
    out: dict[str, str] = {}
    for line in lines:
        parts = line.split(maxsplit=1)
        if len(parts) == 2 and len(parts[0]) == 64:
            out[parts[1].lstrip("*")] = parts[0].lower()
    return out


def _cache_files(cache_dir: Path) -> list[Path]:
    return sorted(p for p in cache_dir.iterdir() if p.name.startswith(CACHE_PREFIX))


def _trusted_sha256(path: Path) -> str | None:
    """SHA-256 of a cache file that passes :func:`_owned_regular`, read through one
    descriptor opened without following symlinks; ``None`` for any other file."""
    fd, problem = _open_trusted(path)
    if fd < 0:
        return None
    try:
        return None if problem is not None else _sha256_fd(fd)
    finally:
        os.close(fd)


def check_engine_cache(cache_dir: Path) -> list[str]:
    """Before a TensorRT-provider session: make ``cache_dir`` private and remove every cache
    file that is not a private regular file matching the index; return the removed names.

    Raises
    ------
    BundleError
        reason ``"engine_cache"``: the directory is a symlink, not a directory, owned by
        another user or writable by group/others, or holds a directory with a cache file's
        name.
    """
    cache_dir = _private_dir(Path(cache_dir))
    recorded = _read_index(cache_dir)
    removed = []
    for path in _cache_files(cache_dir):
        if stat.S_ISDIR(os.lstat(path).st_mode):
            raise BundleError(
                f"{path.name} in the TensorRT engine cache is a directory; remove it",
                path=str(cache_dir),
                reason="engine_cache",
            )
        digest = _trusted_sha256(path)
        if digest is not None and recorded.get(path.name) == digest:
            continue
        path.unlink()
        removed.append(path.name)
    if removed:
        _log.warning(
            "removed %d TensorRT cache file(s) that did not match %s (ONNX Runtime rebuilds "
            "them): %s",
            len(removed),
            INDEX_NAME,
            ", ".join(removed),
        )
    return removed


def cache_signature(cache_dir: Path) -> tuple[tuple[str, int, int, int], ...]:
    """(name, inode, size, mtime ns) of every cache file: cheap to compare after each run,
    to re-index when ONNX Runtime wrote or rewrote an engine."""
    out = []
    with os.scandir(cache_dir) as entries:
        for e in entries:
            if e.name.startswith(CACHE_PREFIX):
                st = e.stat(follow_symlinks=False)
                out.append((e.name, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(sorted(out))


def record_engine_cache(cache_dir: Path) -> dict[str, str]:
    """Write the index of the trusted cache files now in ``cache_dir`` (owner-only, atomic);
    return file name → SHA-256. Files failing :func:`_owned_regular` are left out, so the next
    :func:`check_engine_cache` removes them."""
    cache_dir = Path(cache_dir)
    sums = {}
    for path in _cache_files(cache_dir):
        digest = _trusted_sha256(path)
        if digest is not None:
            sums[path.name] = digest
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=f"{INDEX_NAME}.", suffix=".partial")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("".join(f"{digest}  {name}\n" for name, digest in sums.items()))
        os.replace(tmp, cache_dir / INDEX_NAME)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return sums
