"""LR-ASPP (V3 Section 6.4): torchvision's counts and logits, every family, the atrous conventions."""

import numpy as np
import pytest
import torch

import mobilenets
from mobilenets.cli import main
from mobilenets.nn.segmentation import LRASPP

from parity import randomize_batchnorm, structured_inputs

segmentation = pytest.importorskip("torchvision.models.segmentation")


def _torchvision_lraspp(num_classes: int):
    torch.manual_seed(0)
    model = segmentation.lraspp_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=num_classes
    )
    return randomize_batchnorm(model.eval(), seed=2, resolution=96)


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def test_the_counts_are_torchvisions():
    """3,221,538 parameters at 21 classes and 2.086 G multiply-adds at 520 x 520 (torchvision's table)."""
    model = mobilenets.create_model("lraspp_mobilenet_v3_large")
    reference = segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in reference.parameters())
    profile = mobilenets.profile_module(model, 520)
    assert profile.params == 3_221_538
    assert round(profile.madds / 1e9, 3) == 2.086
    assert model.num_classes == 21 and model.arch == "lraspp_mobilenet_v3_large_100"


def test_torchvision_weights_give_torchvisions_masks(tmp_path):
    reference = _torchvision_lraspp(5)
    x = structured_inputs(3, 96, seed=3)
    with torch.no_grad():
        expected = reference(x)["out"]
    assert _relative(expected - expected.mean(0), expected) > 1e-2  # the input matters
    converted = mobilenets.convert(reference, "torchvision").model.eval()
    with torch.no_grad():
        got = converted(x)
    assert got.shape == (3, 5, 96, 96) and _relative(got, expected) < 1e-4
    # From a state-dict file through the CLI, and back through the native checkpoint.
    torch.save(reference.state_dict(), tmp_path / "lraspp.pth")
    args = [
        "convert",
        str(tmp_path / "lraspp.pth"),
        "--from",
        "torchvision",
        "--arch",
        "lraspp_mobilenet_v3_large",
    ]
    assert main([*args, "-o", str(tmp_path / "lraspp.safetensors")]) == 0
    loaded, _ = mobilenets.load(tmp_path / "lraspp.safetensors")
    assert isinstance(loaded, LRASPP) and loaded.config["atrous_style"] == "torchvision"
    with torch.no_grad():
        assert _relative(loaded.eval()(x), expected) < 1e-4


def test_the_atrous_convention_matters():
    """torchvision dilates the block that gives up its stride; TF-Slim keeps its rate. The same weights
    under the other convention give other masks, so the convention travels with the weights."""
    converted = mobilenets.convert(_torchvision_lraspp(3), "torchvision").model.eval()
    slim = mobilenets.create_model("lraspp_mobilenet_v3_large", num_classes=3).eval()
    slim.load_state_dict(converted.state_dict())
    x = structured_inputs(2, 96, seed=4)
    with torch.no_grad():
        assert _relative(slim(x), converted(x)) > 1e-3
    dilations = [block.depthwise.conv.dilation[0] for block in converted.blocks[-3:]]
    slim_dilations = [block.depthwise.conv.dilation[0] for block in slim.blocks[-3:]]
    assert dilations == [2, 2, 2] and slim_dilations == [1, 2, 2]


