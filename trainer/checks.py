"""Range checks shared by the configuration dataclasses' ``__post_init__``."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path

from trainer.errors import ConfigError


def check_range(
    section: str,
    obj: object,
    *,
    positive: Iterable[str] = (),
    nonnegative: Iterable[str] = (),
) -> None:
    """Raise :class:`ConfigError` naming the first field of ``obj`` out of range.

    Fields in ``positive`` must be finite and > 0, in ``nonnegative`` finite and >= 0; a tuple
    field is checked entry by entry.
    """
    for names, lowest_ok, rule in ((positive, False, "> 0"), (nonnegative, True, ">= 0")):
        for name in names:
            value = getattr(obj, name)
            for v in value if isinstance(value, tuple) else (value,):
                if not (math.isfinite(v) and (v > 0 or (lowest_ok and v == 0))):
                    raise ConfigError(
                        f"{section}.{name} must be finite and {rule}, got {value!r}",
                        key=f"{section}.{name}",
                    )


#: The file that marks each kind of folder a command writes, and the command.
RUN_MARKERS = {
    "diffecg.pt": "ecgedge train",
    "diffae.pt": "ecgedge train-diffae",
    "denoiser.pt": "ecgedge train-denoiser",
    "dacl.json": "ecgedge train-dacl",
    "modalities.json": "ecgedge train-fusion",
    "manifest.json": "ecgedge export (a model bundle)",
}


def check_out_dir(path: str | Path, key: str, own: str) -> Path:
    """``path`` as a folder a run can write into, checked before any training: absent (its
    nearest existing parent writable) or a writable folder that holds no other kind of run
    (``own``, a :data:`RUN_MARKERS` name, is this run's: training over an older run of the
    same kind replaces it); else :class:`ConfigError`."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{key} {out} is a file; give a folder", key=key)
    existing = out if out.exists() else next((p for p in out.parents if p.exists()), Path("."))
    if not existing.is_dir():
        raise ConfigError(f"{key} {out}: {existing} is a file, not a folder", key=key)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{key} {out}: cannot write in {existing}", key=key)
    other = [m for m in RUN_MARKERS if m != own and (out / m).is_file()]
    if other:
        raise ConfigError(
            f"{key} {out} holds {other[0]} of another kind of folder ({RUN_MARKERS[other[0]]}), "
            f"which this run would spoil; give a new folder or a {RUN_MARKERS[own]} run's",
            key=key,
        )
    return out
