"""Bundle verification: checksums, schema and shapes are checked before anything runs."""

from __future__ import annotations

import json
import re
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
    # no INT8 graph: none of the signal's layers stayed within the accuracy budget (the
    # time-embedding layers, calibrated at one t, are no candidates)
    assert {f.precision for f in m.files if f.role == "embedder"} == {"fp32"}
    int8 = m.provenance["int8_calibration"]
    assert int8["shipped"] is False and int8["int8_layers"] == 0 and int8["candidate_layers"]
    assert b.inference_noise().shape == (1, 1, m.window_samples)
    # every file a device loads stays under 5 MiB (4.6 MiB with 0.46 MiB of anchor windows)
    sizes = {f.path: (b.root / f.path).stat().st_size for f in m.files}
    assert sum(sizes.values()) < 5 * 2**20


def test_tampered_model_file_is_refused(bundle_copy):
    target = bundle_copy / "embedder.fp32.onnx"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(BundleError) as err:
        load_bundle(bundle_copy)
    assert err.value.reason == "checksum" and "embedder.fp32.onnx" in str(err.value)


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


def test_path_escape_is_refused(bundle_copy):
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
    shutil.copy(b.root / "embedder.lorenz.fp32.onnx", b.root / "embedder.fp32.onnx")
    with pytest.raises(BundleError, match="changed since the bundle was verified"):
        WindowClassifier(b, precision="fp32")
    b = load_bundle(shutil.copytree(default_bundle_path(), bundle_copy.parent / "third"))
    (b.root / "denoiser.fp32.onnx").write_bytes(b"\x00" * 10)
    with pytest.raises(BundleError, match="changed since"):
        WindowDenoiser(b)


def _drop_inputs_of_lorenz_embedder(d):
    for f in d["files"]:
        if f["path"].endswith("lorenz.fp32.onnx"):
            f["inputs"] = []


def _drop_outputs_of_head(d):
    for f in d["files"]:
        if f["role"] == "head":
            f["outputs"] = []


