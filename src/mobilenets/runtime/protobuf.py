"""A small reader for the protobuf wire format and the ONNX messages a model needs. NumPy only.

Wire format (https://protobuf.dev/programming-guides/encoding/): each field is a varint key
``(field_number << 3) | wire_type``; wire type 0 = varint, 1 = 64-bit, 2 = length-delimited (bytes,
strings, sub-messages, packed repeated numbers), 5 = 32-bit. Field numbers are those of onnx/onnx.proto.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np


class OnnxFormatError(ValueError):
    """The bytes are not a (supported) ONNX model."""


class WireFormatError(OnnxFormatError):
    """The bytes are not valid protobuf at all."""


def read_varint(buffer: memoryview, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if position >= len(buffer):
            raise WireFormatError("truncated varint")
        byte = buffer[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, position
        shift += 7
        if shift > 70:
            raise WireFormatError("varint too long")


def fields(buffer: memoryview):
    """Yield (field number, wire type, value): int for varints and fixed widths, memoryview for bytes."""
    position, end = 0, len(buffer)
    while position < end:
        key, position = read_varint(buffer, position)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, position = read_varint(buffer, position)
        elif wire == 2:
            length, position = read_varint(buffer, position)
            if position + length > end:
                raise WireFormatError("truncated length-delimited field")
            value = buffer[position : position + length]
            position += length
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            if position + width > end:
                raise WireFormatError("truncated fixed-width field")
            value = buffer[position : position + width]
            position += width
        else:
            raise WireFormatError(f"unsupported wire type {wire}")
        yield number, wire, value


# Each field of ONNX's messages has one wire type; a file that sends another (a string as a varint, which
# bytes() would turn into that many zero bytes) is malformed, said so here rather than as a TypeError.
def _expect(wire: int, expected: int, number: int) -> None:
    if wire != expected:
        raise WireFormatError(f"field {number} has wire type {wire}, expected {expected}")


def _text(wire: int, value, number: int) -> str:
    _expect(wire, 2, number)
    return bytes(value).decode()


def _varint(wire: int, value, number: int) -> int:
    _expect(wire, 0, number)
    return value


def _int64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _packed_varints(value) -> list[int]:
    out, position = [], 0
    while position < len(value):
        number, position = read_varint(value, position)
        out.append(_int64(number))
    return out


def _repeated_ints(wire: int, value) -> list[int]:
    if wire not in (0, 2):
        raise WireFormatError(f"repeated integers with wire type {wire}")
    return _packed_varints(value) if wire == 2 else [_int64(value)]


def _repeated_floats(wire: int, value) -> list[float]:
    if wire == 2:
        if len(value) % 4:
            raise WireFormatError("packed floats whose length is not a multiple of 4")
        return list(np.frombuffer(value, dtype="<f4"))
    _expect(wire, 5, 0)
    return [struct.unpack("<f", value)[0]]


# TensorProto.DataType -> numpy
DTYPES = {
    1: np.float32,
    2: np.uint8,
    3: np.int8,
    4: np.uint16,
    5: np.int16,
    6: np.int32,
    7: np.int64,
    9: np.bool_,
    10: np.float16,
    11: np.float64,
    12: np.uint32,
    13: np.uint64,
}
# The others, named in errors: NumPy has no type for them, and reading their bytes as another type
# would give wrong numbers without an error.
UNSUPPORTED_DTYPES = {
    8: "string",
    14: "complex64",
    15: "complex128",
    16: "bfloat16",
    17: "float8e4m3fn",
    18: "float8e4m3fnuz",
    19: "float8e5m2",
    20: "float8e5m2fnuz",
    21: "uint4",
    22: "int4",
    23: "float4e2m1",
    24: "float8e8m0",
    25: "uint2",
    26: "int2",
}
MAX_TENSOR_ELEMENTS = 1 << 31  # declared sizes are checked against this and against the data present


def dtype_name(data_type: int) -> str:
    if data_type in DTYPES:
        return np.dtype(DTYPES[data_type]).name
    return UNSUPPORTED_DTYPES.get(data_type, f"type {data_type}")


def parse_tensor(buffer: memoryview) -> tuple[str, np.ndarray]:
    dims: list[int] = []
    data_type, name, raw = 1, "", None
    floats: list[float] = []
    ints: list[int] = []
    doubles: list[float] = []
    for number, wire, value in fields(buffer):
        if number == 1:
            dims += _repeated_ints(wire, value)
        elif number == 2:
            data_type = _varint(wire, value, number)
        elif number == 4:
            floats += _repeated_floats(wire, value)
        elif number in (5, 7, 11):  # int32_data (also int8/uint8/int16/bool/fp16), int64_data, uint64_data
            ints += _repeated_ints(wire, value)
        elif number == 8:
            name = _text(wire, value, number)
        elif number == 9:
            _expect(wire, 2, number)
            raw = value
        elif number == 10:
            if wire == 2 and len(value) % 8:
                raise WireFormatError("packed doubles whose length is not a multiple of 8")
            doubles += (
                list(np.frombuffer(value, dtype="<f8")) if wire == 2 else [struct.unpack("<d", value)[0]]
            )
        elif number == 14 and value == 1:
            raise OnnxFormatError(
                f"tensor {name!r} keeps its data in an external file, which is not supported"
            )
    if data_type not in DTYPES:
        raise OnnxFormatError(f"tensor {name!r}: data type {dtype_name(data_type)} is not supported")
    if any(d < 0 for d in dims):
        raise OnnxFormatError(f"tensor {name!r}: negative dimension in {dims}")
    count = 1
    for d in dims:
        count *= d
    if count > MAX_TENSOR_ELEMENTS:
        raise OnnxFormatError(f"tensor {name!r}: {dims} declares {count:,} elements")
    dtype = np.dtype(DTYPES[data_type]).newbyteorder("<")
    if raw is not None:
        if len(raw) != count * dtype.itemsize:
            raise OnnxFormatError(
                f"tensor {name!r}: shape {dims} needs {count * dtype.itemsize:,} bytes of {dtype_name(data_type)}, "
                f"the file holds {len(raw):,}"
            )
        array = np.frombuffer(raw, dtype=dtype).copy()
    elif floats:
        array = np.array(floats, dtype=dtype)
    elif doubles:
        array = np.array(doubles, dtype=dtype)
    elif data_type == 10:  # float16 stored as raw uint16 bit patterns in int32_data
        array = np.array(ints, dtype=np.int64).astype(np.uint16).view(np.float16)
    else:
        array = np.array(ints, dtype=np.int64 if data_type != 13 else np.uint64).astype(dtype)
    if array.size != count:
        raise OnnxFormatError(
            f"tensor {name!r}: shape {dims} needs {count:,} values, the file holds {array.size:,}"
        )
    return name, array.astype(dtype.newbyteorder("="), copy=False).reshape(dims)


def parse_attribute(buffer: memoryview):
    name, kind = "", 0
    values: dict[str, object] = {"floats": [], "ints": [], "strings": []}
    for number, wire, value in fields(buffer):
        if number == 1:
            name = _text(wire, value, number)
        elif number == 20:
            kind = _varint(wire, value, number)
        elif number == 2:
            _expect(wire, 5, number)
            values["f"] = struct.unpack("<f", value)[0]
        elif number == 3:
            values["i"] = _int64(_varint(wire, value, number))
        elif number == 4:
            _expect(wire, 2, number)
            values["s"] = bytes(value).decode(errors="replace")
        elif number == 5:
            _expect(wire, 2, number)
            values["t"] = parse_tensor(value)[1]
        elif number == 7:
            values["floats"] += _repeated_floats(wire, value)
        elif number == 8:
            values["ints"] += _repeated_ints(wire, value)
        elif number == 9:
            _expect(wire, 2, number)
            values["strings"].append(bytes(value).decode(errors="replace"))
        elif number in (6, 11):
            values["g"] = True  # sub-graphs (If / Loop) are not supported; the runner reports the op
    by_kind = {1: "f", 2: "i", 3: "s", 4: "t", 5: "g", 6: "floats", 7: "ints", 8: "strings", 10: "g"}
    key = by_kind.get(kind)
    if key is None:  # old files without the type field: the one value that was set
        key = next((k for k in ("f", "i", "s", "t", "g") if k in values), "ints")
    return name, values.get(key)


@dataclass
class Node:
    op_type: str
    inputs: list[str]
    outputs: list[str]
    name: str = ""
    domain: str = ""
    attributes: dict = field(default_factory=dict)


def parse_node(buffer: memoryview) -> Node:
    node = Node("", [], [])
    for number, wire, value in fields(buffer):
        if number == 1:
            node.inputs.append(_text(wire, value, number))
        elif number == 2:
            node.outputs.append(_text(wire, value, number))
        elif number == 3:
            node.name = _text(wire, value, number)
        elif number == 4:
            node.op_type = _text(wire, value, number)
        elif number == 7:
            node.domain = _text(wire, value, number)
        elif number == 5:
            _expect(wire, 2, number)
            key, attribute = parse_attribute(value)
            node.attributes[key] = attribute
    return node


@dataclass
class ValueInfo:
    name: str
    shape: list[int | str]  # ints for fixed sizes, names for symbolic ones
    elem_type: int = 1


def parse_value_info(buffer: memoryview) -> ValueInfo:
    info = ValueInfo("", [])
    for number, wire, value in fields(buffer):
        if number == 1:
            info.name = _text(wire, value, number)
        elif number == 2:  # TypeProto
            _expect(wire, 2, number)
            for type_number, type_wire, tensor_type in fields(value):
                if type_number != 1:
                    continue
                _expect(type_wire, 2, type_number)
                for tensor_number, tensor_wire, part in fields(tensor_type):
                    if tensor_number == 1:
                        info.elem_type = _varint(tensor_wire, part, tensor_number)
                    elif tensor_number == 2:  # TensorShapeProto
                        _expect(tensor_wire, 2, tensor_number)
                        for _, dim_wire, dim in fields(part):
                            _expect(dim_wire, 2, 1)
                            size: int | str = "?"
                            for dim_number, dim_value_wire, dim_value in fields(dim):
                                if dim_number == 1:
                                    size = _int64(_varint(dim_value_wire, dim_value, dim_number))
                                elif dim_number == 2:
                                    size = _text(dim_value_wire, dim_value, dim_number)
                            info.shape.append(size)
    return info


@dataclass
class Graph:
    nodes: list[Node] = field(default_factory=list)
    initializers: dict[str, np.ndarray] = field(default_factory=dict)
    inputs: list[ValueInfo] = field(default_factory=list)
    outputs: list[ValueInfo] = field(default_factory=list)
    name: str = ""


def parse_graph(buffer: memoryview) -> Graph:
    graph = Graph()
    for number, wire, value in fields(buffer):
        if number == 2:
            graph.name = _text(wire, value, number)
        elif number in (1, 5, 11, 12):
            _expect(wire, 2, number)
            if number == 1:
                graph.nodes.append(parse_node(value))
            elif number == 5:
                name, array = parse_tensor(value)
                graph.initializers[name] = array
            elif number == 11:
                graph.inputs.append(parse_value_info(value))
            else:
                graph.outputs.append(parse_value_info(value))
    return graph


@dataclass
class ModelProto:
    graph: Graph
    opsets: dict[str, int]
    metadata: dict[str, str]
    ir_version: int = 0


def parse_model(data: bytes) -> ModelProto:
    buffer = memoryview(data)
    graph, opsets, metadata, ir_version = None, {}, {}, 0
    try:
        for number, wire, value in fields(buffer):
            if number == 1:
                ir_version = _varint(wire, value, number)
            elif number == 7:
                _expect(wire, 2, number)
                graph = parse_graph(value)
            elif number == 8:
                _expect(wire, 2, number)
                domain, version = "", 0
                for opset_number, opset_wire, opset_value in fields(value):
                    if opset_number == 1:
                        domain = _text(opset_wire, opset_value, opset_number)
                    elif opset_number == 2:
                        version = _varint(opset_wire, opset_value, opset_number)
                opsets[domain] = version
            elif number == 14:
                _expect(wire, 2, number)
                key = text = ""
                for entry_number, entry_wire, entry_value in fields(value):
                    if entry_number == 1:
                        key = _text(entry_wire, entry_value, entry_number)
                    elif entry_number == 2:
                        text = _text(entry_wire, entry_value, entry_number)
                metadata[key] = text
    except (UnicodeDecodeError, struct.error, WireFormatError, RecursionError) as error:
        raise OnnxFormatError(f"not an ONNX model ({error})") from None
    if graph is None or not graph.nodes:
        raise OnnxFormatError("not an ONNX model (no graph with nodes)")
    return ModelProto(graph, opsets, metadata, ir_version)
