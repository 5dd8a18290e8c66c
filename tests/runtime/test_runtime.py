"""The NumPy-only runner: parity with ONNX Runtime for every variant, torchvision's own exports, int8 QDQ
files, no torch / onnx / onnxruntime at run time, and errors that name the node and op."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import mobilenets
import mobilenets.data.demo
from mobilenets.deploy.export import export_onnx, probe_inputs
from mobilenets.runtime import OnnxFormatError, OnnxModel, UnsupportedOnnx

from parity import randomize_batchnorm
from small_runs import shapes_classifier_onnx

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


def _ort(path, x, optimized=True):
    options = ort.SessionOptions()
    if not optimized:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _relative(got, expected):
    return float(np.abs(got - expected).max() / np.abs(expected).max())


class _Exports:
    """name -> the ONNX path of that variant, exported on first use (conftest's variant_onnx)."""

    def __init__(self, get):
        self.get = get

    def __getitem__(self, name: str):
        return self.get(name)[1].path


@pytest.fixture(scope="module")
def exported(variant_onnx):
    """Every registered variant exported once at 64 px with calibrated BN, shared with the export tests."""
    return _Exports(variant_onnx)


@pytest.mark.parametrize("name", mobilenets.list_models())
def test_parity_with_onnxruntime_for_every_variant(exported, name):
    x = probe_inputs(2, 64, seed=4).numpy()
    expected = _ort(exported[name], x)
    got = OnnxModel(exported[name])(x)
    assert got.shape == expected.shape == (2, 1000)
    assert np.abs(expected - expected.mean(0)).max() / np.abs(expected).max() > 1e-2  # the input matters
    assert _relative(got, expected) < 1e-4


@pytest.mark.parametrize("factory", ["mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small"])
def test_torchvisions_own_exports_run(factory, tmp_path):
    torchvision = pytest.importorskip("torchvision")
    model = randomize_batchnorm(getattr(torchvision.models, factory)().eval(), seed=2, resolution=64)
    path = tmp_path / f"{factory}.onnx"
    torch.onnx.export(
        model,
        (torch.randn(1, 3, 96, 96),),
        str(path),
        dynamo=False,
        opset_version=18,
        input_names=["input"],
        dynamic_axes={"input": {0: "batch"}},
    )
    x = probe_inputs(2, 96, seed=5).numpy()
    assert _relative(OnnxModel(path)(x), _ort(path, x)) < 1e-4


def test_int8_qdq_files_match_onnxruntime_executing_the_graph(exported, tmp_path):
    from mobilenets.deploy.quantize import quantize

    images = tmp_path / "calibration"
    images.mkdir()
    for i in range(12):
        mobilenets.data.demo.image("train", i, size=64)[0].save(images / f"{i}.png")
    int8 = quantize(exported["mobilenet_v3_small_075"], tmp_path / "int8.onnx", images).path
    x = probe_inputs(3, 64, seed=6).numpy()
    got = OnnxModel(int8)(x)
    # The QDQ graph op by op, as the ONNX spec defines it. (ORT's optimised session fuses QDQ into integer
    # kernels that requantize with their own rounding, so on a random model its argmax can differ.)
    assert _relative(got, _ort(int8, x, optimized=False)) < 1e-4


def test_runs_where_torch_onnx_and_onnxruntime_cannot_be_imported(exported, tmp_path):
    x = probe_inputs(1, 64, seed=7).numpy()
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(f"""
        import sys
        for name in ("torch", "onnx", "onnxruntime", "torchvision", "PIL"):
            sys.modules[name] = None  # any import of these now fails
        import numpy as np
        from mobilenets.runtime import OnnxModel
        logits = OnnxModel({str(exported["mobilenet_v3_small_100"])!r})(np.load({str(tmp_path / "x.npy")!r}))
        np.save({str(tmp_path / "out.npy")!r}, logits)
        loaded = [m for m, module in sys.modules.items() if module is not None and m.split(".")[0] in ("torch", "onnx", "onnxruntime")]
        print(sorted(loaded))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    expected = _ort(exported["mobilenet_v3_small_100"], x)
    assert _relative(np.load(tmp_path / "out.npy"), expected) < 1e-4


def test_mobilenets_run_prints_the_top_k_with_class_names(tmp_path):
    model, path = shapes_classifier_onnx(tmp_path / "shapes.onnx", resolution=64, seed=3)
    picture = mobilenets.data.demo.image("val", 1, size=64)[0]
    ppm = tmp_path / "cross.ppm"
    picture.save(ppm)
    script = textwrap.dedent(f"""
        import sys
        for name in ("torch", "onnx", "onnxruntime", "PIL"):
            sys.modules[name] = None
        from mobilenets.cli import main
        raise SystemExit(main(["run", {str(path)!r}, {str(ppm)!r}, "--top-k", "3"]))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 3 and all(line.split()[-1] in mobilenets.data.demo.CLASSES for line in lines)
    # The same probabilities as the PyTorch model on the same (NumPy-preprocessed) pixels.
    from mobilenets.runtime.image import preprocess, read_image

    x = preprocess(read_image(ppm), OnnxModel(path).preprocessing, 64)
    with torch.no_grad():
        probabilities = model(torch.from_numpy(x)).softmax(1)[0]
    best = int(probabilities.argmax())
    assert lines[0].split()[-1] == model.class_names[best]
    assert float(lines[0].split()[0].rstrip("%")) == pytest.approx(100 * float(probabilities[best]), abs=0.01)


def test_unsupported_ops_and_attributes_name_the_node(tmp_path):
    from onnx import TensorProto, helper

    def save(node, name):
        graph = helper.make_graph(
            [node],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        )
        path = tmp_path / name
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
        return path

    with pytest.raises(
        UnsupportedOnnx, match=r"node 'lrn_1' \(LRN\): op LRN is not supported; supported ops: Add"
    ):
        OnnxModel(save(helper.make_node("LRN", ["x"], ["y"], name="lrn_1", size=3), "lrn.onnx"))
    with pytest.raises(
        UnsupportedOnnx, match=r"node 'flat' \(Flatten\): attribute\(s\) mystery not supported"
    ):
        OnnxModel(save(helper.make_node("Flatten", ["x"], ["y"], name="flat", mystery=1), "attr.onnx"))
    # `out` is a keyword the runner passes, not an attribute a node may carry.
    with pytest.raises(UnsupportedOnnx, match=r"node 'relu' \(Relu\): attribute\(s\) out not supported"):
        OnnxModel(save(helper.make_node("Relu", ["x"], ["y"], name="relu", out=1), "out.onnx"))
    pads = helper.make_node("Pad", ["x", "p"], ["y"], name="reflect_pad", mode="reflect")
    graph = helper.make_graph(
        [pads],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [helper.make_tensor("p", TensorProto.INT64, [8], [0, 0, 1, 1, 0, 0, 1, 1])],
    )
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(tmp_path / "pad.onnx")
    )
    with pytest.raises(
        UnsupportedOnnx, match=r"node 'reflect_pad' \(Pad\): Pad mode='reflect' is not supported"
    ):
        OnnxModel(tmp_path / "pad.onnx")(np.zeros((1, 3, 8, 8), np.float32))


def test_bad_files_and_inputs(exported, tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07 this is not protobuf at all \xff\xff\xff")
    with pytest.raises(OnnxFormatError, match=r"junk.onnx: not an ONNX model \(unsupported wire type 3\)"):
        OnnxModel(junk)
    model = OnnxModel(exported["mobilenet_v2_035"])
    with pytest.raises(ValueError, match=r"input 'input' needs channels = 3, got 1"):
        model(np.zeros((1, 1, 64, 64), np.float32))
    with pytest.raises(ValueError, match=r"input 'input' needs height = 64, got 96"):
        model(np.zeros((1, 3, 96, 64), np.float32))
    assert json.loads(json.dumps(model.preprocessing))["crop"] == 224


@pytest.mark.parametrize(
    "size, kernel, stride, dilation, pads",
    [
        ((23, 40), 3, 1, 1, (1, 1, 1, 1)),
        ((60, 50), 3, 2, 1, (0, 0, 1, 1)),  # TF "same": padding only after
        ((47, 47), 5, 2, 1, (2, 2, 2, 2)),
        ((30, 26), 5, 1, 2, (4, 4, 4, 4)),  # dilated, as with output_stride 8 / 16
        ((45, 43), 3, 2, 1, (1, 0, 1, 0)),  # odd size, asymmetric
        ((12, 12), 3, 1, 1, (1, 1, 1, 1)),  # few pixels: the einsum path
        ((120, 100), 3, 2, 1, (0, 0, 1, 1)),  # strided with an input over 2 MB: patches, not phases
    ],
)
def test_depthwise_conv_matches_torch_on_every_path(size, kernel, stride, dilation, pads):
    """The depthwise paths (phase-split rows for large maps, patches for small) against torch's conv2d."""
    from mobilenets.runtime.ops import Conv

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 24, *size), dtype=np.float32)
    w = rng.standard_normal((24, 1, kernel, kernel), dtype=np.float32)
    b = rng.standard_normal(24, dtype=np.float32)
    top, left, bottom, right = pads
    padded = torch.nn.functional.pad(torch.from_numpy(x), (left, right, top, bottom))
    expected = torch.nn.functional.conv2d(
        padded, torch.from_numpy(w), torch.from_numpy(b), stride=stride, dilation=dilation, groups=24
    ).numpy()
    for _ in range(2):  # the second call reuses the padded work buffers: their borders must still be zero
        got = Conv(x, w, b, group=24, pads=list(pads), strides=[stride] * 2, dilations=[dilation] * 2)
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


