"""Bundle verification: checksums, schema and shapes are checked before anything runs."""

from __future__ import annotations

import json
import shutil

import pytest

from sdk.bundle import default_bundle_path, load_bundle
from sdk.classifier import WindowClassifier
from sdk.errors import BundleError


@pytest.fixture
def bundle_copy(tmp_path):
    dst = tmp_path / "bundle"
    shutil.copytree(default_bundle_path(), dst)
    return dst


def edit_manifest(root, change):
    path = root / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_shipped_bundle_verifies_and_declares_its_geometry():
    b = load_bundle(default_bundle_path())
    m = b.manifest
    assert m.window_samples == int(m.fs * 10)
    assert 0 < m.hop_samples <= m.window_samples
    assert m.classes == ("N", "A", "O", "~")
    assert {f.role for f in m.files} >= {"embedder", "head", "inference_noise"}
    assert {f.precision for f in m.files if f.role == "embedder"} == {"fp32", "int8"}
    assert b.inference_noise().shape == (1, 1, m.window_samples)
    assert sum((b.root / f.path).stat().st_size for f in m.files) < 5 * 2**20


def test_tampered_model_file_is_refused(bundle_copy):
    target = bundle_copy / "embedder.int8.onnx"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(BundleError) as err:
        load_bundle(bundle_copy)
    assert err.value.reason == "checksum" and "embedder.int8.onnx" in str(err.value)


def test_missing_file_truncated_manifest_and_schema_are_refused(bundle_copy):
    (bundle_copy / "noise.npy").unlink()
    with pytest.raises(BundleError) as err:
        load_bundle(bundle_copy)
    assert err.value.reason == "missing"
    manifest = bundle_copy / "manifest.json"
    text = manifest.read_text()
    manifest.write_text(text[: len(text) // 2])
    with pytest.raises(BundleError) as err:
        load_bundle(bundle_copy)
    assert err.value.reason == "malformed"
    manifest.write_text(text)
    edit_manifest(bundle_copy, lambda d: d.update(schema_version=99))
    with pytest.raises(BundleError) as err:
        load_bundle(bundle_copy)
    assert err.value.reason == "schema_version"


def test_path_escape_and_inconsistent_geometry_are_refused(bundle_copy):
    edit_manifest(bundle_copy, lambda d: d["files"][0].update(path="../../etc/passwd"))
    with pytest.raises(BundleError) as err:
        load_bundle(bundle_copy)
    assert err.value.reason == "path"


def test_inconsistent_hop_is_refused(bundle_copy):
    edit_manifest(bundle_copy, lambda d: d.update(hop_samples=d["window_samples"] + 1))
    with pytest.raises(BundleError) as err:
        load_bundle(bundle_copy)
    assert err.value.reason == "inconsistent"


def test_declared_shape_mismatch_is_refused_when_the_model_loads(bundle_copy):
    def shrink(d):
        for f in d["files"]:
            if f["role"] == "embedder":
                f["inputs"][0]["shape"] = ["batch", 1, 999]

    edit_manifest(bundle_copy, shrink)
    with pytest.raises(BundleError) as err:
        WindowClassifier(load_bundle(bundle_copy))
    assert err.value.reason == "shape"


def test_streaming_step_model_is_verified_like_every_file(bundle_copy):
    from sdk.bundle import sha256_file

    step = bundle_copy / "embedder_step.fp32.onnx"
    step.write_bytes(b"step model bytes")
    edit_manifest(
        bundle_copy,
        lambda d: d.update(streaming={"path": step.name, "sha256": sha256_file(step)}),
    )
    load_bundle(bundle_copy)
    step.write_bytes(b"step model bytez")
    with pytest.raises(BundleError) as err:
        load_bundle(bundle_copy)
    assert err.value.reason == "checksum"
    edit_manifest(bundle_copy, lambda d: d.update(streaming={"path": step.name}))
    with pytest.raises(BundleError) as err:
        load_bundle(bundle_copy)
    assert err.value.reason == "malformed"


def test_a_file_replaced_after_verification_is_refused_when_used(bundle_copy):
    """What runs is what was hashed: the bytes are checked again as they are loaded."""
    import numpy as np

    from sdk.denoiser import WindowDenoiser

    b = load_bundle(bundle_copy)
    np.save(bundle_copy / "noise.npy", np.full((1, 1, b.manifest.window_samples), np.nan))
    with pytest.raises(BundleError) as err:
        b.inference_noise()
    assert err.value.reason == "checksum"
    b = load_bundle(shutil.copytree(default_bundle_path(), bundle_copy.parent / "second"))
    shutil.copy(b.root / "embedder.int8.onnx", b.root / "embedder.fp32.onnx")
    with pytest.raises(BundleError, match="changed since the bundle was verified"):
        WindowClassifier(b, precision="fp32")
    b = load_bundle(shutil.copytree(default_bundle_path(), bundle_copy.parent / "third"))
    (b.root / "denoiser.fp32.onnx").write_bytes(b"\x00" * 10)
    with pytest.raises(BundleError, match="changed since"):
        WindowDenoiser(b)


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.clear() or d.update({"schema_version": 1, "files": 3}),
        lambda d: d.update({"thresholds": [1]}),
        lambda d: d["files"][0].update({"path": 5}),
        lambda d: d["files"][0].update({"sha256": 5}),
        lambda d: d["files"][0].update({"sha256": "A" * 64}),
        lambda d: d["diffusion"]["alphas_cumprod"].__setitem__(1, float("nan")),
        lambda d: d["thresholds"].update({"episode_on": float("inf")}),
        lambda d: d.update({"files": [f for f in d["files"] if f["path"] != "noise.lorenz.npy"]}),
    ],
    ids=[
        "files-not-a-list",
        "thresholds-list",
        "path-int",
        "sha-int",
        "sha-upper",
        "nan-abar",
        "inf-threshold",
        "noise-of-a-modality-missing",
    ],
)
def test_malformed_manifests_are_refused_with_a_bundle_error(bundle_copy, change):
    edit_manifest(bundle_copy, change)
    with pytest.raises(BundleError) as err:
        load_bundle(bundle_copy)
    assert err.value.reason in ("malformed", "inconsistent", "schema_version")


def test_manifest_that_is_not_an_object_or_nests_too_deep_is_refused(bundle_copy):
    manifest = bundle_copy / "manifest.json"
    for text in ("[]", "[" * 100_000 + "]" * 100_000):
        manifest.write_text(text)
        with pytest.raises(BundleError) as err:
            load_bundle(bundle_copy)
        assert err.value.reason == "malformed"
