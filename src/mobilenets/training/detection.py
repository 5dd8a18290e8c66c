"""Detection as a training task: SSD's matching and loss (Liu et al. 2016, Section 2.2), COCO mAP.

Targets travel as one tensor per batch, (N, K, 5) rows of (label, x1, y1, x2, y2) in the input's pixels,
padded with label -1 (:func:`~mobilenets.data.detection.collate_detection`). Matching and the loss run
on the whole batch at once, as torchvision's SSD computes them image by image:

- every default box takes the ground-truth box it overlaps most if that IoU is at least 0.5, and every
  ground-truth box takes its best default box whatever the IoU (so no object goes unmatched);
- localisation: smooth L1 (beta 1) of the encoded offsets over the matched boxes;
- confidence: cross-entropy over the matched boxes and the 3x as many unmatched ones with the highest
  loss (hard negative mining); both terms divided by the number of matched boxes.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import box_iou

from ..data.detection import (
    DetectionDataset,
    DetectionSplit,
    collate_detection,
    detection_transform,
    scan_detection,
)
from ..nn.boxes import encode, postprocess
from ..weights.preprocessing import Preprocessing
from .config import TrainConfig

IOU_THRESHOLD = 0.5
NEGATIVES_PER_POSITIVE = 3
VALIDATION_THRESHOLDS = dict(score_threshold=0.01, max_detections=100)  # COCO scores 100 per image


def match(anchors: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image and default box, the class to predict (0 = background) and the box it is matched to:
    ``(labels (N, B) long, boxes (N, B, 4))`` from ``targets`` (N, K, 5) padded with label -1."""
    n, k = targets.shape[:2]
    labels = torch.zeros(n, anchors.shape[0], dtype=torch.long, device=anchors.device)
    boxes = anchors.expand(n, -1, -1).clone()  # unmatched boxes encode to 0 offsets (never used)
    if k == 0:
        return labels, boxes
    real = targets[..., 0] >= 0  # (N, K)
    iou = box_iou(targets[..., 1:].reshape(-1, 4), anchors).view(n, k, -1)
    iou = iou.masked_fill(~real[..., None], -1.0)
    best_iou, best_target = iou.max(1)  # (N, B)
    matched = best_iou >= IOU_THRESHOLD
    # each real target's best default box is matched to it, whatever the overlap
    best_anchor = iou.argmax(2)  # (N, K)
    rows, cols = real.nonzero(as_tuple=True)
    best_target[rows, best_anchor[rows, cols]] = cols
    matched[rows, best_anchor[rows, cols]] = True
    gathered = targets.gather(1, best_target[..., None].expand(-1, -1, 5))  # (N, B, 5)
    labels = torch.where(matched, gathered[..., 0].long(), labels)
    boxes = torch.where(matched[..., None], gathered[..., 1:], boxes)
    return labels, boxes


class SSDLoss(nn.Module):
    """SSD's multibox loss for outputs ``(logits (N, B, C), regression (N, B, 4))`` against padded
    targets; the default boxes are set by :meth:`set_anchors` (they depend on the input size)."""

    def __init__(self, anchors: torch.Tensor | None = None):
        super().__init__()
        self.anchors = anchors

    def set_anchors(self, anchors: torch.Tensor) -> None:
        self.anchors = anchors

    def forward(self, outputs: tuple[torch.Tensor, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        logits, regression = outputs
        if self.anchors.device != regression.device:  # moved once, not copied every step
            self.anchors = self.anchors.to(regression.device)
        anchors = self.anchors
        with torch.no_grad():
            labels, boxes = match(anchors, targets.to(regression.device).float())
            offsets = encode(boxes, anchors.expand_as(boxes))
        positive = labels > 0
        positives = positive.sum(1)  # (N,)
        denominator = positives.sum().clamp(min=1)
        box_loss = F.smooth_l1_loss(regression.float()[positive], offsets[positive], reduction="sum")
        class_loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), reduction="none")
        class_loss = class_loss.view_as(labels)
        negative_loss = class_loss.detach().masked_fill(positive, float("-inf"))
        rank = negative_loss.argsort(1, descending=True).argsort(1)
        hard_negative = rank < (NEGATIVES_PER_POSITIVE * positives)[:, None]
        return (box_loss + class_loss[positive | hard_negative].sum()) / denominator


@dataclass
class DetectionValidator:
    """The training loss and COCO mAP over every batch added: detections (post-processed as deployed, at
    most 100 per image) and ground truth are collected in the input's pixels, which changes no IoU, and
    scored by pycocotools at the end."""

    loss: SSDLoss
    image_size: tuple[int, int]
    num_classes: int
    loss_sum: float = 0.0
    images: int = 0
    detections: list[dict] = field(default_factory=list, repr=False)
    truths: list[torch.Tensor] = field(default_factory=list, repr=False)

    def add(self, outputs: tuple[torch.Tensor, torch.Tensor], targets: torch.Tensor) -> None:
        logits, regression = outputs
        self.loss_sum += float(self.loss(outputs, targets)) * len(targets)
        self.images += len(targets)
        anchors = self.loss.anchors.to(logits.device)
        self.detections += postprocess(logits, regression, anchors, self.image_size, **VALIDATION_THRESHOLDS)
        self.truths += [rows[rows[:, 0] >= 0] for rows in targets]

    def result(self) -> dict[str, float]:
        if not self.images:
            return {"loss": float("nan"), "map": float("nan"), "map50": float("nan")}
        scores = coco_map(self.truths, self.detections, self.num_classes)
        return {"loss": self.loss_sum / self.images, "map": scores["map"], "map50": scores["map50"]}


