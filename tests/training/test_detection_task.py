"""SSD's matching and multibox loss against torchvision's SSD (live), and COCO mAP from pycocotools on
detections whose score is known by construction."""

import pytest
import torch
from torchvision.models.detection import ssdlite320_mobilenet_v3_large
from torchvision.ops import box_iou

from mobilenets.nn.boxes import default_boxes
from mobilenets.training.detection import SSDLoss, coco_map, match

MAPS_320 = [(20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]


def _targets(generator, images=4, classes=7):
    """Padded (N, K, 5) targets: 0 to 5 random boxes per image (one image without any)."""
    rows = []
    for i in range(images):
        count = 0 if i == 1 else int(torch.randint(1, 6, (1,), generator=generator))
        xy = torch.rand(count, 2, generator=generator) * 250
        wh = torch.rand(count, 2, generator=generator) * 120 + 4
        labels = torch.randint(1, classes, (count, 1), generator=generator).float()
        rows.append(torch.cat([labels, xy, (xy + wh).clamp(max=320)], 1))
    most = max(len(r) for r in rows)
    padded = torch.full((images, most, 5), -1.0)
    for i, r in enumerate(rows):
        padded[i, : len(r)] = r
    return padded


def test_the_loss_is_torchvisions_ssd_loss():
    generator = torch.Generator().manual_seed(0)
    anchors = default_boxes(MAPS_320, (320, 320))
    targets = _targets(generator)
    logits = torch.randn(4, len(anchors), 7, generator=generator) * 3
    regression = torch.randn(4, len(anchors), 4, generator=generator)
    ours = SSDLoss(anchors)((logits, regression), targets)

    reference = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=7)
    as_dicts, matched = [], []
    for rows in targets:
        rows = rows[rows[:, 0] >= 0]
        as_dicts.append({"boxes": rows[:, 1:], "labels": rows[:, 0].long()})
        if len(rows):
            matched.append(reference.proposal_matcher(box_iou(rows[:, 1:], anchors)))
        else:
            matched.append(torch.full((len(anchors),), -1, dtype=torch.int64))
    losses = reference.compute_loss(
        as_dicts, {"cls_logits": logits, "bbox_regression": regression}, [anchors] * 4, matched
    )
    expected = losses["bbox_regression"] + losses["classification"]
    assert float(ours) == pytest.approx(float(expected), rel=1e-5)
    assert float(ours) > 1.0  # random outputs: far from a trained detector


def test_every_object_gets_a_default_box_even_below_the_iou_threshold():
    anchors = torch.tensor([[0.0, 0, 100, 100], [50, 50, 150, 150], [0, 0, 20, 20]])
    targets = torch.tensor(
        [
            [
                [3.0, 0, 0, 98, 98],
                [5.0, 110, 110, 120, 120],
                [-1, -1, -1, -1, -1],
            ],  # the second overlaps little
            [[-1.0, -1, -1, -1, -1]] * 3,  # no objects
        ]
    )
    labels, boxes = match(anchors, targets)
    assert labels.tolist() == [[3, 5, 0], [0, 0, 0]]
    assert boxes[0, 1].tolist() == [110, 110, 120, 120]
    assert box_iou(targets[0, 1:2, 1:], anchors[1:2]).item() < 0.5


def test_hard_negatives_are_three_per_positive():
    anchors = torch.tensor([[0.0, 0, 10, 10]] + [[i * 20.0, 50, i * 20 + 10, 60] for i in range(10)])
    targets = torch.tensor([[[1.0, 0, 0, 10, 10]]])
    logits = torch.zeros(1, 11, 2)
    logits[0, 1:, 1] = torch.arange(10.0)  # background boxes 1..10 are ever more confidently "object"
    loss = SSDLoss(anchors)((logits, torch.zeros(1, 11, 4)), targets)
    ce = torch.nn.functional.cross_entropy
    expected = ce(logits[0, :1], torch.tensor([1])) + ce(
        logits[0, 8:11], torch.zeros(3, dtype=torch.long), reduction="sum"
    )
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)  # regression is exact: 0 offsets


def _truth(*rows):
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 5)


def _found(boxes, scores, labels):
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "scores": torch.tensor(scores),
        "labels": torch.tensor(labels),
    }


def test_coco_map_of_known_detections():
    truths = [_truth([1, 10, 10, 50, 50], [2, 60, 60, 90, 90]), _truth([1, 0, 0, 30, 30])]
    perfect = [
        _found([[10, 10, 50, 50], [60, 60, 90, 90]], [0.9, 0.8], [1, 2]),
        _found([[0, 0, 30, 30]], [0.7], [1]),
    ]
    scores = coco_map(truths, perfect, 3, ["background", "a", "b"])
    assert scores["map"] == pytest.approx(1.0) and scores["map50"] == pytest.approx(1.0)
    assert [row["class"] for row in scores["per_class"]] == ["a", "b"]
    assert [row["ap"] for row in scores["per_class"]] == [pytest.approx(1.0)] * 2
    # class a's second object missed: recall stops at 0.5, so AP is 51 of COCO's 101 recall points
    half = [perfect[0], _found([], [], [])]
    scores = coco_map(truths, half, 3)
    assert scores["per_class"][0]["ap50"] == pytest.approx(51 / 101)
    assert scores["map50"] == pytest.approx((51 / 101 + 1) / 2)
    # a box at IoU 0.58 counts at thresholds 0.5 and 0.55 only: AP@[.5:.95] is 2/10 for it
    shifted = [
        _found([[10, 10, 50, 50], [60, 60, 90, 90]], [0.9, 0.8], [1, 2]),
        _found([[0, 0, 30, 30 * 0.58]], [0.7], [1]),
    ]
    scores = coco_map(truths, shifted, 3)
    assert scores["per_class"][0]["ap50"] == pytest.approx(1.0)
    assert scores["per_class"][0]["ap"] == pytest.approx((2 * 1.0 + 8 * 51 / 101) / 10)
    nothing = coco_map(truths, [_found([], [], [])] * 2, 3)
    assert nothing["map"] == 0.0 and nothing["per_class"][0]["ap"] == 0.0
    with pytest.raises(ValueError):
        coco_map(truths, perfect[:1], 3)  # one list of detections per image
