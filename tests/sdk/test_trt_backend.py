"""Backend selection, the native TensorRT backend's errors and plumbing, and GPU tests.

Without a GPU: tensorrt and cuda-python are replaced by fakes. The fake CUDA runtime hands
out host memory (ctypes) as "device" pointers, and the fake engine runs the ONNX graph with
ONNX Runtime on what was copied there, so every copy, shape and address the backend sets is
exercised. GPU tests (``-m gpu``) run as-is on a Jetson or any CUDA machine with tensorrt
and cuda-python, and skip here.
"""

from __future__ import annotations

import builtins
import ctypes
import json
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnxruntime as ort
import pytest

from sdk import trt_runtime
from sdk.bundle import BundleError, default_bundle_path, load_bundle
from sdk.errors import AcceleratorError, ConfigError, MissingDependencyError
from sdk.ort_trt_cache import CACHE_PREFIX, INDEX_NAME
from sdk.runtime import BACKENDS, OnnxModel, _tensorrt_ep_options, open_model
from sdk.trt_runtime import (
    engine_checksum_path,
    engine_name,
    find_engine,
    profile_shapes,
    write_engine_checksum,
)

BUNDLE = default_bundle_path()
REAL_TENSORRT_MODULE = trt_runtime.tensorrt_module


class FakeCudart:
    """cuda-python's runtime API shape: ``(err, value)`` tuples; memory is host memory."""

    cudaDeviceAttr = SimpleNamespace(
        cudaDevAttrComputeCapabilityMajor="major", cudaDevAttrComputeCapabilityMinor="minor"
    )
    cudaMemcpyKind = SimpleNamespace(cudaMemcpyHostToDevice="h2d", cudaMemcpyDeviceToHost="d2h")

    def __init__(self, devices: int = 1, cc: tuple[int, int] = (8, 7)) -> None:
        self.devices, self.cc, self.mem, self.copies = devices, cc, {}, []

    def cudaGetDeviceCount(self):
        return (0, self.devices) if self.devices else (100, 0)  # cudaErrorNoDevice

    def cudaDeviceGetAttribute(self, attr, device):
        return 0, self.cc[0] if attr == "major" else self.cc[1]

    def cudaSetDevice(self, device):
        self.current = device
        return (0,)

    def cudaMalloc(self, nbytes):
        buf = ctypes.create_string_buffer(nbytes)
        self.mem[ctypes.addressof(buf)] = buf
        return 0, ctypes.addressof(buf)

    def cudaFree(self, ptr):
        self.mem.pop(ptr)
        return (0,)

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):
        device = dst if kind == "h2d" else src
        assert device in self.mem and nbytes <= len(self.mem[device]), "copy outside an allocation"
        ctypes.memmove(dst, src, nbytes)
        self.copies.append(kind)
        return (0,)

    def cudaStreamCreate(self):
        return 0, 7

    def cudaStreamSynchronize(self, stream):
        return (0,)

    def cudaStreamDestroy(self, stream):
        return (0,)