def test_work_buffers_stay_bounded_and_correct_across_many_shapes(monkeypatch):
    """A process that runs many resolutions must not keep every shape's buffers; dropping them must not
    change a result (rebuilt padded buffers start zero-filled again)."""
    from mobilenets.runtime import conv

    monkeypatch.setattr(conv, "SCRATCH_LIMIT", 60_000)  # a 40x40x8 map pads to 56 KB
    monkeypatch.setattr(conv._SCRATCH, "buffers", {}, raising=False)
    rng = np.random.default_rng(2)
    w = rng.standard_normal((8, 1, 3, 3), dtype=np.float32)
    for size in (40, 24, 33, 40, 17, 24):
        x = rng.standard_normal((1, 8, size, size), dtype=np.float32)
        expected = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), padding=1, groups=8)
        got = conv.Conv(x, w, group=8, pads=[1, 1, 1, 1])
        np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5, atol=1e-4)
        sizes = [b.nbytes for b in conv._SCRATCH.buffers.values()]
        assert sum(sizes) <= max(conv.SCRATCH_LIMIT, max(sizes))  # over the limit only by one big buffer


@pytest.mark.parametrize(
    "group, stride, pads", [(1, 2, (1, 1, 1, 1)), (2, 1, (0, 1, 0, 1)), (1, 1, (0, 0, 0, 0))]
)
def test_general_conv_matches_torch(group, stride, pads):
    """The im2col path: the stem (3 input channels, stride 2), grouped and unpadded convolutions."""
    from mobilenets.runtime.ops import Conv

    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 6, 19, 23), dtype=np.float32)
    w = rng.standard_normal((8, 6 // group, 3, 3), dtype=np.float32)
    b = rng.standard_normal(8, dtype=np.float32)
    top, left, bottom, right = pads
    padded = torch.nn.functional.pad(torch.from_numpy(x), (left, right, top, bottom))
    expected = torch.nn.functional.conv2d(
        padded, torch.from_numpy(w), torch.from_numpy(b), stride=stride, groups=group
    ).numpy()
    got = Conv(x, w, b, group=group, pads=list(pads), strides=[stride] * 2)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(
    "channels, out_channels, stride, pads, phases",
    [
        (8, 32, 1, (0, 0, 0, 0), 1),  # an expansion: the bias comes out of the product
        (8, 32, 1, (0, 0, 0, 0), 2),  # ... with its columns stored by phase
        (32, 8, 1, (0, 0, 0, 0), 1),  # a projection: the bias is added after
        (32, 8, 1, (0, 0, 0, 0), 2),  # ... but the input is copied anyway: inside the product
        (8, 12, 2, (1, 0, 0, 1), 1),  # padded and strided: copied anyway
    ],
)
def test_pointwise_conv_adds_its_bias_either_way(channels, out_channels, stride, pads, phases):
    from mobilenets.runtime.ops import Conv

    rng = np.random.default_rng(7)
    w = rng.standard_normal((out_channels, channels, 1, 1), dtype=np.float32)
    b = rng.standard_normal(out_channels, dtype=np.float32)
    for batch, width in ((2, 11), (1, 11), (2, 11)):  # the work buffer and its ones column, reused
        x = rng.standard_normal((batch, channels, 9, width), dtype=np.float32)
        top, left, bottom, right = pads
        padded = torch.nn.functional.pad(torch.from_numpy(x), (left, right, top, bottom))
        expected = torch.nn.functional.conv2d(padded, torch.from_numpy(w), torch.from_numpy(b), stride=stride)
        expected = expected.numpy()
        got = Conv(x, w, b, pads=list(pads), strides=[stride] * 2, column_phases=phases)
        if phases > 1:
            half = (expected.shape[3] + 1) // 2
            np.testing.assert_allclose(got[..., :half], expected[..., ::2], rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(got[..., half:], expected[..., 1::2], rtol=1e-5, atol=1e-5)
        else:
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def _framed(x, margin_rows):
    """``x`` (NCHW) as a 1x1 convolution with identity weights leaves it: between zero rows."""
    from mobilenets.runtime.ops import Conv

    c = x.shape[1]
    identity = np.eye(c, dtype=np.float32).reshape(c, c, 1, 1)
    return Conv(x, identity, margin_rows=margin_rows)


def _no_copying_paths(monkeypatch):
    from mobilenets.runtime import conv

    def refuse(*args, **kwargs):
        raise AssertionError("the depthwise input was copied instead of read in its frame")

    monkeypatch.setattr(conv, "_depthwise_rows", refuse)
    monkeypatch.setattr(conv, "_depthwise_patches", refuse)


@pytest.mark.parametrize(
    "channels, size, kernel, stride, dilation, pads",
    [
        (24, (23, 40), 3, 1, 1, (1, 1, 1, 1)),
        (24, (60, 50), 3, 2, 1, (0, 0, 1, 1)),  # TF "same": padding only after
        (24, (47, 47), 5, 2, 1, (2, 2, 2, 2)),
        (24, (30, 26), 5, 1, 2, (4, 4, 4, 4)),  # dilated
        (24, (45, 43), 3, 2, 1, (1, 0, 1, 0)),  # odd size, asymmetric
        (24, (7, 7), 5, 1, 1, (2, 2, 2, 2)),  # a map smaller than the window
        (256, (14, 13), 5, 2, 1, (2, 2, 2, 2)),  # wide: strided columns read directly
    ],
)
def test_depthwise_reads_a_framed_input_where_it_lies(
    monkeypatch, channels, size, kernel, stride, dilation, pads
):
    """A convolution's output laid out between zero rows is read in place (no padded copy), exactly."""
    from mobilenets.runtime.ops import Conv

    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, channels, *size), dtype=np.float32)
    w = rng.standard_normal((channels, 1, kernel, kernel), dtype=np.float32)
    b = rng.standard_normal(channels, dtype=np.float32)
    top, left, bottom, right = pads
    padded = torch.nn.functional.pad(torch.from_numpy(x), (left, right, top, bottom))
    expected = torch.nn.functional.conv2d(
        padded, torch.from_numpy(w), torch.from_numpy(b), stride=stride, dilation=dilation, groups=channels
    ).numpy()
    framed = _framed(x, margin_rows=max(top, bottom) + 1)
    assert framed.transpose(0, 2, 3, 1).base.shape == (
        2,
        (size[0] + 2 * (max(top, bottom) + 1)) * size[1],
        channels,
    )
    attributes = {"group": channels, "pads": list(pads), "strides": [stride] * 2, "dilations": [dilation] * 2}
    with monkeypatch.context() as patch:
        _no_copying_paths(patch)
        got = Conv(framed, w, b, **attributes)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
    # A frame too small for the padding, or one that no longer holds zeros: the copying paths, still exact.
    np.testing.assert_allclose(
        Conv(_framed(x, margin_rows=max(top, bottom)), w, b, **attributes), expected, rtol=1e-5, atol=1e-4
    )
    # Dirty the frame where the windows read it (the element just above each image and just below it): a
    # frame checked in place would then give wrong sums.
    full, above = framed.transpose(0, 2, 3, 1).base, (max(top, bottom) + 1) * size[1]
    full[:, above - 1, -1] = full[:, above + size[0] * size[1], 0] = 1.0
    np.testing.assert_allclose(Conv(framed, w, b, **attributes), expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(
    "channels, size, kernel, strides, pads",
    [
        (24, (23, 40), 3, (2, 2), (1, 1, 1, 1)),
        (24, (47, 47), 5, (2, 2), (2, 2, 2, 2)),  # odd width: phases of 24 and 23 columns
        (24, (45, 43), 3, (2, 2), (1, 0, 1, 0)),  # asymmetric: no padding after
        (24, (60, 50), 3, (2, 2), (0, 0, 1, 1)),  # TF "same": padding only after
        (24, (21, 30), 5, (1, 2), (2, 2, 2, 2)),  # strided along the row only
        (24, (9, 9), 5, (2, 2), (2, 2, 2, 2)),
        (256, (14, 13), 5, (2, 2), (2, 2, 2, 2)),
    ],
)
def test_strided_depthwise_reads_columns_stored_by_phase(monkeypatch, channels, size, kernel, strides, pads):
    """A 1x1 convolution that stores each row's columns by phase (even columns, then odd) feeds a strided
    depthwise convolution that reads exactly its output columns, in place, and matches torch; the same
    input outside a frame is put back in order and still exact."""
    from mobilenets.runtime.ops import Conv

    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, channels, *size), dtype=np.float32)
    identity = np.eye(channels, dtype=np.float32).reshape(channels, channels, 1, 1)
    w = rng.standard_normal((channels, 1, kernel, kernel), dtype=np.float32)
    b = rng.standard_normal(channels, dtype=np.float32)
    top, left, bottom, right = pads
    padded = torch.nn.functional.pad(torch.from_numpy(x), (left, right, top, bottom))
    expected = torch.nn.functional.conv2d(
        padded, torch.from_numpy(w), torch.from_numpy(b), stride=strides, groups=channels
    ).numpy()
    phased = Conv(x, identity, margin_rows=max(top, bottom) + 1, column_phases=strides[1])
    stored, natural = phased.transpose(0, 2, 3, 1), x.transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(stored[:, :, : (size[1] + 1) // 2], natural[:, :, ::2])
    np.testing.assert_array_equal(stored[:, :, (size[1] + 1) // 2 :], natural[:, :, 1::2])
    attributes = {"group": channels, "pads": list(pads), "strides": list(strides)}
    with monkeypatch.context() as patch:
        _no_copying_paths(patch)
        got = Conv(phased, w, b, input_column_phases=strides[1], **attributes)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
    unframed = Conv(x, identity, column_phases=strides[1])
    got = Conv(unframed, w, b, input_column_phases=strides[1], **attributes)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


def test_any_convolution_stores_columns_by_phase_when_asked():
    """The runner asks only 1x1 convolutions to store their columns by phase; any other convolution asked
    (the stem, a depthwise) reorders what it made, so the strided depthwise reading it is still exact."""
    from mobilenets.runtime.ops import Conv

    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 3, 30, 27), dtype=np.float32)
    stem = rng.standard_normal((8, 3, 3, 3), dtype=np.float32)
    depthwise = rng.standard_normal((8, 1, 3, 3), dtype=np.float32)
    natural = Conv(x, stem, pads=[1, 1, 1, 1], strides=[2, 2])
    assert natural.shape == (2, 8, 15, 14)  # 14 columns: phases of 7 and 7
    stored = Conv(x, stem, pads=[1, 1, 1, 1], strides=[2, 2], margin_rows=2, column_phases=2)
    np.testing.assert_array_equal(stored[..., :7], natural[..., ::2])
    np.testing.assert_array_equal(stored[..., 7:], natural[..., 1::2])
    after = Conv(natural, depthwise, group=8, pads=[1, 1, 1, 1])
    stored = Conv(natural, depthwise, group=8, pads=[1, 1, 1, 1], column_phases=2)
    np.testing.assert_array_equal(stored[..., :7], after[..., ::2])
    np.testing.assert_array_equal(stored[..., 7:], after[..., 1::2])
    with pytest.raises(NotImplementedError, match="columns stored by phase as the input of a non-depthwise"):
        Conv(stored, np.ones((4, 8, 1, 1), np.float32), input_column_phases=2)  # only a depthwise reads them
    strided = {"group": 8, "pads": [1, 1, 1, 1], "strides": [2, 2]}
    np.testing.assert_allclose(
        Conv(stored, depthwise, input_column_phases=2, **strided),
        Conv(after, depthwise, **strided),
        rtol=1e-6,
        atol=1e-6,
    )


def _phase_plan(model):
    """Node name -> the column-phase keywords the runner passes it (nodes without any left out)."""
    plan = {}
    for step in model._steps:
        keywords = {key: value for key, value in step[2].items() if key.endswith("column_phases")}
        if keywords:
            plan[step[-1].name] = keywords
    return plan


def test_columns_are_stored_by_phase_only_for_a_sole_strided_reader(tmp_path):
    """The runner stores a convolution's columns by phase only when a strided depthwise convolution is
    the one reader of it and of every activation on the way; a second reader keeps the natural order."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(5)
    channels = 8

    def weights(name, shape):
        return helper.make_tensor(name, TensorProto.FLOAT, shape, rng.standard_normal(shape).ravel().tolist())

    depthwise = {"group": channels, "kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [2, 2]}
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], name="expand_sole"),
        helper.make_node("HardSwish", ["a"], ["a_act"], name="act_sole"),
        helper.make_node("Conv", ["a_act", "dw1"], ["p"], name="dw_sole", **depthwise),
        helper.make_node("Conv", ["x", "w2"], ["b"], name="expand_shared"),
        helper.make_node("Relu", ["b"], ["b_act"], name="act_shared"),
        helper.make_node("Conv", ["b_act", "dw2"], ["q"], name="dw_shared", **depthwise),
        helper.make_node("ReduceMean", ["b_act"], ["b_mean"], name="second_reader", keepdims=1),
        helper.make_node("Add", ["p", "q"], ["s"], name="add"),
        helper.make_node("Mul", ["s", "b_mean"], ["y"], name="mul"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 15, 15])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [
            weights("w1", [channels, 4, 1, 1]),
            weights("w2", [channels, 4, 1, 1]),
            weights("dw1", [channels, 1, 3, 3]),
            weights("dw2", [channels, 1, 3, 3]),
        ],
    )
    path = tmp_path / "phases.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    model = OnnxModel(path)
    plan = _phase_plan(model)
    assert plan == {"expand_sole": {"column_phases": 2}, "dw_sole": {"input_column_phases": 2}}
    x = rng.standard_normal((1, 4, 15, 15), dtype=np.float32)
    np.testing.assert_allclose(model(x), _ort(path, x), rtol=1e-5, atol=1e-5)


def test_a_frame_counts_as_zero_only_when_every_bit_is_clear():
    """The frame check counts set bits: any value but +0.0 (NaN, a denormal, even -0.0) keeps a depthwise
    layer from reading its input in place."""
    from mobilenets.runtime.conv import _any_bits

    for dtype in (np.float32, np.float64, np.float16):
        frame = np.zeros((2, 7, 5), dtype)
        assert not _any_bits(frame[:, :3])
        for value in (np.nan, np.finfo(dtype).smallest_subnormal, -0.0, 1.0):
            frame[1, 2, 4] = value
            assert _any_bits(frame[:, :3]), (dtype, value)
            assert not _any_bits(frame[:, 3:])
            frame[1, 2, 4] = 0


@pytest.mark.parametrize("name", ["mobilenet_v2_100", "mobilenet_v3_large_100", "mobilenet_v3_small_100"])
def test_every_depthwise_layer_reads_its_input_in_place(exported, monkeypatch, name):
    """The runner lays each depthwise input out in a zero frame (through in-place activations), so no
    depthwise layer of a MobileNet copies its input into a padded buffer."""
    model = OnnxModel(exported[name])
    # The strided depthwise layers under 256 channels that a 1x1 convolution feeds read their input with
    # its columns stored by phase (V3-Small's first one reads the stem's output).
    phased = {"mobilenet_v2_100": 3, "mobilenet_v3_large_100": 3, "mobilenet_v3_small_100": 2}[name]
    planned = [sorted(keywords.items()) for keywords in _phase_plan(model).values()]
    assert sorted(planned) == [[("column_phases", 2)]] * phased + [[("input_column_phases", 2)]] * phased
    x = probe_inputs(2, 64, seed=5).numpy()
    expected = _ort(exported[name], x)
    with monkeypatch.context() as patch:
        _no_copying_paths(patch)
        got = model(x)
    assert _relative(got, expected) < 1e-4


def test_results_overwrite_inputs_only_when_nothing_else_reads_them(tmp_path):
    """In-place elementwise ops: never the caller's input, never a value a live view still shares."""
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),  # x is the caller's array
        helper.make_node("Identity", ["r"], ["alias"], name="alias"),  # shares r's memory
        helper.make_node("HardSwish", ["r"], ["h"], name="hswish"),  # r dies, but its alias lives on
        helper.make_node("Add", ["h", "alias"], ["s"], name="add"),  # h dies: written over
        helper.make_node("Clip", ["s", "low", "high"], ["c"], name="clip"),  # s dies: written over
        helper.make_node("Mul", ["scale", "c"], ["y"], name="mul"),  # scale is a weight: c is written over
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [
            helper.make_tensor("low", TensorProto.FLOAT, [], [-1.0]),
            helper.make_tensor("high", TensorProto.FLOAT, [], [2.5]),
            helper.make_tensor("scale", TensorProto.FLOAT, [1, 3, 1, 1], [0.5, -2.0, 3.0]),
        ],
    )
    path = tmp_path / "in_place.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    model = OnnxModel(path)
    plan = {step[-1].name: step[5] for step in model._steps}
    assert plan == {"relu": None, "alias": None, "hswish": None, "add": "h", "clip": "s", "mul": "c"}
    x = np.random.default_rng(0).standard_normal((1, 3, 4, 4), dtype=np.float32) * 3
    before = x.copy()
    scale = model.initializers["scale"].copy()
    got = model(x)
    np.testing.assert_array_equal(x, before)
    np.testing.assert_array_equal(model.initializers["scale"], scale)
    np.testing.assert_allclose(got, _ort(path, x), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(model(x), got)  # and again: nothing it keeps was overwritten


def test_prepared_convolutions_follow_the_input_shape(exported, monkeypatch):
    """Convolutions are prepared once per input shape and kept for the newest few shapes: a model run at
    alternating batch sizes matches ONNX Runtime every time and keeps no more than its limit."""
    from mobilenets.runtime import model as runner

    monkeypatch.setattr(runner, "PREPARED_SHAPES", 2)
    model = OnnxModel(exported["mobilenet_v3_small_100"])
    for batch in (1, 2, 1, 3, 2, 1):
        x = probe_inputs(batch, 64, seed=batch).numpy()
        assert _relative(model(x), _ort(exported["mobilenet_v3_small_100"], x)) < 1e-4
        assert len(model._prepared) <= 2
    assert [key[0][1] for key in model._prepared] == [(2, 3, 64, 64), (1, 3, 64, 64)]


def test_weight_layouts_are_made_once_per_weight_array(exported):
    """The transposed copies of 1x1 and classifier weights (with the bias as a row, for expansions) are
    shared by every prepared input shape and go when the model goes: a model with plans for two batch
    sizes holds one copy, not two."""
    import gc

    from mobilenets.runtime import conv

    gc.collect()
    before = set(conv._LAYOUTS)
    model = OnnxModel(exported["mobilenet_v3_small_100"])
    transposed = sum(
        (node.op_type == "Conv" and model.initializers[node.inputs[1]].shape[2:] == (1, 1))
        or (node.op_type == "Gemm" and node.attributes.get("transB", 0) == 1)
        for node in model.graph.nodes
    )
    # V3-Small: 40 pointwise convolutions (10 expand, 11 project, 18 squeeze-and-excite, the last 1x1 before
    # pooling) and the classifier's two layers.
    assert transposed == 42
    for batch in (1, 2):
        model(probe_inputs(batch, 64, seed=batch).numpy())
        added = set(conv._LAYOUTS) - before
        assert len(added) == transposed
    assert {array for key in added for array in key[1:]} <= {
        id(value) for value in model.initializers.values()
    }
    del model
    gc.collect()
    assert set(conv._LAYOUTS) == before
    # A convolution or Gemm run once (as an int8 file's are, with weights made anew on every call) uses the
    # weights as they are and keeps nothing.
    from mobilenets.runtime.ops import Conv, Gemm

    rng = np.random.default_rng(8)
    Conv(
        rng.standard_normal((1, 8, 5, 5), dtype=np.float32),
        rng.standard_normal((32, 8, 1, 1), dtype=np.float32),
    )
    Gemm(np.ones((1, 4), np.float32), np.ones((3, 4), np.float32), transB=1)
    assert set(conv._LAYOUTS) == before


def test_reduce_mean_prepared_once_keeps_the_specs_semantics():
    """ReduceMean resolves its axes once per input shape; each call still means what the spec says."""
    from mobilenets.runtime.ops import Conv, prepare_reduce_mean

    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 5, 4, 3), dtype=np.float32)
    channels_last = Conv(x, np.eye(5, dtype=np.float32).reshape(5, 5, 1, 1))  # NHWC memory, as in a model
    for data in (x, channels_last):
        spatial = prepare_reduce_mean(data, np.array([-1, 2]))
        for value in (data, data * 2):  # prepared once, run on new values of that shape
            np.testing.assert_allclose(spatial(value), value.mean(axis=(2, 3), keepdims=True), atol=1e-6)
    channels = prepare_reduce_mean(x, np.array([1]), keepdims=0)
    np.testing.assert_allclose(channels(x), x.mean(axis=1), rtol=1e-6)
    assert channels(x).shape == (2, 4, 3)
    kept = prepare_reduce_mean(x, np.array([], np.int64), noop_with_empty_axes=1)(x)
    np.testing.assert_array_equal(kept, x)
    assert not np.shares_memory(kept, x)  # the runner may write over an op's output in place
    np.testing.assert_allclose(prepare_reduce_mean(x, None)(x), x.mean(keepdims=True), rtol=1e-6)


