"""User profiles: the result of on-device calibration, bound to one bundle.

A profile holds the diffusion step t of each modality and the user's head weights, with
when and on what it was calibrated. It is one JSON file carrying a SHA-256 of its own
content, written atomically (temporary file, fsync, rename) with owner-only permissions
(0600), and refused with a :class:`~sdk.errors.ProfileError` when it is corrupt, edited,
readable by others, a symbolic link, owned by another user, or made for a different bundle
(profiles bind to the bundle's manifest hash: new weights mean a new calibration) or not
usable with it (classes, head width, t outside the bundle's range).

The checksum carries no secret: it catches damage and hand edits, not a deliberate forgery by
someone who can write the file; the file's owner-only permissions are what protect it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sdk.bundle import Bundle, unique_keys
from sdk.errors import ProfileError
from sdk.head import SoftmaxHead

FORMAT = "ecgedge-user-profile"
SCHEMA_VERSION = 1


#: Bounds a fitted head never leaves (:func:`sdk.head.fit_softmax_head` floors scales at
#: 1e-6; its L2 keeps weights small); beyond them a profile is refused as malformed.
MAX_HEAD_ABS = 1e6
MIN_HEAD_SCALE = 1e-6


@dataclass(frozen=True)
class UserProfile:
    """Per-user calibration result.

    Attributes
    ----------
    user : an opaque user identifier chosen by the app (no personal data needed).
    bundle_name, bundle_sha256 : the bundle the profile was calibrated for (manifest SHA-256).
    t : diffusion step per modality, e.g. ``{"raw": 37}``.
    head : the user's head on ``embedding(s) ++ rr_features``.
    calibration : provenance: time (UTC, ISO 8601), source, windows, label counts,
        objective, extractor evaluations, seconds, the optimizer's trace.
    """

    user: str
    bundle_name: str
    bundle_sha256: str
    t: dict[str, int]
    head: SoftmaxHead
    calibration: dict[str, Any] = field(default_factory=dict)

    def check_bundle(self, bundle: Bundle, path: str = "<profile>") -> None:
        """Raise :class:`ProfileError` (``reason="bundle"``) unless made for ``bundle``."""
        if self.bundle_sha256 != bundle.manifest_sha256:
            raise ProfileError(
                f"calibrated for bundle {self.bundle_name!r} ({self.bundle_sha256[:12]}…), "
                f"not for {bundle.manifest.name!r} ({bundle.manifest_sha256[:12]}…); "
                "calibrate again for this bundle",
                path=path,
                reason="bundle",
            )
        m = bundle.manifest
        problems = []
        if self.head.classes != m.classes:
            problems.append(f"head classes {list(self.head.classes)} != {list(m.classes)}")
        head_inputs = m.file("head").inputs
        width = head_inputs[0].shape[-1] if head_inputs else None
        if isinstance(width, int) and self.head.weight.shape[0] != width:
            problems.append(f"head takes {self.head.weight.shape[0]} features, bundle {width}")
        for modality, t in self.t.items():
            if modality not in m.modalities or not 0 <= t <= m.t_max:
                problems.append(f"t {modality}={t} is not a modality of the bundle in 0..{m.t_max}")
        if not isinstance(self.calibration.get("denoised", False), bool):
            problems.append("calibration.denoised must be true or false")
        h = self.head
        if not all(np.isfinite(a).all() for a in (h.weight, h.bias, h.mean, h.scale)):
            problems.append("head parameters are not all finite")
        elif max(np.abs(a).max(initial=0.0) for a in (h.weight, h.bias, h.mean)) > MAX_HEAD_ABS:
            problems.append(f"head parameters beyond ±{MAX_HEAD_ABS:g}")
        elif h.scale.min(initial=MIN_HEAD_SCALE) < MIN_HEAD_SCALE:
            problems.append(f"head feature scales below {MIN_HEAD_SCALE:g}")
        if problems:
            raise ProfileError("; ".join(problems), path=path, reason="malformed")

    def to_dict(self) -> dict[str, Any]:
        h = self.head
        return {
            "format": FORMAT,
            "schema_version": SCHEMA_VERSION,
            "user": self.user,
            "bundle": {"name": self.bundle_name, "manifest_sha256": self.bundle_sha256},
            "t": dict(self.t),
            "head": {
                "classes": list(h.classes),
                "weight": np.asarray(h.weight).tolist(),
                "bias": np.asarray(h.bias).tolist(),
                "mean": np.asarray(h.mean).tolist(),
                "scale": np.asarray(h.scale).tolist(),
            },
            "calibration": self.calibration,
        }


def _digest(body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def save_profile(profile: UserProfile, path: Path | str) -> Path:
    """Write ``profile`` atomically with permissions 0600; return the path."""
    path = Path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    body = profile.to_dict()
    try:
        text = json.dumps({**body, "sha256": _digest(body)}, indent=1, allow_nan=False)
    except ValueError as exc:  # NaN/inf: a profile no pipeline could use
        raise ProfileError(f"profile not saved: {exc}", path=str(path), reason="malformed") from exc
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if os.name == "posix":  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path


def _parse(data: dict[str, Any], path: str) -> UserProfile:
    try:
        if data["format"] != FORMAT or data["schema_version"] != SCHEMA_VERSION:
            raise ValueError(f"format {data['format']!r} v{data['schema_version']!r}")
        h = data["head"]
        classes = tuple(str(c) for c in h["classes"])
        weight = np.asarray(h["weight"], dtype=np.float64)
        arrays = [np.asarray(h[k], dtype=np.float64) for k in ("bias", "mean", "scale")]
        d, k = weight.shape
        if arrays[0].shape != (k,) or arrays[1].shape != (d,) or arrays[2].shape != (d,):
            raise ValueError("head arrays have inconsistent shapes")
        if k != len(classes) or not all(np.all(np.isfinite(a)) for a in [weight, *arrays]):
            raise ValueError("head weights are not finite or do not match the classes")
        if np.any(arrays[2] <= 0):
            raise ValueError("head scale must be positive")
        t = data["t"]
        if not isinstance(t, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in t.values()
        ):
            raise ValueError("t must map modalities to integers")
        return UserProfile(
            user=str(data["user"]),
            bundle_name=str(data["bundle"]["name"]),
            bundle_sha256=str(data["bundle"]["manifest_sha256"]),
            t={str(m): int(t) for m, t in data["t"].items()},
            head=SoftmaxHead(weight, arrays[0], arrays[1], arrays[2], classes),
            calibration=dict(data.get("calibration", {})),
        )
    except (KeyError, TypeError, ValueError, OverflowError) as exc:  # 10**400 as a weight
        raise ProfileError(f"malformed profile: {exc}", path=path, reason="malformed") from exc


#: Largest profile file read (a head of a few thousand features is well under 1 MB).
MAX_PROFILE_BYTES = 16 * 1024 * 1024


def _read_private(path: Path) -> bytes:
    """The file's bytes, read from one descriptor that was checked: a regular file, not a
    symbolic link, owned by this user, and (on POSIX) not readable by group or others."""
    where = str(path)
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError as exc:
        raise ProfileError("no such profile", path=where, reason="missing") from exc
    except OSError as exc:  # ELOOP: a symbolic link (O_NOFOLLOW)
        if exc.errno == errno.ELOOP and path.is_symlink():
            raise ProfileError(
                "is a symbolic link; profiles are read only from the file itself (a link could "
                "point anywhere): give the path of the file it points to",
                path=where,
                reason="permissions",
            ) from exc
        raise ProfileError(f"cannot open: {exc}", path=where, reason="permissions") from exc
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):  # a folder, a device, a pipe: before any read
        os.close(fd)
        what = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise ProfileError(f"is {what}, not a profile file", path=where, reason="missing")
    with os.fdopen(fd, "rb") as fh:
        if os.name == "posix":
            if st.st_uid != os.getuid():
                raise ProfileError("owned by another user", path=where, reason="permissions")
            if stat.S_IMODE(st.st_mode) & 0o077:
                raise ProfileError(
                    f"permissions {oct(stat.S_IMODE(st.st_mode))} let others read it; "
                    f"run: chmod 600 {path}",
                    path=where,
                    reason="permissions",
                )
        if st.st_size > MAX_PROFILE_BYTES:
            raise ProfileError(
                f"{st.st_size} bytes; a profile is far smaller (at most {MAX_PROFILE_BYTES})",
                path=where,
                reason="malformed",
            )
        data = fh.read(MAX_PROFILE_BYTES + 1)
        if len(data) > MAX_PROFILE_BYTES:  # grew while being read
            raise ProfileError("profile too large", path=where, reason="malformed")
        return data


def load_profile(path: Path | str, bundle: Bundle | None = None) -> UserProfile:
    """Read and verify a profile; with ``bundle``, also check that it was made for it.

    Raises
    ------
    ProfileError
        ``missing``, ``permissions`` (group/other may read or write it, a symbolic link, or
        another user's file), ``malformed`` (also: not usable with ``bundle``), ``checksum``
        (edited or damaged) or ``bundle`` (made for another bundle).
    """
    path = Path(path)
    where = str(path)
    raw = _read_private(path)
    try:
        data = json.loads(raw, object_pairs_hook=unique_keys)
    except (ValueError, RecursionError) as exc:  # also an integer of too many digits
        raise ProfileError(f"not valid JSON: {exc}", path=where, reason="malformed") from exc
    if not isinstance(data, dict) or "sha256" not in data:
        raise ProfileError("no checksum in profile", path=where, reason="malformed")
    claimed = data.pop("sha256")
    try:
        digest = _digest(data)
    except (ValueError, TypeError, RecursionError) as exc:  # NaN, or not JSON-serializable
        raise ProfileError(f"malformed profile: {exc}", path=where, reason="malformed") from exc
    if digest != claimed:
        raise ProfileError(
            "content does not match its SHA-256 (edited or damaged)", path=where, reason="checksum"
        )
    profile = _parse(data, where)
    if bundle is not None:
        profile.check_bundle(bundle, where)
    return profile
