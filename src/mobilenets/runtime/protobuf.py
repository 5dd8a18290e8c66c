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
        elif wire == 5:
            value = buffer[position : position + 4]
            position += 4
        elif wire == 1:
            value = buffer[position : position + 8]
            position += 8
        else:
            raise WireFormatError(f"unsupported wire type {wire}")
        yield number, wire, value


def _int64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _packed_varints(value) -> list[int]:
    out, position = [], 0
    while position < len(value):
        number, position = read_varint(value, position)
        out.append(_int64(number))
    return out


def _repeated_ints(wire: int, value) -> list[int]:
    return _packed_varints(value) if wire == 2 else [_int64(value)]


def _repeated_floats(wire: int, value) -> list[float]:
    if wire == 2:
        return list(np.frombuffer(value, dtype="<f4"))
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
            data_type = value
        elif number == 4:
            floats += _repeated_floats(wire, value)
        elif number in (5, 7, 11):  # int32_data (also int8/uint8/int16/bool/fp16), int64_data, uint64_data
            ints += _repeated_ints(wire, value)
        elif number == 8:
            name = bytes(value).decode()
        elif number == 9:
            raw = value
        elif number == 10:
            doubles += (
                list(np.frombuffer(value, dtype="<f8")) if wire == 2 else [struct.unpack("<d", value)[0]]
            )
        elif number == 14 and value == 1:
            raise OnnxFormatError(
                f"tensor {name!r} keeps its data in an external file, which is not supported"
            )
    if data_type not in DTYPES:
        raise OnnxFormatError(f"tensor {name!r}: data type {data_type} is not supported")
    dtype = np.dtype(DTYPES[data_type]).newbyteorder("<")
    if raw is not None:
        array = np.frombuffer(raw, dtype=dtype).copy()
    elif floats:
        array = np.array(floats, dtype=dtype)
    elif doubles:
        array = np.array(doubles, dtype=dtype)
    elif data_type == 10:  # float16 stored as raw uint16 bit patterns in int32_data
        array = np.array(ints, dtype=np.uint16).view(np.float16)
    else:
        array = np.array(ints, dtype=dtype)
    return name, array.astype(dtype.newbyteorder("="), copy=False).reshape(dims)


def parse_attribute(buffer: memoryview):
    name, kind = "", 0
    values: dict[str, object] = {"floats": [], "ints": [], "strings": []}
    for number, wire, value in fields(buffer):
        if number == 1:
            name = bytes(value).decode()
        elif number == 20:
            kind = value
        elif number == 2:
            values["f"] = struct.unpack("<f", value)[0]
        elif number == 3:
            values["i"] = _int64(value)
        elif number == 4:
            values["s"] = bytes(value).decode(errors="replace")
        elif number == 5:
            values["t"] = parse_tensor(value)[1]
        elif number == 7:
            values["floats"] += _repeated_floats(wire, value)
        elif number == 8:
            values["ints"] += _repeated_ints(wire, value)
        elif number == 9:
            values["strings"].append(bytes(value).decode(errors="replace"))
        elif number == 6:
            values["g"] = True  # sub-graphs (If / Loop) are not supported; the runner reports the op
    by_kind = {1: "f", 2: "i", 3: "s", 4: "t", 5: "g", 6: "floats", 7: "ints", 8: "strings"}
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
    for number, _, value in fields(buffer):
        if number == 1:
            node.inputs.append(bytes(value).decode())
        elif number == 2:
            node.outputs.append(bytes(value).decode())
        elif number == 3:
            node.name = bytes(value).decode()
        elif number == 4:
            node.op_type = bytes(value).decode()
        elif number == 7:
            node.domain = bytes(value).decode()
        elif number == 5:
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
    for number, _, value in fields(buffer):
        if number == 1:
            info.name = bytes(value).decode()
        elif number == 2:  # TypeProto
            for type_number, _, tensor_type in fields(value):
                if type_number != 1:
                    continue
                for tensor_number, _, part in fields(tensor_type):
                    if tensor_number == 1:
                        info.elem_type = part
                    elif tensor_number == 2:  # TensorShapeProto
                        for _, _, dim in fields(part):
                            size: int | str = "?"
                            for dim_number, _, dim_value in fields(dim):
                                size = dim_value if dim_number == 1 else bytes(dim_value).decode()
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
    for number, _, value in fields(buffer):
        if number == 1:
            graph.nodes.append(parse_node(value))
        elif number == 2:
            graph.name = bytes(value).decode()
        elif number == 5:
            name, array = parse_tensor(value)
            graph.initializers[name] = array
        elif number == 11:
            graph.inputs.append(parse_value_info(value))
        elif number == 12:
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
        for number, _, value in fields(buffer):
            if number == 1:
                ir_version = value
            elif number == 7:
                graph = parse_graph(value)
            elif number == 8:
                domain, version = "", 0
                for opset_number, _, opset_value in fields(value):
                    if opset_number == 1:
                        domain = bytes(opset_value).decode()
                    elif opset_number == 2:
                        version = opset_value
                opsets[domain] = version
            elif number == 14:
                key = text = ""
                for entry_number, _, entry_value in fields(value):
                    if entry_number == 1:
                        key = bytes(entry_value).decode()
                    elif entry_number == 2:
                        text = bytes(entry_value).decode()
                metadata[key] = text
    except (UnicodeDecodeError, struct.error, WireFormatError) as error:
        raise OnnxFormatError(f"not an ONNX model ({error})") from None
    if graph is None or not graph.nodes:
        raise OnnxFormatError("not an ONNX model (no graph with nodes)")
    return ModelProto(graph, opsets, metadata, ir_version)