def require_pycocotools():
    """pycocotools' COCO and COCOeval, or an ImportError naming the package to install."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise ImportError(
            "COCO mAP needs pycocotools: pip install pycocotools (or mobilenets[detection])"
        ) from None
    return COCO, COCOeval


def coco_map(
    truths: list[torch.Tensor],
    detections: list[dict[str, torch.Tensor]],
    num_classes: int,
    class_names: list[str] | None = None,
    sizes: list[tuple[int, int]] | None = None,
) -> dict:
    """COCO's metrics from pycocotools: ``map`` (AP@[.5:.95]), ``map50``, ``map75``, ``map_small`` /
    ``medium`` / ``large`` and ``per_class`` AP@[.5:.95] and AP@.5 (None for a class with no ground truth).
    ``truths`` are (K, 5) label + box rows per image; ``sizes`` (height, width) per image."""
    COCO, COCOeval = require_pycocotools()
    images, annotations, results = [], [], []
    for image_id, (rows, found) in enumerate(zip(truths, detections, strict=True), start=1):
        height, width = sizes[image_id - 1] if sizes else (0, 0)
        images.append({"id": image_id, "height": height, "width": width})
        for label, x1, y1, x2, y2 in rows.tolist():
            w, h = x2 - x1, y2 - y1
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(label),
                    "bbox": [x1, y1, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
        for box, score, label in zip(
            found["boxes"].tolist(), found["scores"].tolist(), found["labels"].tolist(), strict=True
        ):
            results.append(
                {
                    "image_id": image_id,
                    "category_id": int(label),
                    "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                    "score": float(score),
                }
            )
    names = class_names or [str(i) for i in range(num_classes)]
    categories = [{"id": i, "name": names[i]} for i in range(1, num_classes)]
    empty = {"map": 0.0, "map50": 0.0, "map75": 0.0, "map_small": -1.0, "map_medium": -1.0, "map_large": -1.0}
    if not annotations:
        return {**empty, "per_class": [{"class": n["name"], "ap": None, "ap50": None} for n in categories]}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress and tables
        truth = COCO()
        truth.dataset = {"images": images, "annotations": annotations, "categories": categories}
        truth.createIndex()
        if not results:
            return {**empty, "per_class": _per_class(None, categories, truth)}
        evaluation = COCOeval(truth, truth.loadRes(results), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    stats = [float(v) for v in evaluation.stats]
    return {
        "map": max(stats[0], 0.0),
        "map50": max(stats[1], 0.0),
        "map75": max(stats[2], 0.0),
        "map_small": stats[3],
        "map_medium": stats[4],
        "map_large": stats[5],
        "per_class": _per_class(evaluation, categories, truth),
    }


def _per_class(evaluation, categories: list[dict], truth) -> list[dict]:
    """AP@[.5:.95] and AP@.5 per category from COCOeval's precision array (T, R, K, A, M): all areas,
    100 detections, averaged over recall (and IoU) where defined (-1 = no ground truth)."""
    rows = []
    for k, category in enumerate(categories):
        has_truth = bool(truth.getAnnIds(catIds=[category["id"]]))
        if evaluation is None or not has_truth:
            rows.append(
                {
                    "class": category["name"],
                    "ap": 0.0 if has_truth else None,
                    "ap50": 0.0 if has_truth else None,
                }
            )
            continue
        precision = evaluation.eval["precision"][:, :, k, 0, -1]  # (IoU thresholds, recall points)
        valid = precision[precision > -1]
        at50 = precision[0][precision[0] > -1]
        rows.append(
            {
                "class": category["name"],
                "ap": float(valid.mean()) if valid.size else 0.0,
                "ap50": float(at50.mean()) if at50.size else 0.0,
                # precision at COCO's 101 recall points (0, 0.01, .. 1) at IoU 0.5, for the PR curve
                "precision50": [round(max(float(v), 0.0), 4) for v in precision[0]],
            }
        )
    return rows


class Detection:
    """Boxes and classes from COCO-format or VOC folders (:mod:`mobilenets.data.detection`) for an
    SSDLite model: SSD's multibox loss, COCO mAP@[.5:.95] (picks the best epoch) and mAP@.5."""

    name = "detection"
    best_metric = "map"
    collate = staticmethod(collate_detection)

    def __init__(self) -> None:
        self._loss = SSDLoss()
        self._num_classes = 0

    def attach(self, model: nn.Module, config: TrainConfig) -> None:
        """The default boxes of the model at the training size, for the loss and the validator."""
        require_pycocotools()  # before the first epoch, not after it
        self._loss.set_anchors(model.default_boxes((config.image_size, config.image_size)))
        self._num_classes = model.num_classes

    def split(self, root: Path, config: TrainConfig) -> DetectionSplit:
        return scan_detection(root, config.val_fraction, config.seed)

    def datasets(self, split: DetectionSplit, config: TrainConfig, preprocessing: Preprocessing):
        augment = detection_transform(
            config.image_size, preprocessing, train=True, augment=config.box_augment
        )
        train = DetectionDataset(split.train, augment)
        val = DetectionDataset(split.val, detection_transform(config.image_size, preprocessing, train=False))
        return train, val

    def criterion(self, config: TrainConfig) -> SSDLoss:
        return self._loss

    def batch_sums(self, outputs, targets: torch.Tensor) -> dict[str, float]:
        return {}

    def validator(self, config: TrainConfig) -> DetectionValidator:
        size = (config.image_size, config.image_size)
        return DetectionValidator(self._loss, size, self._num_classes)
