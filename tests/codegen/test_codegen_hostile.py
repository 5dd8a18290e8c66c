"""The C generator given files nobody here wrote: strings and numbers from the model never become code,
shapes that disagree are refused before any C is written, NaN logits and hostile PPM headers do not
read out of bounds, and a user's folder is never written over."""

import json
import subprocess

import numpy as np
import pytest

from mobilenets.cli import main
from mobilenets.codegen import CodegenError, generate
from mobilenets.codegen.literals import LiteralError, c_comment, c_float, c_string

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

pytestmark = pytest.mark.usefixtures("c_toolchain")

HOSTILE_NAMES = [
    'quote"};int injected=1;//',
    "back\\slash\\",
    "trigraph??/",
    "??=define x ??( ??)",
    "close */ comment /*",
    "new\nline\r\ttab",
    "\\u0041 not an escape",
    "%s%n%d format",
    "caf\u00e9 \u2603 \U0001f600",
    "nul\x00byte",
    "1f",
]


def _save(path, nodes, inputs, outputs, initializers=(), metadata=None, opset=18):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path


def _pool_classifier(path, classes, weights=None, bias=None, metadata=None):
    """(1, 3, 4, 4) -> GlobalAveragePool -> Flatten -> Gemm: a classifier small enough to build in a second."""
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(classes, 3)).astype(np.float32) if weights is None else weights
    bias = np.zeros(classes, np.float32) if bias is None else bias
    return _save(
        path,
        [
            helper.make_node("GlobalAveragePool", ["x"], ["p"], name="pool"),
            helper.make_node("Flatten", ["p"], ["f"], name="flat"),
            helper.make_node("Gemm", ["f", "W", "b"], ["y"], name="fc", transB=1),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, classes])],
        [numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "b")],
        metadata,
    )


def _make(folder, target, strict=True):
    flags = {
        "model": "CFLAGS=-O3 -march=native -std=c99 -ffp-contract=fast -Wall -Wextra -Werror",
        "portable": "PORTABLE_CFLAGS=-O2 -std=c99 -pedantic -Wall -Wextra -Werror -DMOBILENETS_NO_VECTOR_EXTENSIONS",
    }[target]
    subprocess.run(
        ["make", "-s", "-B", target, flags], cwd=folder, check=True, capture_output=True, text=True
    )
    return folder / ("model_portable" if target == "portable" else "model")


def _top_k(binary, tmp_path, k, x=None):
    raw = tmp_path / "x.f32"
    (np.ones((1, 3, 4, 4), np.float32) if x is None else x).astype(np.float32).tofile(raw)
    return subprocess.run(
        [str(binary), "--raw", str(raw), "--top-k", str(k)], capture_output=True, check=True
    ).stdout


def test_literals_are_byte_safe():
    assert c_string('a"b\\c??/') == '"a\\042b\\134c\\077\\077/"'
    assert c_string("é1") == '"\\303\\2511"'  # three digits always: the '1' after stays a '1'
    assert c_comment("x */ y??/\n") == "x____y____"
    assert c_float(1) == "1.0f" and c_float(1e-5) == "1e-05f" and c_float(np.float32(0.5)) == "0.5f"
    assert c_float(float("-inf"), allow_infinite=True) == "(-HUGE_VALF)"
    assert c_float(1e39, allow_infinite=True) == "HUGE_VALF"
    for bad in (float("nan"), float("inf"), "1", None, True):
        with pytest.raises(LiteralError, match="value must be"):
            c_float(bad)


