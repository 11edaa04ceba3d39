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


def check_out_dir(path: str | Path, key: str) -> Path:
    """``path`` as a folder a run can write into, checked before any training: absent (its
    nearest existing parent writable) or a writable folder; else :class:`ConfigError`."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{key} {out} is a file; give a folder", key=key)
    existing = out if out.exists() else next((p for p in out.parents if p.exists()), Path("."))
    if not existing.is_dir():
        raise ConfigError(f"{key} {out}: {existing} is a file, not a folder", key=key)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{key} {out}: cannot write in {existing}", key=key)
    return out