# each case with the reason it must be refused for and a fragment of the message naming the
# offending entry: "malformed" = a value of the wrong type or form, "inconsistent" = values
# well formed one by one that do not fit together
@pytest.mark.parametrize(
    ("change", "reason", "message"),
    [
        pytest.param(
            lambda d: d.clear() or d.update({"schema_version": 1, "files": 3}),
            "malformed",
            "files must be a list",
            id="files-not-a-list",
        ),
        pytest.param(
            lambda d: d.update({"thresholds": [1]}),
            "malformed",
            "malformed manifest",
            id="thresholds-list",
        ),
        pytest.param(
            lambda d: d["files"][0].update({"path": 5}),
            "malformed",
            "file path must be a string",
            id="path-int",
        ),
        pytest.param(
            lambda d: d["files"][0].update({"sha256": 5}),
            "malformed",
            "sha256 must be 64",
            id="sha-int",
        ),
        pytest.param(
            lambda d: d["files"][0].update({"sha256": "A" * 64}),
            "malformed",
            "sha256 must be 64 lowercase",
            id="sha-upper",
        ),
        pytest.param(
            lambda d: d["diffusion"]["alphas_cumprod"].__setitem__(1, float("nan")),
            "malformed",
            "alphas_cumprod must be finite",
            id="nan-abar",
        ),
        pytest.param(
            lambda d: d["thresholds"].update({"episode_on": float("inf")}),
            "malformed",
            "episode_on must be finite",
            id="inf-threshold",
        ),
        pytest.param(
            lambda d: d.update(
                {"files": [f for f in d["files"] if f["path"] != "noise.lorenz.npy"]}
            ),
            "inconsistent",
            "no inference noise for the lorenz embedder",
            id="noise-of-a-modality-missing",
        ),
        pytest.param(
            lambda d: d.update({"window_samples": 1280.9}),
            "malformed",
            "window_samples must be an integer",
            id="window-not-integer",
        ),
        pytest.param(
            lambda d: d.update({"hop_samples": "640"}),
            "malformed",
            "hop_samples must be an integer",
            id="hop-string",
        ),
        pytest.param(
            lambda d: d.update({"leads": "ECG"}),
            "malformed",
            "leads must be a non-empty list",
            id="leads-string",
        ),
        pytest.param(
            lambda d: d.update({"classes": ["N", "A", "O"]}),
            "inconsistent",
            "do not give one per class",
            id="classes-fewer-than-head-outputs",
        ),
        pytest.param(
            lambda d: d.update({"classes": ["N", "A", "A", "~"]}),
            "malformed",
            "classes must hold unique",
            id="classes-duplicate",
        ),
        pytest.param(
            lambda d: d["preprocess"].update({"fs": float("inf")}),
            "malformed",
            "preprocess.fs must be finite",
            id="fs-inf",
        ),
        pytest.param(
            lambda d: d["thresholds"].update({"episode_on": 10**400}),
            "malformed",
            "episode_on is out of range",
            id="threshold-huge-int",
        ),
        pytest.param(
            lambda d: d.update({"window_samples": 2**60}),
            "malformed",
            "window_samples is out of range",
            id="window-huge-int",
        ),
        pytest.param(
            lambda d: d["preprocess"].update({"fs": 1e300}),
            "inconsistent",
            "preprocess.fs (1e+300 Hz) above 20000 Hz",
            id="fs-huge",
        ),
        pytest.param(
            lambda d: d.update({"window_samples": 128 * 400, "hop_samples": 640}),
            "inconsistent",
            "window (51200 samples) longer than 300 s",
            id="window-too-long",
        ),
        pytest.param(
            lambda d: d["diffusion"]["default_t"].update({"raw": 1.9}),
            "malformed",
            "default_t raw must be an integer",
            id="default-t-float",
        ),
        pytest.param(
            lambda d: d["files"][0].update({"bytes": "1"}),
            "malformed",
            "bytes must be an integer",
            id="bytes-string",
        ),
        pytest.param(
            lambda d: d["files"][0]["outputs"][0].update({"shape": "abc"}),
            "malformed",
            "shape a list",
            id="shape-string",
        ),
        pytest.param(
            _drop_inputs_of_lorenz_embedder,
            "inconsistent",
            "lorenz embedder must declare its input 'x'",
            id="modality-embedder-without-x",
        ),
        pytest.param(
            _drop_outputs_of_head,
            "inconsistent",
            "a head must declare 'features' and 'probabilities'",
            id="head-without-probabilities",
        ),
        pytest.param(  # loaded, then every window failed on (1, 2) != (1, 9) RR features
            lambda d: d["head_features"].update(rr_features=["a", "b"]),
            "inconsistent",
            "head_features.rr_features ['a', 'b'] are not the ones this SDK computes",
            id="rr-features-of-another-sdk",
        ),
        pytest.param(
            lambda d: d.update(head_features={}),
            "inconsistent",
            "head_features.rr_features None are not",
            id="no-head-features",
        ),
        pytest.param(
            lambda d: d["head_features"]["embedding_dims"].update(raw=300),
            "inconsistent",
            "head.onnx: takes 1081 features, but head_features give 1077",
            id="head-width-not-the-features",
        ),
        pytest.param(
            lambda d: d.update(name=[1]),
            "malformed",
            "name must be a string",
            id="name-a-list",
        ),
        pytest.param(
            lambda d: d["files"][0].update(role=["embedder"]),
            "malformed",
            "role must be a string",
            id="role-a-list",
        ),
        pytest.param(  # loaded, then every window failed inside ONNX Runtime (73 != 137)
            lambda d: next(f for f in d["files"] if f["path"] == "embedder.fp32.onnx")["outputs"][
                0
            ].update(shape=["batch", 64]),
            "inconsistent",
            "embedder.fp32.onnx: gives 64 features (embedding), but head_features say 304",
            id="embedding-width-not-the-heads",
        ),
        pytest.param(
            lambda d: next(f for f in d["files"] if f["role"] == "fusion")["outputs"][0].update(
                shape=["batch", 100]
            ),
            "inconsistent",
            "fusion.onnx: gives 100 features (fused), but head_features say 192",
            id="fused-width-not-the-heads",
        ),
        pytest.param(
            lambda d: d["head_features"]["embedding_dims"].update(raw="304"),
            "inconsistent",
            "each embedding's width as an integer",
            id="embedding-width-a-string",
        ),
    ],
)
def test_malformed_manifests_are_refused_with_a_bundle_error(bundle_copy, change, reason, message):
    edit_manifest(bundle_copy, change)
    with pytest.raises(BundleError, match=re.escape(message)) as err:
        load_bundle(bundle_copy)
    assert err.value.reason == reason


@pytest.mark.parametrize("bad", ["/etc/passwd", "a/../../b", "noise.npy\x00x", "..\\noise.npy"])
def test_file_paths_outside_the_bundle_or_unusable_are_refused(bundle_copy, bad):
    edit_manifest(bundle_copy, lambda d: d["files"][1].update(path=bad))
    with pytest.raises(BundleError) as err:
        load_bundle(bundle_copy)
    assert err.value.reason == "path"


def rehash(root, name, data):
    """Replace a file and update its manifest entry, as a faulty export would."""
    import hashlib

    (root / name).write_bytes(data)

    def change(d):
        for f in d["files"]:
            if f["path"] == name:
                f.update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))

    edit_manifest(root, change)


