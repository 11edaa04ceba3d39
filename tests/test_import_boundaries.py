"""ARCHITECTURE.md's import table, checked in fresh interpreters."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

FORBIDDEN = {
    "sdk": {"torch", "trainer", "export", "firmware_bridge", "bleak", "pandas", "matplotlib"},
    "firmware_bridge": {"torch", "trainer", "export"},
    "trainer": {"export", "firmware_bridge"},
    "export": {"firmware_bridge"},
}


def modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    return {name.split(".")[0] for name in json.loads(out.strip().splitlines()[-1])}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_import_respects_the_table(package):
    loaded = modules_after(
        f"import {package}, pkgutil, importlib\n"
        f"for m in pkgutil.walk_packages({package}.__path__, '{package}.'):\n"
        "    importlib.import_module(m.name)"
    )
    assert not (loaded & FORBIDDEN[package]), loaded & FORBIDDEN[package]


def test_running_a_pipeline_never_loads_torch():
    code = """
from sdk.bundle import default_bundle_path
from sdk.pipeline import StreamPipeline
from sdk.synthetic import synthetic_ecg
ecg = synthetic_ecg((("sinus", 25.0),), fs=250.0)
p = StreamPipeline(default_bundle_path(), fs_in=250.0)
events = p.push(ecg.signal) + p.close()
assert events, "no events"
"""
    loaded = modules_after(code)
    assert "onnxruntime" in loaded
    assert not (loaded & FORBIDDEN["sdk"])


@pytest.mark.parametrize("package", ["sdk", "firmware_bridge"])
def test_no_public_name_hides_a_submodule(package):
    """``import sdk.preprocess as m`` gave the function ``preprocess`` that ``sdk/__init__``
    exported under the module's name; every submodule stays reachable as a module."""
    import importlib
    import pkgutil
    import types

    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(f"{package}.{info.name}")
        assert isinstance(getattr(pkg, info.name), types.ModuleType), f"{package}.{info.name}"
