"""Range checks shared by the configuration dataclasses' ``__post_init__``."""

from __future__ import annotations

import math
from collections.abc import Iterable

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