def test_non_finite_or_non_numeric_inference_noise_is_refused(bundle_copy):
    import io

    import numpy as np

    for stored in (
        np.full((1, 1, 1280), np.nan, np.float32),
        np.zeros((1, 1, 1280), dtype=[("a", "f4")]),
        np.array(["1"] * 1280).reshape(1, 1, 1280),
    ):
        buf = io.BytesIO()
        np.save(buf, stored)
        rehash(bundle_copy, "noise.npy", buf.getvalue())
        with pytest.raises(BundleError) as err:
            load_bundle(bundle_copy).inference_noise()
        assert err.value.reason == "malformed"


def test_a_bundle_without_the_af_class_cannot_stream(bundle_copy):
    from sdk.pipeline import StreamPipeline

    edit_manifest(bundle_copy, lambda d: d.update(classes=["N", "AF", "O", "~"]))
    with pytest.raises(BundleError) as err:
        StreamPipeline(bundle_copy, fs_in=128.0)
    assert err.value.reason == "inconsistent" and "'A'" in str(err.value)


def test_a_file_swapped_for_a_fifo_or_a_larger_file_is_refused_without_reading_it(bundle_copy):
    import os

    b = load_bundle(bundle_copy)
    spec = b.manifest.file("head")
    head = b.root / spec.path
    head.unlink()
    os.mkfifo(head)  # opening it for reading would block forever
    with pytest.raises(BundleError) as err:
        b.verified_bytes(spec)
    assert err.value.reason == "checksum"
    head.unlink()
    head.write_bytes(b"\x00" * (spec.size + 1))
    with pytest.raises(BundleError) as err:
        b.verified_bytes(spec)
    assert err.value.reason == "checksum"


def test_a_malformed_streaming_entry_is_refused(bundle_copy):
    import hashlib

    from sdk.lru_step import STEP_INPUTS, STEP_OUTPUTS, streaming_spec

    head = bundle_copy / "head.onnx"
    entry = {
        "path": "head.onnx",
        "sha256": hashlib.sha256(head.read_bytes()).hexdigest(),
        "state_layout": "packed-v2",
        "hop_samples": -128,
        "blocks_per_window": -10,
        "layers": 2,
        "d_state": 8,
        "emb_dim": 16,
        "empty_reducer_m": 0.0,
        "inputs": list(STEP_INPUTS),
        "outputs": list(STEP_OUTPUTS),
    }
    sane = {"hop_samples": 128, "blocks_per_window": 10}
    for bad in ({}, {"empty_reducer_m": float("nan")}, {"hop_samples": 12.5}, {"inputs": 3}):
        streaming = {**entry, **sane, **bad} if bad else entry
        edit_manifest(bundle_copy, lambda d, s=streaming: d.update(streaming=s))
        with pytest.raises(BundleError) as err:
            streaming_spec(load_bundle(bundle_copy))
        assert err.value.reason == "malformed"


def test_manifest_that_is_not_an_object_or_nests_too_deep_is_refused(bundle_copy):
    manifest = bundle_copy / "manifest.json"
    for text in ("[]", "[" * 100_000 + "]" * 100_000):
        manifest.write_text(text)
        with pytest.raises(BundleError) as err:
            load_bundle(bundle_copy)
        assert err.value.reason == "malformed"


def test_a_manifest_integer_of_too_many_digits_is_a_bundle_error(bundle_copy):
    path = bundle_copy / "manifest.json"
    text = path.read_text()
    path.write_text(text.replace('"window_samples": 1280', '"window_samples": 1' + "0" * 5000))
    with pytest.raises(BundleError, match="not valid JSON") as err:
        load_bundle(bundle_copy)
    assert err.value.reason == "malformed"


@pytest.mark.parametrize("declared", [-1, 0, 10**9])
def test_a_declared_size_that_is_not_the_files_is_refused_at_load(bundle_copy, declared):
    edit_manifest(bundle_copy, lambda d: d["files"][0].update({"bytes": declared}))
    with pytest.raises(BundleError, match=f"the manifest says {declared}") as err:
        load_bundle(bundle_copy)
    assert err.value.reason == "checksum"


def test_a_pinned_manifest_hash_refuses_an_edited_manifest_whose_files_verify(bundle_copy):
    pinned = load_bundle(bundle_copy).manifest_sha256
    assert load_bundle(bundle_copy, manifest_sha256=pinned).manifest_sha256 == pinned

    def swap_classes(d):
        d["classes"] = [d["classes"][1], d["classes"][0], *d["classes"][2:]]

    edit_manifest(bundle_copy, swap_classes)  # every file still matches its checksum
    assert load_bundle(bundle_copy).manifest.classes[0] == "A"
    with pytest.raises(BundleError, match="is not the pinned") as err:
        load_bundle(bundle_copy, manifest_sha256=pinned)
    assert err.value.reason == "checksum"