def _host(ptr: int, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    n = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return np.frombuffer((ctypes.c_char * n).from_address(ptr), dtype=dtype).reshape(shape)


class FakeContext:
    def __init__(self, engine: FakeEngine) -> None:
        self.e, self.shapes, self.addr = engine, {}, {}

    def set_input_shape(self, name, shape):
        fixed = self.e.fixed[name]
        ok = len(shape) == len(fixed) and 1 <= shape[0] <= self.e.max_batch
        ok = ok and all(f is None or f == s for f, s in zip(fixed[1:], shape[1:]))
        self.shapes[name] = tuple(shape)
        return ok

    def _feeds(self, zeros: bool) -> dict[str, np.ndarray]:
        dt = self.e.dtypes
        if zeros:
            return {n: np.zeros(s, dt[n]) for n, s in self.shapes.items()}
        return {n: _host(self.addr[n], s, dt[n]).copy() for n, s in self.shapes.items()}

    def get_tensor_shape(self, name):
        return self.e.sess.run([name], self._feeds(zeros=True))[0].shape

    def set_tensor_address(self, name, ptr):
        self.addr[name] = ptr

    def execute_async_v3(self, stream):
        outs = self.e.sess.run(self.e.outputs, self._feeds(zeros=False))
        for name, value in zip(self.e.outputs, outs):
            _host(self.addr[name], value.shape, value.dtype)[...] = value
        return True


class FakeEngine:
    """A serialized 'engine' is JSON naming the ONNX file it stands for."""

    def __init__(self, blob: bytes) -> None:
        self.sess = ort.InferenceSession(
            json.loads(blob)["onnx"], providers=["CPUExecutionProvider"]
        )
        ins, outs = self.sess.get_inputs(), self.sess.get_outputs()
        self.inputs, self.outputs = [i.name for i in ins], [o.name for o in outs]
        types = {"tensor(float)": np.float32, "tensor(int64)": np.int64}
        self.dtypes = {t.name: np.dtype(types[t.type]) for t in [*ins, *outs]}
        self.fixed = {i.name: [d if isinstance(d, int) else None for d in i.shape] for i in ins}
        self.max_batch = 8
        self.num_io_tensors = len(self.inputs) + len(self.outputs)

    def get_tensor_name(self, i):
        return (self.inputs + self.outputs)[i]

    def get_tensor_mode(self, name):
        return "in" if name in self.inputs else "out"

    def get_tensor_dtype(self, name):
        return self.dtypes[name]

    def create_execution_context(self):
        return FakeContext(self)

    def get_tensor_shape(self, name):
        return tuple(-1 if d is None else d for d in self.fixed[name])

    def get_tensor_profile_shape(self, name, profile):
        hi = tuple(self.max_batch if d is None else d for d in self.fixed[name])
        return (1, *hi[1:]), (1, *hi[1:]), hi


def fake_tensorrt(version: str = "10.3.0"):
    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, blob):
            return None if blob == b"stale" else FakeEngine(blob)

    return SimpleNamespace(
        __version__=version,
        Logger=type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None}),
        Runtime=Runtime,
        TensorIOMode=SimpleNamespace(INPUT="in", OUTPUT="out"),
        nptype=lambda dtype: dtype,
    )


@pytest.fixture
def fakes(monkeypatch):
    trt, rt = fake_tensorrt(), FakeCudart()
    monkeypatch.setattr(trt_runtime, "tensorrt_module", lambda: trt)
    monkeypatch.setattr(trt_runtime, "cuda_runtime", lambda: rt)
    return SimpleNamespace(trt=trt, rt=rt)


def _fake_engines(folder: Path, bundle_root: Path, files) -> None:
    """'Build' fake engines under the names the real builder uses."""
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        onnx_path = bundle_root / f.path
        name = engine_name(onnx_path, f.precision, "10.3.0", (8, 7))
        blob = json.dumps({"onnx": str(onnx_path)}).encode()
        (folder / name).write_bytes(blob)
        write_engine_checksum(folder / name, blob)  # as the real builder does


def _block_import(monkeypatch, *names: str) -> None:
    real = builtins.__import__

    def fake(name, *args, **kwargs):
        if name.split(".")[0] in names:
            raise ImportError(f"No module named {name!r}")
        return real(name, *args, **kwargs)

    for n in list(sys.modules):
        if n.split(".")[0] in names:
            monkeypatch.delitem(sys.modules, n)
    monkeypatch.setattr(builtins, "__import__", fake)


def test_backends_are_named_and_unknown_ones_refused():
    assert BACKENDS == ("cpu", "cuda", "tensorrt", "trt-engine")
    with pytest.raises(ValueError, match="trt-engine"):
        open_model(BUNDLE / "head.onnx", backend="gpu")


def test_cpu_backend_is_onnx_runtime():
    assert isinstance(open_model(BUNDLE / "head.onnx"), OnnxModel)


