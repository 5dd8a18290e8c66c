"""ONNX export parity for every variant, fuse(), int8 quantization, OpenVINO, the bench harness, errors."""

import json

import numpy as np
import pytest
import torch

import mobilenets
import mobilenets.data.demo
from mobilenets.cli import main
from mobilenets.deploy.export import ExportError, OnnxSession, export_onnx, probe_inputs, read_metadata
from mobilenets.nn.fuse import fuse

from parity import randomize_batchnorm

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

STANDARD_OPS = {
    "Conv",
    "Relu",
    "Clip",
    "HardSwish",
    "HardSigmoid",
    "Mul",
    "Add",
    "ReduceMean",
    "GlobalAveragePool",
    "Flatten",
    "Gemm",
}


def _trained_like(name, **options):
    """Random weights with BN statistics that make the logits depend on the input."""
    torch.manual_seed(0)
    return randomize_batchnorm(mobilenets.create_model(name, **options).eval(), seed=1, resolution=64)


# A second resolution for one variant per family (the 64 px export of every variant is shared with the
# runtime tests; exports take seconds each).
SECOND_RESOLUTION = {
    "mobilenet_v1_025",
    "mobilenet_v2_140",
    "mobilenet_v3_large_100",
    "mobilenet_v3_small_075",
    "mobilenet_v3_small_minimal_100",
}


@pytest.mark.parametrize("name", mobilenets.list_models())
def test_export_parity_for_every_variant(name, variant_onnx, tmp_path):
    model, report = variant_onnx(name)
    reports = [report]
    if name in SECOND_RESOLUTION:
        reports.append(export_onnx(model, tmp_path / "96.onnx", resolution=96))
    for report in reports:
        assert report.relative_diff < 1e-4 and set(report.op_types) <= STANDARD_OPS
        assert "BatchNormalization" not in report.op_types
        session = OnnxSession(report.path)
        for batch in (1, 3):
            x = probe_inputs(batch, report.resolution, seed=batch)
            with torch.no_grad():
                expected = model(x).numpy()
            got = session(x.numpy())
            assert got.shape == (batch, 1000)
            assert np.abs(got - expected).max() / np.abs(expected).max() < 1e-4


def test_same_padding_exports_as_plain_convs(tmp_path):
    model = _trained_like("mobilenet_v3_large_075", padding="same")
    report = export_onnx(model, tmp_path / "same.onnx", resolution=96)
    assert set(report.op_types) <= STANDARD_OPS and "Pad" not in report.op_types
    assert report.relative_diff < 1e-4


def test_metadata_travels_with_the_file(tmp_path):
    model = _trained_like("mobilenet_v3_small_050")
    model.class_names = [f"class {i}" for i in range(1000)]
    export_onnx(model, tmp_path / "m.onnx", resolution=64)
    info = read_metadata(tmp_path / "m.onnx")
    assert info.class_names[:2] == ["class 0", "class 1"] and info.resolution == 64 and info.in_chans == 3
    assert (
        info.preprocessing == mobilenets.weights.preprocessing.Preprocessing()
        and info.arch == "mobilenet_v3_small_050"
    )
    proto = onnx.load(str(tmp_path / "m.onnx"))
    assert proto.opset_import[0].version == 18
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_a_failed_check_leaves_no_file(tmp_path):
    with pytest.raises(
        ExportError, match="ONNX Runtime disagrees with PyTorch: .* exceeds 1e-30; the file was not written"
    ):
        export_onnx(_trained_like("mobilenet_v1_025"), tmp_path / "x.onnx", resolution=64, tolerance=1e-30)
    assert list(tmp_path.iterdir()) == []


def test_errors_for_wrong_inputs_and_non_onnx_files(tmp_path):
    export_onnx(_trained_like("mobilenet_v2_035"), tmp_path / "m.onnx", resolution=64)
    session = OnnxSession(tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="m.onnx expects 3 input channels, got 1"):
        session(np.zeros((1, 1, 64, 64), np.float32))
    with pytest.raises(
        ValueError, match="m.onnx was exported for 64x64 inputs, got 96x96; export again with --resolution 96"
    ):
        session(np.zeros((1, 3, 96, 96), np.float32))
    with pytest.raises(ValueError, match=r"m.onnx expects input of shape \(N, C, H, W\), got \(3, 64, 64\)"):
        session(np.zeros((3, 64, 64), np.float32))
    fake = tmp_path / "fake.onnx"
    fake.write_text("this is not a model")
    with pytest.raises(ValueError, match="fake.onnx is not an ONNX model"):
        read_metadata(fake)
    with pytest.raises(ValueError, match="resolution 16 is too small: this network needs at least 32"):
        export_onnx(_trained_like("mobilenet_v2_035"), tmp_path / "small.onnx", resolution=16)


def test_fuse_folds_batchnorm_and_keeps_the_outputs():
    model = _trained_like("mobilenet_v3_small_075")
    fused = fuse(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the original is untouched
    x = probe_inputs(2, 96)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), rtol=1e-4, atol=1e-4)