def test_a_pin_is_hex_in_either_case_or_a_config_error(bundle_copy):
    from sdk.errors import ConfigError

    pinned = load_bundle(bundle_copy).manifest_sha256
    assert load_bundle(bundle_copy, manifest_sha256=pinned.upper()).manifest_sha256 == pinned
    for bad in ("abc", pinned.encode(), pinned[:-1] + "g"):
        with pytest.raises(ConfigError, match="64 hex digits"):
            load_bundle(bundle_copy, manifest_sha256=bad)


def test_a_boolean_schema_version_or_a_repeated_key_is_refused(bundle_copy):
    """``true == 1`` passed as schema version 1; of a repeated key the last silently won."""
    edit_manifest(bundle_copy, lambda d: d.update(schema_version=True))
    with pytest.raises(BundleError, match="schema_version True is not supported"):
        load_bundle(bundle_copy)
    edit_manifest(bundle_copy, lambda d: d.update(schema_version=1))
    text = (bundle_copy / "manifest.json").read_text()
    assert text.count('"name": ') >= 1
    (bundle_copy / "manifest.json").write_text(text.replace("{", '{"name": "first", ', 1))
    with pytest.raises(BundleError, match="key 'name' appears twice in one object") as err:
        load_bundle(bundle_copy)
    assert err.value.reason == "malformed"


def test_a_noise_header_claiming_more_data_than_the_file_holds_is_refused(bundle_copy):
    import io

    import numpy as np

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "<f4", "fortran_order": False, "shape": (1 << 40,)}
    )
    rehash(bundle_copy, "noise.npy", buf.getvalue() + bytes(64))
    with pytest.raises(BundleError, match="does not match its data") as err:
        load_bundle(bundle_copy).inference_noise()  # no 4 TiB allocation first
    assert err.value.reason == "malformed"


def test_an_unreadable_file_or_manifest_is_a_bundle_error(bundle_copy, monkeypatch):
    import sdk.bundle as sb

    def denied(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(sb, "sha256_file", denied)
    with pytest.raises(BundleError, match="Permission denied") as err:
        load_bundle(bundle_copy)
    assert err.value.reason == "missing"
    monkeypatch.undo()
    real_open = sb.os.open
    monkeypatch.setattr(
        sb.os,
        "open",
        lambda p, *a, **k: denied(p) if str(p).endswith("manifest.json") else real_open(p, *a, **k),
    )
    with pytest.raises(BundleError, match="Permission denied"):
        load_bundle(bundle_copy)


def test_a_manifest_linked_from_outside_the_bundle_is_refused(bundle_copy, tmp_path):
    outside = tmp_path / "elsewhere.json"
    (bundle_copy / "manifest.json").rename(outside)
    (bundle_copy / "manifest.json").symlink_to(outside)
    with pytest.raises(BundleError, match="escapes the bundle") as err:
        load_bundle(bundle_copy)
    assert err.value.reason == "path"


def test_a_head_whose_feature_width_is_symbolic_in_the_graph_is_refused(bundle_copy):
    onnx = pytest.importorskip("onnx")
    head = onnx.load(str(bundle_copy / "head.onnx"))
    axis = head.graph.input[0].type.tensor_type.shape.dim[1]
    axis.ClearField("dim_value")
    axis.dim_param = "F"  # loads; every window then failed in MatMul
    rehash(bundle_copy, "head.onnx", head.SerializeToString())
    with pytest.raises(BundleError, match="tensor 'features' has shape") as err:
        WindowClassifier(load_bundle(bundle_copy))
    assert err.value.reason == "shape"


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda fe: fe.update(J=9, Q=1), id="other-J-Q"),
        pytest.param(lambda fe: fe.update(features=126), id="other-feature-count"),
        pytest.param(lambda fe: fe.clear(), id="empty"),
    ],
)
def test_a_dacl_front_end_other_than_the_sdks_scattering_is_refused(tmp_path, change):
    """A DACL bundle whose front end said J=9, Q=1 loaded and classified with J=6, Q=8."""
    from sdk.bundle import shipped_bundles

    root = tmp_path / "dacl"
    shutil.copytree(shipped_bundles()["dacl-cpu"], root)
    load_bundle(root)  # as shipped
    edit_manifest(root, lambda d: change(d["front_end"]))
    with pytest.raises(BundleError, match="not the scattering this SDK computes") as err:
        load_bundle(root)
    assert err.value.reason == "inconsistent"
    edit_manifest(root, lambda d: d.pop("front_end"))
    with pytest.raises(BundleError, match="front_end None"):
        load_bundle(root)