def test_missing_tensorrt_names_the_extra(monkeypatch):
    _block_import(monkeypatch, "tensorrt")
    with pytest.raises(MissingDependencyError) as err:
        open_model(BUNDLE / "head.onnx", backend="trt-engine")
    assert err.value.package == "tensorrt" and err.value.extra == "tensorrt"
    assert "pip install 'ecgedge[tensorrt]'" in str(err.value)


def test_missing_cuda_python_names_the_extra(monkeypatch):
    monkeypatch.setattr(trt_runtime, "tensorrt_module", lambda: fake_tensorrt())
    _block_import(monkeypatch, "cuda")
    with pytest.raises(MissingDependencyError) as err:
        open_model(BUNDLE / "head.onnx", backend="trt-engine")
    assert err.value.package == "cuda-python" and err.value.extra == "tensorrt"


def test_no_gpu_is_a_typed_error(monkeypatch, fakes):
    fakes.rt.devices = 0
    with pytest.raises(AcceleratorError) as err:
        open_model(BUNDLE / "head.onnx", backend="trt-engine")
    assert err.value.reason == "no-gpu" and err.value.backend == "trt-engine"


@pytest.mark.parametrize(
    "backend, provider",
    [("tensorrt", "TensorrtExecutionProvider"), ("cuda", "CUDAExecutionProvider")],
)
def test_a_gpu_provider_absent_here_is_an_accelerator_error(backend, provider):
    """The bundle is fine; this onnxruntime (a CPU build) has no GPU provider."""
    if provider in ort.get_available_providers():
        pytest.skip(f"this machine has the {provider}")
    with pytest.raises(AcceleratorError, match="onnxruntime-gpu") as err:
        open_model(BUNDLE / "head.onnx", backend=backend)
    assert err.value.reason == "provider" and err.value.backend == backend


def test_ort_tensorrt_options_carry_the_window_profile(tmp_path):
    from dataclasses import replace

    # an INT8 file's entry (the shipped bundle has none: its signal layers exceed the budget)
    fp32 = load_bundle(BUNDLE).manifest.file("embedder", "fp32")
    spec = replace(fp32, precision="int8", path="embedder.int8.onnx")
    opts = _tensorrt_ep_options(spec, tmp_path, "1.23.2")
    assert opts["trt_int8_enable"] is True and opts["trt_engine_cache_path"] == str(tmp_path)
    assert opts["trt_profile_min_shapes"] == "x:1x1x1280,t:1,noise:1x1x1280"
    assert opts["trt_profile_max_shapes"] == "x:8x1x1280,t:8,noise:8x1x1280"
    # engines are keyed by the model's checksum (a retrained model of the same graph must not
    # load the old engine) and the ONNX Runtime version (its engines do not load in another),
    # under the prefix whose files the cache check covers
    prefix = f"TensorrtExecutionProvider_embedder_int8_{spec.sha256[:16]}_ort1_23_2"
    assert opts["trt_engine_cache_prefix"] == prefix


def test_profile_shapes_and_engine_names():
    spec = load_bundle(BUNDLE).manifest.file("head")
    d = int(spec.inputs[0].shape[1])
    assert profile_shapes(spec.inputs, max_batch=4) == {"features": ((1, d), (1, d), (4, d))}
    onnx_path = BUNDLE / "embedder.fp32.onnx"
    name = engine_name(onnx_path, "int8", "10.3.0", (8, 7))
    assert name.startswith("embedder.fp32.int8.trt10.3.0.sm87.b8.") and name.endswith(".engine")
    assert name != engine_name(onnx_path, "int8", "11.4.0", (8, 7))
    assert name != engine_name(onnx_path, "int8", "10.3.0", (7, 2))
    assert name != engine_name(onnx_path, "int8", "10.3.0", (8, 7), max_batch=16)


