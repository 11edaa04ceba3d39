"""Per-record (or per-subject) stratified splits with a fixed seed."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from trainer.errors import ConfigError


def stratified_split(
    names: Sequence[str], labels: Sequence[str], *, val_fraction: float = 0.2, seed: int = 0
) -> tuple[list[str], list[str]]:
    """Split record names into (train, val), each class split in the same proportion.

    Deterministic for a given ``seed`` and set of names (order of input does not matter).
    """
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(
            f"val_fraction must lie in (0, 1), got {val_fraction}", key="val_fraction"
        )
    if len(names) != len(labels):
        raise ConfigError(f"{len(names)} names but {len(labels)} labels", key="labels")
    by_class: dict[str, list[str]] = defaultdict(list)
    for name, label in sorted(zip(names, labels)):
        by_class[label].append(name)
    rng = np.random.default_rng(seed)
    train: list[str] = []
    val: list[str] = []
    for label in sorted(by_class):
        members = by_class[label]
        order = rng.permutation(len(members))
        n_val = int(round(val_fraction * len(members)))
        val.extend(members[i] for i in order[:n_val])
        train.extend(members[i] for i in order[n_val:])
    return sorted(train), sorted(val)