@pytest.mark.parametrize("clip", ["ufunc", "np.clip"])
def test_relu_and_clip_keep_the_specs_semantics(monkeypatch, clip):
    """Relu goes through clip on floats (faster than maximum here): same values, NaN kept, ints too;
    through NumPy's clip ufunc or, where that is not found, np.clip."""
    from mobilenets.runtime import ops
    from mobilenets.runtime.ops import Clip, HardSigmoid, Relu

    assert isinstance(ops._CLIP, np.ufunc)  # found on the NumPy this project pins
    if clip == "np.clip":
        monkeypatch.setattr(ops, "_CLIP", np.clip)
    np.testing.assert_array_equal(Clip(np.arange(-3, 4)), np.arange(-3, 4))  # no bounds, ints
    np.testing.assert_array_equal(
        Clip(np.arange(-3, 4, dtype=np.int8), np.int8(0), np.int8(2)), [0, 0, 0, 0, 1, 2, 2]
    )
    np.testing.assert_allclose(HardSigmoid(np.array([-9, 0, 1, 9], np.float32)), [0, 0.5, 0.7, 1])

    x = np.array([np.nan, -np.inf, -1.5, -0.0, 0.25, 7.0, np.inf], np.float32)
    np.testing.assert_array_equal(Relu(x), [np.nan, 0, 0, 0, 0.25, 7.0, np.inf])
    assert Relu(x).dtype == np.float32
    np.testing.assert_array_equal(Relu(np.arange(-2, 3)), [0, 0, 0, 1, 2])
    assert Relu(np.arange(-2, 3)).dtype == np.int64
    six = np.array(6.0, np.float32)
    np.testing.assert_array_equal(Clip(x, np.array(0.0, np.float32), six), [np.nan, 0, 0, 0, 0.25, 6, 6])
    y = x.copy()
    assert Relu(y, out=y) is y  # the runner's in-place call writes over its input
    np.testing.assert_array_equal(y, Relu(x))


