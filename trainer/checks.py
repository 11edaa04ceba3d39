"""Range checks shared by the configuration dataclasses' ``__post_init__``."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from trainer.errors import ConfigError

#: Highest sampling rate (Hz) and longest window (s) a run may ask for: beyond, windows of
#: samples overflow (1e308 Hz) or no longer fit in memory.
MAX_FS_HZ = 10_000.0
MAX_WINDOW_S = 3600.0
#: The ``train`` fields every diffusion trainer needs > 0.
DIFFUSION_TRAIN_POSITIVE = (
    "lr",
    "grad_clip",
    "steps",
    "batch_size",
    "diffusion_steps",
    "log_every",
)
#: Seeds are what numpy's and torch's generators take.
SEED_RANGE = (0, 2**32)


def check_range(
    section: str,
    obj: object,
    *,
    positive: Iterable[str] = (),
    nonnegative: Iterable[str] = (),
    seeds: Iterable[str] = (),
    at_most: Mapping[str, float] | None = None,
) -> None:
    """Raise :class:`ConfigError` naming the first field of ``obj`` out of range.

    Fields in ``positive`` must be finite and > 0, in ``nonnegative`` finite and >= 0 (an
    integer too large for a float is not finite), in ``seeds`` integers in
    :data:`SEED_RANGE`, and those of ``at_most`` at most the value given; a tuple field is
    checked entry by entry.
    """
    for names, lowest_ok, rule in ((positive, False, "> 0"), (nonnegative, True, ">= 0")):
        for name in names:
            value = getattr(obj, name)
            for v in value if isinstance(value, tuple) else (value,):
                if not (_finite(v) and (v > 0 or (lowest_ok and v == 0))):
                    raise ConfigError(
                        f"{section}.{name} must be finite and {rule}, got {value!r}",
                        key=f"{section}.{name}",
                    )
    for name in seeds:
        value = getattr(obj, name)
        if not (isinstance(value, int) and SEED_RANGE[0] <= value < SEED_RANGE[1]):
            raise ConfigError(
                f"{section}.{name} must be an integer from 0 to 2**32 - 1, got {value!r}",
                key=f"{section}.{name}",
            )
    for name, most in (at_most or {}).items():
        value = getattr(obj, name)
        if not value <= most:
            raise ConfigError(
                f"{section}.{name} must be at most {most:g}, got {value!r}", key=f"{section}.{name}"
            )


def check_data_range(obj: object, *, nonnegative: Iterable[str] = ()) -> None:
    """A ``data`` section's rate, window length and split seed (every run config has them),
    and its fields in ``nonnegative``."""
    check_range(
        "data",
        obj,
        positive=("fs", "window_s"),
        nonnegative=nonnegative,
        seeds=("split_seed",),
        at_most={"fs": MAX_FS_HZ, "window_s": MAX_WINDOW_S},
    )


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer beyond any float
        return False


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
    if not str(path).strip():  # Path("") is the working folder
        raise ConfigError(f"{key} is empty; give the folder to write the run to", key=key)
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