def test_missing_engine_says_how_to_build_it(fakes, tmp_path):
    with pytest.raises(BundleError) as err:
        find_engine(BUNDLE / "head.onnx", "fp32", engine_dir=tmp_path)
    assert err.value.reason == "engine" and "ecgedge engines --bundle" in str(err.value)
    sha = load_bundle(BUNDLE).manifest.file("head").sha256
    (tmp_path / "head.engine").write_bytes(b"x")  # built from some head.onnx: which one?
    with pytest.raises(BundleError):
        find_engine(BUNDLE / "head.onnx", "fp32", engine_dir=tmp_path)
    built = tmp_path / f"head.{sha[:16]}.engine"  # the model card's trtexec --saveEngine name
    built.write_bytes(b"x")
    assert find_engine(BUNDLE / "head.onnx", "fp32", engine_dir=tmp_path) == built


def test_stale_engine_is_a_typed_error(fakes, tmp_path):
    sha = load_bundle(BUNDLE).manifest.file("head").sha256
    stale = tmp_path / f"head.{sha[:16]}.engine"
    stale.write_bytes(b"stale")
    write_engine_checksum(stale, b"stale")  # trtexec line's sha256sum
    with pytest.raises(AcceleratorError, match="another TensorRT version") as err:
        open_model(BUNDLE / "head.onnx", backend="trt-engine", engine_dir=tmp_path)
    assert err.value.reason == "engine"


def test_engine_runs_like_onnx_runtime_and_checks_inputs(fakes, tmp_path):
    bundle = load_bundle(BUNDLE)
    spec = bundle.manifest.file("embedder", "fp32")
    _fake_engines(tmp_path, BUNDLE, [spec])
    model = open_model(bundle.path_of(spec), backend="trt-engine", spec=spec, engine_dir=tmp_path)
    assert model.input_names == ["x", "t", "noise"] and "embedding" in model.output_names
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 1, 1280)).astype(np.float32)
    feeds = {"x": x, "t": np.ones(3, np.int64), "noise": np.zeros_like(x)}
    (got,) = model.run(feeds, ["embedding"])
    (ref,) = OnnxModel(bundle.path_of(spec)).run(feeds, ["embedding"])
    np.testing.assert_array_equal(got, ref)
    assert fakes.rt.copies.count("h2d") == 3 and fakes.rt.copies.count("d2h") == 1
    small = {k: v[:1] for k, v in feeds.items()}  # smaller batch reuses the buffers
    np.testing.assert_array_equal(model.run(small)[0], ref[:1])
    nine = {k: np.repeat(v, 3, axis=0) for k, v in feeds.items()}  # batch 9 > 8: two pieces
    np.testing.assert_array_equal(model.run(nine, ["embedding"])[0], np.repeat(ref, 3, axis=0))
    with pytest.raises(ConfigError, match="optimization profile"):
        model.run({**feeds, "x": x[:, :, :1000], "noise": x[:, :, :1000]})  # not the window
    with pytest.raises(ConfigError, match="missing inputs"):
        model.run({"x": x})
    model.close()
    assert fakes.rt.mem == {}


def test_an_engine_of_another_batch_profile_is_found_and_its_profile_used(
    fakes, tmp_path, monkeypatch
):
    """``ecgedge engines --max-batch 4`` names its engine ``.b4.``: the SDK finds it and runs
    batches in pieces of the engine's own profile (read from the engine), not of 8."""
    bundle = load_bundle(BUNDLE)
    spec = bundle.manifest.file("embedder", "fp32")
    onnx_path = bundle.path_of(spec)
    name = engine_name(onnx_path, "fp32", "10.3.0", (8, 7), max_batch=4)
    blob = json.dumps({"onnx": str(onnx_path)}).encode()
    (tmp_path / name).write_bytes(blob)
    write_engine_checksum(tmp_path / name, blob)
    monkeypatch.setattr(FakeEngine, "__init__", _with_max_batch(FakeEngine.__init__, 4))
    model = open_model(onnx_path, backend="trt-engine", spec=spec, engine_dir=tmp_path)
    assert model.path.name == name and model.max_batch == 4
    x = np.random.default_rng(1).standard_normal((9, 1, 1280)).astype(np.float32)
    feeds = {"x": x, "t": np.ones(9, np.int64), "noise": np.zeros_like(x)}
    (got,) = model.run(feeds, ["embedding"])  # 4 + 4 + 1: the fake refuses more than 4
    (ref,) = OnnxModel(onnx_path).run(feeds, ["embedding"])
    np.testing.assert_array_equal(got, ref)


