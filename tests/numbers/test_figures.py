"""The data behind each figure, asserted; and that the command writes real PNG files."""

import numpy as np
import pytest
import torch

import mobilenets
from mobilenets.cli import main
from mobilenets.data import demo
from mobilenets.deploy.bench import zoo_latency_plot
from mobilenets.numbers import figures

from parity import randomize_batchnorm


def test_separable_cost_is_one_over_n_plus_one_over_dk_squared():
    data = figures.separable_cost_data()
    assert len(data["layers"]) == 13
    n512 = [layer for layer in data["layers"] if layer["N"] == 512]
    assert len(n512) == 6 and all(
        layer["ratio"] == pytest.approx(1 / 512 + 1 / 9, rel=1e-12) for layer in n512
    )
    for k, curve in data["curves"].items():
        np.testing.assert_allclose(curve, 1 / data["channels"] + 1 / k**2)


def test_the_spiral_survives_wide_embeddings_and_not_narrow_ones():
    for seed in range(3):
        error = figures.manifold_data(seed=seed)["error"]
        assert error[30] < error[2] and error[15] < error[2] and error[2] > 0.2


def test_block_widths_are_read_from_the_modules():
    data = figures.blocks_data()
    assert [width for _, width, _ in data["residual"]] == [256, 64, 64, 256]
    assert [width for _, width, _ in data["inverted"]] == [24, 144, 144, 24]
    assert [act for _, _, act in data["inverted"]] == ["linear", "ReLU6", "ReLU6", "linear"]
    assert data["inverted_residual"] is True


def test_activation_curves_are_the_librarys_and_differences_are_small():
    data = figures.activations_data()
    x = data["x"]
    np.testing.assert_allclose(data["h_swish"], x * np.clip(x + 3, 0, 6) / 6, atol=1e-6)
    np.testing.assert_allclose(data["h_sigmoid"], np.clip(x + 3, 0, 6) / 6, atol=1e-6)
    assert 0.06 < data["max_sigmoid_diff"] < 0.08 and 0.13 < data["max_swish_diff"] < 0.15


def test_accuracy_points_are_the_registry():
    points = {p["name"]: p for p in figures.accuracy_madds_data()}
    assert len(points) == len(mobilenets.list_models())
    assert (points["mobilenet_v1_100"]["madds"], points["mobilenet_v1_100"]["top1"]) == (568_740_352, 70.6)
    assert points["mobilenet_v3_large_100"]["source"] == "V3 Table 9"


def test_se_gates_differ_between_images():
    torch.manual_seed(0)
    model = randomize_batchnorm(
        mobilenets.create_model("mobilenet_v3_small_100").eval(), seed=3, resolution=64
    )
    model.preprocessing = mobilenets.weights.preprocessing.Preprocessing(resize=112, crop=112)
    images = [demo.image("val", demo.CLASSES.index(kind))[0] for kind in ("circle", "star")]
    data = figures.se_gates_data(model, images)
    expanded = model.blocks[data["block"]].se.conv_expand.out_channels
    assert data["gates"].shape == (2, expanded)
    assert ((data["gates"] >= 0) & (data["gates"] <= 1)).all()
    assert data["mean_abs_difference"] > 1e-3
    with pytest.raises(ValueError, match="mobilenet_v2_050 has no squeeze-and-excite blocks"):
        figures.se_gates_data(mobilenets.create_model("mobilenet_v2_050"), images)


def test_figures_command_writes_pngs(tmp_path, capsys):
    assert main(["figures", "-o", str(tmp_path), "--no-latency", "--model", "mobilenet_v3_small_050"]) == 0
    names = {"separable_cost", "manifold", "blocks", "activations", "accuracy_madds", "se_gates"}
    for name in names:
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert all(name in printed for name in names)
    points = zoo_latency_plot(
        tmp_path / "latency.png", threads=2, names=["mobilenet_v3_small_035", "mobilenet_v1_025"]
    )
    assert [p["name"] for p in points] == ["mobilenet_v3_small_035", "mobilenet_v1_025"]
    assert all(p["median_ms"] > 0 for p in points) and (tmp_path / "latency.png").exists()
