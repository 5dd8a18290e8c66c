"""Object detection data: COCO-format JSON and Pascal VOC folders, read robustly, with SSD's augmentation.

Layouts:
- COCO format: ``train/annotations.json`` + ``train/images/`` and the same under ``val/``; or one
  ``annotations.json`` + ``images/`` split by a seed; or COCO's own ``annotations/instances_train2017.json``
  + ``train2017/`` (and val).
- Pascal VOC: ``JPEGImages/`` + ``Annotations/*.xml`` (with ``ImageSets/Main/{train,val}.txt`` when present,
  else a seeded split). Class names: ``classes.txt`` (one per line, no background) if present, VOC's 20 if
  every name found is one of them, else the names found, sorted.

Labels are 1..K (0 is SSD's background). Boxes are (x1, y1, x2, y2) in pixels. An annotation that cannot
be used (zero or negative size, outside the image, an unknown category, a missing image) is skipped and
reported with the file and the reason as a :class:`~.folders.BadFile`; the rest of the image is kept.
Images without boxes are valid (they teach the background). Crowd regions (COCO ``iscrowd``) are not
trained on, as torchvision's detection references do.
"""

from __future__ import annotations

import json
import math
import os
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from ..weights.preprocessing import Preprocessing
from .folders import BadFile, BadImage, load_image
from .segmentation import IMAGE_SUFFIXES, MAX_CLASSES_BYTES, VOC_CLASSES, _bad, _seeded_split

MAX_ANNOTATION_BYTES = 2 << 30  # COCO's train2017 instances file is 448 MB; a bigger "JSON" is not one
MAX_XML_BYTES = 1 << 20  # one VOC file describes one image: a few KiB
MAX_BOXES = 1000  # per image; COCO's most crowded image has 93
EDGE_TOLERANCE = 1.0  # pixels a box may pass the image edge (rounding in the tools that drew it)


@dataclass
class Annotated:
    """One image and its usable boxes (x1, y1, x2, y2 pixels) with labels 1..K."""

    path: str
    boxes: list[list[float]]
    labels: list[int]
    image_id: int
    width: int = 0  # 0 = not declared by the annotation file
    height: int = 0


@dataclass
class DetectionSplit:
    """Annotated images of the train and val splits; ``classes[0]`` is "background"."""

    classes: list[str]
    train: list[Annotated]
    val: list[Annotated]
    source: str  # "coco", "coco-split", "voc"
    problems: list[BadFile] = field(default_factory=list)  # skipped annotations and images


def scan_detection(root: str | os.PathLike, val_fraction: float = 0.2, seed: int = 0) -> DetectionSplit:
    """The annotated images under ``root`` in one of the layouts of this module's docstring."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    problems: list[BadFile] = []
    if (root / "train" / "annotations.json").is_file() and (root / "val" / "annotations.json").is_file():
        classes, train = read_coco(root / "train" / "annotations.json", root / "train" / "images", problems)
        val_classes, val = read_coco(root / "val" / "annotations.json", root / "val" / "images", problems)
        _same_classes(classes, val_classes, root)
        split = DetectionSplit(classes, train, val, "coco")
    elif (root / "annotations" / "instances_train2017.json").is_file():
        files = [
            (root / "annotations" / f"instances_{s}2017.json", root / f"{s}2017") for s in ("train", "val")
        ]
        classes, train = read_coco(*files[0], problems)
        val_classes, val = read_coco(*files[1], problems)
        _same_classes(classes, val_classes, root)
        split = DetectionSplit(classes, train, val, "coco")
    elif (root / "annotations.json").is_file() and (root / "images").is_dir():
        classes, records = read_coco(root / "annotations.json", root / "images", problems)
        train, val = _seeded_split(records, val_fraction, seed)
        split = DetectionSplit(classes, train, val, "coco-split")
    elif (root / "JPEGImages").is_dir() and (root / "Annotations").is_dir():
        split = read_voc(root, val_fraction, seed, problems)
    else:
        raise ValueError(
            f"{root} is not a detection folder: expected train/annotations.json + train/images/ and val/..., "
            "annotations.json + images/, COCO's annotations/instances_train2017.json, or VOC's "
            "JPEGImages/ + Annotations/"
        )
    split.problems = problems
    if not split.train or not split.val:
        raise ValueError(f"{root}: found {len(split.train)} training and {len(split.val)} validation images")
    return split


def _same_classes(train: list[str], val: list[str], root: Path) -> None:
    if train != val:
        raise ValueError(f"{root}: train and val annotations name different categories ({train} vs {val})")


def _number(value, what: str) -> float:
    """A finite number from a JSON value (NaN and infinity are refused: int(inf) would raise elsewhere)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{what} is not a number ({value!r})")
    return float(value)


