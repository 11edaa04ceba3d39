"""Find tensors of an ONNX model that keep their data in another file ("external data").

A bundle's checksums cover the model files it lists. ONNX Runtime reads a tensor's external
data from a file named inside the model, relative to the model's folder or, for a model given
as bytes, to the process's working directory: bytes no checksum covers. The runtime refuses
such models (:func:`external_tensors`). The model is read as the protobuf wire format
(`ModelProto` of onnx.proto) without the ``onnx`` package, which a device does not install.
"""

from __future__ import annotations

from collections.abc import Iterator

# field numbers of onnx.proto (tests compare them with the onnx package's descriptors)
MODEL_GRAPH, MODEL_TRAINING_INFO, MODEL_FUNCTIONS = 7, 20, 25
TRAINING_INITIALIZATION, TRAINING_ALGORITHM = 1, 2
GRAPH_NODE, GRAPH_INITIALIZER, GRAPH_SPARSE_INITIALIZER = 1, 5, 15
FUNCTION_NODE, FUNCTION_ATTRIBUTE_PROTO = 7, 11
NODE_ATTRIBUTE = 5
ATTR_T, ATTR_G, ATTR_TENSORS, ATTR_GRAPHS, ATTR_SPARSE_TENSOR, ATTR_SPARSE_TENSORS = (
    5,
    6,
    10,
    11,
    22,
    23,
)
SPARSE_VALUES, SPARSE_INDICES = 1, 2
TENSOR_NAME, TENSOR_EXTERNAL_DATA, TENSOR_DATA_LOCATION = 8, 13, 14
EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL

_MAX_DEPTH = 64  # nested subgraphs deeper than this are refused, not recursed into


class WireFormatError(ValueError):
    """The bytes are not a well-formed protobuf message."""


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise WireFormatError("truncated or overlong varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(buf: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """(field number, wire type, value) of each field of one message; length-delimited values
    as views of their bytes, the others as integers (fixed-width ones unread)."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            yield number, wire, value
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > len(buf):
                raise WireFormatError("a field runs past the end of its message")
            yield number, wire, buf[pos : pos + size]
            pos += size
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
            if pos > len(buf):
                raise WireFormatError("a fixed-width field runs past the end")
            yield number, wire, 0
        else:
            raise WireFormatError(f"wire type {wire} is not used by ONNX models")


def _embedded(buf: memoryview, wanted: set[int]) -> Iterator[tuple[int, memoryview]]:
    for number, wire, value in _fields(buf):
        if number in wanted and wire == 2:
            assert isinstance(value, memoryview)
            yield number, value


def _tensor(buf: memoryview) -> str | None:
    """The tensor's name if its data is external, else None."""
    name, external = "", False
    for number, wire, value in _fields(buf):
        if number == TENSOR_NAME and wire == 2:
            name = bytes(value).decode("utf-8", errors="replace")
        elif number == TENSOR_EXTERNAL_DATA and wire == 2:
            external = True
        elif number == TENSOR_DATA_LOCATION and wire == 0 and value == EXTERNAL:
            external = True
    return (name or "<unnamed>") if external else None


def _sparse(buf: memoryview) -> Iterator[str]:
    for _, part in _embedded(buf, {SPARSE_VALUES, SPARSE_INDICES}):
        if (name := _tensor(part)) is not None:
            yield name


def _attributes(buf: memoryview, field: int, depth: int) -> Iterator[str]:
    """External tensors in the attributes ``field`` of ``buf`` (a node's, or a function's
    default values)."""
    for _, attr in _embedded(buf, {field}):
        wanted = {ATTR_T, ATTR_G, ATTR_TENSORS, ATTR_GRAPHS, ATTR_SPARSE_TENSOR}
        for number, part in _embedded(attr, wanted | {ATTR_SPARSE_TENSORS}):
            if number in (ATTR_T, ATTR_TENSORS):
                if (name := _tensor(part)) is not None:
                    yield name
            elif number in (ATTR_G, ATTR_GRAPHS):
                yield from _graph(part, depth + 1)
            else:
                yield from _sparse(part)


def _nodes(buf: memoryview, field: int, depth: int) -> Iterator[str]:
    """External tensors in the attributes of the nodes in ``field`` of ``buf``."""
    for _, node in _embedded(buf, {field}):
        yield from _attributes(node, NODE_ATTRIBUTE, depth)


def _graph(buf: memoryview, depth: int) -> Iterator[str]:
    if depth > _MAX_DEPTH:
        raise WireFormatError(f"subgraphs nested deeper than {_MAX_DEPTH}")
    for number, part in _embedded(buf, {GRAPH_INITIALIZER, GRAPH_SPARSE_INITIALIZER}):
        if number == GRAPH_INITIALIZER:
            if (name := _tensor(part)) is not None:
                yield name
        else:
            yield from _sparse(part)
    yield from _nodes(buf, GRAPH_NODE, depth)


def external_tensors(model: bytes) -> list[str]:
    """Names of the tensors of the serialized ONNX ``model`` whose data lies in another file:
    initializers, sparse initializers and tensor attributes, in subgraphs, functions (their
    nodes and default attribute values) and training graphs too.

    Raises
    ------
    WireFormatError
        When ``model`` is not a well-formed protobuf message.
    """
    buf = memoryview(model)
    names: list[str] = []
    for number, part in _embedded(buf, {MODEL_GRAPH, MODEL_TRAINING_INFO, MODEL_FUNCTIONS}):
        if number == MODEL_GRAPH:
            names += _graph(part, 0)
        elif number == MODEL_TRAINING_INFO:
            for _, graph in _embedded(part, {TRAINING_INITIALIZATION, TRAINING_ALGORITHM}):
                names += _graph(graph, 0)
        else:
            names += _nodes(part, FUNCTION_NODE, 0)
            names += _attributes(part, FUNCTION_ATTRIBUTE_PROTO, 0)
    return names
