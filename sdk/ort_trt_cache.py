"""Integrity of ONNX Runtime's TensorRT engine cache (the ``"tensorrt"`` backend).

ONNX Runtime's TensorRT execution provider deserializes every engine it finds in its cache
directory (``trt_engine_cache_path``) whose name matches the subgraph it is about to build,
and checks neither contents nor origin. A serialized engine can carry plugin code, so the SDK
treats the cache like the native engines of :mod:`sdk.trt_runtime`:

- before a session: the directory must be a real directory owned by this user and writable
  by no one else (it is created ``0700``), else :class:`~sdk.errors.BundleError` (reason
  ``"engine_cache"``); every cache file (``TensorrtExecutionProvider_*``: engines, their
  profiles, the timing cache) must match the SHA-256 recorded for it in
  :data:`INDEX_NAME` (``sha256sum -c`` format) when the SDK last saw the directory. A file
  that does not -- corrupted, replaced, a symlink, or written by another program -- is
  removed (ONNX Runtime then rebuilds it) and a warning is logged;
- after the session has built or loaded its engines (ONNX Runtime may build them at
  session creation or at the first run), the index is rewritten from the files present.

Limits, as for ``<engine>.sha256``: this detects corrupted or swapped cache files and keeps
other users out; a process running as the same user can rewrite files and index alike. Files
without the provider's prefix in the directory are never read or touched.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from pathlib import Path

from sdk.errors import BundleError

__all__ = ["INDEX_NAME", "CACHE_PREFIX", "check_engine_cache", "record_engine_cache"]

INDEX_NAME = "ecgedge-cache.sha256"
#: every file ONNX Runtime's TensorRT provider writes to its cache starts with this
CACHE_PREFIX = "TensorrtExecutionProvider_"

_log = logging.getLogger(__name__)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _private_dir(cache_dir: Path) -> Path:
    """Create ``cache_dir`` (``0700``) if missing; refuse a symlink, a non-directory, or a
    directory another user owns or may write."""
    cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = os.lstat(cache_dir)
    problem = None
    if stat.S_ISLNK(st.st_mode):
        problem = "is a symlink"
    elif not stat.S_ISDIR(st.st_mode):
        problem = "is not a directory"
    elif hasattr(os, "getuid") and st.st_uid != os.getuid():
        problem = f"is owned by uid {st.st_uid}, not by this user"
    elif st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        problem = f"is writable by group or others (mode {stat.S_IMODE(st.st_mode):o})"
    if problem is not None:
        raise BundleError(
            f"TensorRT engine cache {problem}; use a private directory (chmod 700)",
            path=str(cache_dir),
            reason="engine_cache",
        )
    return cache_dir


def _read_index(cache_dir: Path) -> dict[str, str]:
    """File name → SHA-256 from the index; a missing or unreadable index records nothing."""
    index = cache_dir / INDEX_NAME
    if index.is_symlink() or not index.is_file():
        return {}
    out: dict[str, str] = {}
    try:
        lines = index.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return {}
    for line in lines:
        parts = line.split(maxsplit=1)
        if len(parts) == 2 and len(parts[0]) == 64:
            out[parts[1].lstrip("*")] = parts[0].lower()
    return out


def _cache_files(cache_dir: Path) -> list[Path]:
    return sorted(p for p in cache_dir.iterdir() if p.name.startswith(CACHE_PREFIX))


def check_engine_cache(cache_dir: Path) -> list[str]:
    """Before a TensorRT-provider session: make ``cache_dir`` private and remove every cache
    file that does not match the index; return the removed names.

    Raises
    ------
    BundleError
        reason ``"engine_cache"``: the directory is a symlink, not a directory, owned by
        another user or writable by group/others.
    """
    cache_dir = _private_dir(Path(cache_dir))
    recorded = _read_index(cache_dir)
    removed = []
    for path in _cache_files(cache_dir):
        regular = not path.is_symlink() and path.is_file()
        if regular and recorded.get(path.name) == _sha256(path):
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


def record_engine_cache(cache_dir: Path) -> dict[str, str]:
    """Write the index of the cache files now in ``cache_dir`` (owner-only, atomic);
    return file name → SHA-256."""
    cache_dir = Path(cache_dir)
    sums = {
        p.name: _sha256(p) for p in _cache_files(cache_dir) if not p.is_symlink() and p.is_file()
    }
    tmp = cache_dir / f"{INDEX_NAME}.{os.getpid()}.partial"
    tmp.write_text("".join(f"{digest}  {name}\n" for name, digest in sums.items()))
    os.chmod(tmp, 0o600)
    tmp.replace(cache_dir / INDEX_NAME)
    return sums
