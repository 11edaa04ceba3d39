"""TensorRT engines from a bundle's ONNX graphs, and the equivalent ``trtexec`` command lines.

Precision comes from the graphs themselves, the same files ONNX Runtime runs:

========  ======================  =====================================================
engine    graph                   TensorRT 10 / TensorRT >= 11
========  ======================  =====================================================
fp32      ``embedder.fp32.onnx``  weakly typed, no flag / strongly typed
fp16      ``embedder.fp16.onnx``  ``FP16`` flag + ``OBEY_PRECISION_CONSTRAINTS`` with the
                                  graph's FP32 layers pinned to FP32 / strongly typed
int8      ``embedder.int8.onnx``  ``INT8`` flag, explicit quantization from the Q/DQ
                                  nodes (no calibrator) / strongly typed
========  ======================  =====================================================

TensorRT 11 removed the precision flags and weakly typed networks; the FP16 graph keeps its
input preparation in FP32 (see :mod:`export.fp16`), which a plain ``--fp16`` build on
TensorRT 10 would demote, hence the pinning there and ``--stronglyTyped`` in the trtexec
lines. One optimization profile covers the window (fixed leads and length) with batch
1 (min), 1 (opt), 8 (max). Engines are cached per (TensorRT version, compute capability,
precision, profile, ONNX SHA-256) under the name :func:`sdk.trt_runtime.engine_name` gives.

``tensorrt`` is imported inside the functions; every decision is in :func:`plan_build`,
which needs no GPU.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from export.errors import EngineBuildError
from export.jetson_rules import input_profile, require_tensorrt_ready
from sdk.bundle import load_bundle, sha256_file
from sdk.trt_runtime import (
    DEFAULT_MAX_BATCH,
    DEFAULT_OPT_BATCH,
    compute_capability,
    engine_checksum_path,
    engine_name,
    profile_shapes,
    tensorrt_module,
    trt_major,
    trtexec_engine_name,
    write_engine_checksum,
)

Shapes = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]
PRECISIONS = ("fp32", "fp16", "int8")
WORKSPACE_MB = 512


@dataclass(frozen=True)
class BuildPlan:
    """Everything a build decides, without TensorRT: network type, flags, profile."""

    onnx: Path
    precision: str
    trt_version: str
    strongly_typed: bool
    builder_flags: tuple[str, ...]
    pin_fp32_layers: bool
    profile: Shapes


def _graph_kind(model: onnx.ModelProto) -> tuple[bool, bool]:
    """(has Q/DQ nodes, has FP16 tensors)."""
    ops = {n.op_type for n in model.graph.node}
    qdq = bool(ops & {"QuantizeLinear", "DequantizeLinear"})
    fp16 = any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
    fp16 |= any(
        a.name == "to" and a.i == onnx.TensorProto.FLOAT16
        for n in model.graph.node
        for a in n.attribute
    )
    return qdq, fp16


def plan_build(
    onnx_path: Path,
    precision: str,
    trt_version: str,
    *,
    max_batch: int = DEFAULT_MAX_BATCH,
    opt_batch: int = DEFAULT_OPT_BATCH,
) -> BuildPlan:
    """Decide how to build ``onnx_path`` at ``precision`` with TensorRT ``trt_version``."""
    if precision not in PRECISIONS:
        raise EngineBuildError(
            f"precision must be one of {PRECISIONS}", path=str(onnx_path), precision=precision
        )
    major = trt_major(trt_version)
    if major < 10:
        raise EngineBuildError(
            f"TensorRT {trt_version} is too old; 10 or newer is needed",
            path=str(onnx_path),
            precision=precision,
        )
    model = onnx.load(str(onnx_path), load_external_data=False)
    qdq, fp16 = _graph_kind(model)
    if precision == "int8" and not qdq:
        raise EngineBuildError(
            "INT8 engines are built from a Q/DQ graph (explicit quantization); this graph has "
            "no QuantizeLinear/DequantizeLinear nodes",
            path=str(onnx_path),
            precision=precision,
        )
    if precision != "int8" and qdq:
        raise EngineBuildError(
            "a Q/DQ graph builds an INT8 engine only", path=str(onnx_path), precision=precision
        )
    if precision == "fp16" and not fp16:
        raise EngineBuildError(
            "FP16 engines are built from the FP16 graph (export --target jetson writes "
            "embedder.fp16.onnx); this graph has no FP16 tensors",
            path=str(onnx_path),
            precision=precision,
        )
    strongly = major >= 11
    flags: tuple[str, ...] = ()
    if not strongly and precision == "fp16":
        flags = ("FP16", "OBEY_PRECISION_CONSTRAINTS")
    elif not strongly and precision == "int8":
        flags = ("INT8",)
    profile = input_profile(model, opt_batch=opt_batch, max_batch=max_batch)
    return BuildPlan(
        Path(onnx_path),
        precision,
        str(trt_version),
        strongly,
        flags,
        not strongly and precision == "fp16",
        profile,
    )


def _pin_fp32_layers(trt: Any, network: Any) -> int:
    """Weakly typed FP16 builds: keep layers the graph computes in FP32 in FP32."""
    skip = {getattr(trt.LayerType, n, None) for n in ("CONSTANT", "SHAPE", "CAST")}
    pinned = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type in skip or layer.num_outputs == 0:
            continue
        outs = [layer.get_output(k) for k in range(layer.num_outputs)]
        if all(o.dtype == trt.float32 for o in outs):
            layer.precision = trt.float32
            for k in range(layer.num_outputs):
                layer.set_output_type(k, trt.float32)
            pinned += 1
    return pinned


def _parse(trt: Any, plan: BuildPlan, logger: Any) -> tuple[Any, Any, Any]:
    builder = trt.Builder(logger)
    flags = 0
    if plan.strongly_typed:
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(plan.onnx)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(
            f"TensorRT's ONNX parser failed: {errors}",
            path=str(plan.onnx),
            precision=plan.precision,
        )
    return builder, network, parser


def build_serialized(trt: Any, plan: BuildPlan, *, workspace_mb: int = WORKSPACE_MB) -> bytes:
    """Parse and build one engine following ``plan``; returns the serialized engine."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder, network, _parser = _parse(trt, plan, logger)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    for flag in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    if plan.pin_fp32_layers:
        _pin_fp32_layers(trt, network)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in plan.profile.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    blob = builder.build_serialized_network(network, config)
    if blob is None:
        raise EngineBuildError(
            "build_serialized_network returned nothing (see the TensorRT log above)",
            path=str(plan.onnx),
            precision=plan.precision,
        )
    return bytes(memoryview(blob))


