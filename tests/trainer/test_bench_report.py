"""Tests of trainer.bench.report.once_per_message (used by the per-record benchmarks)."""

from __future__ import annotations

import logging

import pytest

from trainer.bench.report import once_per_message


def test_each_distinct_message_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.once")
    with caplog.at_level(logging.WARNING, logger="test.once"):
        with once_per_message("test.once"):
            for _ in range(3):
                log.warning("head expects %s windows", "denoised")
            log.warning("another")
            log.warning("another")
        log.warning("another")  # outside the block: logged again
    assert [r.getMessage() for r in caplog.records] == [
        "head expects denoised windows",
        "another",
        "another",
    ]
