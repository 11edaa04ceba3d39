"""Checks, without a GPU, that ONNX graphs meant for TensorRT can be parsed and fused by it.

Each finding is a :class:`Violation` naming the file, the node (or tensor) and the rule.
The operator list and opset range come from ``trt_supported_ops.json`` (the ONNX-TensorRT
parser's operator matrix, with its source and TensorRT version). Rules:

``opset``                 default-domain opset inside the parser's range
``domain``                no operators from other domains (com.microsoft, ...): no plugins
``op-supported``          every operator is in the parser's supported list
``no-fft-control-flow``   no DFT/STFT (FFT) and no Loop/Scan/If (control flow)
``no-complex``            no complex tensors anywhere
``io-dtype``              graph inputs/outputs of types TensorRT accepts at the network boundary
``static-shape``          every input/output dimension fixed, except a leading batch axis that
                          the optimization profile covers (min 1 ... max N)
``op-restriction``        the matrix's restrictions on supported operators this project's graphs
                          could meet: pooling 2-D or 3-D only, Resize without cubic mode or
                          antialiasing, TopK sorted
``const-input``           build-time inputs (reduce axes, TopK K, ...) are constants
``qdq-zero-point``        Q/DQ zero points are signed INT8 and all zero (TensorRT is symmetric)
``qdq-dtype``             DequantizeLinear only on INT8 data (no INT32 bias), Q never to UINT8
``qdq-pair``              every QuantizeLinear feeds only DequantizeLinear nodes (fusable pairs)
``qdq-scale``             scales constant, finite and positive
``qdq-activation-per-tensor``  activation scales are scalars
``qdq-weight-axis``       per-channel weight scales on the output-channel axis (Conv axis 0)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from export.errors import JetsonRuleError

OPS_TABLE = Path(__file__).with_name("trt_supported_ops.json")
#: Project rule: never in a graph meant for TensorRT, whatever the parser accepts.
FORBIDDEN_OPS = {
    "DFT": "FFT",
    "STFT": "FFT",
    "Loop": "control flow",
    "Scan": "control flow",
    "If": "control flow",
}
COMPLEX = {TensorProto.COMPLEX64, TensorProto.COMPLEX128}
IO_DTYPES = {
    TensorProto.FLOAT,
    TensorProto.FLOAT16,
    TensorProto.BFLOAT16,
    TensorProto.INT32,
    TensorProto.INT64,
    TensorProto.UINT8,
    TensorProto.BOOL,
}
#: Quantized storage types TensorRT dequantizes (INT8 is what this project produces).
QUANT_DTYPES = {TensorProto.INT8, TensorProto.INT4, TensorProto.FLOAT8E4M3FN}
#: (op, input index) that must be a build-time constant.
CONST_INPUTS = {("TopK", 1), ("CumSum", 1), ("OneHot", 1)}
DEFAULT_MAX_BATCH = 8


@dataclass(frozen=True)
class Violation:
    file: str
    node: str
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.node}: [{self.rule}] {self.message}"


@dataclass(frozen=True)
class OpTable:
    tensorrt_version: str
    opset_min: int
    opset_max: int
    supported: frozenset[str]
    source: str


@lru_cache(maxsize=4)
def load_op_table(path: Path = OPS_TABLE) -> OpTable:
    doc = json.loads(Path(path).read_text())
    return OpTable(
        str(doc["tensorrt_version"]),
        int(doc["opset_min"]),
        int(doc["opset_max"]),
        frozenset(doc["supported_ops"]),
        str(doc["source"]),
    )


def _node_label(node: onnx.NodeProto, index: int) -> str:
    return (
        f"node {node.name!r} ({node.op_type})" if node.name else f"node #{index} ({node.op_type})"
    )


def _dims(vi: onnx.ValueInfoProto) -> list[int | str | None]:
    shape = vi.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in shape.dim]


def input_profile(
    model: onnx.ModelProto, *, opt_batch: int = 1, max_batch: int = DEFAULT_MAX_BATCH
) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """Optimization profile (min, opt, max) per graph input: batch 1/opt/max, the rest fixed.

    Only a symbolic leading axis is treated as batch; other symbolic axes are left as 1 here
    and reported by the ``static-shape`` rule.
    """
    inits = {i.name for i in model.graph.initializer}
    profile = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        dims = _dims(vi)
        fixed = [d if isinstance(d, int) and d > 0 else 1 for d in dims]
        lo, opt, hi = list(fixed), list(fixed), list(fixed)
        if dims and not (isinstance(dims[0], int) and dims[0] > 0):
            lo[0], opt[0], hi[0] = 1, opt_batch, max_batch
        profile[vi.name] = (tuple(lo), tuple(opt), tuple(hi))
    return profile


def _check_graph_io(model: onnx.ModelProto, file: str) -> list[Violation]:
    out = []
    inits = {i.name for i in model.graph.initializer}
    inputs = [vi for vi in model.graph.input if vi.name not in inits]
    batch_names = set()
    for vi in inputs:
        dims = _dims(vi)
        if dims and isinstance(dims[0], str):
            batch_names.add(dims[0])
    for kind, vis in (("input", inputs), ("output", list(model.graph.output))):
        for vi in vis:
            label = f"{kind} {vi.name!r}"
            dtype = vi.type.tensor_type.elem_type
            if dtype not in IO_DTYPES:
                name = TensorProto.DataType.Name(dtype)
                out.append(Violation(file, label, "io-dtype", f"type {name} at the boundary"))
            dims = _dims(vi)
            for axis, d in enumerate(dims):
                if isinstance(d, int) and d > 0:
                    continue
                if axis == 0 and (kind == "input" or d in batch_names) and d is not None:
                    continue  # batch: covered by the optimization profile
                out.append(
                    Violation(
                        file,
                        label,
                        "static-shape",
                        f"axis {axis} is dynamic ({d!r}); only a leading batch axis may be, "
                        "the window (leads, length) must be fixed",
                    )
                )
    return out


def _check_types(model: onnx.ModelProto, file: str) -> list[Violation]:
    out = []
    g = model.graph
    for vi in [*g.input, *g.output, *g.value_info]:
        if vi.type.tensor_type.elem_type in COMPLEX:
            out.append(Violation(file, f"tensor {vi.name!r}", "no-complex", "complex tensor"))
    for init in g.initializer:
        if init.data_type in COMPLEX:
            out.append(
                Violation(file, f"initializer {init.name!r}", "no-complex", "complex tensor")
            )
    for i, node in enumerate(g.node):
        for a in node.attribute:
            if (a.name == "to" and a.i in COMPLEX) or (
                a.HasField("t") and a.t.data_type in COMPLEX
            ):
                out.append(Violation(file, _node_label(node, i), "no-complex", "complex result"))
    return out


#: pooling operators the parser takes in 2-D or 3-D only (the matrix's restriction)
POOLING_OPS = ("AveragePool", "MaxPool", "LpPool")


def _restriction(node: onnx.NodeProto) -> str | None:
    """Why a supported operator breaks one of the parser matrix's restrictions, or None."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type in POOLING_OPS and len(attrs.get("kernel_shape", ())) not in (2, 3):
        return f"{node.op_type} over {len(attrs.get('kernel_shape', ()))} axes: 2-D or 3-D only"
    if node.op_type == "Resize":
        mode = attrs.get("mode", b"nearest")
        mode = mode.decode() if isinstance(mode, bytes) else str(mode)
        if mode not in ("nearest", "linear"):
            return f"Resize mode {mode!r}: nearest or linear only"
        if attrs.get("antialias", 0):
            return "Resize with antialiasing is not supported"
    if node.op_type == "TopK" and attrs.get("sorted", 1) != 1:
        return "TopK with sorted=0 is not supported (sorted must be 1)"
    return None


