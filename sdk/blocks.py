"""Validation of the sample blocks a streaming stage takes: ``(n,)`` or ``(n, n_leads)``."""

from __future__ import annotations

import numpy as np

from sdk.errors import BlockError

__all__ = ["as_lead_block", "as_lead_levels"]


def as_lead_block(block: np.ndarray, n_leads: int, owner: str) -> tuple[np.ndarray, bool]:
    """``block`` as float64 ``(n, n_leads)`` and whether it came 1-D (one lead only).

    ``owner`` names the stage in the error (``"filter"``, ``"resampler"``).

    Raises
    ------
    BlockError
        ``reason="lead_count"`` for another number of leads (a 1-D block for a multi-lead
        stage among them), ``reason="shape"`` for anything but 1-D or 2-D.
    """
    x = np.asarray(block, dtype=np.float64)
    one_d = x.ndim == 1
    if one_d:
        if n_leads != 1:
            raise BlockError(
                f"1-D block given but the {owner} has {n_leads} leads", reason="lead_count"
            )
        x = x.reshape(-1, 1)
    elif x.ndim != 2:
        raise BlockError(f"block must be (n, n_leads), got shape {x.shape}", reason="shape")
    if x.shape[1] != n_leads:
        raise BlockError(
            f"block has {x.shape[1]} leads but the {owner} has {n_leads}", reason="lead_count"
        )
    return x, one_d


def as_lead_levels(level: np.ndarray, n_leads: int) -> np.ndarray:
    """``level`` as ``n_leads`` finite float64 values (a stage's resting value per lead).

    Raises :class:`BlockError` (``reason="shape"``) otherwise.
    """
    lv = np.asarray(level, dtype=np.float64).reshape(-1)
    if lv.shape != (n_leads,) or not np.all(np.isfinite(lv)):
        raise BlockError(
            f"level must be {n_leads} finite values, got {np.asarray(level)!r}", reason="shape"
        )
    return lv
