"""Evaluate and predict with detection models: COCO mAP and per-class AP (pycocotools) with
precision-recall curves; predictions as COCO-results JSON and images with their boxes drawn."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, ImageDraw
from torchvision import tv_tensors

from ..data.detection import DetectionDataset, collate_detection, detection_transform, scan_detection
from ..data.folders import BadFile, BadFileLog, BadImage, list_images, load_image
from ..weights.checkpoint import atomic_write
from .detection import coco_map
from .run_folder import check_prediction_outputs, labelled_folder

EVAL_THRESHOLDS = dict(score_threshold=0.001, max_detections=100)  # COCO's protocol: 100 per image


@dataclass
class BoxEvaluation:
    map: float  # AP@[.5:.95]
    map50: float
    map75: float
    map_small: float  # -1 where the split has no object of that size
    map_medium: float
    map_large: float
    samples: int
    per_class: list[dict]  # class, ap, ap50, precision50 (101 recall points)
    classes: list[str]
    bad_files: list[dict]

    def to_dict(self) -> dict:
        return dict(vars(self))


def _rescale(boxes: torch.Tensor, size: int, width: int, height: int) -> torch.Tensor:
    """Boxes from the model's ``size`` x ``size`` input back to the image's pixels."""
    return boxes * torch.tensor([width / size, height / size, width / size, height / size])


@torch.no_grad()
def evaluate_boxes(
    model, device, source: Path, data, out=None, batch_size: int = 16, workers: int = 2
) -> BoxEvaluation:
    """COCO mAP of ``model`` on the validation images of ``data`` (a detection folder, or "demo" for a
    demo run's data), boxes compared in each image's own pixels (the size ranges of AP small / medium /
    large depend on them). Writes evaluation.json and pr_curves.png into ``out``."""
    split = scan_detection(labelled_folder(data, source))
    bad = BadFileLog()
    bad.add(split.problems)
    classes = model.class_names or split.classes
    if list(split.classes) != list(classes):
        raise ValueError(
            f"{data} names the classes {', '.join(split.classes[1:])}; the model was trained on "
            f"{', '.join(classes[1:])}"
        )
    size = model.preprocessing.crop
    dataset = DetectionDataset(split.val, detection_transform(size, model.preprocessing, train=False))
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate_detection
    )
    truths, detections, sizes = [], [], []
    model.eval()
    for images, _, indices, bad_files in loader:
        bad.add(bad_files)
        if images is None:
            continue
        found = model.detect(
            images.to(device).contiguous(memory_format=torch.channels_last), **EVAL_THRESHOLDS
        )
        for index, result in zip(indices.tolist(), found, strict=True):
            record = split.val[index]
            width, height = record.width, record.height  # declared, and checked against the image
            if not (width and height):
                with Image.open(record.path) as image:  # the header only: the size
                    width, height = image.size
            rows = torch.cat(
                [
                    torch.tensor(record.labels, dtype=torch.float32)[:, None],
                    torch.tensor(record.boxes).reshape(-1, 4),
                ],
                1,
            )
            truths.append(rows)
            detections.append(
                {
                    **{k: v.cpu() for k, v in result.items()},
                    "boxes": _rescale(result["boxes"].cpu(), size, width, height),
                }
            )
            sizes.append((height, width))
    scores = coco_map(truths, detections, model.num_classes, list(classes), sizes)
    result = BoxEvaluation(
        scores["map"],
        scores["map50"],
        scores["map75"],
        scores["map_small"],
        scores["map_medium"],
        scores["map_large"],
        len(truths),
        scores["per_class"],
        list(classes),
        bad.report(),
    )
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(
            out / "evaluation.json", lambda tmp: tmp.write_text(json.dumps(result.to_dict(), indent=2))
        )
        plot_pr_curves(result, out / "pr_curves.png")
    return result


def plot_pr_curves(result: BoxEvaluation, path: Path) -> None:
    """Precision against recall at IoU 0.5, one curve per class, AP@.5 in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    recall = [i / 100 for i in range(101)]
    for row in result.per_class:
        if row.get("precision50"):
            ax.plot(recall, row["precision50"], label=f"{row['class']} (AP50 {row['ap50']:.2f})")
    ax.set(
        xlabel="recall",
        ylabel="precision",
        xlim=(0, 1),
        ylim=(0, 1.02),
        title=f"Precision-recall at IoU 0.5 (mAP@.5 {result.map50:.3f}, mAP {result.map:.3f})",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)


@dataclass
class BoxPrediction:
    path: str
    boxes: list[list[float]]  # x1, y1, x2, y2 in the image's pixels
    scores: list[float]
    classes: list[str]
    drawn: Path | None  # the image with its boxes, when predict was given a folder


def colour_of(label: int) -> tuple[int, int, int]:
    """A distinct, stable colour per class (golden-angle hues)."""
    import colorsys

    r, g, b = colorsys.hsv_to_rgb((label * 0.618034) % 1.0, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_boxes(image: Image.Image, boxes, labels, scores, names: list[str]) -> Image.Image:
    """A copy of ``image`` with each box outlined in its class's colour and labelled "class 0.97"."""
    drawn = image.copy()
    draw = ImageDraw.Draw(drawn)
    width = max(2, round(min(image.size) / 200))
    for box, label, score in zip(boxes, labels, scores, strict=True):
        colour = colour_of(label)
        draw.rectangle(box, outline=colour, width=width)
        text = f"{names[label]} {score:.2f}"
        left, top, right, bottom = draw.textbbox((box[0], box[1]), text)
        y = box[1] - (bottom - top) - 2 if box[1] - (bottom - top) - 2 >= 0 else box[1]
        draw.rectangle([box[0], y, box[0] + right - left + 4, y + bottom - top + 2], fill=colour)
        draw.text((box[0] + 2, y), text, fill=(0, 0, 0))
    return drawn


@torch.no_grad()
def predict_boxes(
    model, device, target, out=None, score_threshold: float = 0.3
) -> Iterator[BoxPrediction | BadFile]:
    """Detections above ``score_threshold`` per image of ``target`` (a file or a folder), in the image's
    pixels. With ``out``: ``out``/<stem>.png with the boxes drawn for each image, and ``out``/detections.json
    in COCO's results format (image ids in the order of ``out``/images.json); nothing there is replaced."""
    paths = list_images(target)
    names = model.class_names or ["background", *(str(i) for i in range(1, model.num_classes))]
    out = Path(out) if out is not None else None
    if out is not None:
        planned = [out / f"{Path(p).stem}.png" for p in paths] + [
            out / "detections.json",
            out / "images.json",
        ]
        check_prediction_outputs(planned, paths, target, "drawings")
        out.mkdir(parents=True, exist_ok=True)
    size = model.preprocessing.crop
    transform = detection_transform(size, model.preprocessing, train=False)
    model.eval()
    results, images = [], []
    for image_id, path in enumerate(paths, start=1):
        try:
            image = load_image(path)
        except BadImage as error:
            yield BadFile(path, str(error))
            continue
        no_boxes = {
            "boxes": tv_tensors.BoundingBoxes(
                torch.zeros(0, 4), format="XYXY", canvas_size=(image.height, image.width)
            ),
            "labels": torch.zeros(0, dtype=torch.int64),
        }
        x, _ = transform(image, no_boxes)  # the evaluation transform, as training validated with it
        found = model.detect(
            x[None].to(device).contiguous(memory_format=torch.channels_last), score_threshold=score_threshold
        )[0]
        boxes = _rescale(found["boxes"].cpu(), size, image.width, image.height).tolist()
        labels, scores = found["labels"].tolist(), found["scores"].tolist()
        drawn = None
        if out is not None:
            drawn = out / f"{Path(path).stem}.png"
            draw_boxes(image, boxes, labels, scores, names).save(drawn)
            images.append(
                {"id": image_id, "file_name": str(path), "width": image.width, "height": image.height}
            )
            results += [
                {
                    "image_id": image_id,
                    "category_id": label,
                    "bbox": [round(b[0], 2), round(b[1], 2), round(b[2] - b[0], 2), round(b[3] - b[1], 2)],
                    "score": round(score, 5),
                }
                for b, label, score in zip(boxes, labels, scores, strict=True)
            ]
        yield BoxPrediction(path, boxes, scores, [names[i] for i in labels], drawn)
    if out is not None:
        categories = [{"id": i, "name": names[i]} for i in range(1, len(names))]
        atomic_write(out / "detections.json", lambda tmp: tmp.write_text(json.dumps(results)))
        atomic_write(
            out / "images.json",
            lambda tmp: tmp.write_text(json.dumps({"images": images, "categories": categories}, indent=1)),
        )
