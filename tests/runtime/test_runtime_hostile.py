"""The NumPy runner given files nobody here wrote: malformed protobuf, broken graphs, opsets whose meaning
differs, and hostile images all get an error naming what is wrong, never a hang, a huge allocation or a
silently different answer."""

import json

import numpy as np
import pytest

from mobilenets.cli import main
from mobilenets.runtime import OnnxFormatError, OnnxModel, UnsupportedOnnx
from mobilenets.runtime.image import read_image
from mobilenets.runtime.protobuf import parse_model

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _model(nodes, inputs, outputs, initializers=(), opset=18, metadata=None):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return model.SerializeToString()


def _info(name, elem=TensorProto.FLOAT, shape=None):
    return helper.make_tensor_value_info(name, elem, shape)


# -- the protobuf reader ------------------------------------------------------------------------------


def test_a_string_sent_as_a_varint_is_refused_without_allocating():
    """op_type (a string) as a varint of 10**12: bytes(10**12) would have asked for a terabyte."""
    node = _varint(4 << 3 | 0) + _varint(10**12)
    data = _field(7, _field(1, node))
    with pytest.raises(OnnxFormatError, match="field 4 has wire type 0, expected 2"):
        parse_model(data)


def _tensor(data_type, dims, raw=None, floats=(), ints=()):
    """A TensorProto as a hostile file holds it (onnx.helper would refuse to make these)."""
    tensor = TensorProto(name="w", data_type=data_type, dims=dims)
    tensor.float_data.extend(floats)
    tensor.int32_data.extend(ints)
    if raw is not None:
        tensor.raw_data = raw
    return tensor


@pytest.mark.parametrize(
    "tensor, message",
    [
        (_tensor(TensorProto.FLOAT, [1 << 20, 1 << 20], b""), "declares 1,099,511,627,776 elements"),
        (_tensor(TensorProto.FLOAT, [4], b"\0" * 12), "needs 16 bytes of float32, the file holds 12"),
        (_tensor(TensorProto.FLOAT, [3], floats=[1.0, 2.0]), "needs 3 values, the file holds 2"),
        (_tensor(TensorProto.FLOAT, [-1], floats=[1.0]), "negative dimension"),
        (_tensor(TensorProto.FLOAT8E4M3FN, [2], ints=[1, 2]), "data type float8e4m3fn is not supported"),
        (_tensor(TensorProto.INT4, [2], ints=[1]), "data type int4 is not supported"),
        (_tensor(TensorProto.BFLOAT16, [2], ints=[1, 2]), "data type bfloat16 is not supported"),
    ],
)
def test_tensors_whose_sizes_or_types_do_not_hold_are_refused(tensor, message):
    data = _model([helper.make_node("Relu", ["x"], ["y"])], [_info("x")], [_info("y")], [tensor])
    with pytest.raises(OnnxFormatError, match=message):
        OnnxModel(data)


def test_truncated_and_garbage_files_are_format_errors(tmp_path):
    good = _model([helper.make_node("Relu", ["x"], ["y"])], [_info("x", shape=[2])], [_info("y")])
    for cut in (1, 5, len(good) // 2, len(good) - 1):
        with pytest.raises(OnnxFormatError):
            OnnxModel(good[:cut])
    with pytest.raises(OnnxFormatError, match="truncated fixed-width field"):
        parse_model(_varint(7 << 3 | 2) + _varint(2) + _varint(2 << 3 | 5) + b"\x00")
    (tmp_path / "junk.onnx").write_bytes(b"\xff" * 64)
    assert main(["run", str(tmp_path / "junk.onnx"), str(tmp_path / "junk.onnx")]) == 2


# -- graphs -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "nodes, outputs, message",
    [
        (
            [helper.make_node("Relu", ["nowhere"], ["y"], name="r")],
            ["y"],
            "node 'r' .Relu.: input 'nowhere' is not made",
        ),
        (
            [
                helper.make_node("Relu", ["z"], ["y"], name="a"),
                helper.make_node("Relu", ["y"], ["z"], name="b"),
            ],
            ["y"],
            "node 'a' .Relu.: input 'z' is not made by an earlier node",
        ),
        ([helper.make_node("Relu", ["x"], [], name="r")], ["y"], "node 'r' .Relu.: has no outputs"),
        ([helper.make_node("Relu", ["x"], ["x"], name="r")], ["x"], "output 'x' is already defined"),
        (
            [helper.make_node("Relu", ["x"], ["z"], name="r")],
            ["y"],
            "graph output 'y' is not made by any node",
        ),
    ],
)
def test_broken_graphs_name_the_node(nodes, outputs, message):
    data = _model(nodes, [_info("x", shape=[2])], [_info(o) for o in outputs])
    with pytest.raises(OnnxFormatError, match=message):
        OnnxModel(data)


