"""TensorRT rules on real bundle graphs and on small graphs built to break one rule each."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from export.errors import JetsonRuleError
from export.fp16 import convert_fp16
from export.jetson_rules import (
    check_bundle,
    check_file,
    check_model,
    input_profile,
    load_op_table,
    require_tensorrt_ready,
)
from export.quantize import embed_onnx, quantize_int8
from sdk.bundle import default_bundle_path

BUNDLE = default_bundle_path()
L = 64


def _conv_model(
    *,
    length: int | str = L,
    extra_nodes: list | None = None,
    extra_inits: list | None = None,
    out: str = "y",
    opset: int = 17,
    weight_dq: bool = False,
) -> onnx.ModelProto:
    """x (batch, 1, L) -> Conv1d(4 channels) -> y; optional extra nodes after it."""
    w = np.random.default_rng(0).standard_normal((4, 1, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1])]
    inits = [numpy_helper.from_array(w, "w")]
    if weight_dq:
        nodes[0].input[1] = "w_dq"
        inits = [
            numpy_helper.from_array(np.round(w * 10).astype(np.int8), "w_q"),
            numpy_helper.from_array(np.full(4, 0.1, np.float32), "w_s"),
            numpy_helper.from_array(np.zeros(4, np.int8), "w_zp"),
        ]
        nodes.insert(
            0,
            helper.make_node(
                "DequantizeLinear", ["w_q", "w_s", "w_zp"], ["w_dq"], name="w_deq", axis=0
            ),
        )
    nodes += extra_nodes or [helper.make_node("Relu", ["c"], ["y"], name="relu")]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, length])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["batch", 4, length])],
        initializer=inits + (extra_inits or []),
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _rules(model: onnx.ModelProto) -> set[str]:
    return {v.rule for v in check_model(model, file="m.onnx")}


def _act_qdq(zp: np.ndarray, scale: np.ndarray | float = 0.05) -> tuple[list, list]:
    """Q -> DQ on the conv output with the given zero point (dtype included)."""
    nodes = [
        helper.make_node("QuantizeLinear", ["c", "s", "zp"], ["q"], name="act_q"),
        helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"], name="act_dq"),
    ]
    inits = [
        numpy_helper.from_array(np.asarray(scale, np.float32), "s"),
        numpy_helper.from_array(zp, "zp"),
    ]
    return nodes, inits


def test_op_table_has_source_version_and_real_entries():
    table = load_op_table()
    doc = json.loads((Path(__file__).parents[2] / "export/trt_supported_ops.json").read_text())
    assert "onnx-tensorrt" in doc["source"] and table.tensorrt_version == "10.15"
    assert (table.opset_min, table.opset_max) == (9, 24)
    assert {"Conv", "InstanceNormalization", "Einsum", "QuantizeLinear"} <= table.supported
    assert "DFT" not in table.supported and "DFT" in doc["unsupported_ops"]


@pytest.mark.parametrize("name", ["embedder.fp32.onnx", "head.onnx"])
def test_shipped_float_graphs_pass(name):
    assert check_file(BUNDLE / name) == []


def test_a_cpu_int8_graph_is_refused_with_file_node_and_rule(tmp_path):
    from tests.export.test_tensorrt_build import make_int8_bundle

    bundle = make_int8_bundle(tmp_path / "bundle", "cpu")
    found = check_file(bundle / "embedder.int8.onnx")
    rules = {v.rule for v in found}
    assert {"qdq-zero-point", "qdq-dtype"} <= rules
    bias = next(v for v in found if v.rule == "qdq-dtype")
    assert bias.file == "embedder.int8.onnx" and "bias_DequantizeLinear" in bias.node
    assert "INT32" in bias.message
    with pytest.raises(JetsonRuleError) as err:
        require_tensorrt_ready([bundle / "embedder.int8.onnx"])
    assert "embedder.int8.onnx: node '" in str(err.value) and "[qdq-zero-point]" in str(err.value)
    assert {v.rule for v in check_bundle(bundle)} == rules
    assert check_bundle(BUNDLE) == []  # the shipped FP32 graphs pass


def test_profile_covers_batch_and_keeps_the_window_fixed():
    prof = input_profile(onnx.load(str(BUNDLE / "embedder.fp32.onnx")), max_batch=8)
    assert prof["x"] == ((1, 1, 1280), (1, 1, 1280), (8, 1, 1280))
    assert prof["t"] == ((1,), (1,), (8,))


def test_small_good_graphs_pass():
    assert check_model(_conv_model()) == []
    assert check_model(_conv_model(weight_dq=True)) == []
    nodes, inits = _act_qdq(np.array(0, np.int8))
    assert check_model(_conv_model(extra_nodes=nodes, extra_inits=inits)) == []


def test_dynamic_length_axis():
    found = check_model(_conv_model(length="length"), file="m.onnx")
    assert {v.rule for v in found} == {"static-shape"}
    assert any("input 'x'" in v.node and "axis 2" in v.message for v in found)


def test_unsupported_and_foreign_ops():
    nodes = [helper.make_node("Unique", ["c"], ["y"], name="uniq")]
    assert "op-supported" in _rules(_conv_model(extra_nodes=nodes))
    nodes = [helper.make_node("FusedGelu", ["c"], ["y"], name="ms", domain="com.microsoft")]
    assert "domain" in _rules(_conv_model(extra_nodes=nodes))


def test_dft_is_refused():
    nodes = [
        helper.make_node("Unsqueeze", ["c", "ax"], ["c5"], name="unsq"),
        helper.make_node("DFT", ["c5"], ["spec"], name="fft", axis=2),
        helper.make_node("ReduceSum", ["spec", "ax"], ["y"], name="sum", keepdims=0),
    ]
    inits = [numpy_helper.from_array(np.array([3], np.int64), "ax")]
    found = check_model(_conv_model(extra_nodes=nodes, extra_inits=inits), file="m.onnx")
    fft = [v for v in found if v.rule == "no-fft-control-flow"]
    assert len(fft) == 1 and fft[0].node == "node 'fft' (DFT)" and "FFT" in fft[0].message


def test_loop_is_refused():
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, [])],
    )
    nodes = [
        helper.make_node("Loop", ["n", ""], [], name="loop", body=body),
        helper.make_node("Relu", ["c"], ["y"], name="relu"),
    ]
    inits = [numpy_helper.from_array(np.array(3, np.int64), "n")]
    assert "no-fft-control-flow" in _rules(_conv_model(extra_nodes=nodes, extra_inits=inits))


def test_complex_tensors_are_refused():
    nodes = [
        helper.make_node("Cast", ["c"], ["cx"], name="to_complex", to=TensorProto.COMPLEX64),
        helper.make_node("Relu", ["c"], ["y"], name="relu"),
    ]
    assert "no-complex" in _rules(_conv_model(extra_nodes=nodes))


def test_too_new_opset():
    found = check_model(_conv_model(opset=load_op_table().opset_max + 1))
    assert [v.rule for v in found] == ["opset"]


@pytest.mark.parametrize(
    ("zp", "rule"),
    [
        (np.array(3, np.int8), "qdq-zero-point"),  # asymmetric
        (np.array(128, np.uint8), "qdq-zero-point"),  # uint8 activations (onnxruntime CPU form)
    ],
)
def test_nonzero_or_unsigned_zero_point(zp, rule):
    nodes, inits = _act_qdq(zp)
    found = check_model(_conv_model(extra_nodes=nodes, extra_inits=inits), file="m.onnx")
    assert {v.rule for v in found} == {rule}
    assert {v.node for v in found} == {
        "node 'act_q' (QuantizeLinear)",
        "node 'act_dq' (DequantizeLinear)",
    }


def test_per_channel_activation_and_bad_scale():
    nodes, inits = _act_qdq(np.zeros(4, np.int8), scale=np.full(4, 0.05, np.float32))
    for n in nodes:
        n.attribute.append(helper.make_attribute("axis", 1))
    assert "qdq-activation-per-tensor" in _rules(_conv_model(extra_nodes=nodes, extra_inits=inits))
    nodes, inits = _act_qdq(np.array(0, np.int8), scale=0.0)
    assert "qdq-scale" in _rules(_conv_model(extra_nodes=nodes, extra_inits=inits))


def test_unpaired_quantize():
    nodes, inits = _act_qdq(np.array(0, np.int8))
    nodes[1] = helper.make_node("Cast", ["q"], ["y"], name="cast", to=TensorProto.FLOAT)
    assert "qdq-pair" in _rules(_conv_model(extra_nodes=nodes, extra_inits=inits))


def test_weight_axis_must_be_output_channels():
    model = _conv_model(weight_dq=True)
    dq = next(n for n in model.graph.node if n.name == "w_deq")
    dq.attribute[0].i = 1
    assert _rules(model) == {"qdq-weight-axis"}


def test_int32_bias_dequantize():
    model = _conv_model(weight_dq=True)
    model.graph.node[1].input.append("b_dq")
    model.graph.initializer.extend(
        [
            numpy_helper.from_array(np.zeros(4, np.int32), "b_q"),
            numpy_helper.from_array(np.full(4, 0.01, np.float32), "b_s"),
        ]
    )
    model.graph.node.insert(
        0, helper.make_node("DequantizeLinear", ["b_q", "b_s"], ["b_dq"], name="b_deq")
    )
    assert "qdq-dtype" in _rules(model)


@pytest.fixture(scope="module")
def calib() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((16, 1, 1280)).astype(np.float32), np.load(BUNDLE / "noise.npy")


def test_jetson_quantization_passes_and_cpu_form_is_unchanged(tmp_path, calib):
    windows, noise = calib
    jet = quantize_int8(
        BUNDLE / "embedder.fp32.onnx", tmp_path / "j.onnx", windows, 1, noise, target="jetson"
    )
    assert check_file(jet) == []
    domains = {o.domain for o in onnx.load(str(jet)).opset_import}
    assert domains == {""}
    cpu = quantize_int8(BUNDLE / "embedder.fp32.onnx", tmp_path / "c.onnx", windows, 1, noise)
    assert {"qdq-zero-point", "qdq-dtype"} <= {v.rule for v in check_file(cpu)}
    ref = embed_onnx(BUNDLE / "embedder.fp32.onnx", windows[:4], 1, noise)
    got = embed_onnx(jet, windows[:4], 1, noise)
    assert np.abs(got - ref).max() / np.abs(ref).max() < 0.25  # fake-quantized, real graph


def test_fp16_graph_passes_and_keeps_the_noising_in_fp32(tmp_path, calib):
    windows, noise = calib
    half = convert_fp16(BUNDLE / "embedder.fp32.onnx", tmp_path / "h.onnx")
    assert check_file(half) == []
    model = onnx.load(str(half))
    assert any(i.data_type == TensorProto.FLOAT16 for i in model.graph.initializer)
    abar = next(i for i in model.graph.initializer if i.name == "abar")
    assert abar.data_type == TensorProto.FLOAT  # 0.9999 would round to 1.0 in FP16
    ref = embed_onnx(BUNDLE / "embedder.fp32.onnx", windows, 1, noise)
    got = embed_onnx(half, windows, 1, noise)
    assert np.abs(got - ref).max() / np.abs(ref).max() < 5e-3
    # at t = 1 the noise term is sqrt(1 - 0.9999) = 0.01: it must still move the embedding
    silent = embed_onnx(half, windows, 1, np.zeros_like(noise))
    assert np.abs(got - silent).max() / np.abs(got).max() > 1e-3
    ort.InferenceSession(str(half), providers=["CPUExecutionProvider"])


def _one_node(tmp_path: Path, node: onnx.NodeProto, x_shape, extra_inputs=()) -> Path:
    """A graph of one node on input ``x`` (FP32), its first output the graph's output."""
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))]
    graph = helper.make_graph(
        [node],
        "g",
        inputs,
        [helper.make_tensor_value_info(node.output[0], TensorProto.FLOAT, None)],
        initializer=list(extra_inputs),
    )
    path = tmp_path / f"{node.name}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize(
    ("node", "shape", "inits", "bad"),
    [
        (
            helper.make_node("AveragePool", ["x"], ["y"], "pool1d", kernel_shape=[3]),
            [1, 1, 16],
            [],
            True,
        ),
        (
            helper.make_node("AveragePool", ["x"], ["y"], "pool2d", kernel_shape=[3, 3]),
            [1, 1, 16, 16],
            [],
            False,
        ),
        (
            helper.make_node("MaxPool", ["x"], ["y"], "maxpool1d", kernel_shape=[2]),
            [1, 1, 16],
            [],
            True,
        ),
        (
            helper.make_node("Resize", ["x", "", "s"], ["y"], "cubic", mode="cubic"),
            [1, 1, 4, 4],
            [numpy_helper.from_array(np.full(4, 2.0, np.float32), "s")],
            True,
        ),
        (
            helper.make_node("Resize", ["x", "", "s"], ["y"], "linear", mode="linear"),
            [1, 1, 4, 4],
            [numpy_helper.from_array(np.full(4, 2.0, np.float32), "s")],
            False,
        ),
        (
            helper.make_node("TopK", ["x", "k"], ["y", "i"], "unsorted", sorted=0),
            [1, 8],
            [numpy_helper.from_array(np.array([2], np.int64), "k")],
            True,
        ),
        (
            helper.make_node("TopK", ["x", "k"], ["y", "i"], "sorted", sorted=1),
            [1, 8],
            [numpy_helper.from_array(np.array([2], np.int64), "k")],
            False,
        ),
    ],
    ids=lambda v: v.name if isinstance(v, onnx.NodeProto) else None,
)
def test_operators_outside_the_matrixs_restrictions_are_refused(tmp_path, node, shape, inits, bad):
    """1-D pooling, cubic Resize and unsorted TopK are in the parser's supported list, with
    restrictions the rules ignored: all three passed."""
    found = [
        v for v in check_file(_one_node(tmp_path, node, shape, inits)) if v.rule == "op-restriction"
    ]
    assert bool(found) == bad