def _with_max_batch(init, n: int):
    def patched(self, blob):
        init(self, blob)
        self.max_batch = n

    return patched


def test_missing_tensorrt_on_a_jetson_points_to_jetpack(monkeypatch):
    _block_import(monkeypatch, "tensorrt")
    monkeypatch.setattr(trt_runtime.platform, "machine", lambda: "aarch64")
    with pytest.raises(MissingDependencyError, match="python3-libnvinfer"):
        trt_runtime.tensorrt_module()


def test_engine_of_another_model_is_refused(fakes, tmp_path):
    bundle = load_bundle(BUNDLE)
    head = bundle.manifest.file("head")
    emb = bundle.manifest.file("embedder", "fp32")
    folder = tmp_path / "e"
    _fake_engines(folder, BUNDLE, [head])
    wrong = folder / engine_name(bundle.path_of(emb), "fp32", "10.3.0", (8, 7))
    source = folder / engine_name(bundle.path_of(head), "fp32", "10.3.0", (8, 7))
    shutil.copy(source, wrong)
    shutil.copy(engine_checksum_path(source), engine_checksum_path(wrong))  # checksum is right
    with pytest.raises(AcceleratorError, match="built from another model"):
        open_model(bundle.path_of(emb), backend="trt-engine", spec=emb, engine_dir=folder)


# --- GPU: real TensorRT engines ------------------------------------------------------------

#: Max |TensorRT - ONNX Runtime FP32| / max |ONNX Runtime FP32| on the embedding.
#: FP32 engines may use TF32 on Ampere (Orin); FP16 keeps the input preparation in FP32;
#: INT8 is compared with the FP32 reference, so it includes the quantization error itself
#: (ONNX Runtime's own INT8 graph is at ~0.06 of the FP32 embedding on CPU).
GPU_TOLERANCE = {"fp32": 5e-3, "fp16": 2e-2, "int8": 0.15}


@pytest.fixture(scope="module")
def gpu_bundle(tmp_path_factory):
    """A TensorRT-ready bundle (the shipped one with TensorRT-form INT8 and FP16 graphs)."""
    pytest.importorskip("tensorrt", reason="needs tensorrt")
    pytest.importorskip("cuda", reason="needs cuda-python")
    try:
        trt_runtime.compute_capability()
    except (AcceleratorError, MissingDependencyError) as exc:
        pytest.skip(f"needs a CUDA device: {exc}")
    from tests.export.test_tensorrt_build import make_jetson_bundle

    return make_jetson_bundle(tmp_path_factory.mktemp("gpu") / "bundle")


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_gpu_engine_parity(gpu_bundle, precision, tmp_path):
    """A real engine's embedding against ONNX Runtime FP32 (its speed is no test's concern)."""
    from export.tensorrt_build import build_engine

    bundle = load_bundle(gpu_bundle)
    spec = bundle.manifest.file("embedder", precision)
    build_engine(bundle.path_of(spec), precision, cache_dir=tmp_path)
    model = open_model(bundle.path_of(spec), backend="trt-engine", spec=spec, engine_dir=tmp_path)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 1, 1280)).astype(np.float32)
    feeds = {
        "x": x,
        "t": np.ones(8, np.int64),
        "noise": np.broadcast_to(bundle.inference_noise(), x.shape).copy(),
    }
    ref = OnnxModel(bundle.path_of(bundle.manifest.file("embedder", "fp32"))).run(
        feeds, ["embedding"]
    )[0]
    got = model.run(feeds, ["embedding"])[0]
    rel = float(np.abs(got - ref).max() / np.abs(ref).max())
    assert rel <= GPU_TOLERANCE[precision], f"TensorRT {precision}: max rel vs ORT FP32 {rel:.2e}"