def test_lraspp_runs_in_the_numpy_runner(tmp_path):
    """LR-ASPP's graph (Resize for the bilinear upsampling, Shape, Sigmoid) within 1e-4 of ONNX Runtime
    and of PyTorch; `mobilenets run` says it is not a classifier instead of printing nonsense."""
    torch.manual_seed(0)
    model = mobilenets.create_model("lraspp_mobilenet_v3_small_050", num_classes=4).eval()
    model = randomize_batchnorm(model, seed=2, resolution=96)
    path = export_onnx(model, tmp_path / "seg.onnx", resolution=96).path
    x = probe_inputs(2, 96, seed=3).numpy()
    expected = _ort(path, x)
    got = OnnxModel(path)(x)
    assert got.shape == expected.shape == (2, 4, 96, 96)
    assert np.abs(expected - expected.mean(0)).max() / np.abs(expected).max() > 1e-2
    assert _relative(got, expected) < 1e-4
    with torch.no_grad():
        assert _relative(got, model(torch.from_numpy(x)).numpy()) < 1e-4
    picture = tmp_path / "p.ppm"
    mobilenets.data.demo.image("val", 0, size=96)[0].save(picture)
    from mobilenets.cli import main

    assert main(["run", str(path), str(picture)]) == 2


def test_lraspp_with_the_papers_regional_pooling_runs_in_the_numpy_runner(tmp_path):
    """V3 Figure 10's strided gate pooling exports to AveragePool (then Resize back to the map): the runner
    matches ONNX Runtime within 1e-4, and the gate really is regional (it differs from global pooling)."""
    torch.manual_seed(0)
    model = mobilenets.create_model(
        "lraspp_mobilenet_v3_small_050", num_classes=4, pool_kernel=(5, 5), pool_stride=(2, 3)
    ).eval()
    model = randomize_batchnorm(model, seed=4, resolution=128)
    path = export_onnx(model, tmp_path / "regional.onnx", resolution=128).path
    assert "AveragePool" in {node.op_type for node in __import__("onnx").load(str(path)).graph.node}
    x = probe_inputs(2, 128, seed=5).numpy()
    expected = _ort(path, x)
    assert _relative(OnnxModel(path)(x), expected) < 1e-4
    globally = mobilenets.create_model("lraspp_mobilenet_v3_small_050", num_classes=4).eval()
    globally.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert _relative(globally(torch.from_numpy(x)).numpy(), expected) > 1e-3