def _check_ops(model: onnx.ModelProto, file: str, table: OpTable) -> list[Violation]:
    out = []
    versions = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    opset = versions.get("ai.onnx")
    if opset is None or not table.opset_min <= opset <= table.opset_max:
        out.append(
            Violation(
                file,
                "model",
                "opset",
                f"default-domain opset {opset} outside {table.opset_min}..{table.opset_max} "
                f"(TensorRT {table.tensorrt_version} ONNX parser)",
            )
        )
    constants = {i.name for i in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    for i, node in enumerate(model.graph.node):
        label = _node_label(node, i)
        if node.domain not in ("", "ai.onnx"):
            out.append(
                Violation(file, label, "domain", f"domain {node.domain!r}: no TensorRT plugin")
            )
        elif node.op_type in FORBIDDEN_OPS:
            out.append(
                Violation(
                    file,
                    label,
                    "no-fft-control-flow",
                    f"{node.op_type} ({FORBIDDEN_OPS[node.op_type]}) is not allowed in graphs "
                    "meant for TensorRT",
                )
            )
        elif node.op_type not in table.supported:
            out.append(
                Violation(
                    file,
                    label,
                    "op-supported",
                    f"{node.op_type} not supported by the TensorRT {table.tensorrt_version} "
                    "ONNX parser",
                )
            )
        if (problem := _restriction(node)) is not None:
            out.append(Violation(file, label, "op-restriction", problem))
        const_idx = {k for op, k in CONST_INPUTS if op == node.op_type}
        if node.op_type.startswith("Reduce"):
            const_idx.add(1)
        for k in sorted(const_idx):
            if len(node.input) > k and node.input[k] and node.input[k] not in constants:
                out.append(Violation(file, label, "const-input", f"input {k} must be a constant"))
    return out


class _Graph:
    """Producer/consumer/constant lookups for the Q/DQ rules."""

    def __init__(self, model: onnx.ModelProto) -> None:
        g = model.graph
        self.consts: dict[str, np.ndarray] = {
            i.name: numpy_helper.to_array(i) for i in g.initializer
        }
        self.const_types = {i.name: i.data_type for i in g.initializer}
        for n in g.node:
            if n.op_type == "Constant":
                for a in n.attribute:
                    if a.name == "value":
                        self.consts[n.output[0]] = numpy_helper.to_array(a.t)
                        self.const_types[n.output[0]] = a.t.data_type
        self.producer = {o: n for n in g.node for o in n.output}
        self.consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
        for n in g.node:
            for k, name in enumerate(n.input):
                self.consumers.setdefault(name, []).append((n, k))
        self.outputs = {o.name for o in g.output}


def _attr(node: onnx.NodeProto, name: str, default: Any) -> Any:
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _weight_axis(consumer: onnx.NodeProto, k: int, rank: int) -> int | None:
    """The output-channel axis TensorRT expects for a per-channel weight, or None."""
    if k != 1:
        return None
    if consumer.op_type == "Conv":
        return 0
    if consumer.op_type == "ConvTranspose":
        return 1
    if consumer.op_type == "Gemm":
        return 0 if _attr(consumer, "transB", 0) else 1
    if consumer.op_type == "MatMul":
        return rank - 1
    return None


def _check_zero_point(g: _Graph, node: onnx.NodeProto, label: str, file: str) -> list[Violation]:
    if len(node.input) < 3 or not node.input[2]:
        if node.op_type == "QuantizeLinear" and _attr(node, "output_dtype", 0) in (0, 2):
            return [
                Violation(file, label, "qdq-zero-point", "no zero point: output would be UINT8")
            ]
        return []
    name = node.input[2]
    if name not in g.consts:
        return [Violation(file, label, "qdq-zero-point", "zero point must be a constant")]
    zp, dtype = g.consts[name], g.const_types[name]
    out = []
    if dtype not in QUANT_DTYPES:
        out.append(
            Violation(
                file,
                label,
                "qdq-zero-point",
                f"zero point of type {TensorProto.DataType.Name(dtype)}; TensorRT needs INT8",
            )
        )
    if np.any(zp.astype(np.float64) != 0):
        out.append(
            Violation(
                file,
                label,
                "qdq-zero-point",
                f"non-zero zero point {zp.ravel()[:4].tolist()}: TensorRT quantization is "
                "symmetric (zero point 0)",
            )
        )
    return out


def _check_scale(g: _Graph, node: onnx.NodeProto, label: str, file: str) -> list[Violation]:
    name = node.input[1] if len(node.input) > 1 else ""
    if name not in g.consts:
        return [Violation(file, label, "qdq-scale", "scale must be a constant")]
    s = g.consts[name].astype(np.float64)
    if not (np.all(np.isfinite(s)) and np.all(s > 0)):
        return [Violation(file, label, "qdq-scale", "scales must be finite and > 0")]
    return []


def _is_activation(g: _Graph, node: onnx.NodeProto) -> bool:
    """True when the Q/DQ chain quantizes a run-time tensor (not a constant weight)."""
    src = node.input[0]
    if node.op_type == "DequantizeLinear" and src in g.producer:
        q = g.producer[src]
        if q.op_type == "QuantizeLinear":
            src = q.input[0]
    return src not in g.consts


def _check_axis(g: _Graph, dq: onnx.NodeProto, label: str, file: str) -> list[Violation]:
    scale = g.consts.get(dq.input[1]) if len(dq.input) > 1 else None
    if scale is None or scale.size <= 1:
        return []
    out = []
    axis = int(_attr(dq, "axis", 1))
    for consumer, k in g.consumers.get(dq.output[0], []):
        rank = max(2, len(g.consts.get(dq.input[0], np.zeros((1, 1))).shape))
        want = _weight_axis(consumer, k, rank)
        if want is not None and axis % rank != want:
            out.append(
                Violation(
                    file,
                    label,
                    "qdq-weight-axis",
                    f"per-channel axis {axis} for {consumer.op_type} weights; TensorRT fuses "
                    f"axis {want} (output channels)",
                )
            )
    return out


def _check_qdq(model: onnx.ModelProto, file: str) -> list[Violation]:
    g = _Graph(model)
    out: list[Violation] = []
    for i, node in enumerate(model.graph.node):
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        label = _node_label(node, i)
        out += _check_zero_point(g, node, label, file)
        out += _check_scale(g, node, label, file)
        scale = g.consts.get(node.input[1]) if len(node.input) > 1 else None
        if _is_activation(g, node) and scale is not None and scale.size > 1:
            out.append(
                Violation(
                    file, label, "qdq-activation-per-tensor", "activation scale is per-channel"
                )
            )
        if node.op_type == "QuantizeLinear":
            users = g.consumers.get(node.output[0], [])
            if node.output[0] in g.outputs or any(
                u.op_type != "DequantizeLinear" for u, _ in users
            ):
                out.append(
                    Violation(
                        file, label, "qdq-pair", "QuantizeLinear must feed only DequantizeLinear"
                    )
                )
            continue
        x = node.input[0]
        if x in g.consts and g.const_types[x] not in QUANT_DTYPES:
            name = TensorProto.DataType.Name(g.const_types[x])
            out.append(
                Violation(
                    file,
                    label,
                    "qdq-dtype",
                    f"dequantizes {name} data (e.g. an INT32 bias); TensorRT dequantizes INT8 only "
                    "(keep biases in float)",
                )
            )
        elif x not in g.consts and g.producer.get(x, node).op_type != "QuantizeLinear":
            out.append(
                Violation(file, label, "qdq-pair", "DequantizeLinear input is not a QuantizeLinear")
            )
        out += _check_axis(g, node, label, file)
    return out


def check_model(model: onnx.ModelProto, *, file: str = "<model>") -> list[Violation]:
    """Every rule on one graph; an empty list means TensorRT-ready."""
    table = load_op_table()
    return [
        *_check_ops(model, file, table),
        *_check_types(model, file),
        *_check_graph_io(model, file),
        *_check_qdq(model, file),
    ]


def check_file(path: Path) -> list[Violation]:
    return check_model(onnx.load(str(path), load_external_data=False), file=Path(path).name)


def check_bundle(root: Path) -> list[Violation]:
    """All ONNX files a bundle's manifest lists."""
    manifest = json.loads((Path(root) / "manifest.json").read_text())
    files = [f["path"] for f in manifest["files"] if f["path"].endswith(".onnx")]
    return [v for name in files for v in check_file(Path(root) / name)]


def require_tensorrt_ready(paths: list[Path]) -> None:
    """Raise :class:`JetsonRuleError` listing every violation in ``paths``."""
    found = [v for p in paths for v in check_file(p)]
    if found:
        raise JetsonRuleError(found)


def strip_unused_opsets(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop opset imports of domains no node uses (quantization tools add several)."""
    used = {n.domain or "" for n in model.graph.node} | {""}
    keep = [o for o in model.opset_import if (o.domain or "") in used or o.domain == "ai.onnx"]
    del model.opset_import[:]
    model.opset_import.extend(keep)
    return model
