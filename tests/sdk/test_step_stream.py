"""When a pipeline may stream a bundle through its step model, and the block normalization.

Torch-free: bundles here are copies of the shipped one with edited manifests (a step model
is never run). Streaming with a real exported step model: tests/export/test_lru_pipeline.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sdk.bundle import default_bundle_path, load_bundle, sha256_file
from sdk.errors import ConfigError
from sdk.lru_step import STATE_LAYOUT, STEP_INPUTS, STEP_OUTPUTS, streaming_spec
from sdk.pipeline import StreamPipeline
from sdk.preprocess import standardize_window
from sdk.step_stream import StepStream, standardize_block, step_model_problem

STEP_FILE = "embedder_step.fp32.onnx"


def _streaming(root: Path, **change: Any) -> dict[str, Any]:
    entry = {
        "path": STEP_FILE,
        "sha256": sha256_file(root / STEP_FILE),
        "state_layout": STATE_LAYOUT,
        "hop_samples": 128,
        "blocks_per_window": 10,
        "layers": 2,
        "d_state": 8,
        "emb_dim": 16,
        "inputs": list(STEP_INPUTS),
        "outputs": list(STEP_OUTPUTS),
        "empty_reducer_m": -1.0e4,
    }
    return {**entry, **change}


def _bundle(tmp_path: Path, *, raw_only: bool, streaming: dict[str, Any] | None) -> Path:
    """A copy of the shipped bundle, optionally cut down to its raw embedder, with a fake
    step model file and the given ``streaming`` entry (its fields may be overridden)."""
    root = tmp_path / "bundle"
    shutil.copytree(default_bundle_path(), root)
    (root / STEP_FILE).write_bytes(b"not run by these tests")
    path = root / "manifest.json"
    data = json.loads(path.read_text())
    if raw_only:
        data["files"] = [
            f for f in data["files"] if f.get("modality", "raw") == "raw" and f["role"] != "fusion"
        ]
        data["diffusion"]["default_t"] = {"raw": data["diffusion"]["default_t"]["raw"]}
    if streaming is not None:
        data["streaming"] = _streaming(root, **streaming)
    path.write_text(json.dumps(data))
    return root


def test_the_shipped_bundle_has_no_step_model() -> None:
    bundle = load_bundle(default_bundle_path())
    problem = step_model_problem(bundle)
    assert problem is not None and problem[0] == "missing"


def test_stateful_true_without_step_model_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="stateful=True, but .*no streaming step model") as err:
        StreamPipeline(default_bundle_path(), fs_in=128.0, stateful=True)
    assert err.value.field == "stateful"


def test_stateful_default_without_step_model_re_encodes_windows() -> None:
    assert StreamPipeline(default_bundle_path(), fs_in=128.0).step_stream is None


@pytest.mark.parametrize(
    ("raw_only", "change", "reason"),
    [
        (False, {}, "modalities"),  # multimodal with fusion: no raw-only step model
        (True, {"hop_samples": 256, "blocks_per_window": 10}, "window"),
        (True, {"hop_samples": 256, "blocks_per_window": 5}, "hop"),  # 640 % 256 != 0
        (True, {"state_layout": "packed-v9"}, "streaming_layout"),
    ],
)
def test_unusable_step_models_are_refused_with_a_reason(
    tmp_path: Path, raw_only: bool, change: dict[str, Any], reason: str
) -> None:
    bundle = load_bundle(_bundle(tmp_path, raw_only=raw_only, streaming=change))
    problem = step_model_problem(bundle)
    assert problem is not None and problem[0] == reason
    with pytest.raises(ConfigError) as err:
        StepStream(bundle)
    assert err.value.field == "stateful" and problem[1] in str(err.value)
    with pytest.raises(ConfigError, match="stateful=True"):
        StreamPipeline(bundle, fs_in=128.0, stateful=True)
    assert StreamPipeline(bundle, fs_in=128.0).step_stream is None  # None: whole windows


def test_a_fitting_step_model_is_refused_when_a_denoiser_runs(tmp_path: Path) -> None:
    bundle = load_bundle(_bundle(tmp_path, raw_only=True, streaming={}))
    assert step_model_problem(bundle) is None
    problem = step_model_problem(bundle, denoising=True)
    assert problem is not None and problem[0] == "denoiser"


def test_a_manifest_edited_after_loading_changes_nothing(tmp_path: Path) -> None:
    root = _bundle(tmp_path, raw_only=True, streaming={})
    bundle = load_bundle(root)
    path = root / "manifest.json"
    path.write_text(path.read_text().replace('"hop_samples": 128', '"hop_samples": 64'))
    assert step_model_problem(bundle) is None  # the entry verified at loading is used
    assert streaming_spec(bundle).hop_samples == 128


def test_block_standardization_matches_the_window_path() -> None:
    rng = np.random.default_rng(0)
    window = (0.4 + rng.standard_normal(1280)).astype(np.float32)
    whole = standardize_window(window)
    assert np.allclose(standardize_block(window, 128), whole[-128:], atol=1e-6)
    assert np.allclose(standardize_block(window, 128, stop=384), whole[256:384], atol=1e-6)
    flat = standardize_block(np.full(1280, 2.0, np.float32), 128)
    assert np.all(flat == 0.0)  # the std floor keeps a flat line finite
    spike = np.zeros(1280, np.float32)
    spike[-1] = 1e3
    assert standardize_block(spike, 128)[-1] == 8.0  # clipped like the window path


def test_stateful_takes_only_none_true_or_false() -> None:
    assert (
        StreamPipeline(default_bundle_path(), fs_in=128.0, stateful=np.False_).step_stream is None
    )
    for bad in (0, 1, 0.0, "no", ""):
        with pytest.raises(ConfigError, match="stateful must be None") as err:
            StreamPipeline(default_bundle_path(), fs_in=128.0, stateful=bad)
        assert err.value.field == "stateful"


def test_hop_s_must_be_a_number_of_seconds() -> None:
    for bad in ("1", [1.0], True, float("nan")):
        with pytest.raises(ConfigError, match="hop_s") as err:
            StreamPipeline(default_bundle_path(), fs_in=128.0, hop_s=bad)
        assert err.value.field == "hop_s"
    assert StreamPipeline(default_bundle_path(), fs_in=128.0, hop_s=np.float32(2.5)).hop == 320