def test_ssdlite_exports_decoded_boxes_and_scores_and_runs_in_the_numpy_runner(tmp_path):
    """SSDLite exports with its boxes decoded (x1, y1, x2, y2 in input pixels) and softmax scores, checked
    in ONNX Runtime at export; the NumPy runner (Transpose, Gather, Unsqueeze, Exp, Softmax) gives both
    within 1e-4 of ONNX Runtime, and they match the model's own decoding in PyTorch."""
    from mobilenets.nn.detection import DecodedDetector

    torch.manual_seed(0)
    model = mobilenets.create_model("ssdlite_mobilenet_v3_small_050", num_classes=5, reduced_tail=True).eval()
    model = randomize_batchnorm(model, seed=6, resolution=160)
    report = export_onnx(model, tmp_path / "det.onnx", resolution=160)
    assert report.op_types["Softmax"] == 1 and report.op_types["Exp"] == 2
    x = probe_inputs(2, 160, seed=7).numpy()
    import onnxruntime as ort

    session = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["boxes", "scores"]
    boxes, scores = session.run(None, {"input": x})
    assert boxes.shape == (2, 6 * (10 * 10 + 5 * 5 + 3 * 3 + 2 * 2 + 1 + 1), 4) and scores.shape[-1] == 5
    assert np.abs(scores[0] - scores[1]).max() > 1e-3  # the scores depend on the input
    got_boxes, got_scores = OnnxModel(report.path).run(x)
    assert _relative(got_boxes, boxes) < 1e-4 and _relative(got_scores, scores) < 1e-4
    with torch.no_grad():
        torch_boxes, _ = DecodedDetector(model, 160)(torch.from_numpy(x))
    assert _relative(got_boxes, torch_boxes.numpy()) < 1e-4


