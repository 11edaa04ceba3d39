"""Models whose tensors keep their data in other files are refused: no checksum covers those."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from sdk import onnx_external as ox
from sdk.bundle import default_bundle_path, load_bundle, sha256_file
from sdk.classifier import WindowClassifier
from sdk.errors import BundleError
from sdk.runtime import OnnxModel

onnx = pytest.importorskip("onnx")
from onnx import external_data_helper, helper, numpy_helper  # noqa: E402

FLOAT = onnx.TensorProto.FLOAT


def test_field_numbers_are_onnx_protos() -> None:
    number = {
        (m, f): m.DESCRIPTOR.fields_by_name[f].number
        for m, f in [
            (onnx.ModelProto, "graph"),
            (onnx.ModelProto, "training_info"),
            (onnx.ModelProto, "functions"),
            (onnx.TrainingInfoProto, "initialization"),
            (onnx.TrainingInfoProto, "algorithm"),
            (onnx.FunctionProto, "attribute_proto"),
            (onnx.GraphProto, "node"),
            (onnx.GraphProto, "initializer"),
            (onnx.GraphProto, "sparse_initializer"),
            (onnx.FunctionProto, "node"),
            (onnx.NodeProto, "attribute"),
            (onnx.AttributeProto, "t"),
            (onnx.AttributeProto, "g"),
            (onnx.AttributeProto, "tensors"),
            (onnx.AttributeProto, "graphs"),
            (onnx.AttributeProto, "sparse_tensor"),
            (onnx.AttributeProto, "sparse_tensors"),
            (onnx.SparseTensorProto, "values"),
            (onnx.SparseTensorProto, "indices"),
            (onnx.TensorProto, "name"),
            (onnx.TensorProto, "external_data"),
            (onnx.TensorProto, "data_location"),
        ]
    }
    assert list(number.values()) == [
        ox.MODEL_GRAPH,
        ox.MODEL_TRAINING_INFO,
        ox.MODEL_FUNCTIONS,
        ox.TRAINING_INITIALIZATION,
        ox.TRAINING_ALGORITHM,
        ox.FUNCTION_ATTRIBUTE_PROTO,
        ox.GRAPH_NODE,
        ox.GRAPH_INITIALIZER,
        ox.GRAPH_SPARSE_INITIALIZER,
        ox.FUNCTION_NODE,
        ox.NODE_ATTRIBUTE,
        ox.ATTR_T,
        ox.ATTR_G,
        ox.ATTR_TENSORS,
        ox.ATTR_GRAPHS,
        ox.ATTR_SPARSE_TENSOR,
        ox.ATTR_SPARSE_TENSORS,
        ox.SPARSE_VALUES,
        ox.SPARSE_INDICES,
        ox.TENSOR_NAME,
        ox.TENSOR_EXTERNAL_DATA,
        ox.TENSOR_DATA_LOCATION,
    ]
    assert onnx.TensorProto.EXTERNAL == ox.EXTERNAL


def _external(tensor: onnx.TensorProto, location: str = "w.bin") -> onnx.TensorProto:
    external_data_helper.set_external_data(tensor, location=location)
    tensor.data_location = onnx.TensorProto.EXTERNAL
    tensor.ClearField("raw_data")
    return tensor


def _matmul_model(weight: onnx.TensorProto, then_const: onnx.TensorProto | None = None) -> bytes:
    """y = x @ w (w an initializer); with ``then_const``, also an If whose branch holds it."""
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
    outputs = [helper.make_tensor_value_info("y", FLOAT, [1, 2])]
    if then_const is not None:
        branch = helper.make_graph(
            [helper.make_node("Constant", [], ["c"], value=then_const)],
            "branch",
            [],
            [helper.make_tensor_value_info("c", FLOAT, [2])],
        )
        nodes.append(
            helper.make_node("If", ["cond"], ["z"], then_branch=branch, else_branch=branch)
        )
        outputs.append(helper.make_tensor_value_info("z", FLOAT, [2]))
    inputs = [helper.make_tensor_value_info("x", FLOAT, [1, 2])]
    if then_const is not None:
        inputs.append(helper.make_tensor_value_info("cond", onnx.TensorProto.BOOL, []))
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=[weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return model.SerializeToString()


def _weight(value: float = 1.0) -> onnx.TensorProto:
    return numpy_helper.from_array(np.full((2, 2), value, np.float32), name="w")


def test_self_contained_models_have_no_external_tensors() -> None:
    assert ox.external_tensors(_matmul_model(_weight())) == []
    for path in default_bundle_path().glob("*.onnx"):  # every shipped model
        assert ox.external_tensors(path.read_bytes()) == [], path.name


def test_external_tensors_are_found_in_graphs_subgraphs_and_sparse_initializers() -> None:
    assert ox.external_tensors(_matmul_model(_external(_weight()))) == ["w"]
    const = _external(numpy_helper.from_array(np.ones(2, np.float32), name="k"))
    assert ox.external_tensors(_matmul_model(_weight(), then_const=const)) == ["k", "k"]

    model = onnx.ModelProto()
    model.ParseFromString(_matmul_model(_weight()))
    sparse = model.graph.sparse_initializer.add()
    sparse.values.CopyFrom(_external(numpy_helper.from_array(np.ones(1, np.float32), "s")))
    sparse.indices.CopyFrom(numpy_helper.from_array(np.zeros(1, np.int64), "s_idx"))
    sparse.dims.extend([2])
    assert ox.external_tensors(model.SerializeToString()) == ["s"]

    model.graph.ClearField("sparse_initializer")  # a function's default attribute value
    function = model.functions.add()
    function.name, function.domain = "f", "local"
    default = function.attribute_proto.add()
    default.name, default.type = "value", onnx.AttributeProto.TENSOR
    default.t.CopyFrom(_external(numpy_helper.from_array(np.ones(4, np.float32), "d")))
    assert ox.external_tensors(model.SerializeToString()) == ["d"]

    model.ClearField("functions")  # a training graph's initializer
    training = model.training_info.add()
    training.algorithm.initializer.append(_external(_weight()))
    assert ox.external_tensors(model.SerializeToString()) == ["w"]


@pytest.mark.parametrize("data", [b"\x3a\xff\xff\xff", b"\x3a\x05ab", b"\x07", b"\x3a\x80"])
def test_malformed_bytes_raise_wire_format_error(data: bytes) -> None:
    with pytest.raises(ox.WireFormatError):
        ox.external_tensors(data)


def test_the_runtime_never_reads_a_tensor_file_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _matmul_model(_external(_weight()))
    (tmp_path / "w.bin").write_bytes(np.full((2, 2), 9.0, np.float32).tobytes())
    monkeypatch.chdir(tmp_path)  # where ONNX Runtime looks for w.bin of a model given as bytes
    with pytest.raises(BundleError) as err:
        OnnxModel(tmp_path / "m.onnx", data=model)
    assert err.value.reason == "external_data" and "'w'" in str(err.value)
    (tmp_path / "m.onnx").write_bytes(model)  # and next to a model given as a path
    with pytest.raises(BundleError, match="outside the model file"):
        OnnxModel(tmp_path / "m.onnx")


def test_a_bundle_whose_head_uses_external_data_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "bundle"
    shutil.copytree(default_bundle_path(), root)
    head = onnx.load(str(root / "head.onnx"))
    onnx.save_model(
        head,
        str(root / "head.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="w.bin",
        size_threshold=0,
    )
    shutil.copy(root / "w.bin", tmp_path / "w.bin")
    manifest = json.loads((root / "manifest.json").read_text())
    entry = next(f for f in manifest["files"] if f["path"] == "head.onnx")
    entry["sha256"] = sha256_file(root / "head.onnx")
    entry["bytes"] = (root / "head.onnx").stat().st_size
    (root / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.chdir(tmp_path)
    bundle = load_bundle(root)  # checksums hold: the listed bytes are the ones given
    with pytest.raises(BundleError) as err:
        WindowClassifier(bundle)
    assert err.value.reason == "external_data"