def check_box(box: list[float], width: int, height: int) -> list[float]:
    """The box clipped by at most EDGE_TOLERANCE to the image, or ValueError saying what is wrong."""
    x1, y1, x2, y2 = box
    if not all(math.isfinite(v) for v in box):
        raise ValueError(f"box {_short(box)} is not finite")
    if not (x2 > x1 and y2 > y1):
        raise ValueError(f"box {_short(box)} has zero or negative size")
    if width and height:
        t = EDGE_TOLERANCE
        if x1 < -t or y1 < -t or x2 > width + t or y2 > height + t:
            raise ValueError(f"box {_short(box)} lies outside the {width}x{height} image")
        x1, y1, x2, y2 = max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height))
    elif x1 < -EDGE_TOLERANCE or y1 < -EDGE_TOLERANCE:
        raise ValueError(f"box {_short(box)} has negative coordinates")
    return [x1, y1, x2, y2]


def _short(box) -> str:
    return "[" + ", ".join(f"{v:g}" for v in box) + "]"


def _inside(folder: Path, name: str) -> Path | None:
    """``folder/name`` when it stays inside ``folder`` (a name from a file may hold ``..`` or a root)."""
    path = (folder / name).resolve()
    return path if path.is_relative_to(folder.resolve()) else None


def read_coco(annotations: Path, images: Path, problems: list[BadFile]) -> tuple[list[str], list[Annotated]]:
    """(class names with "background" first, annotated images) from a COCO-format file. Category ids
    map to labels 1..K in id order."""
    if annotations.stat().st_size > MAX_ANNOTATION_BYTES:
        raise ValueError(f"{annotations} is over {MAX_ANNOTATION_BYTES >> 30} GiB: not an annotations file")
    try:
        data = json.loads(annotations.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{annotations} is not JSON ({error})") from None
    if not isinstance(data, dict) or not all(
        isinstance(data.get(key), list) for key in ("images", "annotations", "categories")
    ):
        raise ValueError(f"{annotations}: a COCO file holds lists 'images', 'annotations' and 'categories'")
    categories: dict[int, str] = {}
    for category in data["categories"]:
        if not isinstance(category, dict) or not isinstance(category.get("id"), int):
            raise ValueError(f"{annotations}: a category without an integer id ({str(category)[:80]})")
        categories[category["id"]] = str(category.get("name", category["id"]))
    label_of = {cid: i + 1 for i, cid in enumerate(sorted(categories))}
    classes = ["background", *(categories[cid] for cid in sorted(categories))]
    where = str(annotations)
    records: dict[int, Annotated] = {}
    for entry in data["images"]:
        try:
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), int):
                raise ValueError("an image entry without an integer id")
            name = entry.get("file_name")
            if not isinstance(name, str) or not name:
                raise ValueError(f"image {entry['id']} has no file_name")
            path = _inside(images, name)
            if path is None:
                raise ValueError(f"image {entry['id']}: file_name {name!r} points outside {images}")
            if not path.is_file():
                problems.append(BadFile(str(images / name), f"{images / name}: missing image file"))
                continue
            width, height = (
                int(_number(entry.get("width", 0), "width")),
                int(_number(entry.get("height", 0), "height")),
            )
            records[entry["id"]] = Annotated(str(path), [], [], entry["id"], width, height)
        except ValueError as error:
            problems.append(BadFile(where, f"{where}: {error}"))
    for ann in data["annotations"]:
        try:
            if not isinstance(ann, dict):
                raise ValueError("an annotation that is not an object")
            record = records.get(ann.get("image_id"))
            if record is None:
                continue  # its image is missing (reported above) or not listed
            if ann.get("iscrowd"):
                continue
            what = f"annotation {ann.get('id')} of {Path(record.path).name}"
            if ann.get("category_id") not in label_of:
                raise ValueError(f"{what}: unknown category id {ann.get('category_id')!r}")
            bbox = ann.get("bbox")
            if not isinstance(bbox, list) or len(bbox) != 4:
                raise ValueError(f"{what}: bbox must be [x, y, width, height]")
            x, y, w, h = (_number(v, f"{what}: bbox value") for v in bbox)
            try:
                box = check_box([x, y, x + w, y + h], record.width, record.height)
            except ValueError as error:
                raise ValueError(f"{what}: {error}") from None
            if len(record.boxes) >= MAX_BOXES:
                raise ValueError(f"{what}: more than {MAX_BOXES} boxes in one image")
            record.boxes.append(box)
            record.labels.append(label_of[ann["category_id"]])
        except ValueError as error:
            problems.append(BadFile(where, f"{where}: {error}"))
    return classes, [records[key] for key in sorted(records)]


