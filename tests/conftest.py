"""Shared fixtures: the data root, the ``data`` marker's skip logic, a throw-away data root.

Mark a test that reads a database folder with ``@pytest.mark.data("mitdb", ...)`` (or a
module with ``pytestmark = pytest.mark.data("cinc2017")``): it is then selected or
deselected with ``-m data`` and skipped, with the reason, when a folder is absent.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from trainer.data import records, root


def requires_data(folder: str) -> Path:
    """Return ``data_root()/folder``, or skip the calling test when that folder is absent."""
    if not root.has_folder(folder):
        pytest.skip(f"needs database folder {root.data_root() / folder} (set {root.ENV_VAR})")
    return root.data_root() / folder


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("data"):
        for folder in mark.args:
            requires_data(folder)


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real data root (session scope: resolved before ``tmp_data_root`` changes it)."""
    return root.data_root()


@pytest.fixture
def tmp_data_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty data root in ``tmp_path`` that the loaders now read, with a fresh label cache."""
    folder = tmp_path / "data"
    folder.mkdir()
    monkeypatch.setenv(root.ENV_VAR, str(folder))
    records._labels_of.cache_clear()  # labels are cached per data root
    return folder


@pytest.fixture
def hide_package(monkeypatch: pytest.MonkeyPatch):
    """``hide_package("wfdb")``: that package now looks not installed to
    :func:`sdk.errors.require_package` (``importlib.util.find_spec`` returns None for it)."""
    import importlib.util

    real = importlib.util.find_spec

    def hide(name: str) -> None:
        monkeypatch.setattr(
            importlib.util, "find_spec", lambda n, *a: None if n == name else real(n, *a)
        )

    return hide


@pytest.fixture(autouse=True)
def _no_hidden_model_errors(request: pytest.FixtureRequest):
    """A window whose model raises is flagged and the stream goes on (:mod:`sdk.pipeline`
    logs it with its traceback); in a test that would hide a bug, so it fails the test unless
    the test is marked ``model_failure``."""
    raised: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: (  # type: ignore[method-assign]
        raised.append(record) if "the model failed" in record.getMessage() else None
    )
    logger = logging.getLogger("sdk.pipeline")
    logger.addHandler(handler)
    yield
    logger.removeHandler(handler)
    if raised and request.node.get_closest_marker("model_failure") is None:
        exc = raised[0].exc_info[1] if raised[0].exc_info else None
        pytest.fail(f"a pipeline window's model raised {exc!r}: {raised[0].getMessage()}")
