"""SSDLite (V2 Section 6.2, V3 Section 6.3): torchvision's network, count and raw head outputs, and the
detector on every family."""

import pytest
import torch

import mobilenets

from parity import copy_by_order, randomize_batchnorm, relative_max_diff, structured_inputs

detection = pytest.importorskip("torchvision.models.detection")


def test_the_network_is_torchvisions():
    """ssdlite320_mobilenet_v3_large without a pretrained backbone (reduced tail): 3,440,060 parameters
    at 91 classes, the same tensors in the same order, and the same raw head outputs on 3,234 boxes."""
    ours = mobilenets.create_model("ssdlite_mobilenet_v3_large", reduced_tail=True)
    assert sum(p.numel() for p in ours.parameters()) == 3_440_060
    assert ours.map_channels == (672, 480, 512, 256, 256, 128)
    ours = randomize_batchnorm(ours, seed=3, resolution=320)
    reference = detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None).eval()
    copy_by_order(ours.state_dict(), reference)
    x = structured_inputs(2, 320, seed=4)
    with torch.no_grad():
        logits, boxes = ours.eval()(x)
        head = reference.head(list(reference.backbone(x).values()))
    assert logits.shape == (2, 3234, 91) and boxes.shape == (2, 3234, 4)
    assert (logits[0] - logits[1]).abs().max() > 1e-2 * logits.abs().max()  # the outputs depend on the input
    assert relative_max_diff(logits, head["cls_logits"]) < 1e-4
    assert relative_max_diff(boxes, head["bbox_regression"]) < 1e-4


@pytest.mark.parametrize(
    "name, channels",
    [
        ("ssdlite_mobilenet_v1_050", (256, 512, 512, 256, 256, 128)),  # V1: the stride-16 block output
        # V2 Section 6.2: the expansion of layer 15 (the first 160-channel block: 96 x 6) at stride 16
        ("ssdlite_mobilenet_v2_100", (576, 1280, 512, 256, 256, 128)),
        (
            "ssdlite_mobilenet_v3_small_075",
            (240, 432, 512, 256, 256, 128),
        ),  # bneck 9's expansion (V3 Table 6)
    ],
)
def test_every_family_detects_at_320_and_other_multiples_of_32(name, channels):
    model = mobilenets.create_model(name, num_classes=7).eval()
    assert model.map_channels == channels
    with torch.no_grad():
        logits, boxes = model(torch.randn(1, 3, 320, 320))
        assert logits.shape == (1, 3234, 7) and boxes.shape == (1, 3234, 4)
        logits, _ = model(torch.randn(1, 3, 256, 384))  # maps 16x24, 8x12, 4x6, 2x3, 1x2, 1x1
        assert logits.shape[1] == 6 * (16 * 24 + 8 * 12 + 4 * 6 + 2 * 3 + 1 * 2 + 1)


def test_detection_options_are_checked():
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2"):
        mobilenets.create_model("ssdlite_mobilenet_v2_100", num_classes=1)
    with pytest.raises(ValueError, match="is a detection model: build it with build_detection_model"):
        mobilenets.nn.registry.build_model("ssdlite_mobilenet_v2_100")
    with pytest.raises(ValueError, match="unknown model"):
        mobilenets.create_model("ssdlite_mobilenet_v9")


# V2 Table 6 and V3 Table 6 (COCO, 320x320): (MAdds in M, params in M) as printed; the networks with
# TF's 3 boxes per cell on the first map, the papers' counting (no BN in the parameters).
TABLE_6 = [
    ("ssdlite_mobilenet_v1_100", False, 1300, 5.1, 1322.4, 5_209_663),
    ("ssdlite_mobilenet_v2_100", False, 800, 4.3, 804.4, 4_449_791),
    ("ssdlite_mobilenet_v3_large", False, 620, 4.97, 613.1, 4_966_591),
    ("ssdlite_mobilenet_v3_large", True, 510, 3.22, 506.6, 3_215_311),
    ("ssdlite_mobilenet_v3_small", False, 210, 2.49, 210.4, 2_493_487),
    ("ssdlite_mobilenet_v3_small", True, 160, 1.77, 162.3, 1_765_279),
]


@pytest.mark.parametrize("name, reduced_tail, paper_madds, paper_params, madds, params", TABLE_6)
def test_table_6_rows(name, reduced_tail, paper_madds, paper_params, madds, params):
    """The V3 rows' parameters round to the printed figures and every row's MAdds is within 2% of the
    printed two digits (docs/numbers.md has the table and the V1 / V2 parameter gap)."""
    model = mobilenets.create_model(name, reduced_tail=reduced_tail, first_map_boxes=3).eval()
    profile = mobilenets.profile_module(model, 320)
    assert (round(profile.madds / 1e6, 1), profile.params_without_bn) == (madds, params)
    assert abs(profile.madds / 1e6 - paper_madds) <= 0.02 * paper_madds
    if "v3" in name:
        assert round(profile.params_without_bn / 1e6, 2) == paper_params
    with pytest.raises(ValueError, match="first_map_boxes must be 6"):
        mobilenets.create_model(name, first_map_boxes=4)


def _same_weights_pair(seed: int):
    ours = mobilenets.create_model("ssdlite_mobilenet_v3_large", reduced_tail=True)
    ours = randomize_batchnorm(ours, seed=seed, resolution=320).eval()
    reference = detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None).eval()
    copy_by_order(ours.state_dict(), reference)
    return ours, reference


