"""The README's Python examples run as written (the CPU ones) and call only real names.

Each ```python block of README.md is taken from the file itself, so an edited example is
tested as it now reads. The TensorRT example needs a GPU; on a CPU its calls are checked
against the signatures of what it imports.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

import numpy as np
import pytest

from sdk.calibration.profile import load_profile
from sdk.events import WindowEvent
from sdk.synthetic import synthetic_ecg

README = Path(__file__).resolve().parents[1] / "README.md"
FS = 130.0  # the README's Polar H10 rate


def _blocks() -> dict[str, str]:
    """README python blocks keyed by the ``## `` section they sit in."""
    out: dict[str, str] = {}
    section = ""
    for part in re.split(r"(^## .*$)", README.read_text(encoding="utf-8"), flags=re.M):
        if part.startswith("## "):
            section = part[3:].strip()
            continue
        code = re.findall(r"^```python\n(.*?)^```", part, flags=re.M | re.S)
        if code:
            assert section not in out, f"two python blocks under {section!r}: key them apart"
            out[section] = code[0]
    return out


BLOCKS = _blocks()


def _imported_names(code: str) -> dict[str, object]:
    """What the block's ``from x import y`` lines bind, imported for real."""
    names: dict[str, object] = {}
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.ImportFrom) and node.module:
            module = importlib.import_module(node.module)
            for alias in node.names:
                names[alias.asname or alias.name] = getattr(module, alias.name)
    return names


def _check_calls(code: str) -> int:
    """Every call of an imported name binds its arguments to that name's signature.

    Returns how many calls were checked, so a test can see the check looked at something.
    """
    names = _imported_names(code)
    checked = 0
    for node in ast.walk(ast.parse(code)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
            continue
        target = names.get(node.func.id)
        if target is None:
            continue
        sig = inspect.signature(target)  # a class: its __init__ without self
        args = [object()] * len(node.args)
        kwargs = {kw.arg: object() for kw in node.keywords if kw.arg is not None}
        try:
            sig.bind(*args, **kwargs)
        except TypeError as exc:
            raise AssertionError(
                f"README calls {node.func.id}({ast.unparse(node)[len(node.func.id) + 1 : -1]}): "
                f"{exc}"
            ) from exc
        checked += 1
    return checked


def test_readme_has_the_examples_this_file_runs() -> None:
    assert set(BLOCKS) == {
        "Using the SDK",
        "Per-user calibration on the device",
        "Jetson (TensorRT)",
    }


@pytest.mark.parametrize("section", sorted(BLOCKS))
def test_readme_calls_match_the_signatures(section: str) -> None:
    assert _check_calls(BLOCKS[section]) >= 2


def test_call_check_catches_a_wrong_keyword() -> None:
    code = "from sdk.pipeline import StreamPipeline\nStreamPipeline('b', fs_hz=130.0)\n"
    with pytest.raises(AssertionError, match="fs_hz"):
        _check_calls(code)


def test_using_the_sdk_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The streaming example: 10 s, then a block stamped 12.4 s (a 2.4 s gap), then close."""
    monkeypatch.chdir(tmp_path)  # a folder named like a shipped bundle must not shadow it
    ecg = synthetic_ecg((("sinus", 45.0),), fs=FS, seed=3).signal
    ns: dict[str, object] = {
        "samples_mv": ecg[: int(10 * FS)],
        "more": ecg[int(10 * FS) :],
        "print": lambda *a, **k: None,  # on_event=print, quietly
    }
    exec(compile(BLOCKS["Using the SDK"], str(README), "exec"), ns)
    pipeline, events, lru = ns["pipeline"], ns["events"], ns["lru"]
    assert pipeline.stats.gaps == 1 and pipeline.stats.gap_s == pytest.approx(2.4, abs=0.05)
    assert pipeline.stats.windows >= 6
    assert isinstance(events, list) and all(hasattr(e, "kind") for e in events)
    assert lru.hop == round(lru.fs) and lru.step_stream is not None  # 1 s hop, step model


def test_per_user_calibration_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The calibration example on 10 minutes: 4 of sinus rhythm, 6 of AF, as its labels say."""
    monkeypatch.chdir(tmp_path)
    ecg = synthetic_ecg((("sinus", 240.0), ("af", 360.0)), fs=FS, seed=5)
    ns: dict[str, object] = {"samples_mv": ecg.signal, "fs": ecg.fs}
    exec(compile(BLOCKS["Per-user calibration on the device"], str(README), "exec"), ns)
    result, pipeline = ns["result"], ns["pipeline"]
    saved = tmp_path / "profiles" / "a1b2.json"
    assert saved.is_file() and (saved.stat().st_mode & 0o777) == 0o600
    profile = load_profile(saved, ns["bundle"])
    assert profile.user == "a1b2" and profile.t == result.profile.t
    events = pipeline.push(ecg.signal[: int(60 * FS)]) + pipeline.close()
    windows = [e for e in events if isinstance(e, WindowEvent)]
    assert windows and all(e.personalized for e in windows)
    assert np.isfinite([p for e in windows for p in e.probabilities.values()]).all()
