"""What the training loop needs to know about a task, and classification as the first one.

The loop (:mod:`.loop`) runs epochs, steps, mixed precision, EMA, DDP, checkpoints and exact resume; it
never looks inside a target. A :class:`Task` says what the data's targets are, how outputs are scored
during training and validation, and which validation metric picks ``best.safetensors``. Detection
(SSDLite) and segmentation (LR-ASPP) implement the same interface instead of copying the loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from torch import nn
from torch.nn import functional as F

from ..data.folders import (
    FolderDataset,
    Split,
    collate_skip_bad,
    eval_transform,
    split_folder,
    train_transform,
)
from ..data.segmentation import IGNORE_INDEX, JointTransform, MaskDataset, MaskSplit, scan_masks
from ..weights.preprocessing import Preprocessing
from .config import TrainConfig


class Task(Protocol):
    """A training task. Metrics are plain floats keyed by name; ``best_metric`` is one of
    :meth:`validate`'s keys, higher is better."""

    name: str
    best_metric: str
    collate: Callable  # DataLoader collate_fn: (images, targets, indices, bad files) per batch

    def attach(self, model: nn.Module, config: TrainConfig) -> None:
        """Called once with the model before training (a detector's default boxes depend on it)."""

    def split(self, root: Path, config: TrainConfig) -> Split:
        """The train and val samples found under ``root`` and the class names."""

    def datasets(
        self, split: Split, config: TrainConfig, preprocessing: Preprocessing
    ) -> tuple[torch.utils.data.Dataset, torch.utils.data.Dataset]:
        """(train, val) datasets yielding (image, target, index, bad files), as FolderDataset does."""

    def criterion(self, config: TrainConfig) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The training loss of (outputs, targets)."""

    def batch_sums(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        """Training metrics of one batch as sums over its images (the loop divides by the images seen)."""

    def validator(self, config: TrainConfig) -> Validator:
        """A fresh accumulator of the validation metrics (loss included), fed batch by batch."""


class Validator(Protocol):
    """Validation metrics accumulated batch by batch, so that a validation pass holds one batch's
    outputs at a time (a segmentation batch's logits are classes x H x W per image)."""

    def add(self, outputs: torch.Tensor, targets: torch.Tensor) -> None: ...

    def result(self) -> dict[str, float]:
        """The metrics over every batch added; NaN where no image was (every file bad)."""


def accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int = 1) -> float:
    """Top-k accuracy; NaN for no samples (a validation split whose every file was bad)."""
    if len(labels) == 0:
        return float("nan")
    k = min(k, logits.shape[1])
    return float((logits.topk(k, 1).indices == labels[:, None]).any(1).float().mean())