def test_classifier_runs_on_engines_like_on_onnx_runtime(fakes, tmp_path):
    from sdk.classifier import WindowClassifier, WindowInputs

    bundle = load_bundle(BUNDLE)
    m = bundle.manifest
    models = [m.file("embedder", "fp32", mod) for mod in m.modalities] + [m.file("head")]
    models += [m.file("fusion")] if m.has("fusion") else []
    _fake_engines(tmp_path, BUNDLE, models)
    rng = np.random.default_rng(1)
    grid = 24  # the Lorenz image's size (sdk.modalities.LorenzSpec)
    n = 12  # beyond the engines' batch of 8 (a calibration's windows): run in pieces
    inputs = WindowInputs(
        rng.standard_normal((n, 1, 1280)).astype(np.float32),
        rng.random((n, len(m.head_features["rr_features"]))).astype(np.float32),
        rng.uniform(-1, 1, (n, grid, grid)).astype(np.float32),
    )
    on_trt = WindowClassifier(bundle, precision="fp32", backend="trt-engine", engine_dir=tmp_path)
    on_cpu = WindowClassifier(bundle, precision="fp32")
    np.testing.assert_allclose(on_trt.classify(inputs, 1), on_cpu.classify(inputs, 1), atol=1e-6)
    (tmp_path / engine_name(BUNDLE / "head.onnx", "fp32", "10.3.0", (8, 7))).unlink()
    with pytest.raises(BundleError, match="ecgedge engines"):  # the head's engine is gone
        WindowClassifier(bundle, precision="fp32", backend="trt-engine", engine_dir=tmp_path)


def test_auto_backend_follows_the_bundle_target(monkeypatch, fakes):
    from dataclasses import replace

    from sdk.runtime import select_backend

    m = load_bundle(BUNDLE).manifest
    jetson = replace(m, provenance={**m.provenance, "target": "jetson"})
    assert select_backend("auto", m) == "cpu"  # the shipped bundle is the CPU export
    assert select_backend("auto", jetson) == "trt-engine"
    assert select_backend("cuda", jetson) == "cuda"  # an explicit choice wins
    fakes.rt.devices = 0
    assert select_backend("auto", jetson) == "cpu"  # no GPU
    fakes.rt.devices = 1
    _block_import(monkeypatch, "tensorrt")
    monkeypatch.setattr(trt_runtime, "tensorrt_module", REAL_TENSORRT_MODULE)
    assert select_backend("auto", jetson) == "cpu"  # no tensorrt


@pytest.mark.gpu
def test_gpu_classifier_on_engines_matches_onnx_runtime(gpu_bundle, tmp_path):
    from export.tensorrt_build import build_bundle_engines
    from sdk.classifier import WindowClassifier, WindowInputs

    build_bundle_engines(gpu_bundle, ("fp16", "int8"), cache_dir=tmp_path)
    bundle = load_bundle(gpu_bundle)
    rng = np.random.default_rng(2)
    n, grid = 16, 24  # more windows than an engine's batch (8): run in pieces; Lorenz 24x24
    inputs = WindowInputs(
        rng.standard_normal((n, 1, 1280)).astype(np.float32),
        rng.random((n, len(bundle.manifest.head_features["rr_features"]))).astype(np.float32),
        rng.uniform(-1, 1, (n, grid, grid)).astype(np.float32),
    )
    for precision in ("fp16", "int8"):
        trt = WindowClassifier(
            bundle, precision=precision, backend="trt-engine", engine_dir=tmp_path
        )
        cpu = WindowClassifier(bundle, precision=precision)
        diff = np.abs(trt.classify(inputs, 1) - cpu.classify(inputs, 1)).max()
        print(f"{precision}: max |p_TensorRT - p_ORT| = {diff:.4f}")
        assert diff < 0.05  # probabilities of the same graph on two runtimes


