"""Engine build plans, TensorRT 10 vs 11 API use (fake tensorrt module), cache and trtexec lines.

The fake module mirrors the parts of the TensorRT Python API the builder touches; its
TensorRT 11 variant has no ``BuilderFlag.FP16``/``INT8``, as TensorRT 11 removed them, so any
use of a removed API fails these tests. Real builds are in tests/sdk/test_trt_backend.py (GPU).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from export.errors import EngineBuildError, JetsonRuleError
from export.fp16 import convert_fp16
from export.model_card import write_model_card
from export.quantize import quantize_int8
from export.tensorrt_build import (
    build_bundle_engines,
    build_engine,
    plan_build,
    trtexec_command,
    trtexec_lines,
)
from sdk.bundle import default_bundle_path, load_bundle, sha256_file
from sdk.trt_runtime import engine_name

BUNDLE = default_bundle_path()
FP32 = BUNDLE / "embedder.fp32.onnx"


class _Enum(SimpleNamespace):
    pass


class FakeLayer:
    def __init__(self, kind: str, dtype: str) -> None:
        self.type, self.num_outputs = kind, 1
        self._out = SimpleNamespace(dtype=dtype)
        self.precision, self.output_types = None, {}

    def get_output(self, k: int):
        return self._out

    def set_output_type(self, k: int, dtype: str) -> None:
        self.output_types[k] = dtype


def fake_tensorrt(version: str, *, parse_ok: bool = True, build_ok: bool = True):
    """A tensorrt stand-in recording every builder call in ``trt.calls``."""
    calls: list[tuple] = []
    major = int(version.split(".")[0])
    flags = {"OBEY_PRECISION_CONSTRAINTS": "obey"} if major < 11 else {}
    if major < 11:
        flags |= {"FP16": "fp16", "INT8": "int8"}
    layers = [
        FakeLayer("ELEMENTWISE", "float32"),
        FakeLayer("CONVOLUTION", "float16"),
        FakeLayer("SHAPE", "float32"),
    ]

    class Network:
        num_layers = len(layers)

        def get_layer(self, i):
            return layers[i]

    class Parser:
        num_errors = 0 if parse_ok else 1

        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            calls.append(("parse", Path(path).name))
            return parse_ok

        def get_error(self, i):
            return "In node 7 (Unique): unsupported"

    class Profile:
        def set_shape(self, name, lo, opt, hi):
            calls.append(("shape", name, tuple(lo), tuple(opt), tuple(hi)))

    class Config:
        def set_memory_pool_limit(self, pool, size):
            calls.append(("pool", pool, size))

        def set_flag(self, flag):
            calls.append(("flag", flag))

        def add_optimization_profile(self, profile):
            calls.append(("profile",))

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            calls.append(("network", flags))
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            calls.append(("build",))
            return b"ENGINE" if build_ok else None

    return SimpleNamespace(
        __version__=version,
        calls=calls,
        layers=layers,
        Logger=type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None}),
        Builder=Builder,
        OnnxParser=Parser,
        BuilderFlag=_Enum(**flags),
        NetworkDefinitionCreationFlag=_Enum(STRONGLY_TYPED=0),
        MemoryPoolType=_Enum(WORKSPACE="workspace"),
        LayerType=_Enum(CONSTANT="CONSTANT", SHAPE="SHAPE", CAST="CAST"),
        float32="float32",
    )


def make_int8_bundle(root: Path, target: str) -> Path:
    """The shipped bundle with an INT8 raw embedder in ``target``'s form (and, for
    ``"jetson"``, an FP16 graph and the target in its provenance), manifest updated."""
    shutil.copytree(BUNDLE, root)
    windows = np.random.default_rng(0).standard_normal((16, 1, 1280)).astype(np.float32)
    noise = np.load(root / "noise.npy")
    quantize_int8(FP32, root / "embedder.int8.onnx", windows, 1, noise, target=target)
    precisions = ["int8"]
    if target == "jetson":
        convert_fp16(FP32, root / "embedder.fp16.onnx")
        precisions.append("fp16")
    manifest = json.loads((root / "manifest.json").read_text())
    fp32 = next(f for f in manifest["files"] if f["path"] == "embedder.fp32.onnx")
    for precision in precisions:
        manifest["files"].insert(
            1, fp32 | {"path": f"embedder.{precision}.onnx", "precision": precision}
        )
    for f in manifest["files"]:
        f["sha256"] = sha256_file(root / f["path"])
        f["bytes"] = (root / f["path"]).stat().st_size
    if target == "jetson":
        manifest["provenance"]["target"] = "jetson"
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def make_jetson_bundle(root: Path) -> Path:
    """The shipped bundle with TensorRT-form INT8 and an FP16 graph (manifest updated)."""
    return make_int8_bundle(root, "jetson")


@pytest.fixture(scope="module")
def cpu_int8_bundle(tmp_path_factory) -> Path:
    """A CPU bundle with a CPU-form INT8 graph (uint8 activations): no TensorRT form."""
    return make_int8_bundle(tmp_path_factory.mktemp("cpu-int8") / "bundle", "cpu")


@pytest.fixture(scope="module")
def jetson_bundle(tmp_path_factory) -> Path:
    return make_jetson_bundle(tmp_path_factory.mktemp("jetson") / "bundle")


def test_plan_trt10_uses_weak_typing_and_flags(jetson_bundle):
    fp16 = plan_build(jetson_bundle / "embedder.fp16.onnx", "fp16", "10.3.0")
    assert not fp16.strongly_typed and fp16.pin_fp32_layers
    assert fp16.builder_flags == ("FP16", "OBEY_PRECISION_CONSTRAINTS")
    int8 = plan_build(jetson_bundle / "embedder.int8.onnx", "int8", "10.3.0")
    assert int8.builder_flags == ("INT8",) and not int8.pin_fp32_layers
    assert plan_build(FP32, "fp32", "10.3.0").builder_flags == ()
    assert int8.profile["x"] == ((1, 1, 1280), (1, 1, 1280), (8, 1, 1280))


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_plan_trt11_is_strongly_typed_without_flags(jetson_bundle, precision):
    plan = plan_build(jetson_bundle / f"embedder.{precision}.onnx", precision, "11.4.0")
    assert plan.strongly_typed and plan.builder_flags == () and not plan.pin_fp32_layers


def test_plan_refuses_mismatched_graphs(jetson_bundle):
    with pytest.raises(EngineBuildError, match="Q/DQ graph"):
        plan_build(FP32, "int8", "10.3.0")
    with pytest.raises(EngineBuildError, match="FP16 graph"):
        plan_build(FP32, "fp16", "11.0.0")
    with pytest.raises(EngineBuildError, match="INT8 engine only"):
        plan_build(jetson_bundle / "embedder.int8.onnx", "fp16", "10.3.0")
    with pytest.raises(EngineBuildError, match="too old"):
        plan_build(FP32, "fp32", "8.6.1")


def test_build_trt10_fp16_sets_flags_and_pins_fp32_layers(jetson_bundle, tmp_path):
    trt = fake_tensorrt("10.3.0")
    out = build_engine(
        jetson_bundle / "embedder.fp16.onnx", "fp16", cache_dir=tmp_path, trt=trt, capability=(8, 7)
    )
    assert ("network", 0) in trt.calls
    assert {c[1] for c in trt.calls if c[0] == "flag"} == {"fp16", "obey"}
    assert ("shape", "x", (1, 1, 1280), (1, 1, 1280), (8, 1, 1280)) in trt.calls
    assert ("shape", "t", (1,), (1,), (8,)) in trt.calls
    elementwise, conv, shape = trt.layers
    assert elementwise.precision == "float32" and conv.precision is None and shape.precision is None
    assert out.read_bytes() == b"ENGINE"
    assert out.name == engine_name(jetson_bundle / "embedder.fp16.onnx", "fp16", "10.3.0", (8, 7))
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["tensorrt"] == "10.3.0" and meta["compute_capability"] == [8, 7]


def test_build_trt11_int8_is_strongly_typed_and_never_touches_removed_flags(
    jetson_bundle, tmp_path
):
    trt = fake_tensorrt("11.4.0")
    build_engine(
        jetson_bundle / "embedder.int8.onnx", "int8", cache_dir=tmp_path, trt=trt, capability=(8, 7)
    )
    assert ("network", 1 << 0) in trt.calls
    assert not [c for c in trt.calls if c[0] == "flag"]
    assert not hasattr(trt.BuilderFlag, "INT8")


def test_cache_key_reuse_and_force(jetson_bundle, tmp_path):
    trt = fake_tensorrt("10.3.0")
    onnx_path = jetson_bundle / "embedder.int8.onnx"
    first = build_engine(onnx_path, "int8", cache_dir=tmp_path, trt=trt, capability=(8, 7))
    again = build_engine(onnx_path, "int8", cache_dir=tmp_path, trt=trt, capability=(8, 7))
    assert first == again and [c for c in trt.calls if c[0] == "build"] == [("build",)]
    build_engine(onnx_path, "int8", cache_dir=tmp_path, trt=trt, capability=(8, 7), force=True)
    assert len([c for c in trt.calls if c[0] == "build"]) == 2
    other_gpu = build_engine(onnx_path, "int8", cache_dir=tmp_path, trt=trt, capability=(8, 6))
    other_trt = build_engine(
        onnx_path, "int8", cache_dir=tmp_path, trt=fake_tensorrt("10.4.0"), capability=(8, 7)
    )
    assert len({first.name, other_gpu.name, other_trt.name}) == 3
    assert ".sm87." in first.name and ".trt10.3.0." in first.name and ".b8." in first.name


def test_parser_and_builder_failures_are_typed(tmp_path):
    with pytest.raises(EngineBuildError, match="Unique"):
        build_engine(
            FP32,
            "fp32",
            cache_dir=tmp_path,
            trt=fake_tensorrt("10.3.0", parse_ok=False),
            capability=(8, 7),
        )
    with pytest.raises(EngineBuildError, match="returned nothing"):
        build_engine(
            FP32,
            "fp32",
            cache_dir=tmp_path,
            trt=fake_tensorrt("10.3.0", build_ok=False),
            capability=(8, 7),
        )
    assert not list(tmp_path.glob("*.engine"))


def test_bundle_engines_check_the_rules_first(
    monkeypatch, jetson_bundle, cpu_int8_bundle, tmp_path
):
    import export.tensorrt_build as tb

    trt = fake_tensorrt("10.3.0")
    monkeypatch.setattr(tb, "tensorrt_module", lambda: trt)
    monkeypatch.setattr(tb, "compute_capability", lambda: (8, 7))
    paths = build_bundle_engines(jetson_bundle, ("fp16", "int8"), cache_dir=tmp_path)
    m = load_bundle(jetson_bundle).manifest
    others = [m.file("embedder", None, mod).path for mod in m.modalities if mod != "raw"]
    others += [m.file("fusion").path] if m.has("fusion") else []
    others += ["head.onnx"]
    others += [m.file("denoiser").path] if m.has("denoiser") else []  # the pipeline runs it too
    names = [p.name for p in paths]
    assert names[0].startswith("embedder.fp16.") and names[1].startswith("embedder.int8.")
    assert len(names) == 2 + len(others)
    stems = [o.removesuffix(".onnx").removesuffix(".fp32") for o in others]
    assert all(n.startswith(st + ".") for n, st in zip(names[2:], stems))
    with pytest.raises(JetsonRuleError, match="qdq-zero-point"):
        build_bundle_engines(cpu_int8_bundle, ("int8",), cache_dir=tmp_path)  # the CPU form
    with pytest.raises(EngineBuildError, match="no embedder"):
        build_bundle_engines(BUNDLE, ("fp16",), cache_dir=tmp_path)


def test_trtexec_lines_per_version():
    profile = {"x": ((1, 1, 1280), (1, 1, 1280), (8, 1, 1280)), "t": ((1,), (1,), (8,))}
    sha = "0123456789abcdef" + "0" * 48
    line10 = trtexec_command(
        "embedder.int8.onnx", "int8", profile, trt_major_version=10, sha256=sha
    )
    engine = "embedder.int8.0123456789abcdef.engine"  # bound to the ONNX it was built from
    assert line10 == (
        "trtexec --onnx=embedder.int8.onnx --int8 --minShapes=x:1x1x1280,t:1 "
        "--optShapes=x:1x1x1280,t:1 --maxShapes=x:8x1x1280,t:8 --memPoolSize=workspace:512M "
        f"--saveEngine={engine} "
        f"&& sha256sum {engine} > {engine}.sha256"
    )
    line11 = trtexec_command(
        "embedder.int8.onnx", "int8", profile, trt_major_version=11, sha256=sha
    )
    assert "--stronglyTyped" in line11 and "--int8" not in line11
    fp16 = trtexec_command("embedder.fp16.onnx", "fp16", profile, trt_major_version=10, sha256=sha)
    assert "--stronglyTyped" in fp16 and "--fp16" not in fp16


def test_model_card_carries_the_trtexec_lines(jetson_bundle, tmp_path):
    root = tmp_path / "b"
    shutil.copytree(jetson_bundle, root)
    card = write_model_card(root).read_text()
    lines = trtexec_lines(json.loads((root / "manifest.json").read_text()))
    manifest = json.loads((root / "manifest.json").read_text())
    n_onnx = sum(f["path"].endswith(".onnx") for f in manifest["files"])
    assert len(lines[10]) == len(lines[11]) == n_onnx  # every graph, head included
    for line in lines[10] + lines[11]:
        assert line in card
    head = next(f for f in manifest["files"] if f["role"] == "head")
    d = head["inputs"][0]["shape"][1]
    assert f"trtexec --onnx=head.onnx --minShapes=features:1x{d}" in card
    cpu = tmp_path / "cpu"
    shutil.copytree(BUNDLE, cpu)
    assert "trtexec" not in write_model_card(cpu).read_text()  # CPU-form INT8 is not for TensorRT


def test_cli_engines_check(jetson_bundle, cpu_int8_bundle, capsys):
    from ecgedge.cli import main

    assert main(["engines", "--check", "--bundle", str(jetson_bundle)]) == 0
    assert "every graph passes" in capsys.readouterr().out
    assert main(["engines", "--check", "--bundle", str(cpu_int8_bundle)]) == 1
    out = capsys.readouterr().out
    assert "embedder.int8.onnx: node '" in out and "[qdq-zero-point]" in out


def test_device_side_modules_never_load_torch():
    """`ecgedge engines` runs on a Jetson without torch: rules, builder and CLI are torch-free."""
    import subprocess
    import sys

    code = (
        "import sys, json\n"
        "import export.jetson_rules, export.tensorrt_build, export.fp16, ecgedge.cli\n"
        "from ecgedge.cli import main\n"
        "main(['engines', '--check'])\n"
        "print(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert "onnx" in loaded and "torch" not in loaded and "trainer" not in loaded


def test_a_built_engine_carries_its_checksum_and_a_changed_one_is_refused(jetson_bundle, tmp_path):
    from sdk.errors import BundleError
    from sdk.trt_runtime import engine_checksum_path, read_verified_engine

    out = build_engine(
        jetson_bundle / "embedder.fp16.onnx",
        "fp16",
        cache_dir=tmp_path,
        trt=fake_tensorrt("10.3.0"),
        capability=(8, 7),
    )
    assert read_verified_engine(out) == b"ENGINE"
    out.write_bytes(b"ENGINE WITH A PLUGIN")
    with pytest.raises(BundleError) as err:
        read_verified_engine(out)
    assert err.value.reason == "checksum"
    engine_checksum_path(out).unlink()
    with pytest.raises(BundleError) as err:
        read_verified_engine(out)
    assert err.value.reason == "engine_checksum"


def test_an_unreadable_engine_or_a_binary_checksum_file_is_a_bundle_error(tmp_path):
    from sdk.errors import BundleError
    from sdk.trt_runtime import engine_checksum_path, read_verified_engine, write_engine_checksum

    engine = tmp_path / "e.engine"
    write_engine_checksum(engine, b"ENGINE")  # the engine itself is gone
    with pytest.raises(BundleError) as err:
        read_verified_engine(engine)
    assert err.value.reason == "missing"
    engine.write_bytes(b"ENGINE")
    engine_checksum_path(engine).write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(BundleError) as err:
        read_verified_engine(engine)
    assert err.value.reason == "checksum"
