"""Add anchor windows to a bundle: a few device-path windows of every class (:mod:`sdk.anchors`).

``per_class`` CinC 2017 training records of each class (the split the bundle's head was
trained on; validation records are never read) are drawn at random (``seed``), and one
random window of each is cut as the device cuts it (:func:`sdk.windowing.record_windows`,
through the bundle's denoiser when it has one). The windows go into ``anchors.npz`` beside
the models; nothing else in the bundle changes except the manifest (file entry and
``provenance.anchors``) and the model card.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from export.bundle_copy import bundle_copy
from export.refit_head import training_records
from sdk.bundle import load_bundle, sha256_file
from sdk.denoiser import WindowDenoiser
from trainer.data import records as rec
from trainer.data.datasets import cinc_record_windows
from trainer.errors import ConfigError

#: Anchor windows per class in a bundle (32 × 4 classes ≈ 0.5 MB).
ANCHORS_PER_CLASS = 32
ANCHORS_FILE = "anchors.npz"


def add_anchors(
    base_bundle: Path, out_dir: Path, *, per_class: int = ANCHORS_PER_CLASS, seed: int = 0
) -> dict[str, Any]:
    """Copy ``base_bundle`` to ``out_dir`` with anchor windows added (replacing any it has);
    return ``provenance.anchors``."""
    if per_class < 1:
        raise ConfigError(f"per_class must be >= 1, got {per_class}", key="per_class")
    base = load_bundle(base_bundle)
    m = base.manifest
    denoiser = WindowDenoiser(base) if m.has("denoiser") else None
    if denoiser is not None and denoiser.leads != 1:
        raise ConfigError(
            f"the bundle's denoiser takes {denoiser.leads} leads; anchors are cut from CinC 2017 "
            "records, which have one (and the Calibrator records one lead)",
            key="denoiser",
        )
    names = training_records(base)
    labels = rec.cinc2017_labels_cached()
    rng = np.random.default_rng(seed)
    chosen: list[str] = []
    for c in m.classes:
        pool = sorted(n for n in names if labels[n] == c)
        if len(pool) < per_class:
            raise ConfigError(
                f"{len(pool)} training records of class {c!r}, fewer than {per_class}",
                key="per_class",
            )
        chosen += [pool[i] for i in rng.choice(len(pool), per_class, replace=False)]
    windows, rr, lorenz, y, starts = [], [], [], [], []
    for _, r, rw in cinc_record_windows(base, chosen, denoiser, progress=True):
        j = int(rng.integers(rw.starts.size))
        starts.append(int(rw.starts[j]))
        windows.append(rw.windows[j])
        rr.append(rw.rr[j])
        if rw.lorenz is not None:
            lorenz.append(rw.lorenz[j])
        y.append(m.classes.index(r.label))
    arrays: dict[str, np.ndarray] = {
        "windows": np.stack(windows).astype(np.float16),
        "rr": np.stack(rr).astype(np.float32),
        "labels": np.asarray(y, dtype=np.int64),
    }
    if "lorenz" in m.modalities:
        arrays["lorenz"] = np.stack(lorenz).astype(np.float16)
    info = {
        "what": "device-path windows of every class for per-user heads (sdk.anchors)",
        "source": "cinc2017 train split (the head's), one random window per random record",
        "per_class": per_class,
        "seed": seed,
        "records": chosen,
        "window_starts": starts,  # sample of each window's start, at the bundle's rate
        "denoiser_sha256": m.file("denoiser").sha256 if denoiser is not None else None,
        "command": f"ecgedge export --add-anchors --base-bundle {base_bundle} --out {out_dir}",
    }
    with bundle_copy(base_bundle, out_dir) as tmp:
        _write_into(tmp, arrays, info)
    return info


def _write_into(root: Path, arrays: dict[str, np.ndarray], info: dict[str, Any]) -> None:
    """Write the anchors file, its manifest entry and provenance."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    (root / ANCHORS_FILE).write_bytes(buf.getvalue())
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["files"] = [f for f in manifest["files"] if f["role"] != "anchors"]
    manifest["files"].append(
        {
            "path": ANCHORS_FILE,
            "role": "anchors",
            "precision": "fp16",
            "sha256": sha256_file(root / ANCHORS_FILE),
            "bytes": (root / ANCHORS_FILE).stat().st_size,
            "inputs": [],
            "outputs": [],
        }
    )
    manifest["provenance"]["anchors"] = info
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1))