def read_voc(root: Path, val_fraction: float, seed: int, problems: list[BadFile]) -> DetectionSplit:
    """A Pascal VOC folder (see the module's docstring for the class names)."""
    parsed: list[tuple[str, Path, int, int, list[tuple[str, list[float], bool]]]] = []
    for xml_path in sorted((root / "Annotations").glob("*.xml")):
        try:
            parsed.append(_read_voc_xml(xml_path, root / "JPEGImages"))
        except ValueError as error:
            problems.append(BadFile(str(xml_path), f"{xml_path}: {error}"))
    listed = root / "classes.txt"
    if listed.is_file():
        if listed.stat().st_size > MAX_CLASSES_BYTES:
            raise ValueError(f"{listed} is over {MAX_CLASSES_BYTES >> 10} KiB: not a list of class names")
        names = [line.strip() for line in listed.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        found = sorted({name for *_, objects in parsed for name, _, _ in objects})
        names = list(VOC_CLASSES[1:]) if set(found) <= set(VOC_CLASSES[1:]) else found
    label_of = {name: i + 1 for i, name in enumerate(names)}
    records = []
    for image_id, (stem, image_path, width, height, objects) in enumerate(parsed):
        xml_path = root / "Annotations" / f"{stem}.xml"
        if not image_path.is_file():
            problems.append(
                BadFile(str(image_path), f"{image_path}: missing image file (named by {xml_path})")
            )
            continue
        record = Annotated(str(image_path), [], [], image_id, width, height)
        for name, box, difficult in objects:
            if difficult:
                continue  # VOC's evaluation ignores them; torchvision's references drop them for training
            try:
                if name not in label_of:
                    raise ValueError(f"unknown class {name!r}")
                record.boxes.append(check_box(box, width, height))
                record.labels.append(label_of[name])
            except ValueError as error:
                problems.append(BadFile(str(xml_path), f"{xml_path}: {error}"))
        records.append(record)
    lists = root / "ImageSets" / "Main"
    if (lists / "train.txt").is_file() and (lists / "val.txt").is_file():
        by_stem = {Path(r.path).stem: r for r in records}
        pick = lambda name: [by_stem[s] for s in (lists / name).read_text().split() if s in by_stem]  # noqa: E731
        train, val = pick("train.txt"), pick("val.txt")
    else:
        train, val = _seeded_split(records, val_fraction, seed)
    return DetectionSplit(["background", *names], train, val, "voc")


def _read_voc_xml(xml_path: Path, images: Path):
    if xml_path.stat().st_size > MAX_XML_BYTES:
        raise ValueError(f"over {MAX_XML_BYTES >> 10} KiB: not one image's annotation")
    try:
        # expat (>= 2.4, as Python 3.11 ships it) refuses entity-expansion bombs and never fetches
        # external entities; the size bound above keeps the tree small.
        tree = ElementTree.fromstring(xml_path.read_bytes())
    except ElementTree.ParseError as error:
        raise ValueError(f"not valid XML ({error})") from None
    name = (tree.findtext("filename") or f"{xml_path.stem}.jpg").strip()
    image_path = _inside(images, name)
    if image_path is None:
        raise ValueError(f"filename {name!r} points outside {images}")
    if image_path.suffix.lower() not in IMAGE_SUFFIXES:
        raise ValueError(f"filename {name!r} is not an image file name")
    found = list(tree.iter("object"))
    if len(found) > MAX_BOXES:
        raise ValueError(f"{len(found)} objects: more than {MAX_BOXES} in one image")
    try:
        width, height = (int(_number(float(tree.findtext(f"size/{k}") or 0), k)) for k in ("width", "height"))
        objects = []
        for obj in found:
            box = obj.find("bndbox")
            if box is None:
                raise ValueError("an object without bndbox")
            # VOC's pixel indices start at 1: torchvision's reference and TF's both read them as they are
            coords = [float(box.findtext(k) or "nan") for k in ("xmin", "ymin", "xmax", "ymax")]
            difficult = (obj.findtext("difficult") or "0").strip() == "1"
            objects.append(((obj.findtext("name") or "").strip(), coords, difficult))
    except ValueError as error:
        raise ValueError(f"bad object in the annotation ({error})") from None
    return xml_path.stem, image_path, width, height, objects


# ---------------------------------------------------------------------------------------------------
# Transforms and the dataset
# ---------------------------------------------------------------------------------------------------


BOX_AUGMENTS = ("ssdlite", "ssd", "flip")


def detection_transform(
    size: int, preprocessing: Preprocessing, train: bool, augment: str = "ssdlite"
) -> v2.Compose:
    """Training augmentation, then a resize to ``size`` x ``size`` and normalisation; evaluation only
    resizes and normalises. ``augment``: "ssdlite" (random IoU crop and flip, as torchvision's SSDLite
    recipe trains), "ssd" (adds SSD's photometric distortion and zoom out, Liu et al. 2016 Section 3.6,
    for small objects) or "flip" (horizontal flip only)."""
    if augment not in BOX_AUGMENTS:
        raise ValueError(f"box augmentation must be one of {BOX_AUGMENTS}, got {augment!r}")
    steps: list = [v2.ToImage()]
    if train:
        if augment == "ssd":
            fill = {tv_tensors.Image: [int(255 * m) for m in preprocessing.mean], "others": 0}
            steps += [v2.RandomPhotometricDistort(p=0.5), v2.RandomZoomOut(fill=fill, side_range=(1.0, 4.0))]
        if augment in ("ssd", "ssdlite"):
            steps.append(v2.RandomIoUCrop())
        steps.append(v2.RandomHorizontalFlip(p=0.5))
    steps += [
        v2.Resize((size, size), antialias=True),
        v2.SanitizeBoundingBoxes(min_size=1.0),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(preprocessing.mean), list(preprocessing.std)),
    ]
    return v2.Compose(steps)