def test_ssdlite_exports_with_nms_in_the_graph_and_the_runner_keeps_the_same_boxes(tmp_path, capsys):
    """``--nms``: ONNX's NonMaxSuppression appended (background sliced off, class index shifted back),
    checked at export against torchvision's NMS; the NumPy runner (Slice, NonMaxSuppression) keeps the
    same (image, class, box) rows as ONNX Runtime, and they are the detections of model.detect."""
    from mobilenets.deploy.onnx_nms import NmsSettings, reference_nms

    torch.manual_seed(0)
    model = mobilenets.create_model("ssdlite_mobilenet_v3_small_050", num_classes=4).eval()
    model = randomize_batchnorm(model, seed=3, resolution=128)
    settings = NmsSettings(iou_threshold=0.5, score_threshold=0.2, max_per_class=10_000)
    report = export_onnx(model, tmp_path / "nms.onnx", resolution=128, nms=settings)
    assert report.op_types["NonMaxSuppression"] == 1 and report.op_types["Slice"] == 1
    x = probe_inputs(2, 128, seed=9).numpy()
    import onnxruntime as ort

    session = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["boxes", "scores", "selected"]
    boxes, scores, selected = session.run(None, {"input": x})
    kept = {tuple(row) for row in selected.tolist()}
    assert len(kept) > 5 and {c for _, c, _ in kept} <= {1, 2, 3} and {i for i, _, _ in kept} == {0, 1}
    assert kept == reference_nms(boxes, scores, settings)
    got = OnnxModel(report.path).run(x)
    assert {tuple(row) for row in got[2].tolist()} == kept
    with torch.no_grad():
        detected = model.detect(
            torch.from_numpy(x),
            score_threshold=0.2,
            nms_threshold=0.5,
            candidates_per_class=10**6,
            max_detections=10**6,
        )
    for image in (0, 1):
        rows = sorted((c, i) for b, c, i in kept if b == image)
        expected = sorted(
            zip(detected[image]["labels"].tolist(), detected[image]["scores"].tolist(), strict=True)
        )
        assert [c for c, _ in rows] == sorted(c for c, _ in expected)
        assert sorted(float(scores[image, i, c]) for c, i in rows) == pytest.approx(
            sorted(s for _, s in expected), abs=1e-5
        )
    # `mobilenets run` (NumPy only) prints the kept boxes above the threshold in the image's pixels
    from mobilenets.cli import main
    from mobilenets.runtime.image import preprocess

    pixels = (np.kron(np.random.default_rng(4).random((8, 16, 3)), np.ones((16, 16, 1))) * 255).astype(
        np.uint8
    )
    image = tmp_path / "scene.ppm"
    image.write_bytes(b"P6 256 128 255\n" + pixels.tobytes())  # twice as wide as the model's input
    runner = OnnxModel(report.path)
    boxes, scores, selected = runner.run(preprocess(pixels, runner.preprocessing, 128, whole=True))
    expected = sorted(
        ((float(scores[0, i, c]), c, boxes[0, i] * [2, 1, 2, 1]) for _, c, i in selected.tolist()),
        key=lambda f: -f[0],
    )
    expected = [f for f in expected if f[0] > 0.3]
    assert main(["run", str(report.path), str(image), "--score-threshold", "0.3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(expected) > 0
    score, label, box = expected[0]
    assert lines[0] == f"{score:7.2%}  {label}  [{', '.join(f'{v:.1f}' for v in box)}]"
    with pytest.raises(ValueError, match=r"NMS IoU threshold must be in \[0, 1\], got 1.5"):
        NmsSettings(iou_threshold=1.5)
    classifier = mobilenets.create_model("mobilenet_v3_small_050")
    with pytest.raises(ValueError, match="--nms is for detection models"):
        export_onnx(classifier, tmp_path / "c.onnx", nms=settings)