@pytest.mark.parametrize(
    "name",
    [
        "lraspp_mobilenet_v1_025",
        "lraspp_mobilenet_v2_035",
        "lraspp_mobilenet_v3_small_050",
        "lraspp_mobilenet_v3_large_minimal",
    ],
)
@pytest.mark.parametrize("output_stride", [16, 8])
def test_every_family_segments_at_the_input_resolution(name, output_stride):
    model = mobilenets.create_model(name, num_classes=4, output_stride=output_stride).eval()
    x = torch.randn(2, 3, 80, 112)
    low, high = [], []
    model.blocks[model.low_index].register_forward_hook(lambda m, i, o: low.append(o.shape))
    model.last_conv.register_forward_hook(lambda m, i, o: high.append(o.shape))
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 4, 80, 112)
    assert low[0][-2:] == (10, 14)  # the 1/8 tap
    assert high[0][-2:] == (80 // output_stride, 112 // output_stride)


def test_segmentation_options_are_checked():
    with pytest.raises(ValueError, match="LRASPP needs a backbone at output_stride 16 or 8"):
        mobilenets.nn.registry.build_segmentation_model("lraspp_mobilenet_v2_100", output_stride=32)
    with pytest.raises(ValueError, match="num_classes must be an integer >= 1"):
        mobilenets.create_model("lraspp_mobilenet_v2_100", num_classes=0)
    with pytest.raises(ValueError, match="unknown model 'mobilenet_v9'"):
        mobilenets.create_model("lraspp_mobilenet_v9")
    with pytest.raises(ValueError, match="atrous_style must be one of"):
        mobilenets.create_model("lraspp_mobilenet_v2_100", atrous_style="tf")
    with pytest.raises(ValueError, match="weights for segmentation models come from a checkpoint"):
        mobilenets.create_model("lraspp_mobilenet_v3_large", weights="torchvision")


def test_a_segmentation_checkpoint_round_trips(tmp_path):
    model = mobilenets.create_model("lraspp_mobilenet_v3_small_075", num_classes=3, segmentation_channels=64)
    model = randomize_batchnorm(model.eval(), seed=5, resolution=64)
    mobilenets.save(model, tmp_path / "seg.safetensors", class_names=["sky", "road", "car"])
    loaded, _ = mobilenets.load(tmp_path / "seg.safetensors")
    x = structured_inputs(2, 64, seed=6)
    with torch.no_grad():
        np.testing.assert_array_equal(loaded.eval()(x).numpy(), model(x).numpy())
    assert loaded.class_names == ["sky", "road", "car"] and loaded.segmentation_channels == 64


def test_deeplabv3_is_torchvisions():
    """DeepLabv3 (the V2 paper's segmentation head): torchvision's 11,029,328 parameters and 10.452 G
    multiply-adds at 520 with its auxiliary head, and its masks from converted weights."""
    model = mobilenets.create_model("deeplabv3_mobilenet_v3_large", aux_classifier=True)
    profile = mobilenets.profile_module(model, 520)
    assert profile.params == 11_029_328 and round(profile.madds / 1e9, 3) == 10.452
    torch.manual_seed(0)
    reference = segmentation.deeplabv3_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=4, aux_loss=True
    )
    reference = randomize_batchnorm(reference.eval(), seed=2, resolution=96)
    converted = mobilenets.convert(reference, "torchvision").model.eval()
    x = structured_inputs(3, 96, seed=3)
    with torch.no_grad():
        expected = reference(x)
        out, aux = converted.forward_with_aux(x)
    assert _relative(expected["out"] - expected["out"].mean(0), expected["out"]) > 1e-2
    assert _relative(out, expected["out"]) < 1e-4 and _relative(aux, expected["aux"]) < 1e-4
    assert converted.config["aux_classifier"] is True


def test_deeplabv3_on_any_variant_and_its_options():
    model = mobilenets.create_model(
        "deeplabv3_mobilenet_v2_035", num_classes=3, segmentation_channels=64
    ).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 72, 88)).shape == (1, 3, 72, 88)
    assert model.aux is None and model.head[0].project[0].out_channels == 64
    with pytest.raises(ValueError, match="aux_classifier is a DeepLabv3 option"):
        mobilenets.create_model("lraspp_mobilenet_v2_035", aux_classifier=True)
    with pytest.raises(ValueError, match="is not a segmentation model"):
        mobilenets.nn.registry.build_segmentation_model("mobilenet_v2_035")


@pytest.mark.parametrize("family", ["large", "small"])
def test_the_reduced_tail_is_torchvisions(family):
    """V3's RF2 (Sections 6.3-6.4): the last stage at half width, as torchvision's reduced_tail=True."""
    import torchvision

    ours = mobilenets.create_model(f"mobilenet_v3_{family}_100", reduced_tail=True)
    reference = getattr(torchvision.models, f"mobilenet_v3_{family}")(reduced_tail=True)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in reference.parameters())
    assert ours.num_features == {"large": 480, "small": 288}[family]
    assert ours.config["reduced_tail"] is True
    assert "reduced_tail" not in mobilenets.create_model(f"mobilenet_v3_{family}_100").config