class Classification:
    """Image classification from class sub-folders: cross-entropy with label smoothing, top-1 / top-5."""

    name = "classification"
    best_metric = "top1"
    collate = staticmethod(collate_skip_bad)

    def __init__(self) -> None:
        self._loss: nn.Module | None = None

    def attach(self, model: nn.Module, config: TrainConfig) -> None:
        pass

    def split(self, root: Path, config: TrainConfig) -> Split:
        return split_folder(root, config.val_fraction, config.seed)

    def datasets(self, split: Split, config: TrainConfig, preprocessing: Preprocessing):
        augment = train_transform(
            config.image_size,
            preprocessing,
            config.augment,
            config.random_erasing,
            tuple(config.crop_scale),
            tuple(config.crop_ratio),
        )
        train = FolderDataset(split.train, augment)
        val = FolderDataset(split.val, eval_transform(config.image_size, preprocessing))
        return train, val

    def criterion(self, config: TrainConfig) -> nn.Module:
        self._loss = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        return self._loss

    def batch_sums(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        return {"top1": float((outputs.argmax(1) == targets).sum())}

    def validator(self, config: TrainConfig) -> ClassificationValidator:
        return ClassificationValidator(config.label_smoothing)


class Segmentation:
    """Per-pixel classes from image + mask folders (:mod:`mobilenets.data.segmentation`): cross-entropy
    that skips ignored pixels (255), pixel accuracy while training, mean IoU (picks the best epoch) and
    pixel accuracy on validation."""

    name = "segmentation"
    best_metric = "miou"
    collate = staticmethod(collate_skip_bad)

    def __init__(self) -> None:
        self._loss: nn.Module | None = None

    def attach(self, model: nn.Module, config: TrainConfig) -> None:
        pass

    def split(self, root: Path, config: TrainConfig) -> MaskSplit:
        return scan_masks(root, config.val_fraction, config.seed)

    def datasets(self, split: MaskSplit, config: TrainConfig, preprocessing: Preprocessing):
        classes = len(split.classes)
        train = MaskDataset(
            split.train,
            JointTransform(
                config.image_size, preprocessing, train=True, scale_range=tuple(config.scale_range)
            ),
            classes,
        )
        val = MaskDataset(split.val, JointTransform(config.image_size, preprocessing, train=False), classes)
        return train, val

    def criterion(self, config: TrainConfig) -> nn.Module:
        self._loss = nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX)
        return self._loss

    def batch_sums(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        valid = targets != IGNORE_INDEX
        correct = ((outputs.argmax(1) == targets) & valid).sum((1, 2))
        return {"pixel_acc": float((correct / valid.sum((1, 2)).clamp(min=1)).sum())}

    def validator(self, config: TrainConfig) -> SegmentationValidator:
        return SegmentationValidator()


@dataclass
class ClassificationValidator:
    """Cross-entropy (with the training's label smoothing) per image, top-1 and top-5 accuracy."""

    label_smoothing: float = 0.0
    loss_sum: float = 0.0
    top1: float = 0.0
    top5: float = 0.0
    images: int = 0

    def add(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        n = len(targets)
        loss = F.cross_entropy(outputs, targets, label_smoothing=self.label_smoothing, reduction="sum")
        self.loss_sum += float(loss)
        self.top1 += accuracy(outputs, targets, 1) * n
        self.top5 += accuracy(outputs, targets, 5) * n
        self.images += n

    def result(self) -> dict[str, float]:
        if not self.images:
            return {"loss": float("nan"), "top1": float("nan"), "top5": float("nan")}
        return {
            "loss": self.loss_sum / self.images,
            "top1": self.top1 / self.images,
            "top5": self.top5 / self.images,
        }


@dataclass
class SegmentationValidator:
    """Cross-entropy per labelled pixel (255 ignored), and mIoU and pixel accuracy from the confusion
    matrix summed over batches (never the logits of the whole split at once)."""

    loss_sum: float = 0.0
    pixels: int = 0
    confusion: torch.Tensor | None = field(default=None, repr=False)

    def add(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        loss = F.cross_entropy(outputs, targets, ignore_index=IGNORE_INDEX, reduction="sum")
        self.loss_sum += float(loss)
        self.pixels += int((targets != IGNORE_INDEX).sum())
        batch = confusion_matrix(outputs.argmax(1), targets, outputs.shape[1])
        self.confusion = batch if self.confusion is None else self.confusion + batch

    def result(self) -> dict[str, float]:
        if self.confusion is None:
            return {"loss": float("nan"), "miou": float("nan"), "pixel_acc": float("nan")}
        return {"loss": self.loss_sum / max(self.pixels, 1), **iou_metrics(self.confusion)}


def confusion_matrix(predicted: torch.Tensor, targets: torch.Tensor, classes: int) -> torch.Tensor:
    """(classes, classes) pixel counts, row = true class, column = predicted; ignored pixels left out."""
    valid = targets != IGNORE_INDEX
    index = targets[valid] * classes + predicted[valid]
    return torch.bincount(index, minlength=classes * classes).reshape(classes, classes)


def iou_metrics(confusion: torch.Tensor) -> dict[str, float]:
    """Mean IoU over the classes that occur (in the truth or the prediction) and pixel accuracy."""
    confusion = confusion.double()
    true_positive = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - true_positive
    present = union > 0
    miou = float((true_positive[present] / union[present]).mean()) if present.any() else float("nan")
    return {"miou": miou, "pixel_acc": float(true_positive.sum() / confusion.sum().clamp(min=1))}


def _detection():
    from .detection import Detection  # torchvision's v2 transforms and pycocotools load only for it

    return Detection()


TASKS = {"classify": Classification, "segment": Segmentation, "detect": _detection}
