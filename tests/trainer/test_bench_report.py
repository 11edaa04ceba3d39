"""Tests of trainer.bench.report: what every result records, and once_per_message (used by
the per-record benchmarks)."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from pathlib import Path

import pytest

from trainer.bench import report
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


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.fixture
def package_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A git repository standing in for the package's checkout."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "checkout"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "code.py").write_text("x = 1\n")
    _git(repo, "add", "code.py")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    monkeypatch.setattr(report, "_REPO", repo)
    monkeypatch.setattr(report, "_invocation", None)
    monkeypatch.setattr(report, "_code_at_start", None)
    return repo


def test_result_records_the_commit_and_the_command(package_repo: Path, tmp_path: Path) -> None:
    report.record_invocation(["ecgedge", "bench", "rhythm", "--bundle", "my bundle"])
    path = report.write_result(tmp_path / "out", "demo", {"figure": 1.0}, "# demo")
    saved = json.loads(path.read_text())
    assert saved["code"] == {"commit": _git(package_repo, "rev-parse", "HEAD"), "dirty": False}
    assert saved["invocation"] == "ecgedge bench rhythm --bundle 'my bundle'"
    assert saved["figure"] == 1.0


def test_the_code_is_taken_when_the_command_starts(package_repo: Path) -> None:
    report.record_invocation(["ecgedge", "bench", "rhythm"])
    started = _git(package_repo, "rev-parse", "HEAD")
    (package_repo / "code.py").write_text("x = 3\n")  # committed while the benchmark runs
    _git(package_repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "later")
    assert report.provenance()["code"] == {"commit": started, "dirty": False}


def test_changed_tracked_files_mark_the_code_dirty(package_repo: Path) -> None:
    (package_repo / "untracked.txt").write_text("not code\n")
    assert report.code_version()["dirty"] is False  # type: ignore[index]
    (package_repo / "code.py").write_text("x = 2\n")
    assert report.code_version()["dirty"] is True  # type: ignore[index]


def test_no_code_version_outside_the_packages_own_checkout(
    package_repo: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    inner = package_repo / "site-packages" / "ecgedge"  # installed into some other repository
    inner.mkdir(parents=True)
    monkeypatch.setattr(report, "_REPO", inner)
    assert report.code_version() is None
    outside = tmp_path / "no-git"
    outside.mkdir()
    monkeypatch.setattr(report, "_REPO", outside)
    assert report.code_version() is None
    assert report.provenance() == {"code": None, "invocation": None}


def test_the_cli_records_a_benchmarks_command_line(package_repo: Path, tmp_path: Path) -> None:
    from ecgedge.cli import main

    argv = ["bench", "rhythm", "--bundle", str(tmp_path / "none"), "--out", str(tmp_path)]
    assert main(argv) == 2  # refused (no bundle there), after the command line was recorded
    assert report.provenance()["invocation"] == "ecgedge " + " ".join(argv)