@pytest.mark.gpu
def test_gpu_onnx_runtime_tensorrt_provider(gpu_bundle, tmp_path):
    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        pytest.skip(
            "onnxruntime has no TensorRT execution provider (onnxruntime-gpu with TensorRT)"
        )
    bundle = load_bundle(gpu_bundle)
    spec = bundle.manifest.file("embedder", "fp32")
    x = np.random.default_rng(3).standard_normal((2, 1, 1280)).astype(np.float32)
    feeds = {"x": x, "t": np.ones(2, np.int64), "noise": np.zeros_like(x)}
    ref = open_model(bundle.path_of(spec), spec=spec).run(feeds)[0]
    got = open_model(bundle.path_of(spec), backend="tensorrt", spec=spec, engine_dir=tmp_path).run(
        feeds
    )[0]
    assert np.abs(got - ref).max() / np.abs(ref).max() <= GPU_TOLERANCE["fp32"]
    indexed = (tmp_path / INDEX_NAME).read_text()  # the provider's engines, checksummed
    assert CACHE_PREFIX in indexed and ".engine" in indexed


def test_a_pipeline_runs_every_model_from_its_engine_dir(fakes, tmp_path):
    """``StreamPipeline(backend="trt-engine", engine_dir=D)`` finds the engines of the
    embedders, the fusion, the head and the denoiser in D (the model card's trtexec folder),
    and streams as on ONNX Runtime."""
    from sdk.pipeline import StreamPipeline
    from sdk.synthetic import synthetic_ecg

    m = load_bundle(BUNDLE).manifest
    models = [m.file("embedder", "fp32", mod) for mod in m.modalities]
    models += [m.file("head"), m.file("fusion"), m.file("denoiser")]
    _fake_engines(tmp_path / "engines", BUNDLE, models)
    x = synthetic_ecg((("sinus", 25.0),), fs=128.0, seed=3).signal
    runs = {}
    for backend, kw in (("trt-engine", {"engine_dir": tmp_path / "engines"}), ("cpu", {})):
        p = StreamPipeline(BUNDLE, fs_in=128.0, precision="fp32", backend=backend, **kw)
        events = [e for e in [*p.push(x), *p.close()] if hasattr(e, "probabilities")]
        runs[backend] = np.array([list(e.probabilities.values()) for e in events])
    assert len(runs["cpu"]) >= 3
    np.testing.assert_allclose(runs["trt-engine"], runs["cpu"], rtol=0, atol=1e-4)


def test_an_engine_without_an_execution_context_is_a_typed_error(fakes, tmp_path, monkeypatch):
    """TensorRT returns None when it cannot allocate the activations: an AttributeError
    later, before."""
    _fake_engines(tmp_path, BUNDLE, [load_bundle(BUNDLE).manifest.file("head")])
    monkeypatch.setattr(FakeEngine, "create_execution_context", lambda self: None)
    with pytest.raises(AcceleratorError, match="no execution context") as err:
        open_model(BUNDLE / "head.onnx", backend="trt-engine", engine_dir=tmp_path)
    assert err.value.reason == "cuda"


def test_an_engine_runs_on_its_own_gpu_whatever_gpu_is_current(fakes, tmp_path):
    """Buffers are allocated at the first run, on the current GPU: the engine's, not the one
    another model or thread selected since."""
    from sdk.trt_runtime import TrtEngineModel

    fakes.rt.devices = 2
    head = load_bundle(BUNDLE).manifest.file("head")
    _fake_engines(tmp_path, BUNDLE, [head])
    engine_path = next(tmp_path.glob("*.engine"))
    engine = TrtEngineModel(engine_path, device=1)
    fakes.rt.cudaSetDevice(0)  # e.g. a second model opened on GPU 0
    feeds = {i.name: np.zeros((1, *i.shape[1:]), np.float32) for i in head.inputs}
    engine.run(feeds)
    assert fakes.rt.current == 1