@pytest.mark.parametrize("target", ["model", "portable"])
def test_hostile_class_names_compile_and_print_back_exactly(target, tmp_path):
    """Each name, whatever its bytes, prints back exactly; -Wall -Wextra -Werror stay quiet under -std=c99
    (trigraphs on) and -pedantic; the source holds printable ASCII only."""
    classes = len(HOSTILE_NAMES)
    weights = np.zeros((classes, 3), np.float32)
    bias = np.linspace(1, 0, classes, dtype=np.float32)  # class i ranks i-th
    path = _pool_classifier(
        tmp_path / "m ??\\\nint evil; *.onnx",
        classes,
        weights,
        bias,
        {"class_names": json.dumps(HOSTILE_NAMES)},
    )
    generated = generate(path, tmp_path / "c")
    source = (generated.folder / "model.c").read_text() + (generated.folder / "model.h").read_text()
    assert all(ch == "\n" or 32 <= ord(ch) < 127 for ch in source)
    assert "injected" not in source.replace("injected=1;//", "")  # only inside the escaped literal
    printed = _top_k(_make(generated.folder, target), tmp_path, classes)
    for name in HOSTILE_NAMES:
        shown = name.encode().split(b"\x00")[0]  # C strings end at NUL, as printf shows them
        assert b"%  " + shown + b"\n" in printed, (name, printed)
    assert printed.index(b"quote") < printed.index(b"back") < printed.index(b"1f")