# -- opsets and semantics -----------------------------------------------------------------------------


def test_softmax_means_what_the_declared_opset_says():
    """Before opset 13 Softmax normalises the input seen as a 2-D matrix (axis 1 by default); from 13 along
    one axis (default -1). Checked against ONNX Runtime at each opset (onnx.reference applies the newest
    meaning to every opset)."""
    ort = pytest.importorskip("onnxruntime")
    x = np.random.default_rng(0).normal(size=(2, 3, 4)).astype(np.float32)
    for opset in (11, 13):
        data = _model(
            [helper.make_node("Softmax", ["x"], ["y"])],
            [_info("x", shape=[2, 3, 4])],
            [_info("y")],
            opset=opset,
        )
        expected = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        got = OnnxModel(data).run({"x": x})[0]
        np.testing.assert_allclose(got, expected, rtol=1e-6)
    old = OnnxModel(_model([helper.make_node("Softmax", ["x"], ["y"])], [_info("x")], [_info("y")], opset=11))
    new = OnnxModel(_model([helper.make_node("Softmax", ["x"], ["y"])], [_info("x")], [_info("y")], opset=13))
    assert not np.allclose(old.run({"x": x})[0], new.run({"x": x})[0])  # the two meanings really differ


@pytest.mark.parametrize(
    "op, opset, message",
    [
        ("HardSwish", 13, "HardSwish does not exist before opset 14; the model declares 13"),
        ("Relu", 29, "declares opset 29; this runner knows opsets 1 to 28"),
    ],
)
def test_ops_outside_the_declared_opset_are_refused(op, opset, message):
    with pytest.raises(UnsupportedOnnx, match=message):
        OnnxModel(_model([helper.make_node(op, ["x"], ["y"])], [_info("x")], [_info("y")], opset=opset))


def test_a_model_without_a_default_opset_is_refused():
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [_info("x")], [_info("y")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("com.other", 1)])
    with pytest.raises(OnnxFormatError, match="declares no opset for the default ONNX domain"):
        OnnxModel(model.SerializeToString())


def test_integer_division_truncates_and_scalars_stay_scalars():
    data = _model(
        [
            helper.make_node("Div", ["a", "b"], ["q"]),
            helper.make_node("ReduceMean", ["f"], ["m"], keepdims=0),
        ],
        [_info("a", TensorProto.INT32, [4]), _info("b", TensorProto.INT32, [4]), _info("f", shape=[3])],
        [_info("q", TensorProto.INT32), _info("m")],
    )
    quotient, mean = OnnxModel(data).run(
        {
            "a": np.array([7, -7, 7, -7], np.int32),
            "b": np.array([2, 2, -2, -2], np.int32),
            "f": np.ones(3, np.float32),
        }
    )
    assert quotient.dtype == np.int32 and quotient.tolist() == [3, -3, -3, 3]
    assert mean.shape == () and mean == 1.0


def test_quantize_linear_honours_output_dtype_and_refuses_float8():
    def model(output_dtype):
        return OnnxModel(
            _model(
                [helper.make_node("QuantizeLinear", ["x", "s"], ["q"], output_dtype=output_dtype)],
                [_info("x", shape=[3])],
                [_info("q", TensorProto.INT8)],
                [numpy_helper.from_array(np.array(0.5, np.float32), "s")],
                opset=21,
            )
        )

    q = model(TensorProto.INT8).run({"x": np.array([-100.0, -1.25, 1.0], np.float32)})[0]
    assert q.dtype == np.int8 and q.tolist() == [-128, -2, 2]
    with pytest.raises(
        UnsupportedOnnx, match="output_dtype 17 .only uint8, int8, uint16, int16. is not supported"
    ):
        model(TensorProto.FLOAT8E4M3FN).run({"x": np.ones(3, np.float32)})


