"""A picture of a per-user calibration: where the search of t went and what it found.

Drawn from a profile's ``calibration`` record (:class:`sdk.calibration.profile.UserProfile`),
so any saved profile can be drawn. Needs matplotlib (``pip install 'ecgedge[plot]'``); the
SDK itself never imports it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sdk.errors import ConfigError, require_package

__all__ = ["plot_calibration", "require_matplotlib"]


def require_matplotlib() -> None:
    """Raise :class:`~sdk.errors.MissingDependencyError` (extra ``plot``) without matplotlib."""
    require_package("matplotlib", "plot", hint="it draws the calibration")


def _trace(calibration: dict[str, Any]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(modalities, t per evaluation (n, modalities), score per evaluation (n,))."""
    trace = calibration.get("trace")
    if not isinstance(trace, list) or not trace:
        raise ConfigError("the profile records no search trace to draw", field="trace")
    mods = list(trace[0]["t"])
    t = np.array([[float(e["t"][m]) for m in mods] for e in trace])
    score = np.array([float(e["score"]) for e in trace])
    return mods, t, score


def plot_calibration(
    calibration: dict[str, Any],
    path: Path,
    *,
    chosen: dict[str, int],
    default_t: dict[str, int] | None = None,
    title: str = "",
) -> Path:
    """Draw ``calibration["trace"]`` to ``path`` (PNG) and return it.

    One panel per modality: the objective at each evaluated t of that modality (darker =
    later; with several modalities the others' t differ from point to point), the chosen t
    (red star) and the bundle's default t (dashed). A last panel: the best objective so far
    against the evaluation number. Evaluations whose objective was not finite are drawn as
    crosses on the panels' floor.

    Raises :class:`ConfigError` when the record has no trace and
    :class:`~sdk.errors.MissingDependencyError` without matplotlib.
    """
    mods, t, score = _trace(calibration)
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    finite = np.isfinite(score)
    floor = float(score[finite].min()) if finite.any() else 0.0
    order = np.arange(1, score.size + 1)
    box = calibration.get("t_box")
    fig, axes = plt.subplots(1, len(mods) + 1, figsize=(3.4 * (len(mods) + 1), 3.3))
    for ax, j, mod in zip(axes, range(len(mods)), mods):
        points = ax.scatter(t[finite, j], score[finite], c=order[finite], cmap="viridis", s=28)
        ax.scatter(t[~finite, j], np.full((~finite).sum(), floor), marker="x", color="0.5")
        best = score[finite].max() if finite.any() else floor
        ax.scatter(
            [chosen[mod]], [best], marker="*", s=220, color="crimson", zorder=3, clip_on=False
        )
        if default_t and mod in default_t:
            ax.axvline(default_t[mod], color="0.4", linestyle="--", linewidth=1)
        if isinstance(box, list) and len(box) == 2:
            pad = 0.04 * (box[1] - box[0]) + 1
            ax.set_xlim(box[0] - pad, box[1] + pad)
        ax.set_xlabel(f"t ({mod})")
        ax.set_ylabel(str(calibration.get("objective", "objective")))
    fig.colorbar(points, ax=axes[len(mods) - 1], label="evaluation")
    running = np.maximum.accumulate(np.where(finite, score, -np.inf))
    axes[-1].step(order, running, where="post", color="crimson")
    axes[-1].scatter(order[finite], score[finite], color="0.6", s=12)
    axes[-1].set_xlabel("evaluation")
    axes[-1].set_ylabel("best so far")
    stopped = calibration.get("stopped", "?")
    fig.suptitle(
        f"{title}: t = {chosen}, {score.size} evaluations, stopped: {stopped}"
        + (" (dashed: the bundle's t)" if default_t else ""),
        fontsize=9,
    )
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
