"""ONNX Runtime's TensorRT engine cache: private directory, indexed files, tampered files
removed before the provider can load them."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from sdk import runtime
from sdk.bundle import default_bundle_path, load_bundle
from sdk.errors import BundleError
from sdk.ort_trt_cache import (
    CACHE_PREFIX,
    INDEX_NAME,
    cache_signature,
    check_engine_cache,
    record_engine_cache,
)

ENGINE = CACHE_PREFIX + "TRTKernel_graph_main_graph_123_0_0_sm87.engine"
PROFILE = CACHE_PREFIX + "TRTKernel_graph_main_graph_123_0_0_sm87.profile"


def _cache(tmp_path: Path) -> Path:
    d = tmp_path / "ort"
    d.mkdir(mode=0o700)
    (d / ENGINE).write_bytes(b"engine-bytes")
    (d / PROFILE).write_bytes(b"profile-bytes")
    return d


def test_recorded_files_pass_and_the_index_is_sha256sum_format(tmp_path):
    d = _cache(tmp_path)
    sums = record_engine_cache(d)
    assert set(sums) == {ENGINE, PROFILE}
    assert check_engine_cache(d) == []
    line = next(x for x in (d / INDEX_NAME).read_text().splitlines() if x.endswith(ENGINE))
    digest, name = line.split()
    assert len(digest) == 64 and name == ENGINE
    assert (d / INDEX_NAME).stat().st_mode & 0o777 == 0o600


def test_a_changed_or_unindexed_engine_is_removed_and_others_kept(tmp_path):
    d = _cache(tmp_path)
    record_engine_cache(d)
    (d / ENGINE).write_bytes(b"engine-bytes, patched")
    planted = CACHE_PREFIX + "TRTKernel_graph_other_9_0_0_sm87.engine"
    (d / planted).write_bytes(b"from elsewhere")
    (d / "notes.txt").write_text("not the provider's")  # other files are never touched
    assert sorted(check_engine_cache(d)) == sorted([ENGINE, planted])
    assert sorted(p.name for p in d.iterdir()) == sorted([PROFILE, INDEX_NAME, "notes.txt"])


def test_a_symlinked_cache_file_is_removed(tmp_path):
    d = _cache(tmp_path)
    record_engine_cache(d)
    target = tmp_path / "elsewhere.engine"
    target.write_bytes(b"engine-bytes")  # same bytes, but not a file of the cache
    (d / ENGINE).unlink()
    (d / ENGINE).symlink_to(target)
    assert check_engine_cache(d) == [ENGINE]
    assert target.exists()


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX permissions")
def test_a_hard_linked_or_shared_writable_engine_is_removed(tmp_path):
    d = _cache(tmp_path)
    record_engine_cache(d)
    os.link(d / ENGINE, tmp_path / "second-name.engine")  # another path can change its bytes
    (d / PROFILE).chmod(0o666)
    assert sorted(check_engine_cache(d)) == sorted([ENGINE, PROFILE])


def test_an_untrusted_index_vouches_for_nothing(tmp_path):
    d = _cache(tmp_path)
    record_engine_cache(d)
    (d / INDEX_NAME).chmod(0o666)
    assert sorted(check_engine_cache(d)) == sorted([ENGINE, PROFILE])


def test_a_directory_named_like_a_cache_file_is_refused(tmp_path):
    d = _cache(tmp_path)
    (d / (CACHE_PREFIX + "odd")).mkdir()
    with pytest.raises(BundleError) as err:
        check_engine_cache(d)
    assert err.value.reason == "engine_cache" and "directory" in str(err.value)


def test_the_signature_changes_when_an_engine_is_rewritten(tmp_path):
    d = _cache(tmp_path)
    before = cache_signature(d)
    (d / ENGINE).write_bytes(b"rebuilt for new shapes, longer")
    assert cache_signature(d) != before
    assert {name for name, *_ in before} == {ENGINE, PROFILE}


def test_without_an_index_every_cache_file_is_removed(tmp_path):
    d = _cache(tmp_path)
    assert sorted(check_engine_cache(d)) == sorted([ENGINE, PROFILE])


def test_a_missing_directory_is_created_private(tmp_path):
    d = tmp_path / "a" / "ort"
    assert check_engine_cache(d) == []
    assert d.stat().st_mode & 0o777 == 0o700


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX permissions")
def test_a_shared_or_symlinked_directory_is_refused(tmp_path):
    d = _cache(tmp_path)
    d.chmod(0o777)
    with pytest.raises(BundleError) as err:
        check_engine_cache(d)
    assert err.value.reason == "engine_cache" and "writable" in str(err.value)
    d.chmod(0o700)
    link = tmp_path / "link"
    link.symlink_to(d, target_is_directory=True)
    with pytest.raises(BundleError, match="symlink"):
        check_engine_cache(link)


class _BuildingSession:
    """Stands in for a TensorRT-provider session on CPU: runs the model with ONNX Runtime's
    CPU provider and, like the provider, writes an engine into its cache at the first run."""

    def __init__(self, source, sess_options=None, providers=None):
        name, opts = providers[0]
        assert name == "TensorrtExecutionProvider" and opts["trt_engine_cache_enable"]
        self.cache = Path(opts["trt_engine_cache_path"])
        self.inner = ort.InferenceSession(source, sess_options, providers=["CPUExecutionProvider"])

    def get_inputs(self):
        return self.inner.get_inputs()

    def get_outputs(self):
        return self.inner.get_outputs()

    def run(self, outputs, feeds):
        engine = self.cache / ENGINE
        if not engine.exists():
            engine.write_bytes(b"built engine")
        return self.inner.run(outputs, feeds)


@pytest.fixture
def tensorrt_provider(monkeypatch):
    class FakeOrt:
        __version__ = "1.99.0"
        SessionOptions = ort.SessionOptions
        ExecutionMode = ort.ExecutionMode
        GraphOptimizationLevel = ort.GraphOptimizationLevel
        InferenceSession = _BuildingSession

        @staticmethod
        def get_available_providers():
            return ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]

    monkeypatch.setattr(runtime, "_ort", lambda: FakeOrt)


def test_the_tensorrt_backend_indexes_what_the_provider_builds_and_drops_tampering(
    tensorrt_provider, tmp_path
):
    head = default_bundle_path() / "head.onnx"
    cache = tmp_path / "ort"
    model = runtime.OnnxModel(head, backend="tensorrt", cache_dir=cache)
    assert model.trt_cache_dir == cache and (cache / INDEX_NAME).read_text() == ""
    name = model.input_names[0]
    shape = [d if isinstance(d, int) else 1 for d in model.session.get_inputs()[0].shape]
    model.run({name: np.zeros(shape, np.float32)})
    assert ENGINE in (cache / INDEX_NAME).read_text()  # recorded after the first run
    runtime.OnnxModel(head, backend="tensorrt", cache_dir=cache)
    assert (cache / ENGINE).read_bytes() == b"built engine"  # an indexed engine is kept
    (cache / ENGINE).write_bytes(b"swapped engine")
    model = runtime.OnnxModel(head, backend="tensorrt", cache_dir=cache)
    assert not (cache / ENGINE).exists()  # removed before the provider could load it
    model.run({name: np.zeros(shape, np.float32)})  # rebuilt at this run: indexed again
    assert check_engine_cache(cache) == [] and (cache / ENGINE).read_bytes() == b"built engine"


def test_an_index_that_cannot_be_written_never_fails_inference(
    tensorrt_provider, tmp_path, monkeypatch
):
    def full_disk(_cache_dir):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(runtime, "record_engine_cache", full_disk)
    head = default_bundle_path() / "head.onnx"
    model = runtime.OnnxModel(head, backend="tensorrt", cache_dir=tmp_path / "ort")
    name = model.input_names[0]
    shape = [d if isinstance(d, int) else 1 for d in model.session.get_inputs()[0].shape]
    for _ in range(2):
        outputs = model.run({name: np.zeros(shape, np.float32)})
        assert outputs and all(np.isfinite(o).all() for o in outputs)


class _ProfileRefusingSession(_BuildingSession):
    """A TensorRT-provider session for a graph TensorRT takes only in part: explicit shape
    profiles that do not cover every subgraph's inputs fail (ONNX Runtime's EP_FAIL)."""

    seen: list[dict] = []

    def __init__(self, source, sess_options=None, providers=None):
        _ProfileRefusingSession.seen.append(dict(providers[0][1]))
        if any(k.startswith("trt_profile_") for k in providers[0][1]):
            raise RuntimeError("EP_FAIL: no shape profile for subgraph input")
        super().__init__(source, sess_options, providers)


def test_shape_profiles_the_provider_refuses_fall_back_to_first_run_shapes(
    tensorrt_provider, tmp_path, monkeypatch, caplog
):
    fake = runtime._ort()
    monkeypatch.setattr(fake, "InferenceSession", _ProfileRefusingSession)
    _ProfileRefusingSession.seen.clear()
    bundle = load_bundle(default_bundle_path())
    spec = bundle.manifest.file("head")
    with caplog.at_level("WARNING", logger="sdk.runtime"):
        model = runtime.OnnxModel(
            bundle.path_of(spec), backend="tensorrt", spec=spec, cache_dir=tmp_path / "ort"
        )
    first, second = _ProfileRefusingSession.seen
    assert "trt_profile_max_shapes" in first and not any("profile" in k for k in second)
    assert second["trt_engine_cache_prefix"] == first["trt_engine_cache_prefix"]
    assert "retrying without them" in caplog.text
    name = model.input_names[0]
    shape = [d if isinstance(d, int) else 1 for d in model.session.get_inputs()[0].shape]
    assert np.isfinite(model.run({name: np.zeros(shape, np.float32)})[0]).all()


def test_a_model_the_provider_cannot_load_at_all_is_a_bundle_error(
    tensorrt_provider, tmp_path, monkeypatch
):
    class Broken(_BuildingSession):
        def __init__(self, source, sess_options=None, providers=None):
            raise RuntimeError("bad model")

    monkeypatch.setattr(runtime._ort(), "InferenceSession", Broken)
    spec = load_bundle(default_bundle_path()).manifest.file("head")
    with pytest.raises(BundleError, match="bad model") as err:
        runtime.OnnxModel(
            default_bundle_path() / spec.path, backend="tensorrt", spec=spec, cache_dir=tmp_path
        )
    assert err.value.reason == "load"


def test_large_batches_run_in_pieces_of_the_profile(tensorrt_provider, tmp_path, monkeypatch):
    """Beyond the window's profile (batch 8) the provider would rebuild its engine: the
    batch-first inputs run in pieces, the batch-first outputs are joined."""
    bundle = load_bundle(default_bundle_path())
    spec = bundle.manifest.file("embedder", "fp32")
    model = runtime.OnnxModel(
        bundle.path_of(spec), backend="tensorrt", spec=spec, cache_dir=tmp_path / "ort"
    )
    sizes = []
    real = model.session.run

    def spy(outputs, feeds):
        sizes.append(len(feeds["x"]))
        return real(outputs, feeds)

    monkeypatch.setattr(model.session, "run", spy)
    x = np.random.default_rng(2).standard_normal((19, 1, 1280)).astype(np.float32)
    feeds = {"x": x, "t": np.ones(19, np.int64), "noise": np.zeros_like(x)}
    (got,) = model.run(feeds, ["embedding"])
    assert sizes == [8, 8, 3]
    plain = ort.InferenceSession(str(bundle.path_of(spec)), providers=["CPUExecutionProvider"])
    (ref,) = plain.run(["embedding"], feeds)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)


def test_only_batch_first_tensors_are_split(tensorrt_provider, tmp_path):
    """A model with a batch input ``x`` (batch, 4) and a fixed input ``table`` (16,): ``y = x +
    sum(table)`` (batch, 4) and ``s = sum(table)`` (a scalar). At batch 12 the table is passed
    whole to each piece, ``y`` is joined and ``s`` taken once."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    table = helper.make_tensor_value_info("table", TensorProto.FLOAT, [16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    s = helper.make_tensor_value_info("s", TensorProto.FLOAT, [])
    nodes = [
        helper.make_node("ReduceSum", ["table"], ["s"], keepdims=0),
        helper.make_node("Add", ["x", "s"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "g", [x, table], [y, s])
    model_proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model_proto.ir_version = 8  # readable by every onnxruntime this project supports
    path = tmp_path / "m.onnx"
    onnx.save(model_proto, str(path))
    model = runtime.OnnxModel(path, backend="tensorrt", cache_dir=tmp_path / "ort")
    model._profiled = True  # as with a bundle's spec, which sets the window's profiles
    got_y, got_s = model.run({"x": np.zeros((12, 4), np.float32), "table": np.ones(16, np.float32)})
    assert got_y.shape == (12, 4) and np.all(got_y == 16.0) and float(got_s) == 16.0


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX FIFOs")
def test_a_fifo_named_like_an_engine_is_removed_without_blocking(tmp_path):
    import threading

    d = _cache(tmp_path)
    record_engine_cache(d)
    fifo = CACHE_PREFIX + "TRTKernel_graph_main_graph_7_0_0_sm87.engine"
    os.mkfifo(d / fifo, 0o600)
    result: list[list[str]] = []
    worker = threading.Thread(target=lambda: result.append(check_engine_cache(d)), daemon=True)
    worker.start()
    worker.join(10.0)
    if worker.is_alive():  # unblock the open so the test process can end
        os.close(os.open(d / fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(5.0)
        pytest.fail("opening the FIFO blocked the cache check")
    assert result == [[fifo]] and not (d / fifo).exists()
