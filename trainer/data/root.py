"""The one data root: ``$ECGEDGE_DATA``, defaulting to ``../shared/data`` beside the checkout."""

from __future__ import annotations

import os
from pathlib import Path

from trainer.errors import DataError

ENV_VAR = "ECGEDGE_DATA"
_CHECKOUT = Path(__file__).resolve().parents[2]


def data_root() -> Path:
    """Return the data root (not checked for existence; see :func:`require_folder`)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    beside_checkout = _CHECKOUT.parent / "shared" / "data"
    if beside_checkout.is_dir():
        return beside_checkout
    return Path.cwd().parent / "shared" / "data"


def has_folder(name: str) -> bool:
    """Whether the data root holds the database folder ``name``."""
    return (data_root() / name).is_dir()


def require_folder(name: str) -> Path:
    """Return ``data_root()/name`` or raise :class:`DataError` naming the missing path."""
    folder = data_root() / name
    if not folder.is_dir():
        raise DataError(
            f"database folder not found (set {ENV_VAR} to the folder holding '{name}/')",
            path=str(folder),
            reason="missing",
        )
    return folder