@pytest.mark.parametrize(
    "preprocessing, message",
    [
        ({"mean": ["0); exit(1); (", 0, 0]}, "preprocessing 'mean' must be a finite number"),
        ({"std": [1, 0, 1]}, "'std' must not contain 0"),
        ({"std": [1e999, 1, 1]}, "'std' must be a finite number"),
        ({"mean": [0, 0]}, "has 2 values for a 3-channel input"),
        ({"crop": "224"}, "'crop' must be a finite number"),
        ({"resize": 10**9}, "'resize' must be a whole number from 1 to 8192"),
        ({"crop": 300, "resize": 256}, "'crop' (300) is larger than 'resize' (256)"),
    ],
)
def test_hostile_preprocessing_is_refused_before_writing(preprocessing, message, tmp_path):
    path = _pool_classifier(tmp_path / "m.onnx", 2, metadata={"preprocessing": json.dumps(preprocessing)})
    with pytest.raises(CodegenError, match=rf"m\.onnx: .*{message.replace('(', '.').replace(')', '.')}"):
        generate(path, tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_class_names_of_the_wrong_type_are_refused(tmp_path):
    path = _pool_classifier(tmp_path / "m.onnx", 2, metadata={"class_names": json.dumps([1, 2])})
    with pytest.raises(CodegenError, match="'class_names' must be a JSON list of strings"):
        generate(path, tmp_path / "c")


def test_integer_means_and_infinite_clip_bounds_compile(tmp_path):
    """Numbers are spelled for C (1 -> 1.0f, inf -> HUGE_VALF); NaN attributes are refused."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])
    nodes = [
        helper.make_node("Clip", ["x", "lo", ""], ["c"], name="clip"),
        helper.make_node("GlobalAveragePool", ["c"], ["p"]),
        helper.make_node("Flatten", ["p"], ["y"]),
    ]
    lo = numpy_helper.from_array(np.array(-np.inf, np.float32), "lo")
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    meta = {"preprocessing": json.dumps({"mean": [1, 2, 3], "std": [1, 1, 1]})}
    path = _save(tmp_path / "clip.onnx", nodes, [x], [y], [lo], meta)
    generated = generate(path, tmp_path / "c")
    assert "(-HUGE_VALF), HUGE_VALF" in (generated.folder / "model.c").read_text()
    assert "model_mean[3] = {1.0f, 2.0f, 3.0f}" in (generated.folder / "model.c").read_text()
    _make(generated.folder, "portable")
    nodes[0] = helper.make_node("HardSigmoid", ["x"], ["c"], name="gate", alpha=float("nan"))
    path = _save(tmp_path / "nan.onnx", nodes, [x], [y], [], meta)
    with pytest.raises(CodegenError, match=r"node 'gate' \(HardSigmoid\): alpha must be finite, got nan"):
        generate(path, tmp_path / "c2")


def test_nan_logits_still_print_valid_classes(tmp_path):
    """Every logit NaN: the top-k picks valid indices (it read model_class_names[-1] before)."""
    path = _pool_classifier(
        tmp_path / "m.onnx",
        3,
        bias=np.full(3, np.nan, np.float32),
        metadata={"class_names": json.dumps(["a", "b", "c"])},
    )
    generated = generate(path, tmp_path / "c")
    for target in ("model", "portable"):
        lines = _top_k(_make(generated.folder, target), tmp_path, 3).decode().splitlines()
        assert sorted(line.split()[-1] for line in lines) == ["a", "b", "c"]
        assert all("nan" in line for line in lines)


def test_flatten_of_a_spatial_tensor_is_nchw_like_onnxruntime(tmp_path):
    """Flatten before pooling: ONNX means channel-major order; the arena holds NHWC."""
    ort = pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(1)
    conv_w = rng.normal(size=(4, 3, 1, 1)).astype(np.float32)
    fc_w = rng.normal(size=(5, 4 * 3 * 3)).astype(np.float32)
    path = _save(
        tmp_path / "flat.onnx",
        [
            helper.make_node("Conv", ["x", "cw"], ["c"], strides=[2, 2]),
            helper.make_node("Flatten", ["c"], ["f"]),
            helper.make_node("Gemm", ["f", "fw"], ["y"], transB=1),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])],
        [numpy_helper.from_array(conv_w, "cw"), numpy_helper.from_array(fc_w, "fw")],
    )
    from mobilenets.codegen import build_shared_library

    run = build_shared_library(path, tmp_path / "c")
    x = rng.normal(size=(1, 3, 6, 6)).astype(np.float32)
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(run(x), expected, rtol=1e-5, atol=1e-5)


def _conv_graph(tmp_path, weight_shape, input_shape=(1, 3, 8, 8), **attributes):
    w = np.zeros(weight_shape, np.float32)
    return _save(
        tmp_path / "conv.onnx",
        [helper.make_node("Conv", ["x", "w"], ["y"], name="bad_conv", **attributes)],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w")],
    )


@pytest.mark.parametrize(
    "weight_shape, input_shape, attributes, message",
    [
        ((4, 5, 3, 3), (1, 3, 8, 8), {}, r"weights \(4, 5, 3, 3\) expect 5 input channels, the input has 3"),
        ((3, 1, 3, 3), (1, 3, 8, 8), {"group": 2}, "grouped convolution with group=2"),
        ((4, 3, 9, 9), (1, 3, 8, 8), {}, "a 9x9 kernel does not fit the 8x8 input"),
        ((4, 3, 3, 3), (1, 3, 8, 8), {"strides": [0, 1]}, "strides must be 2 whole numbers >= 1"),
        ((4, 3, 3, 3), (1, 3, 8, 8), {"pads": [-5, 0, 0, 0]}, "pads must be 4 whole numbers >= 0"),
        (
            (4, 3, 3, 3),
            (1, 3, 8, 8),
            {"pads": [10**9, 0, 10**9, 0]},
            r"pads \[1000000000, 0, 1000000000, 0\] make a 2000000006x6 output; at most 16384 a side",
        ),
        ((4, 3, 3, 3), (1, 3, 8, 8), {"kernel_shape": [5, 5]}, "kernel_shape .5, 5. disagrees"),
        ((4, 3, 3, 3), (1, 3, 8), {}, "needs a 4-D NCHW image input"),
        ((4, 3, 3, 3), (1, 3, 100000, 8), {}, "dimension 2 = 100000 is outside 1..16384"),
        ((4, 3, 3, 3), (1, 3, 8, 8), {"foo": 1}, r"attribute\(s\) foo not supported"),
    ],
)
def test_shapes_that_disagree_are_refused(weight_shape, input_shape, attributes, message, tmp_path):
    path = _conv_graph(tmp_path, weight_shape, input_shape, **attributes)
    with pytest.raises(CodegenError, match=message):
        generate(path, tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_gemm_and_broadcasts_that_disagree_are_refused(tmp_path):
    with pytest.raises(
        CodegenError, match=r"node 'fc' \(Gemm\): input shape \(1, 3\) does not match B \(2, 5\)"
    ):
        generate(
            _pool_classifier(tmp_path / "g.onnx", 2, weights=np.zeros((2, 5), np.float32)), tmp_path / "c"
        )
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])
    path = _save(
        tmp_path / "mul.onnx",
        [
            helper.make_node("GlobalAveragePool", ["x"], ["p"]),
            helper.make_node("Flatten", ["p"], ["f"]),
            helper.make_node("Mul", ["x", "f"], ["y"], name="scale"),
        ],
        [x],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    with pytest.raises(CodegenError, match=r"broadcast \(1, 3, 4, 4\) with \(1, 3\) is not supported"):
        generate(path, tmp_path / "c")


@pytest.mark.parametrize(
    "nodes, message",
    [
        ([helper.make_node("Relu", ["nowhere"], ["y"], name="r")], r"input 0 \('nowhere'\) is not made"),
        (
            [
                helper.make_node("Relu", ["y"], ["z"], name="a"),
                helper.make_node("Relu", ["z"], ["y"], name="b"),
            ],
            r"node 'a' \(Relu\): input 0 \('y'\) is not made by an earlier node",
        ),
        ([helper.make_node("Relu", ["x"], [], name="r")], "needs exactly one output, has 0"),
        (
            [helper.make_node("Relu", ["x"], ["z"], name="r")],
            "the graph's first output is not made by any node",
        ),
        ([helper.make_node("Relu", ["x"], ["y"], name="r", domain="com.evil")], "op Relu is not supported"),
    ],
)
def test_graph_errors_name_the_node(nodes, message, tmp_path):
    path = _save(
        tmp_path / "g.onnx",
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    with pytest.raises(CodegenError, match=message):
        generate(path, tmp_path / "c")


@pytest.fixture(scope="module")
def pool_binary(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ppm")
    generated = generate(_pool_classifier(folder / "m.onnx", 2), folder / "c")
    return _make(generated.folder, "portable")


@pytest.mark.parametrize(
    "content, message",
    [
        (b"P6\n99999999999999999999 1\n255\n", "unsupported PPM header"),
        (b"P6\n2147483647 2147483647\n255\n", "unsupported PPM header"),
        (b"P6\n1000000 1000000\n255\n", "exceeds 64000000 pixels"),
        (b"P6\n4 4\n0\n", "unsupported PPM header"),
        (b"P6\n0 0\n255\n", "unsupported PPM header"),
        (b"P6\n4 4", "unsupported PPM header"),
        (b"P6\n4 4\n255\n\x00\x00", "truncated"),
    ],
)
def test_hostile_ppm_headers_are_refused(pool_binary, content, message, tmp_path):
    picture = tmp_path / "bad.ppm"
    picture.write_bytes(content)
    result = subprocess.run([str(pool_binary), str(picture)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and message in result.stderr, result.stderr


def test_a_users_folder_is_never_written_over(tmp_path, capsys):
    path = _pool_classifier(tmp_path / "m.onnx", 2)
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "Makefile").write_text("all:\n\techo mine\n")
    assert main(["compile-c", str(path), "-o", str(folder)]) == 2
    error = capsys.readouterr().err
    assert (
        "is not empty and was not written by compile-c (it holds Makefile)" in error
        and "--overwrite" in error
    )
    assert (folder / "Makefile").read_text() == "all:\n\techo mine\n" and len(list(folder.iterdir())) == 1
    # Our own output is regenerated in place; --overwrite replaces only our four files.
    assert main(["compile-c", str(path), "-o", str(tmp_path / "c")]) == 0
    assert main(["compile-c", str(path), "-o", str(tmp_path / "c")]) == 0
    (folder / "notes.txt").write_text("keep me")
    assert main(["compile-c", str(path), "-o", str(folder), "--overwrite"]) == 0
    assert (folder / "notes.txt").read_text() == "keep me" and "mobilenets" in (
        folder / "Makefile"
    ).read_text()