def test_default_boxes_and_detections_are_torchvisions():
    """The same default boxes, and the same final detections from the same weights: boxes within 1e-3
    px, the same labels, scores within 1e-5 (torchvision takes [0, 1] images and normalises them itself)."""
    from mobilenets.nn.boxes import default_boxes

    ours, reference = _same_weights_pair(seed=5)
    images = (structured_inputs(2, 320, seed=6) / 4 + 0.5).clamp(0, 1)
    maps = [(20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]
    from torchvision.models.detection.image_list import ImageList

    expected_boxes = reference.anchor_generator(
        ImageList(images, [(320, 320)] * 2), ours.feature_maps(images)
    )[0]
    torch.testing.assert_close(default_boxes(maps, (320, 320)), expected_boxes, atol=1e-4, rtol=0)
    with torch.no_grad():
        expected = reference(list(images))
    got = ours.detect((images - 0.5) / 0.5)
    for mine, theirs in zip(got, expected, strict=True):
        assert len(mine["boxes"]) == len(theirs["boxes"]) == 300
        assert torch.equal(mine["labels"], theirs["labels"])
        torch.testing.assert_close(mine["scores"], theirs["scores"], atol=1e-5, rtol=0)
        assert (mine["boxes"] - theirs["boxes"]).abs().max() < 1e-3
    assert not torch.equal(got[0]["labels"], got[1]["labels"])  # the detections depend on the image


def test_box_coding_round_trips():
    from mobilenets.nn.boxes import decode, default_boxes, encode

    anchors = default_boxes([(4, 4), (2, 2)], (128, 96), first_map_boxes=3)
    assert anchors.shape == (4 * 4 * 3 + 2 * 2 * 6, 4)
    boxes = anchors + torch.tensor([3.0, -2.0, 5.0, 1.0])
    torch.testing.assert_close(decode(encode(boxes, anchors), anchors), boxes, atol=1e-4, rtol=0)


@pytest.mark.parametrize("pretrained_backbone_layout", [False, True])
def test_torchvision_weights_convert(tmp_path, pretrained_backbone_layout):
    """`mobilenets convert --from torchvision --arch ssdlite320_mobilenet_v3_large`: torchvision's file
    (reduced tail when trained without a pretrained backbone, the full tail of its COCO weights otherwise)
    loads with the same raw outputs and detections, and the checkpoint round-trips."""
    from mobilenets.cli import main

    torch.manual_seed(7)
    reference = detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=5)
    if pretrained_backbone_layout:  # the published COCO model's shapes: no reduced tail
        from functools import partial

        from torchvision.models import mobilenet_v3_large
        from torchvision.models.detection.ssdlite import SSDLiteHead, _mobilenet_extractor

        norm = partial(torch.nn.BatchNorm2d, eps=0.001, momentum=0.03)
        backbone = _mobilenet_extractor(mobilenet_v3_large(norm_layer=norm, dilated=False), 6, norm)
        reference.backbone = backbone
        channels = [672, 960, 512, 256, 256, 128]
        reference.head = SSDLiteHead(channels, [6] * 6, 5, norm)
    reference = randomize_batchnorm_torchvision(reference)
    path = tmp_path / "ssdlite.pth"
    torch.save(reference.state_dict(), path)
    out = tmp_path / "ssdlite.safetensors"
    assert (
        main(
            [
                "convert",
                str(path),
                "--from",
                "torchvision",
                "--arch",
                "ssdlite320_mobilenet_v3_large",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    ours, _ = mobilenets.load(out)
    assert ours.config.get("reduced_tail", False) is not pretrained_backbone_layout
    assert ours.num_classes == 5 and ours.preprocessing.mean == (0.5, 0.5, 0.5)
    images = (structured_inputs(2, 320, seed=8) / 4 + 0.5).clamp(0, 1)
    with torch.no_grad():
        head = reference.head(list(reference.backbone(images * 2 - 1).values()))
        logits, boxes = ours.eval()(images * 2 - 1)
        assert (logits[0] - logits[1]).abs().max() > 1e-2 * logits.abs().max()
        assert relative_max_diff(logits, head["cls_logits"]) < 1e-4
        assert relative_max_diff(boxes, head["bbox_regression"]) < 1e-4
        expected = reference.eval()(list(images))
    got = ours.detect(images * 2 - 1)
    assert torch.equal(got[0]["labels"], expected[0]["labels"])
    assert (got[0]["boxes"] - expected[0]["boxes"]).abs().max() < 1e-3


@torch.no_grad()
def randomize_batchnorm_torchvision(model):
    """Random BN affine parameters and statistics recalibrated on structured inputs through torchvision's
    backbone and head (its train-mode forward wants targets)."""
    generator = torch.Generator().manual_seed(9)
    for bn in model.modules():
        if isinstance(bn, torch.nn.BatchNorm2d):
            bn.weight.copy_(torch.rand(bn.num_features, generator=generator) * 1.5 + 0.5)
            bn.bias.copy_(torch.randn(bn.num_features, generator=generator) * 0.5)
            bn.reset_running_stats()
            bn.momentum = None
    model.train()
    for i in range(3):
        x = structured_inputs(4, 320, seed=20 + i)
        model.head(list(model.backbone(x).values()))
    return model.eval()
