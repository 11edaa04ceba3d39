"""Benchmark results: one JSON and one short Markdown report per benchmark."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }


def write_result(out_dir: Path, name: str, result: dict[str, Any], markdown: str) -> Path:
    """Write ``<name>.json`` and ``<name>.md`` under ``out_dir``; return the JSON path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": name,
        "when_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
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