class DetectionDataset(torch.utils.data.Dataset):
    """(image, target (K, 5) rows of label, x1, y1, x2, y2 in the input's pixels, index) per image, or a
    BadFile, as :func:`collate_detection` expects."""

    def __init__(self, records: list[Annotated], transform: v2.Compose):
        self.records, self.transform = records, transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int):
        record = self.records[index]
        try:
            image = load_image(record.path)
        except BadImage as error:
            return _bad(record.path, error)
        if record.width and (image.width, image.height) != (record.width, record.height):
            return BadFile(
                record.path,
                f"{record.path}: the image is {image.width}x{image.height}, its annotation says "
                f"{record.width}x{record.height}",
            )
        boxes = torch.tensor(record.boxes, dtype=torch.float32).reshape(-1, 4)
        target = {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(image.height, image.width)),
            "labels": torch.tensor(record.labels, dtype=torch.int64),
        }
        x, target = self.transform(image, target)
        rows = torch.cat([target["labels"][:, None].float(), target["boxes"].as_subclass(torch.Tensor)], 1)
        return x, rows, index

    def preload(self, progress: bool = False) -> DetectionDataset:
        return self


def collate_detection(batch):
    """Stack the images; pad each image's (K, 5) box rows to the batch's most with label -1 rows, so that
    targets travel as one tensor (N, K_max, 5). BadFile records are handed on as
    :func:`~.folders.collate_skip_bad` does."""
    bad = [item for item in batch if isinstance(item, BadFile)]
    good = [item for item in batch if not isinstance(item, BadFile)]
    if not good:
        return None, None, None, bad
    most = max(len(item[1]) for item in good)
    targets = torch.full((len(good), most, 5), -1.0)
    for row, item in enumerate(good):
        targets[row, : len(item[1])] = item[1]
    images = torch.stack([item[0] for item in good])
    return images, targets, torch.tensor([item[2] for item in good]), bad