def test_inputs_of_an_unsupported_or_wrong_type_are_refused():
    data = _model(
        [helper.make_node("Identity", ["x"], ["y"])], [_info("x", TensorProto.FLOAT8E5M2, [2])], [_info("y")]
    )
    with pytest.raises(UnsupportedOnnx, match="input 'x': element type float8e5m2 is not supported"):
        OnnxModel(data).run({"x": np.zeros(2, np.uint8)})
    data = _model(
        [helper.make_node("Identity", ["x"], ["y"])], [_info("x", TensorProto.INT64, [2])], [_info("y")]
    )
    with pytest.raises(ValueError, match="input 'x' must be int64, got float32"):
        OnnxModel(data).run({"x": np.zeros(2, np.float32)})


def test_hostile_metadata_is_a_clear_error():
    data = _model(
        [helper.make_node("Relu", ["x"], ["y"])],
        [_info("x")],
        [_info("y")],
        metadata={"preprocessing": json.dumps({"crop": 0}), "class_names": "{not json"},
    )
    model = OnnxModel(data)
    with pytest.raises(ValueError, match="'crop' must be a whole number from 1 to 8192, got 0"):
        _ = model.preprocessing
    with pytest.raises(ValueError, match="metadata 'class_names' is not valid JSON"):
        _ = model.class_names


# -- images -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, message",
    [
        (b"P6\n4", "truncated PPM/PGM header"),
        (b"P6\n4 4\n", "truncated PPM/PGM header"),
        (b"P6 # a comment without an end", "truncated PPM/PGM header"),
        (b"P6\n4 4\n0\n" + b"\0" * 48, "maxval 0: width and height must be at least 1, maxval 1..65535"),
        (b"P6\n0 0\n255\n", "0x0, maxval 255"),
        (b"P6\n-4 4\n255\n", "malformed PPM/PGM header"),
        (b"P6\n99999999999999999999 1\n255\n", "malformed PPM/PGM header"),
        (b"P6\n100000 100000\n255\n", "100000x100000 exceeds 64,000,000 pixels"),
        (b"P6\n4 4\n255\n" + b"\0" * 47, "truncated: 4x4 needs 48 bytes of pixels, has 47"),
        (b"P5\n2 2\n65535\n" + b"\0" * 7, "truncated: 2x2 needs 8 bytes"),
    ],
)
def test_hostile_pnm_files_are_refused(content, message, tmp_path):
    path = tmp_path / "bad.ppm"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        read_image(path)


def test_pnm_maxval_scales_and_16_bit_reads(tmp_path):
    path = tmp_path / "grey.pgm"
    path.write_bytes(b"P5\n2 1\n# comment\n65535\n" + np.array([0, 65535], ">u2").tobytes())
    assert read_image(path)[0, :, 0].tolist() == [0, 255]
    path.write_bytes(b"P6\n1 1\n15\n\x0f\x00\x07")
    assert read_image(path)[0, 0].tolist() == [255, 0, 119]


def test_a_huge_image_is_refused_before_it_is_decoded(tmp_path):
    """A bilevel PNG of 81M pixels is ~1 MB on disk but 243 MB as RGB: refused from its header."""
    from PIL import Image

    path = tmp_path / "bomb.png"
    Image.new("1", (9000, 9000)).save(path)
    with pytest.raises(ValueError, match="9000x9000 exceeds 64,000,000 pixels"):
        read_image(path)


def test_cli_run_reports_a_truncated_ppm_in_one_line(tmp_path, capsys):
    model = tmp_path / "m.onnx"
    model.write_bytes(
        _model([helper.make_node("Relu", ["x"], ["y"])], [_info("x", shape=[1, 3, 8, 8])], [_info("y")])
    )
    (tmp_path / "cut.ppm").write_bytes(b"P6\n8 8\n255\n\x00")
    assert main(["run", str(model), str(tmp_path / "cut.ppm")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("mobilenets run: error: ") and "cut.ppm: truncated" in error
    assert error.count("\n") == 1


def test_reduce_mean_with_the_axes_attribute_before_opset_18():
    """Before 18 the axes are an attribute (what exports at opset 11-17 write), from 18 an input."""
    ort = pytest.importorskip("onnxruntime")
    x = np.random.default_rng(2).normal(size=(2, 3, 4, 5)).astype(np.float32)
    node = helper.make_node("ReduceMean", ["x"], ["y"], axes=[2, 3], keepdims=1)
    data = _model([node], [_info("x", shape=[2, 3, 4, 5])], [_info("y")], opset=13)
    expected = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(OnnxModel(data).run({"x": x})[0], expected, rtol=1e-6)
    with pytest.raises(UnsupportedOnnx, match=r"attribute\(s\) axes not supported"):
        OnnxModel(_model([node], [_info("x")], [_info("y")], opset=18))
