"""Fixtures of the trainer tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def grad_scalers(monkeypatch: pytest.MonkeyPatch) -> list[torch.amp.GradScaler]:
    """Every ``torch.amp.GradScaler`` a training run makes during the test, in order."""
    made: list[torch.amp.GradScaler] = []
    real = torch.amp.GradScaler

    def recording(*args, **kwargs):  # noqa: ANN202
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(torch.amp, "GradScaler", recording)
    return made