def build_engine(
    onnx_path: Path,
    precision: str,
    *,
    cache_dir: Path,
    max_batch: int = DEFAULT_MAX_BATCH,
    force: bool = False,
    trt: Any = None,
    capability: tuple[int, int] | None = None,
) -> Path:
    """Build (or reuse from ``cache_dir``) the engine of ``onnx_path`` at ``precision``.

    ``trt`` and ``capability`` default to the installed tensorrt and GPU 0 (tests inject both).
    """
    trt = trt if trt is not None else tensorrt_module()
    cc = capability if capability is not None else compute_capability()
    sha = sha256_file(Path(onnx_path))
    name = engine_name(onnx_path, precision, trt.__version__, cc, max_batch=max_batch, sha256=sha)
    out = Path(cache_dir) / name
    if out.is_file() and engine_checksum_path(out).is_file() and not force:
        return out
    plan = plan_build(onnx_path, precision, trt.__version__, max_batch=max_batch)
    blob = build_serialized(trt, plan)
    out.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".{os.getpid()}.partial")
    tmp.write_bytes(blob)
    tmp.replace(out)
    write_engine_checksum(out, blob)
    meta = {
        "onnx": Path(onnx_path).name,
        "onnx_sha256": sha,
        "precision": precision,
        "tensorrt": trt.__version__,
        "compute_capability": list(cc),
        "strongly_typed": plan.strongly_typed,
        "builder_flags": list(plan.builder_flags),
        "profile": {k: [list(s) for s in v] for k, v in plan.profile.items()},
    }
    out.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    return out