def test_table_7_rows_with_the_reduced_tail(tmp_path):
    """V3 Table 7 (Cityscapes, 19 classes, 1024 x 2048): LR-ASPP with RF2 and F=128. The paper prints
    1.51M / 9.74B (Large) and 0.47M / 2.90B (Small); this count (every conv, BN included, the last 1x1
    conv kept, global pooling) gives the figures below, within 16% / 10% (docs/numbers.md)."""
    large = mobilenets.create_model("lraspp_mobilenet_v3_large", num_classes=19, reduced_tail=True)
    small = mobilenets.create_model("lraspp_mobilenet_v3_small", num_classes=19, reduced_tail=True)
    rows = {
        name: mobilenets.profile_module(model.eval(), (1024, 2048))
        for name, model in [("L", large), ("S", small)]
    }
    assert (rows["L"].params, round(rows["L"].madds / 1e9, 2)) == (1_746_878, 9.92)
    assert (rows["S"].params, round(rows["S"].madds / 1e9, 2)) == (515_614, 2.83)
    mobilenets.save(small, tmp_path / "rf2.safetensors")
    loaded, _ = mobilenets.load(tmp_path / "rf2.safetensors")
    assert loaded.config["reduced_tail"] is True and loaded.high_channels == 288


def test_the_reduced_tail_has_no_imagenet_weights():
    with pytest.raises(ValueError, match="reduced_tail=True has none"):
        mobilenets.create_model("mobilenet_v3_large_100", weights="torchvision", reduced_tail=True)
    with pytest.raises(ValueError, match="reduced_tail must be True or False"):
        mobilenets.create_model("mobilenet_v2_100", reduced_tail="yes")


def test_the_papers_regional_gate_pooling(tmp_path):
    """V3 Figure 10 pools the gate 49x49 at stride (16, 20); no weights change, so torchvision's
    weights load into either, and small maps (kernel clamped) pool globally."""
    glob = mobilenets.create_model("lraspp_mobilenet_v3_small_075", num_classes=3)
    glob = randomize_batchnorm(glob.eval(), seed=7, resolution=96)
    regional = mobilenets.create_model(
        "lraspp_mobilenet_v3_small_075", num_classes=3, pool_kernel=(4, 6), pool_stride=(2, 3)
    ).eval()
    regional.load_state_dict(glob.state_dict())
    x = structured_inputs(1, 64, seed=3)
    with torch.no_grad():
        np.testing.assert_allclose(regional(x).numpy(), glob(x).numpy(), atol=1e-5)  # 4x4 map: global
        wide = torch.nn.functional.interpolate(structured_inputs(1, 96, seed=4), size=(128, 256))
        assert (regional(wide) - glob(wide)).abs().max() > 1e-3  # an 8x16 map: 3x4 regions
    assert regional.config["pool_kernel"] == [4, 6] and regional.config["pool_stride"] == [2, 3]
    mobilenets.save(regional, tmp_path / "regional.safetensors")
    loaded, _ = mobilenets.load(tmp_path / "regional.safetensors")
    assert loaded.head.scale[0].kernel == (4, 6) and loaded.head.scale[0].stride == (2, 3)
    with pytest.raises(ValueError, match="pool_kernel must be an int or"):
        mobilenets.create_model("lraspp_mobilenet_v3_small", pool_kernel=(0, 3))
    with pytest.raises(ValueError, match="pool_stride needs pool_kernel"):
        mobilenets.create_model("lraspp_mobilenet_v3_small", pool_stride=2)
    with pytest.raises(ValueError, match="LR-ASPP options"):
        mobilenets.create_model("deeplabv3_mobilenet_v3_small", pool_kernel=3)


def test_profile_prints_table_7s_setting(capsys):
    """`mobilenets profile` takes Table 7's setting from the command line: 19 classes, RF2, 1024x2048."""
    assert (
        main(
            [
                "profile",
                "lraspp_mobilenet_v3_small",
                "--resolution",
                "1024x2048",
                "--num-classes",
                "19",
                "--reduced-tail",
            ]
        )
        == 0
    )
    row = capsys.readouterr().out.splitlines()[-1].split()
    assert row == ["lraspp_mobilenet_v3_small", "1024x2048", "515,614", "2,832.0"]
    with pytest.raises(SystemExit):
        main(["profile", "mobilenet_v2_100", "--resolution", "224x"])
    assert "N or HEIGHTxWIDTH" in capsys.readouterr().err
