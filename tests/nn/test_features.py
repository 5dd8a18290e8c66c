"""Backbone use: forward_features / forward_head, feature_info, multi-scale maps, output stride."""

import pytest
import torch

from mobilenets import create_model

CHANNELS = {
    # timm's feature_info channels at strides 2..16 (anchors section 2), then the map before pooling.
    "mobilenet_v1_100": [64, 128, 256, 512, 1024],
    "mobilenet_v2_100": [16, 24, 32, 96, 1280],
    "mobilenet_v3_large_100": [16, 24, 40, 112, 960],
    "mobilenet_v3_small_100": [16, 16, 24, 48, 576],
}


@pytest.mark.parametrize("name", list(CHANNELS))
def test_feature_info_and_intermediates_agree(name):
    model = create_model(name).eval()
    info = model.feature_info
    assert [f.num_chs for f in info] == CHANNELS[name]
    assert [f.reduction for f in info] == [2, 4, 8, 16, 32]
    maps = model.forward_intermediates(torch.randn(1, 3, 96, 96))
    assert [tuple(m.shape[1:]) for m in maps] == [
        (f.num_chs, 96 // f.reduction, 96 // f.reduction) for f in info
    ]
    modules = dict(model.named_modules())
    assert all(f.module in modules for f in info)


def test_forward_is_features_then_head():
    model = create_model("mobilenet_v3_large_100").eval()
    x = torch.randn(2, 3, 64, 64)
    features = model.forward_features(x)
    assert features.shape == (2, 960, 2, 2)
    torch.testing.assert_close(model.forward_head(features), model(x))
    assert model.forward_head(features, pre_logits=True).shape == (2, 1280)


def test_expansion_tap_is_the_c4_layer_ssdlite_uses():
    # V3 Section 6.3: C4 is the expansion layer of bneck 13 (Large): 672 channels at stride 16.
    model = create_model("mobilenet_v3_large_100").eval()
    info = model.feature_info_for("expansion")
    assert (info[3].num_chs, info[3].reduction, info[3].module) == (672, 16, "blocks.12.expand")
    maps = model.forward_intermediates(torch.randn(1, 3, 128, 128), location="expansion")
    assert maps[3].shape == (1, 672, 8, 8) and maps[-1].shape == (1, 960, 4, 4)
    with torch.no_grad():
        expected = model.blocks[12].expand(model.blocks[:12](model.stem(torch.zeros(1, 3, 128, 128))))
        got = model.forward_intermediates(torch.zeros(1, 3, 128, 128), indices=[3], location="expansion")[0]
    torch.testing.assert_close(got, expected)
    small = create_model("mobilenet_v3_small_100").feature_info_for("expansion")
    assert (small[3].num_chs, small[3].reduction) == (288, 16)


@pytest.mark.parametrize(("output_stride", "size"), [(16, 8), (8, 16)])
def test_output_stride_keeps_resolution(output_stride, size):
    model = create_model("mobilenet_v3_small_100", output_stride=output_stride).eval()
    assert model.forward_features(torch.randn(1, 3, 128, 128)).shape[-1] == size
    assert model(torch.randn(1, 3, 128, 128)).shape == (1, 1000)


def test_same_padding_changes_strided_layers_only():
    model = create_model("mobilenet_v2_100", padding="same").eval()
    pads = [name for name, m in model.named_modules() if type(m).__name__ == "SamePad2d"]
    assert len(pads) == 5  # the stem and the four stride-2 depthwise convs
    assert model(torch.randn(1, 3, 96, 96)).shape == (1, 1000)


def test_features_only_returns_the_selected_maps():
    backbone = create_model(
        "mobilenet_v3_large_100", features_only=True, out_indices=(3, 4), feature_location="expansion"
    )
    maps = backbone(torch.randn(1, 3, 128, 128))
    assert [m.shape[1] for m in maps] == [672, 960] and [f.reduction for f in backbone.feature_info] == [
        16,
        32,
    ]
    assert not any(isinstance(m, torch.nn.Linear) for m in backbone.modules())
    with pytest.raises(ValueError, match=r"out_indices \(7,\) out of range: this model has 5 feature maps"):
        create_model("mobilenet_v2_100", features_only=True, out_indices=(7,))
