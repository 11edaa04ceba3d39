"""FP16 ONNX graph for strongly typed TensorRT builds (and ``--fp16`` ones).

TensorRT 11 removed the FP16 builder flag: precision comes from the graph's types, so the
bundle carries an FP16 graph. It is converted with onnxconverter-common, keeping float32
graph inputs/outputs (``keep_io_types``) and keeping in float32 the input preparation before
the first Conv/Gemm: the forward noising ``sqrt(abar_t) x + sqrt(1 - abar_t) noise`` and the
sinusoidal time embedding. In FP16, ``abar_1 = 0.9999`` rounds to 1.0 and the noise term
vanishes; ``sin(t w)`` for t up to 1000 loses most of its digits. Those nodes are cheap.

Two fixes after the converter: ``Cast(to=FLOAT)`` nodes inside the converted part get
``to=FLOAT16`` (the converter retypes their outputs but not the attribute, which makes an
invalid graph), and FP32->FP16->FP32 cast round trips it inserts between two kept-FP32 nodes
are removed (they silently round the kept values to FP16).
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto

from export.jetson_rules import strip_unused_opsets


def _to(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "to"), -1)


def input_prep_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes before the first Conv/Gemm (noising and time embedding)."""
    names = []
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm", "MatMul"):
            break
        names.append(node.name)
    return names


def _fix_cast_targets(model: onnx.ModelProto, kept: set[str]) -> None:
    types = {
        v.name: v.type.tensor_type.elem_type for v in [*model.graph.value_info, *model.graph.output]
    }
    for node in model.graph.node:
        if node.op_type != "Cast" or node.name in kept:
            continue
        for a in node.attribute:
            if a.name == "to" and a.i == TensorProto.FLOAT:
                if types.get(node.output[0]) == TensorProto.FLOAT16:
                    a.i = TensorProto.FLOAT16


def _drop_round_trips(model: onnx.ModelProto) -> int:
    """Remove Cast(FP16) -> Cast(FP32) pairs; returns how many second casts were removed."""
    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.input, *g.output]}
    types |= {i.name: i.data_type for i in g.initializer}
    outputs = {o.name for o in g.output}
    removed = 0
    rename: dict[str, str] = {}
    drop = set()
    for node in g.node:
        if node.op_type != "Cast" or _to(node) != TensorProto.FLOAT:
            continue
        first = producer.get(node.input[0])
        if first is None or first.op_type != "Cast" or _to(first) != TensorProto.FLOAT16:
            continue
        if types.get(first.input[0]) != TensorProto.FLOAT or node.output[0] in outputs:
            continue  # only FP32 -> FP16 -> FP32 of a tensor known to be FP32
        rename[node.output[0]] = first.input[0]
        drop.add(id(node))
        removed += 1
    kept_nodes = [n for n in g.node if id(n) not in drop]
    for n in kept_nodes:
        for k, name in enumerate(n.input):
            if name in rename:
                n.input[k] = rename[name]
    used = {i for n in kept_nodes for i in n.input} | {o.name for o in g.output}
    kept_nodes = [
        n
        for n in kept_nodes
        if not (n.op_type == "Cast" and _to(n) == TensorProto.FLOAT16 and n.output[0] not in used)
    ]
    del g.node[:]
    g.node.extend(kept_nodes)
    return removed


def convert_fp16(fp32_path: Path, out_path: Path, *, keep_fp32: list[str] | None = None) -> Path:
    """Write the FP16 graph of ``fp32_path``; ``keep_fp32`` defaults to :func:`input_prep_nodes`."""
    from onnxconverter_common import float16

    model = onnx.load(str(fp32_path))
    kept = input_prep_nodes(model) if keep_fp32 is None else list(keep_fp32)
    half = float16.convert_float_to_float16(
        model, keep_io_types=True, node_block_list=kept, disable_shape_infer=False
    )
    _fix_cast_targets(half, set(kept))
    _drop_round_trips(half)
    half = strip_unused_opsets(half)
    onnx.checker.check_model(half)
    onnx.save(half, str(out_path))
    return out_path
