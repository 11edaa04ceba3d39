"""Benchmark results: one JSON and one short Markdown report per benchmark."""

from __future__ import annotations

import json
import logging
import os
import platform
import shlex
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parents[2]
_invocation: str | None = None
_code_at_start: dict[str, Any] | None = None


def record_invocation(argv: Sequence[str]) -> None:
    """Set the command line that every result written later in this process records
    (``invocation``), and take the code's version now (a commit made while a long benchmark
    runs is not the code it ran); the CLI calls it before a benchmark runs."""
    global _invocation, _code_at_start
    _invocation = shlex.join(argv)
    _code_at_start = code_version()


def code_version() -> dict[str, Any] | None:
    """The git commit of the code that produced a result and whether tracked files differed
    from it (``dirty``), or ``None`` outside a git checkout (an installed package)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(_REPO), *args], capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()

    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != _REPO:
            return None  # the package sits inside some other repository
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}


def provenance() -> dict[str, Any]:
    """What every result records of how it was made: the code (:func:`code_version`, as it was
    when the command started) and the command line (:func:`record_invocation`; ``None`` when
    called from Python)."""
    code = _code_at_start if _invocation is not None else code_version()
    return {"code": code, "invocation": _invocation}


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }


def write_result(out_dir: Path, name: str, result: dict[str, Any], markdown: str) -> Path:
    """Write ``<name>.json`` and ``<name>.md`` under ``out_dir``; return the JSON path.

    The JSON also records when and where it ran, the code's git commit
    and the command line (:func:`provenance`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": name,
        "when_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        **provenance(),
        **result,
    }
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(result, indent=2))
    (out_dir / f"{name}.md").write_text(markdown.strip() + "\n")
    return path


def md_table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


class _OncePerMessage(logging.Filter):
    """Let each distinct log message through once."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        new = message not in self.seen
        self.seen.add(message)
        return new


@contextmanager
def once_per_message(logger: str) -> Iterator[None]:
    """Within the block, ``logger`` logs each distinct message once (a benchmark that opens one
    pipeline per record would repeat its warnings hundreds of times)."""
    once = _OncePerMessage()
    log = logging.getLogger(logger)
    log.addFilter(once)
    try:
        yield
    finally:
        log.removeFilter(once)
