"""Scattering features of training windows (:mod:`sdk.scattering`, the device's code), cached.

See :mod:`sdk.scattering` for the transform (kymatio ``Scattering1D``, J = 6, Q = 8; time
mean and std of log scattering per first- and second-order path: 250 numbers per window).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from sdk import scattering as sdk_scattering
from sdk.scattering import LOG_EPS, J, Q
from sdk.scattering import scattering_features as _device_features


def scattering_features(windows: np.ndarray, batch: int = 256, progress: bool = True) -> np.ndarray:
    """(N, 1, L) standardized windows → (N, 250) float32, in batches with a progress bar."""
    steps = range(0, len(windows), batch)
    out = [
        _device_features(windows[i : i + batch])
        for i in tqdm(steps, desc="scattering", unit="batch", leave=False, disable=not progress)
    ]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def _code_digest() -> str:
    """What the features depend on beyond the windows: the device's feature code and
    kymatio's version (a cache made by other code is never read)."""
    import kymatio

    source = Path(sdk_scattering.__file__).read_bytes()
    return hashlib.sha256(source + kymatio.__version__.encode()).hexdigest()[:16]


def _read_cache(path: Path, n: int) -> np.ndarray | None:
    """The cached features if the file is whole and holds ``n`` finite rows, else ``None``
    (it is then rebuilt)."""
    try:
        feats = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if feats.ndim != 2 or feats.shape[0] != n or not np.all(np.isfinite(feats)):
        return None
    return feats


def cached_features(windows: np.ndarray, cache_dir: Path = Path("runs/cache")) -> np.ndarray:
    """:func:`scattering_features`, cached on disk by a digest of the windows, the settings
    and the feature code; a cache file that is damaged or of another shape is rebuilt."""
    h = hashlib.sha256(np.ascontiguousarray(windows).tobytes())
    h.update(f"J={J},Q={Q},eps={LOG_EPS},v2,{_code_digest()}".encode())
    path = cache_dir / f"scattering-{h.hexdigest()[:16]}.npy"
    if path.is_file():
        cached = _read_cache(path, len(windows))
        if cached is not None:
            return cached
    feats = scattering_features(windows)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, feats)
    tmp.replace(path)
    return feats
