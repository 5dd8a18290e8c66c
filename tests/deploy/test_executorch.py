"""ExecuTorch export (optional extra): XNNPACK-lowered .pte, fp32 and int8, checked with the ExecuTorch runtime.

Skipped where executorch is not installed (CI does not install it; see the README).
"""

import pytest
import torch

import mobilenets
from mobilenets.cli import main
from mobilenets.deploy.export import probe_inputs

from parity import randomize_batchnorm

pytest.importorskip("executorch")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return randomize_batchnorm(
        mobilenets.create_model("mobilenet_v3_small_075").eval(), seed=2, resolution=64
    )


def test_fp32_pte_matches_pytorch(model, tmp_path):
    from mobilenets.deploy.executorch import export_executorch, run_pte

    report = export_executorch(model, tmp_path / "m.pte", resolution=96)
    assert report.relative_diff < 1e-4 and report.delegated_ops >= 1
    assert set(report.undelegated_ops) <= {"_to_dim_order_copy"}  # only the input layout copy stays outside
    x = probe_inputs(1, 96, seed=3)
    with torch.no_grad():
        expected = model(x)
    got = run_pte(tmp_path / "m.pte", x)
    assert float((got - expected).abs().max() / expected.abs().max()) < 1e-4


def test_int8_pte_is_smaller_and_agrees_on_a_trained_model(tmp_path):
    from mobilenets.data.folders import eval_transform, load_image, scan
    from mobilenets.deploy.executorch import export_executorch, run_pte

    from small_runs import train_small_demo

    run = train_small_demo(tmp_path / "run")
    trained, _ = mobilenets.load(run / "best.safetensors")
    fp32 = export_executorch(trained, tmp_path / "fp32.pte")
    int8 = export_executorch(trained, tmp_path / "int8.pte", quantize=True)
    assert fp32.relative_diff < 1e-4 and int8.quantized
    assert (tmp_path / "int8.pte").stat().st_size < 0.4 * (tmp_path / "fp32.pte").stat().st_size
    _, samples = scan(run / "demo-data" / "val")
    transform = eval_transform(48, trained.preprocessing)
    agree = 0
    for path, _ in samples:
        x = transform(load_image(path))[None]
        agree += int(run_pte(tmp_path / "fp32.pte", x).argmax() == run_pte(tmp_path / "int8.pte", x).argmax())
    assert agree / len(samples) >= 0.9


def test_cli_export_executorch(tmp_path, capsys):
    assert (
        main(
            [
                "export",
                "mobilenet_v1_025",
                "--format",
                "executorch",
                "-o",
                str(tmp_path / "v1.pte"),
                "--resolution",
                "64",
            ]
        )
        == 0
    )
    assert "XNNPACK delegate; ExecuTorch runtime vs PyTorch" in capsys.readouterr().out
