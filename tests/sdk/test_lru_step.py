"""The LRU step model's manifest entry: old state layouts and malformed entries are refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from sdk.bundle import default_bundle_path, load_bundle, sha256_file
from sdk.errors import BundleError
from sdk.lru_step import STATE_LAYOUT, STEP_INPUTS, STEP_OUTPUTS, streaming_spec


@pytest.fixture
def bundle_copy(tmp_path: Path) -> Path:
    dst = tmp_path / "bundle"
    shutil.copytree(default_bundle_path(), dst)
    (dst / "embedder_step.fp32.onnx").write_bytes(b"step model bytes")
    return dst


def _entry(root: Path, **change: Any) -> dict[str, Any]:
    entry = {
        "path": "embedder_step.fp32.onnx",
        "sha256": sha256_file(root / "embedder_step.fp32.onnx"),
        "state_layout": STATE_LAYOUT,
        "hop_samples": 128,
        "blocks_per_window": 10,
        "layers": 3,
        "d_state": 64,
        "emb_dim": 128,
        "inputs": list(STEP_INPUTS),
        "outputs": list(STEP_OUTPUTS),
        "empty_reducer_m": -1.0e4,
    }
    entry.update(change)
    return {k: v for k, v in entry.items() if v is not None}


def _write(root: Path, entry: dict[str, Any] | None) -> None:
    path = root / "manifest.json"
    data = json.loads(path.read_text())
    data.pop("streaming", None)
    if entry is not None:
        data["streaming"] = entry
    path.write_text(json.dumps(data))


def _reason(root: Path) -> str:
    with pytest.raises(BundleError) as err:
        streaming_spec(load_bundle(root))
    return err.value.reason


def test_packed_entry_is_read(bundle_copy: Path) -> None:
    _write(bundle_copy, _entry(bundle_copy))
    spec = streaming_spec(load_bundle(bundle_copy))
    assert (spec.hop_samples, spec.blocks_per_window, spec.layers) == (128, 10, 3)
    assert (spec.d_state, spec.emb_dim, spec.empty_reducer_m) == (64, 128, -1.0e4)


def test_bundle_without_step_model(bundle_copy: Path) -> None:
    _write(bundle_copy, None)
    assert _reason(bundle_copy) == "missing"


def test_old_per_layer_re_im_layout_is_refused(bundle_copy: Path) -> None:
    old = _entry(bundle_copy, state_layout=None, layers=None, inputs=None)
    old["state_inputs"] = ["state_re_0", "state_im_0", "red_m", "red_s", "red_v"]
    old["outputs"] = ["embedding", "new_state_re_0", "new_state_im_0"]
    _write(bundle_copy, old)
    with pytest.raises(BundleError, match="rebuild the bundle") as err:
        streaming_spec(load_bundle(bundle_copy))
    assert err.value.reason == "streaming_layout"


def test_unknown_layout_is_refused(bundle_copy: Path) -> None:
    _write(bundle_copy, _entry(bundle_copy, state_layout="packed-v9"))
    assert _reason(bundle_copy) == "streaming_layout"


@pytest.mark.parametrize(
    "change",
    [{"layers": None}, {"hop_samples": "many"}, {"inputs": ["x_block", "state"]}],
)
def test_malformed_entry_is_refused(bundle_copy: Path, change: dict[str, Any]) -> None:
    _write(bundle_copy, _entry(bundle_copy, **change))
    assert _reason(bundle_copy) == "malformed"


def test_the_entry_verified_at_loading_is_used_not_the_file_later(bundle_copy: Path) -> None:
    _write(bundle_copy, _entry(bundle_copy))
    bundle = load_bundle(bundle_copy)
    loaded = streaming_spec(bundle)
    _write(bundle_copy, _entry(bundle_copy, blocks_per_window=3))  # edited after loading
    assert streaming_spec(bundle) == loaded
    (bundle_copy / "manifest.json").unlink()  # or removed
    assert streaming_spec(bundle) == loaded
