"""Checkpoints: model weights plus the configs and step that made them.

Everything stored is a tensor or a plain Python value, so loading uses
``torch.load(weights_only=True)`` and never unpickles arbitrary objects.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch

from trainer.config import RunConfig, build_config
from trainer.errors import CheckpointError, DivergedError
from trainer.models.unet1d import UNet1d

FORMAT_VERSION = 1


def save_checkpoint(
    path: Path,
    model: torch.nn.Module,
    cfg: RunConfig,
    step: int,
    extra: dict[str, Any] | None = None,
    *,
    complete: bool,
) -> None:
    """Write atomically (:func:`write_atomic`); a model with non-finite weights is refused
    (:func:`finite_state`), so a diverged run never replaces a good checkpoint.

    ``complete`` says the run ended as configured (its steps done or its time limit reached);
    a checkpoint saved during training is not, and :func:`read_payload` refuses it until the
    run finishes or :func:`mark_complete` marks it.
    """
    payload = {
        "format_version": FORMAT_VERSION,
        "config": cfg.to_dict(),
        "step": step,
        "state_dict": finite_state(model, step),
        "extra": extra or {},
        "complete": complete,
    }
    write_atomic(path, partial(torch.save, payload))


def write_atomic(path: Path, write: Callable[[Path], object]) -> Path:
    """Call ``write`` on a temporary file of its own beside ``path`` (same suffix), flush it
    to disk, then rename it over ``path``: a reader sees the old file or the whole new one,
    never a part, after a kill or a power loss; two writers never share a temporary file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(
        prefix=f".{path.stem}.", suffix=f".partial{path.suffix}", dir=path.parent
    )
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text_atomic(path: Path, text: str) -> Path:
    """``path.write_text(text)`` through :func:`write_atomic`."""
    return write_atomic(path, lambda tmp: tmp.write_text(text))


def mark_complete(path: Path) -> None:
    """Mark the checkpoint a run kept (e.g. the best one validated, saved mid-run) as its
    finished run's."""
    payload = load_weights(path)
    payload["complete"] = True
    write_atomic(path, partial(torch.save, payload))


def finite_state(model: torch.nn.Module, step: int) -> dict[str, torch.Tensor]:
    """``model``'s state on the CPU; :class:`DivergedError` if a floating tensor holds a NaN
    or an infinity (the loss diverged: lower ``train.lr`` or ``train.grad_clip``)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise DivergedError(
            f"training diverged by step {step}: {len(bad)} of {len(state)} weight tensors are "
            f"not finite (first: {bad[0]}); nothing was saved (lower train.lr or "
            "train.grad_clip)",
            step=step,
        )
    return state


def load_weights(path: Path, *keys: str) -> dict[str, Any]:
    """A torch file of tensors and plain values (``weights_only=True``) that must be a dict
    holding ``keys``; :class:`CheckpointError` naming the file for anything else (missing,
    truncated, pickled objects, another kind of file)."""
    if not path.is_file():
        raise CheckpointError("file not found", path=str(path))
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, garbage, pickled objects: all "cannot read"
        text = str(exc)
        if "not an allowed global" in text or "Unsupported global" in text:
            reason = (
                "it holds pickled Python objects, which ecgedge never loads: unpickling can run "
                "arbitrary code"
            )
        elif "WeightsUnpickler error" in text:  # torch's long advice is about the above
            reason = (
                "not a torch file of weights ("
                + text.split("WeightsUnpickler error:")[1].strip().splitlines()[0][:120]
                + ")"
            )
        else:
            reason = text.splitlines()[0][:200] if text else type(exc).__name__
        raise CheckpointError(f"cannot read it ({reason})", path=str(path)) from exc
    missing = [k for k in keys if not isinstance(payload, dict) or k not in payload]
    if missing:
        raise CheckpointError(f"not the expected file: it lacks {missing}", path=str(path))
    return payload


def read_payload(path: Path) -> dict[str, Any]:
    """The checkpoint's payload (tensors and plain values only: ``weights_only=True``)."""
    if not path.is_file():
        raise CheckpointError("checkpoint not found", path=str(path))
    payload = load_weights(path)
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"not an ecgedge checkpoint of format {FORMAT_VERSION}", path=str(path)
        )
    if "complete" not in payload:
        raise CheckpointError(
            "made by an ecgedge from before checkpoints recorded whether their run finished: "
            "train again",
            path=str(path),
        )
    if payload.get("complete") is not True:
        raise CheckpointError(
            f"its run did not finish (saved at step {payload.get('step')} while training; the "
            "run was stopped or is still going): train again, and to end a run early set "
            "--train.max_minutes",
            path=str(path),
        )
    return payload


def load_checkpoint(path: Path) -> tuple[RunConfig, dict[str, torch.Tensor], dict[str, Any]]:
    """Return (config, state_dict, payload); raise :class:`CheckpointError` if unreadable or
    if the stored weights do not fit a U-Net built from the stored config."""
    payload = read_payload(path)
    try:
        raw = payload["config"]
        table = {section: raw[section] for section in ("data", "model", "train")}
        cfg = build_config(table, preset=raw.get("preset", "custom"))
        state = payload["state_dict"]
        UNet1d(cfg.model).load_state_dict(state)
    except (KeyError, TypeError, ValueError, ArithmeticError, RuntimeError) as exc:
        raise CheckpointError(f"incomplete or invalid checkpoint: {exc!r}", path=str(path)) from exc
    return cfg, state, payload
