"""What the training loop needs to know about a task, and classification as the first one.

The loop (:mod:`.loop`) runs epochs, steps, mixed precision, EMA, DDP, checkpoints and exact resume; it
never looks inside a target. A :class:`Task` says what the data's targets are, how outputs are scored
during training and validation, and which validation metric picks ``best.safetensors``. Detection
(SSDLite) and segmentation (LR-ASPP) implement the same interface instead of copying the loop.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from ..data.folders import FolderDataset, Split, eval_transform, split_folder, train_transform
from ..weights.preprocessing import Preprocessing
from .config import TrainConfig


class Task(Protocol):
    """A training task. Metrics are plain floats keyed by name; ``best_metric`` is one of
    :meth:`validate`'s keys, higher is better."""

    name: str
    best_metric: str

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

    def validate(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        """Validation metrics (loss included) of every decodable validation image's outputs."""


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

    def __init__(self) -> None:
        self._loss: nn.Module | None = None

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

    def validate(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        loss = float(self._loss(outputs, targets)) if len(targets) and self._loss else float("nan")
        return {"loss": loss, "top1": accuracy(outputs, targets, 1), "top5": accuracy(outputs, targets, 5)}
