"""Evaluate a run or checkpoint on a labelled folder, and predict on images, robust to bad files."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.folders import (
    SPLIT_DIRS,
    BadFileLog,
    FolderDataset,
    collate_skip_bad,
    eval_transform,
    list_images,
    scan,
)
from ..nn.detection import is_detection_name
from ..nn.segmentation import is_segmentation_name
from ..weights.checkpoint import load, resolve_checkpoint
from .loop import predict_loader
from .masks import evaluate_masks, predict_masks
from .plots import write_evaluation
from .task import accuracy


def load_for_inference(source: str | os.PathLike, device: torch.device | None = None):
    model, _ = load(resolve_checkpoint(source))
    device = device or torch.device("cpu")
    return model.to(device).eval(), device


def _eval_folder(data: str | os.PathLike, run_hint: Path | None) -> Path:
    if str(data) == "demo" and run_hint is not None:
        data = run_hint / "demo-data"
    root = Path(data)
    for train_name, val_name in SPLIT_DIRS:
        if (root / train_name).is_dir() and (root / val_name).is_dir():
            return root / val_name
    return root


@dataclass
class Evaluation:
    top1: float
    top5: float
    samples: int
    per_class: list[dict]
    confusion: list[list[int]]
    classes: list[str]
    bad_files: list[dict]

    def to_dict(self) -> dict:
        return dict(vars(self))


def evaluate(
    source: str | os.PathLike,
    data: str | os.PathLike,
    out: str | os.PathLike | None = None,
    batch_size: int = 64,
    workers: int = 2,
    image_size: int | None = None,
) -> Evaluation:
    """Top-1 / top-5, per-class precision and recall, and the confusion matrix (JSON + PNG in ``out``).
    A segmentation model is evaluated on masks instead (:func:`.masks.evaluate_masks`: mean IoU)."""
    model, device = load_for_inference(source)
    if is_segmentation_name(model.arch or ""):
        return evaluate_masks(model, device, Path(source), data, out, batch_size, workers)
    if is_detection_name(model.arch or ""):
        from .detections import evaluate_boxes

        return evaluate_boxes(model, device, Path(source), data, out, batch_size, workers)
    source_path = Path(source)
    folder = _eval_folder(data, source_path if source_path.is_dir() else None)
    folder_classes, samples = scan(folder)
    classes = model.class_names or folder_classes
    unknown = [c for c in folder_classes if c not in classes]
    if unknown:
        raise ValueError(
            f"{folder} has classes the model does not know: {', '.join(unknown[:5])}; the model's classes: "
            f"{', '.join(classes[:10])}{' ...' if len(classes) > 10 else ''}"
        )
    remap = [classes.index(c) for c in folder_classes]
    samples = [(path, remap[label]) for path, label in samples]
    size = image_size or model.preprocessing.crop
    loader = torch.utils.data.DataLoader(
        FolderDataset(samples, eval_transform(size, model.preprocessing)),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate_skip_bad,
    )
    bad = BadFileLog()
    logits, labels, _ = predict_loader(model, loader, device, bad, channels_last=True)
    n = len(classes)
    confusion = torch.zeros(n, n, dtype=torch.long)
    if len(labels):
        predicted = logits.argmax(1)
        confusion.index_put_((labels, predicted), torch.ones_like(labels), accumulate=True)
    per_class = []
    for i, name in enumerate(classes):
        true_positive = int(confusion[i, i])
        predicted_as = int(confusion[:, i].sum())
        actual = int(confusion[i].sum())
        per_class.append(
            {
                "class": name,
                "support": actual,
                "precision": true_positive / predicted_as if predicted_as else 0.0,
                "recall": true_positive / actual if actual else 0.0,
            }
        )
    result = Evaluation(
        accuracy(logits, labels, 1),
        accuracy(logits, labels, 5),
        len(labels),
        per_class,
        confusion.tolist(),
        list(classes),
        bad.report(),
    )
    if out is not None:
        write_evaluation(result, out)
    return result


# ---------------------------------------------------------------------------------------------------
# predict
# ---------------------------------------------------------------------------------------------------


@dataclass
class Prediction:
    path: str
    top: list[tuple[str, float]]  # (class name, probability), best first


def predict(
    source: str | os.PathLike,
    target: str | os.PathLike,
    top_k: int = 5,
    batch_size: int = 32,
    workers: int = 2,
    out: str | os.PathLike | None = None,
    score_threshold: float = 0.3,
) -> Iterator:
    """Stream predictions batch by batch; a bad file is yielded as a BadFile and the stream goes on.
    A segmentation model writes masks and overlays into ``out`` (:func:`.masks.predict_masks`); a
    detection model yields boxes above ``score_threshold`` (:func:`.detections.predict_boxes`), drawn
    into ``out`` when given."""
    model, device = load_for_inference(source)
    if is_detection_name(model.arch or ""):
        from .detections import predict_boxes

        yield from predict_boxes(model, device, target, out, score_threshold)
        return
    if is_segmentation_name(model.arch or ""):
        if out is None:
            raise ValueError("a segmentation model predicts masks: pass --out DIR for the mask PNGs")
        yield from predict_masks(model, device, target, out)
        return
    files = list_images(target)
    names = model.class_names or [str(i) for i in range(model.num_classes)]
    k = max(1, min(top_k, len(names)))
    loader = torch.utils.data.DataLoader(
        FolderDataset([(f, -1) for f in files], model.preprocessing.transform()),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate_skip_bad,
    )
    with torch.no_grad():
        for images, _, indices, bad_files in loader:
            yield from bad_files
            if images is None:
                continue
            images = images.to(device).contiguous(memory_format=torch.channels_last)
            probabilities = model(images).softmax(1)
            values, classes = probabilities.topk(k, 1)
            for index, row_values, row_classes in zip(
                indices.tolist(), values.tolist(), classes.tolist(), strict=True
            ):
                yield Prediction(
                    files[index], [(names[c], p) for c, p in zip(row_classes, row_values, strict=True)]
                )