def build_bundle_engines(
    bundle_dir: Path,
    precisions: tuple[str, ...] = ("fp16", "int8"),
    *,
    cache_dir: Path,
    max_batch: int = DEFAULT_MAX_BATCH,
    force: bool = False,
) -> list[Path]:
    """Check the bundle's graphs against the TensorRT rules, then build its engines.

    The raw embedder at each of ``precisions`` the bundle carries; the other modalities'
    embedders, the fusion, the head and the denoiser at the precision they ship in.
    """
    bundle = load_bundle(Path(bundle_dir))
    m = bundle.manifest
    files = [
        m.file("embedder", p)
        for p in precisions
        if any(f.role == "embedder" and f.precision == p and f.modality == "raw" for f in m.files)
    ]
    if not files:
        have = sorted({f.precision for f in m.files if f.role == "embedder"})
        raise EngineBuildError(
            f"bundle has no embedder at {list(precisions)} (has {have})",
            path=str(bundle_dir),
            precision=",".join(precisions),
        )
    files += [m.file("embedder", None, mod) for mod in m.modalities if mod != "raw"]
    files += [m.file("fusion")] if m.has("fusion") else []
    files.append(m.file("head"))
    files += [m.file("denoiser")] if m.has("denoiser") else []
    paths = [bundle.path_of(f) for f in files]
    require_tensorrt_ready(paths)
    return [
        build_engine(p, f.precision, cache_dir=cache_dir, max_batch=max_batch, force=force)
        for p, f in zip(paths, files)
    ]


def _shape_arg(profile: Shapes, k: int) -> str:
    return ",".join(f"{n}:{'x'.join(str(d) for d in s[k])}" for n, s in profile.items())


def trtexec_command(
    onnx_name: str, precision: str, profile: Shapes, *, trt_major_version: int, sha256: str
) -> str:
    """The trtexec line building ``onnx_name`` (whose SHA-256 is ``sha256``) as the engine the
    SDK looks for (:func:`sdk.trt_runtime.trtexec_engine_name`)."""
    parts = ["trtexec", f"--onnx={onnx_name}"]
    if trt_major_version >= 11 or precision == "fp16":
        parts.append("--stronglyTyped")  # precision from the graph; FP32 islands stay FP32
    elif precision == "int8":
        parts.append("--int8")  # explicit quantization: Q/DQ scales, no --calib
    parts += [f"--{k}Shapes={_shape_arg(profile, i)}" for i, k in enumerate(("min", "opt", "max"))]
    parts.append(f"--memPoolSize=workspace:{WORKSPACE_MB}M")  # as build_serialized caps it
    engine = trtexec_engine_name(onnx_name, sha256)
    parts.append(f"--saveEngine={engine}")
    parts.append(f"&& sha256sum {engine} > {engine}.sha256")  # the SDK checks it before loading
    return " ".join(parts)


def trtexec_lines(
    manifest: dict[str, Any], *, max_batch: int = DEFAULT_MAX_BATCH
) -> dict[int, list[str]]:
    """trtexec lines per TensorRT major version (10, 11) for every ONNX file of a manifest."""
    from sdk.bundle import parse_manifest

    m = parse_manifest(manifest)
    out: dict[int, list[str]] = {10: [], 11: []}
    for f in m.files:
        if not f.path.endswith(".onnx"):
            continue
        profile = profile_shapes(f.inputs, max_batch=max_batch)
        for major in out:
            out[major].append(
                trtexec_command(
                    f.path, f.precision, profile, trt_major_version=major, sha256=f.sha256
                )
            )
    return out
