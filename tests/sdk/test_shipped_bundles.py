"""The bundles shipped inside the package: the default (DiffECG) and the other embedders'
(DiffAE-LRU with its step model, DACL), found by name and streamed as a device would."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sdk.bundle import bundle_path, default_bundle_path, load_bundle, shipped_bundles
from sdk.errors import BundleError
from sdk.events import WindowEvent
from sdk.pipeline import StreamPipeline
from sdk.synthetic import synthetic_ecg

FS = 250.0


def _windows(pipe: StreamPipeline, seconds: float = 30.0) -> list[WindowEvent]:
    x = synthetic_ecg((("sinus", seconds),), fs=FS, seed=3).signal
    step = int(FS / 2)
    events = [e for i in range(0, x.size, step) for e in pipe.push(x[i : i + step])]
    return [e for e in [*events, *pipe.close()] if isinstance(e, WindowEvent)]


def test_every_shipped_bundle_loads_verified_with_its_card_and_commands() -> None:
    shipped = shipped_bundles()
    assert set(shipped) == {"default", "diffae-lru-cpu", "dacl-cpu"}
    assert shipped["default"] == default_bundle_path()
    for name, path in shipped.items():
        bundle = load_bundle(path)  # every file's SHA-256 checked
        card = (path / "MODEL_CARD.md").read_text()
        commands = bundle.manifest.provenance["commands"]
        assert commands["export"] in card and commands["train"] in card
        if name != "default":  # the default bundle's export writes bundles/…, then is copied
            assert commands["export"].endswith(f"--out sdk/bundles/{name}")


def test_bundle_path_takes_a_folder_or_a_shipped_name(tmp_path: Path, monkeypatch) -> None:
    assert bundle_path() == default_bundle_path()
    assert bundle_path("dacl-cpu") == shipped_bundles()["dacl-cpu"]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dacl-cpu").mkdir()  # a folder of that name here wins over the shipped one
    assert bundle_path("dacl-cpu") == Path("dacl-cpu")
    with pytest.raises(BundleError, match="diffae-lru-cpu") as err:
        bundle_path("no-such-bundle")
    assert err.value.reason == "missing"


def test_the_shipped_lru_bundle_streams_through_its_step_model() -> None:
    lru = bundle_path("diffae-lru-cpu")
    stateful = _windows(StreamPipeline(lru, fs_in=FS, hop_s=1.0, stateful=True, threads=1))
    whole = _windows(StreamPipeline(lru, fs_in=FS, hop_s=1.0, stateful=False, threads=1))
    assert len(stateful) == len(whole) >= 15 and all(e.stateful for e in stateful)
    assert not any(e.stateful for e in whole)
    first, ref = stateful[0].probabilities, whole[0].probabilities
    # the first window after a start: the step model has seen exactly the window
    assert max(abs(first[c] - ref[c]) for c in ref) < 1e-4
    later = [
        max(abs(a.probabilities[c] - b.probabilities[c]) for c in ref)
        for a, b in zip(stateful[1:], whole[1:])
    ]
    assert max(later) > 1e-4  # later windows carry the stream's state: not the same model call


def test_the_shipped_dacl_bundle_classifies_a_stream() -> None:
    windows = _windows(StreamPipeline(bundle_path("dacl-cpu"), fs_in=FS, threads=1))
    assert len(windows) >= 4
    for e in windows:
        assert np.isclose(sum(e.probabilities.values()), 1.0, atol=1e-4)
        assert e.label in e.probabilities


def test_a_dacl_bundle_calibrates_in_its_own_schedule_and_wants_kymatio_up_front(hide_package):
    """The DACL bundle's t ends at 49: the Calibrator's default box is cut to it. Without
    kymatio the pipeline is refused when it is built, naming the extra, not at a window."""
    from sdk.calibration import Calibrator
    from sdk.errors import MissingDependencyError

    bundle = load_bundle(bundle_path("dacl-cpu"))
    assert bundle.manifest.t_max == 49 and Calibrator(bundle).t_box == (1, 49)
    hide_package("kymatio")
    with pytest.raises(MissingDependencyError, match=r"pip install 'ecgedge\[dacl\]'"):
        StreamPipeline(bundle, fs_in=130.0)
