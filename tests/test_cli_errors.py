"""Every CLI command: a bad argument or a missing package is one line naming it, a non-zero exit, no
traceback, and nothing written."""

import importlib.util

import pytest
import torch

from mobilenets.cli import main


def _one_line_error(capsys, command: str) -> str:
    error = capsys.readouterr().err
    assert error.startswith(f"mobilenets {command}: error: ") and error.count("\n") == 1, error
    assert "Traceback" not in error
    return error


@pytest.mark.parametrize("opset", ["5", "99"])
def test_export_opset_out_of_range(opset, tmp_path, capsys):
    assert main(["export", "mobilenet_v3_small_050", "-o", str(tmp_path / "m.onnx"), "--opset", opset]) == 2
    assert f"opset must be from 11 to 23 (the exporter's range), got {opset}" in _one_line_error(
        capsys, "export"
    )
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(importlib.util.find_spec("executorch") is not None, reason="executorch is installed")
def test_executorch_without_the_package(tmp_path, capsys):
    assert (
        main(["export", "mobilenet_v3_small_050", "--format", "executorch", "-o", str(tmp_path / "m.pte")])
        == 2
    )
    assert "pip install executorch" in _one_line_error(capsys, "export")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_train_on_cuda_without_a_gpu(tmp_path, capsys):
    assert main(["train", "demo", "--out", str(tmp_path / "run"), "--device", "cuda"]) == 2
    assert "--device cuda: no CUDA GPU is available here; use --device cpu" in _one_line_error(
        capsys, "train"
    )
    assert not (tmp_path / "run").exists()


def test_quantize_checks_the_labelled_folder_before_writing(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from mobilenets.data import demo
    from mobilenets.deploy.export import export_onnx

    data = demo.write_dataset(tmp_path / "data", train_per_class=2, val_per_class=1, size=48)
    net = __import__("mobilenets").create_model("mobilenet_v3_small_050", num_classes=len(demo.CLASSES))
    onnx_path = export_onnx(net.eval(), tmp_path / "m.onnx", resolution=64).path
    (tmp_path / "empty" / "star").mkdir(parents=True)
    for labelled, message in (
        (tmp_path / "empty", "has class folders (star) but no files in them"),
        (tmp_path / "missing", ""),
    ):
        code = main(
            [
                "quantize",
                str(onnx_path),
                "--calibration",
                str(data / "train"),
                "--labelled",
                str(labelled),
                "-o",
                str(tmp_path / "q.onnx"),
            ]
        )
        assert code == 2 and message in _one_line_error(capsys, "quantize")
        assert not (tmp_path / "q.onnx").exists()
    assert main(["quantize", str(onnx_path), "--calibration", str(data / "train"), "-o", str(onnx_path)]) == 2
    assert "is the model being quantized" in _one_line_error(capsys, "quantize")


def test_bench_on_an_onnx_file_without_our_metadata(tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from mobilenets.deploy.export import export_onnx

    net = __import__("mobilenets").create_model("mobilenet_v3_small_050", num_classes=3)
    path = export_onnx(net.eval(), tmp_path / "m.onnx", resolution=64).path
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    onnx.save(proto, str(path))
    assert (
        main(
            [
                "bench",
                str(path),
                "--backends",
                "onnxruntime",
                "--batch",
                "1",
                "--runs",
                "2",
                "--resolution",
                "64",
            ]
        )
        == 0
    )
    assert "| onnxruntime | 1 |" in capsys.readouterr().out


def test_a_closed_pipe_is_not_an_error(monkeypatch):
    """`mobilenets models | head -1`: the reader leaves early; no traceback, exit 0."""

    class ClosedPipe:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass

    monkeypatch.setattr("sys.stdout", ClosedPipe())
    assert main(["models"]) == 0
