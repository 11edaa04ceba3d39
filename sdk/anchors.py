"""Anchor windows: a few labelled windows of every class that a bundle carries for calibration.

A user's head fitted on the user's windows alone knows only the classes the user labelled: a
user who records normal rhythm and AF gets a head that can no longer say "other rhythm" or
"noisy". A bundle with an ``anchors`` file carries a few windows of every class from the data
its head was trained on, cut and (when the bundle has a denoiser) denoised as the device does
(:func:`sdk.windowing.record_windows`). :class:`~sdk.calibration.Calibrator` embeds them at the
user's t and fits the user's head on the user's windows and the anchors together, so the head
keeps every class while it learns the user.

The file is an ``.npz`` of plain arrays (read with ``allow_pickle=False`` from bytes checked
against the manifest's SHA-256): ``windows`` (N, leads, L) and ``lorenz`` (N, G, G), both
float16, ``rr`` (N, K) float32 and ``labels`` (N,) integer class indices. The manifest's
``provenance.anchors`` says where they come from and the SHA-256 of the denoiser they went
through (``null`` for none).
"""

from __future__ import annotations

import io
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np

from sdk.bundle import Bundle, read_npy
from sdk.classifier import WindowInputs
from sdk.errors import BundleError
from sdk.rr import RR_FEATURE_NAMES

#: Which anchor windows a user's head is fitted on: those of the classes the user labelled no
#: window of, every one, or none (:class:`sdk.calibration.Calibrator`'s ``anchors``)
ANCHOR_MODES = ("missing", "all", "none")

#: Arrays an anchors file holds (and ``lorenz`` for bundles with that modality).
ANCHOR_ARRAYS = ("windows", "rr", "labels")
#: Most anchor windows a bundle may carry (a bound on what a hostile file makes us allocate).
MAX_ANCHOR_WINDOWS = 4096


@dataclass(frozen=True)
class Anchors:
    """A bundle's anchor windows.

    inputs : the windows as the head's embedders take them (float32).
    labels : (N,) class indices into the manifest's classes.
    denoiser_sha256 : SHA-256 of the denoiser the windows went through, ``None`` if none.
    """

    inputs: WindowInputs
    labels: np.ndarray
    denoiser_sha256: str | None

    def __len__(self) -> int:
        return int(self.labels.size)


def load_anchors(bundle: Bundle) -> Anchors | None:
    """The bundle's anchor windows, or ``None`` when it has none.

    Raises
    ------
    BundleError
        The file changed since the bundle was verified, is not an uncompressed ``.npz`` of
        exactly the expected numeric arrays, or its arrays do not fit the bundle (shapes,
        classes, more than :data:`MAX_ANCHOR_WINDOWS` windows, non-finite values).
    """
    m = bundle.manifest
    if not m.has("anchors"):
        return None
    f = m.file("anchors")
    path = str(bundle.path_of(f))

    def bad(why: str) -> BundleError:
        return BundleError(why, path=path, reason="malformed")

    keys = [*ANCHOR_ARRAYS, *(["lorenz"] if "lorenz" in m.modalities else [])]
    data = bundle.verified_bytes(f)
    try:
        arrays = _read_npz(data, keys)
    except (ValueError, TypeError, OSError, EOFError, KeyError, RuntimeError) as exc:
        raise bad(f"not an .npz of plain arrays: {exc}") from exc
    except (zipfile.BadZipFile, zlib.error, NotImplementedError, MemoryError) as exc:
        raise bad(f"not an .npz of plain arrays: {exc!r}") from exc
    labels = arrays["labels"]
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or not 0 < labels.size:
        raise bad("anchor labels must be a non-empty integer vector")
    n = labels.shape[0]
    shapes = {
        "windows": (n, len(m.leads), m.window_samples),
        "rr": (n, len(RR_FEATURE_NAMES)),
    }
    if "lorenz" in m.modalities:
        grid = int(m.modality_specs["lorenz"]["grid"])
        shapes["lorenz"] = (n, grid, grid)
    for key, shape in shapes.items():
        if arrays[key].shape != shape:
            raise bad(f"anchors {key} shape {arrays[key].shape} != {shape}")
        if arrays[key].dtype.kind != "f":
            raise bad(f"anchors {key} must be floating point, got {arrays[key].dtype}")
    if labels.min() < 0 or labels.max() >= len(m.classes):
        raise bad(f"anchor labels must index the classes {list(m.classes)}")
    as_f32 = {k: arrays[k].astype(np.float32) for k in shapes}
    if not all(np.all(np.isfinite(a)) for a in as_f32.values()):
        raise bad("anchors hold NaN or inf")
    source = m.provenance.get("anchors", {})
    denoiser = source.get("denoiser_sha256") if isinstance(source, dict) else None
    return Anchors(
        WindowInputs(as_f32["windows"], as_f32["rr"], as_f32.get("lorenz")),
        labels.astype(np.int64),
        str(denoiser) if denoiser else None,
    )


def _read_npz(data: bytes, keys: list[str]) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of an ``.npz`` (as :func:`numpy.savez` writes it: uncompressed),
    which must hold exactly those, each read by :func:`sdk.bundle.read_npy`."""
    out = {}
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        members = {i.filename: i for i in zf.infolist()}
        expected = {f"{k}.npy" for k in keys}
        if set(members) != expected:
            raise ValueError(f"anchors hold {sorted(members)}, expected {sorted(expected)}")
        for key in keys:
            info = members[f"{key}.npy"]
            if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
                raise ValueError(
                    f"{info.filename}: compressed or encrypted (np.savez writes neither)"
                )
            try:
                array = read_npy(zf.read(info))  # no larger than the verified file
            except ValueError as exc:
                raise ValueError(f"{info.filename}: {exc}") from exc
            if (array.shape[0] if array.shape else 1) > MAX_ANCHOR_WINDOWS:
                raise ValueError(f"{info.filename}: more than {MAX_ANCHOR_WINDOWS} rows")
            out[key] = array
    return out


def anchors_mismatch(anchors: Anchors, bundle: Bundle, denoised: bool) -> str | None:
    """Why ``anchors`` do not fit windows that were (``denoised=True``) or were not denoised by
    ``bundle``'s denoiser, or ``None`` when they fit (a head must be fitted on one kind)."""
    m = bundle.manifest
    expected = None
    if denoised:  # by the bundle's denoiser (or, without one, by something else)
        expected = m.file("denoiser").sha256 if m.has("denoiser") else "another denoiser"
    if anchors.denoiser_sha256 == expected:
        return None
    if denoised and anchors.denoiser_sha256:
        return "the anchors went through another denoiser than the calibration windows"
    if denoised:
        return "the calibration windows are denoised, the anchors are not"
    return "the anchors are denoised, the calibration windows are not"


def select_anchors(anchors: Anchors, user_labels: np.ndarray, mode: str) -> np.ndarray:
    """Indices of the anchor windows ``mode`` (:data:`ANCHOR_MODES`) takes beside a user's
    windows labelled ``user_labels`` (class indices)."""
    rows = np.arange(len(anchors))
    if mode == "all":
        return rows
    if mode == "missing":
        return rows[~np.isin(anchors.labels, user_labels)]
    return rows[:0]
