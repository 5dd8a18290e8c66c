"""The profiler's convention and the `mobilenets profile` / `models` commands."""

import json

import pytest
import torch
from torch import nn

from mobilenets import create_model, profile_module
from mobilenets.cli import main


def test_conv_and_linear_counting_convention():
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, 2, 1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, 1, 1, groups=8),
        nn.Conv2d(8, 16, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )
    p = profile_module(net, 32)
    assert [layer.madds for layer in p.layers] == [16 * 16 * 8 * 27, 16 * 16 * 8 * 9, 16 * 16 * 16 * 8, 160]
    assert [layer.kind for layer in p.layers] == ["conv", "depthwise", "pointwise", "linear"]
    assert p.params == (8 * 27 + 8) + 16 + (8 * 9 + 8) + (8 * 16 + 16) + (16 * 10 + 10)
    assert p.params_without_bn == p.params - 16


def test_separable_cost_is_one_over_n_plus_one_over_dk_squared():
    net = nn.Sequential(nn.Conv2d(512, 512, 3, 1, 1, groups=512), nn.Conv2d(512, 512, 1))
    (pair,) = profile_module(net, 14, in_chans=512).separable
    assert pair.ratio == pytest.approx(1 / 512 + 1 / 9, rel=1e-12)
    assert pair.predicted_ratio == 1 / 512 + 1 / 9


def test_v1_has_13_separable_layers_costing_about_an_eighth():
    pairs = profile_module(create_model("mobilenet_v1_100"), 224).separable
    assert len(pairs) == 13
    assert all(abs(p.ratio - p.predicted_ratio) < 1e-12 for p in pairs)
    assert min(p.ratio for p in pairs) > 0.11 and max(p.ratio for p in pairs) < 0.18


def test_profile_restores_training_mode():
    model = create_model("mobilenet_v3_small_050").train()
    profile_module(model, 64)
    assert model.training


def test_cli_profile_default_prints_the_talks_table(capsys):
    assert main(["profile"]) == 0
    out = capsys.readouterr().out
    rows = {line.split("  ")[0]: line.split() for line in out.splitlines()}
    assert rows["1.0 MobileNet-224"][2:] == ["70.6%", "568.7", "569", "4,231,976", "4.2M"]
    assert rows["GoogleNet"][1:] == ["69.8%", "1,582.7", "1550", "6,998,552", "6.8M"]
    assert rows["VGG 16"][2:] == ["71.5%", "15,470.3", "15300", "138,357,544", "138M"]
    assert "the printed 15300M matches its 13 convolutions alone" in out


def test_cli_profile_json_and_per_layer(capsys):
    assert main(["profile", "mobilenet_v3_small_100", "vgg16", "--resolution", "160", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [d["name"] for d in data] == ["mobilenet_v3_small_100", "vgg16"]
    assert {"name", "resolution", "params", "madds"} <= set(data[0]) and data[0]["resolution"] == 160
    assert data[0]["params"] == 2_542_856
    assert main(["profile", "mobilenet_v1_100", "--per-layer"]) == 0
    out = capsys.readouterr().out
    last_pair = [line.split() for line in out.splitlines() if line.startswith("blocks.12.depthwise.conv +")]
    assert last_pair == [
        ["blocks.12.depthwise.conv", "+", "blocks.12.pointwise.conv", "3x3", "1024", "0.1121", "0.1121"]
    ]


def test_cli_profile_any_module(capsys):
    assert main(["profile", "torchvision.models:resnet18"]) == 0
    assert "11,689,512" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["profile", "mobilenet_v3_smal"], "unknown model 'mobilenet_v3_smal'; did you mean"),
        (
            ["profile", "mobilenet_v2_100", "--resolution", "16"],
            "--resolution 16 is too small for mobilenet_v2_100: at least 32",
        ),
        (["profile", "nosuch.module:net"], "cannot load 'nosuch.module:net'"),
    ],
)
def test_cli_errors(capsys, argv, message):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_cli_models_lists_the_zoo(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "mobilenet_v3_large_075" in out and "3,993,528" in out and "154.6" in out
    assert main(["models", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 22


def test_forward_intermediates_does_not_change_the_output():
    model = create_model("mobilenet_v2_050").eval()
    x = torch.randn(1, 3, 64, 64)
    assert model.forward_intermediates(x)[-1].shape == model.forward_features(x).shape
