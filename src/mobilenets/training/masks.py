"""Evaluate and predict with segmentation models: mean IoU, per-class IoU and pixel accuracy with a
confusion matrix; predicted masks written as index PNGs (palette) and colour overlays."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..data.folders import BadFile, BadFileLog, BadImage, collate_skip_bad, list_images, load_image
from ..data.segmentation import JointTransform, MaskDataset, scan_masks
from .loop import batch_predictions
from .plots import write_evaluation
from .run_folder import check_prediction_outputs, labelled_folder
from .task import SegmentationValidator


@dataclass
class MaskEvaluation:
    miou: float
    pixel_acc: float
    samples: int
    per_class: list[dict]  # class, pixels (true), iou
    confusion: list[list[int]]
    classes: list[str]
    bad_files: list[dict]

    def to_dict(self) -> dict:
        return dict(vars(self))


@torch.no_grad()
def evaluate_masks(
    model, device, source: Path, data, out=None, batch_size: int = 16, workers: int = 2
) -> MaskEvaluation:
    """The validation pairs of ``data`` (all pairs but the training split's when it has no val/), at the
    size the model was trained at; the confusion matrix accumulates batch by batch."""
    split = scan_masks(labelled_folder(data, source))
    classes = model.class_names or split.classes
    if len(classes) != model.num_classes:
        raise ValueError(f"{data} has {len(split.classes)} classes; the model has {model.num_classes}")
    size = model.preprocessing.crop
    dataset = MaskDataset(
        split.val, JointTransform(size, model.preprocessing, train=False), model.num_classes
    )
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate_skip_bad
    )
    validator, bad, samples = SegmentationValidator(), BadFileLog(), 0
    for logits, masks, _ in batch_predictions(model, loader, device, bad):
        validator.add(logits, masks)
        samples += len(masks)
    metrics = validator.result()
    confusion = validator.confusion
    if confusion is None:  # every pair was bad
        confusion = torch.zeros(model.num_classes, model.num_classes, dtype=torch.long)
    matrix = confusion.double()
    union = matrix.sum(0) + matrix.sum(1) - matrix.diag()
    per_class = [
        {
            "class": name,
            "pixels": int(confusion[i].sum()),
            "iou": float(matrix[i, i] / union[i]) if union[i] else None,
        }
        for i, name in enumerate(classes)
    ]
    result = MaskEvaluation(
        metrics["miou"],
        metrics["pixel_acc"],
        samples,
        per_class,
        confusion.tolist(),
        list(classes),
        bad.report(),
    )
    if out is not None:
        write_evaluation(result, out)
    return result


@dataclass
class MaskPrediction:
    path: str
    mask: Path  # the index PNG written
    overlay: Path
    fractions: list[tuple[str, float]]  # classes present, largest first, with their share of the pixels


def palette(classes: int) -> np.ndarray:
    """A fixed colour per class (0 black), as VOC's palette does it (bits of the index spread over RGB)."""
    colours = np.zeros((256, 3), np.uint8)
    for index in range(256):
        value, r, g, b = index, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= ((value >> 0) & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        colours[index] = (r, g, b)
    return colours[: max(classes, 1)]


@torch.no_grad()
def predict_masks(model, device, target, out: str | os.PathLike) -> Iterator[MaskPrediction | BadFile]:
    """For each image: its mask at the image's own size (logits upsampled from the model's input size),
    written to ``out``/<stem>.png and ``out``/<stem>_overlay.png; files already there are never replaced."""
    out = Path(out)
    paths = list_images(target)
    targets = [(out / f"{Path(p).stem}.png", out / f"{Path(p).stem}_overlay.png") for p in paths]
    # Everything is checked before the first file is written: nothing there is replaced, and two images
    # with one stem (in different sub-folders) would write the same mask.
    check_prediction_outputs([p for pair in targets for p in pair], paths, target, "masks")
    out.mkdir(parents=True, exist_ok=True)
    names = model.class_names or [str(i) for i in range(model.num_classes)]
    colours = palette(256)
    transform = JointTransform(model.preprocessing.crop, model.preprocessing, train=False)
    for path, (mask_path, overlay_path) in zip(paths, targets, strict=True):
        try:
            image = load_image(path)
        except BadImage as error:
            yield BadFile(path, str(error))
            continue
        x, _ = transform(image, np.zeros((image.height, image.width), np.uint8), None)
        logits = model(x[None].to(device).contiguous(memory_format=torch.channels_last))
        logits = torch.nn.functional.interpolate(logits, size=(image.height, image.width), mode="bilinear")
        mask = logits.argmax(1)[0].cpu().numpy().astype(np.uint8)
        indexed = Image.fromarray(mask, "P")
        indexed.putpalette(colours.ravel().tolist())
        indexed.save(mask_path)
        blended = (0.5 * np.asarray(image, np.float32) + 0.5 * colours[mask].astype(np.float32)).astype(
            np.uint8
        )
        Image.fromarray(blended, "RGB").save(overlay_path)
        counts = np.bincount(mask.ravel(), minlength=len(names)) / mask.size
        fractions = [(names[i], float(counts[i])) for i in np.argsort(-counts) if counts[i] > 0]
        yield MaskPrediction(path, mask_path, overlay_path, fractions)