def test_int8_runs_and_keeps_agreement(demo_onnx, tmp_path):
    from mobilenets.deploy.quantize import quantize

    from conftest import demo_validation_inputs

    logits = OnnxSession(demo_onnx / "model.onnx")(demo_validation_inputs(demo_onnx))
    assert logits.std(0).mean() > 0.05  # the model answers each image (agreement means something)

    report = quantize(
        demo_onnx / "model.onnx",
        tmp_path / "int8.onnx",
        demo_onnx / "demo-data" / "train",
        labelled=demo_onnx / "demo-data" / "val",
    )
    assert report.calibration_images == 20 * len(mobilenets.data.demo.CLASSES)
    # A six-epoch model's logits sit close together (top-1 near chance), so quantization noise flips some
    # argmaxes; the trained demo model keeps 99.7% (benchmarks/results/deploy.md).
    assert report.agreement >= 0.85 and report.labelled_agreement >= 0.85
    assert abs(report.int8_top1 - report.fp32_top1) <= 0.1
    proto = onnx.load(str(tmp_path / "int8.onnx"))
    ops = {n.op_type for n in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    meta = {p.key: p.value for p in proto.metadata_props}
    assert (
        json.loads(meta["class_names"]) == list(mobilenets.data.demo.CLASSES)
        and "int8 QDQ" in meta["quantization"]
    )
    assert (tmp_path / "int8.onnx").stat().st_size < 0.5 * (demo_onnx / "model.onnx").stat().st_size
    # 7-bit weights by default: no-VNNI x86 kernels saturate int16 pair sums of full-range products.
    assert "weight-bits=7" in meta["quantization"] and _largest_int8_weight(proto) == 64
    se = quantize(
        demo_onnx / "model.onnx",
        tmp_path / "se.onnx",
        demo_onnx / "demo-data" / "train",
        keep_float=("/se/",),
        reduce_range=False,
    )
    assert se.kept_float and all("/se/" in name for name in se.kept_float)
    assert _largest_int8_weight(onnx.load(str(se.path))) == 127


def test_quantize_cli_reports_agreement_and_weight_bits(demo_onnx, tmp_path, capsys):
    out = tmp_path / "cli.int8.onnx"
    args = [
        "quantize",
        str(demo_onnx / "model.onnx"),
        "--calibration",
        str(demo_onnx / "demo-data" / "train"),
    ]
    options = ["--max-images", "12", "--percentile", "99.99", "--full-range-weights", "-o", str(out)]
    assert main([*args, *options]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}: int8 QDQ (8-bit weights), calibrated on 12 images (percentile)" in printed
    assert "top-1 agreement with fp32 on the calibration images: " in printed
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert "weight-bits=8" in meta["quantization"]
    assert main([*args, "--percentile", "999", "-o", str(tmp_path / "never.onnx")]) == 2
    error = capsys.readouterr().err
    assert "mobilenets quantize: error: percentile must be above 50 and at most 100, got 999.0" in error
    assert not (tmp_path / "never.onnx").exists()


def _largest_int8_weight(proto) -> int:
    weights = [
        onnx.numpy_helper.to_array(t) for t in proto.graph.initializer if t.data_type == onnx.TensorProto.INT8
    ]
    return max(int(np.abs(w.astype(np.int32)).max()) for w in weights if w.size > 1)


def test_calibration_images_cover_every_class_folder():
    from mobilenets.deploy.quantize import spread

    files = [f"{c}/{i:03d}.jpg" for c in mobilenets.data.demo.CLASSES for i in range(50)]
    picked = spread(files, 12)
    assert len(picked) == 12 and picked[0] == files[0] and picked[-1] == files[-1]
    assert {p.split("/")[0] for p in picked} == set(mobilenets.data.demo.CLASSES)  # not 12 circles
    assert spread(files[:5], 12) == files[:5]
    with pytest.raises(ValueError, match="max_images must be at least 1, got 0"):
        spread(files, 0)


def test_openvino_runs_our_onnx_at_fp32_parity(tmp_path):
    pytest.importorskip("openvino")
    from mobilenets.deploy.bench import openvino_compile

    model = _trained_like("mobilenet_v3_small_100")
    export_onnx(model, tmp_path / "m.onnx", resolution=96)
    compiled = openvino_compile(tmp_path / "m.onnx", threads=2, precision="f32")
    x = probe_inputs(3, 96)
    got = compiled({0: x.numpy()})[0]
    with torch.no_grad():
        expected = model(x).numpy()
    assert np.abs(got - expected).max() / np.abs(expected).max() < 1e-4


def test_bench_cli_reports_every_backend(tmp_path, capsys):
    args = [
        "bench",
        "mobilenet_v3_small_050",
        "--backends",
        "torch,torch-fused,onnxruntime",
        "--batch",
        "1,2",
        "--resolution",
        "64",
        "--runs",
        "3",
        "--json",
    ]
    assert main(args) == 0
    data = json.loads(capsys.readouterr().out)
    assert [(t["backend"], t["batch"]) for t in data["timings"]] == [
        ("torch", 1),
        ("torch", 2),
        ("torch-fused", 1),
        ("torch-fused", 2),
        ("onnxruntime", 1),
        ("onnxruntime", 2),
    ]
    assert all(t["runs"] >= 3 and t["median_ms"] > 0 and t["gmacs_per_s"] > 0 for t in data["timings"])
    assert data["machine"]["threads"] == 2 and "onnxruntime" in data["machine"]
    assert (
        main(
            [
                "bench",
                "mobilenet_v3_small_050",
                "--backends",
                "tensorrt",
                "--batch",
                "1",
                "--resolution",
                "64",
            ]
        )
        == 2
    )
    assert "unknown backend 'tensorrt'" in capsys.readouterr().err


def test_cli_export(tmp_path, capsys):
    out = tmp_path / "cli.onnx"
    assert main(["export", "mobilenet_v1_025", "-o", str(out), "--resolution", "64"]) == 0
    printed = capsys.readouterr().out
    assert "checked with ONNX Runtime: max difference" in printed and "limit 1e-4" in printed and out.exists()
