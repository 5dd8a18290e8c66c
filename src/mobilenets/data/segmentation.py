"""Image + mask folders for segmentation, read robustly, with joint image / mask augmentation.

Layouts (a mask is an index PNG, palette or grayscale, 255 = ignore):
- ``train/images`` + ``train/masks`` and ``val/images`` + ``val/masks`` (matching stems), or one
  ``images/`` + ``masks/`` pair split by a seed;
- Pascal VOC: ``JPEGImages/`` + ``SegmentationClass/`` (and ``ImageSets/Segmentation/{train,val}.txt``
  when present).
Class names come from ``classes.txt`` (one per line); a VOC folder without one gets VOC's 21.

A pair whose image or mask cannot be read, whose sizes differ, or whose mask holds a class index out of
range is reported with the file and skipped (as :class:`~.folders.BadFile`), never a crash.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..weights.preprocessing import Preprocessing
from .folders import MAX_PIXELS, BadFile, BadImage, load_image

IGNORE_INDEX = 255
MAX_CLASSES_BYTES = 64 << 10  # classes.txt: 255 names at most, so a few KiB; a bigger file is not one
VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm")


@dataclass
class MaskSplit:
    """(image, mask) path pairs of the train and val splits, and the class names."""

    classes: list[str]
    train: list[tuple[str, str]]
    val: list[tuple[str, str]]
    source: str  # "folders", "voc" or "split"
    problems: list[BadFile] = field(default_factory=list)  # what the scan skipped (bad pairs show later)


def _pairs(images: Path, masks: Path, stems: list[str] | None = None) -> list[tuple[str, str]]:
    found = {p.stem: p for p in sorted(images.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    mask_files = {p.stem: p for p in sorted(masks.iterdir()) if p.suffix.lower() == ".png"}
    chosen = stems if stems is not None else sorted(found)
    return [(str(found[s]), str(mask_files.get(s, masks / f"{s}.png"))) for s in chosen if s in found]


def _classes(root: Path, voc: bool) -> list[str]:
    listed = root / "classes.txt"
    if listed.is_file():
        if listed.stat().st_size > MAX_CLASSES_BYTES:
            raise ValueError(f"{listed} is over {MAX_CLASSES_BYTES >> 10} KiB: not a list of class names")
        names = [line.strip() for line in listed.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not 1 <= len(names) <= IGNORE_INDEX:
            raise ValueError(f"{listed} must name 1 to {IGNORE_INDEX} classes, one per line")
        return names
    if voc:
        return list(VOC_CLASSES)
    raise ValueError(f"{root} has no classes.txt: write the class names there, one per line, index 0 first")


def scan_masks(root: str | os.PathLike, val_fraction: float = 0.2, seed: int = 0) -> MaskSplit:
    """The pairs under ``root`` in one of the layouts of this module's docstring."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    if (root / "train" / "images").is_dir() and (root / "val" / "images").is_dir():
        train = _pairs(root / "train" / "images", root / "train" / "masks")
        val = _pairs(root / "val" / "images", root / "val" / "masks")
        split = MaskSplit(_classes(root, False), train, val, "folders")
    elif (root / "JPEGImages").is_dir() and (root / "SegmentationClass").is_dir():
        lists = root / "ImageSets" / "Segmentation"
        if (lists / "train.txt").is_file() and (lists / "val.txt").is_file():
            read = lambda name: (lists / name).read_text().split()  # noqa: E731
            train = _pairs(root / "JPEGImages", root / "SegmentationClass", read("train.txt"))
            val = _pairs(root / "JPEGImages", root / "SegmentationClass", read("val.txt"))
        else:  # only the images that have masks
            stems = sorted(p.stem for p in (root / "SegmentationClass").glob("*.png"))
            pairs = _pairs(root / "JPEGImages", root / "SegmentationClass", stems)
            train, val = _seeded_split(pairs, val_fraction, seed)
        split = MaskSplit(_classes(root, True), train, val, "voc")
    elif (root / "images").is_dir() and (root / "masks").is_dir():
        train, val = _seeded_split(_pairs(root / "images", root / "masks"), val_fraction, seed)
        split = MaskSplit(_classes(root, False), train, val, "split")
    else:
        raise ValueError(
            f"{root} is not a segmentation folder: expected train/images + train/masks and val/..., "
            "images/ + masks/, or VOC's JPEGImages/ + SegmentationClass/"
        )
    if not split.train or not split.val:
        raise ValueError(f"{root}: found {len(split.train)} training and {len(split.val)} validation pairs")
    return split


def _seeded_split(pairs, val_fraction: float, seed: int):
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    count = max(1, round(len(pairs) * val_fraction))
    val = sorted(order[:count])
    train = sorted(order[count:])
    return [pairs[i] for i in train], [pairs[i] for i in val]


def load_mask(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A mask as (H, W) uint8 class indices; palette ("P") and grayscale ("L") PNGs hold them directly."""
    try:
        with Image.open(path) as mask:
            if mask.width * mask.height > max_pixels:
                raise BadImage(f"{mask.width}x{mask.height} exceeds {max_pixels} pixels")
            if mask.mode not in ("P", "L"):
                raise BadImage(f"mask mode {mask.mode} is not an index mask (palette or grayscale PNG)")
            return np.array(mask, dtype=np.uint8)
    except BadImage:
        raise
    except FileNotFoundError:
        raise BadImage("missing mask") from None
    except Exception as error:  # Pillow raises many types for a bad file
        raise BadImage(f"unreadable mask ({error})") from None


@dataclass(frozen=True)
class JointTransform:
    """Image and mask together: in training a random scale (``scale_range`` times ``size``; 0.5-2x as
    torchvision's and DeepLab's references train), a random crop (padded with 0 / ignore where the
    scaled image is smaller) and a horizontal flip; in evaluation a resize to ``size``. Then the image is
    normalised as the weights expect."""

    size: int
    preprocessing: Preprocessing
    train: bool
    scale_range: tuple[float, float] = (0.5, 2.0)

    def __call__(self, image: Image.Image, mask: np.ndarray, rng: random.Random):
        mask_image = Image.fromarray(mask)
        if self.train:
            side = max(8, int(self.size * rng.uniform(*self.scale_range)))
            image = image.resize((side, side), Image.BILINEAR)
            mask_image = mask_image.resize((side, side), Image.NEAREST)
            pixels = np.zeros((max(side, self.size),) * 2 + (3,), np.uint8)
            labels = np.full((max(side, self.size),) * 2, IGNORE_INDEX, np.uint8)
            pixels[:side, :side], labels[:side, :side] = np.asarray(image), np.asarray(mask_image)
            top = rng.randint(0, pixels.shape[0] - self.size)
            left = rng.randint(0, pixels.shape[1] - self.size)
            pixels = pixels[top : top + self.size, left : left + self.size]
            labels = labels[top : top + self.size, left : left + self.size]
            if rng.random() < 0.5:
                pixels, labels = pixels[:, ::-1], labels[:, ::-1]
        else:
            pixels = np.asarray(image.resize((self.size, self.size), Image.BILINEAR))
            labels = np.asarray(mask_image.resize((self.size, self.size), Image.NEAREST))
        x = torch.from_numpy(np.array(pixels)).permute(2, 0, 1).float() / 255.0  # a writable copy
        mean = torch.tensor(self.preprocessing.mean)[:, None, None]
        std = torch.tensor(self.preprocessing.std)[:, None, None]
        return (x - mean) / std, torch.from_numpy(np.array(labels)).long()


class MaskDataset(torch.utils.data.Dataset):
    """(image, mask, index) per pair, or a BadFile, as :func:`~.folders.collate_skip_bad` expects."""

    def __init__(self, pairs: list[tuple[str, str]], transform: JointTransform, num_classes: int):
        self.pairs, self.transform, self.num_classes = pairs, transform, num_classes

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int):
        image_path, mask_path = self.pairs[index]
        try:
            image = load_image(image_path)
        except BadImage as error:
            return _bad(image_path, error)
        try:
            mask = load_mask(mask_path)
            if mask.shape != (image.height, image.width):
                raise BadImage(
                    f"mask {mask.shape[1]}x{mask.shape[0]} differs from image {image.width}x{image.height}"
                )
            wrong = (mask != IGNORE_INDEX) & (mask >= self.num_classes)
            if wrong.any():
                raise BadImage(
                    f"class index {int(mask[wrong].max())} out of range (0..{self.num_classes - 1}, 255)"
                )
        except BadImage as error:
            return _bad(mask_path, error)
        # Drawn from torch's generator, which the loop seeds from (seed, epoch): resume stays exact.
        rng = random.Random(int(torch.randint(0, 2**31, (1,)).item())) if self.transform.train else None
        x, y = self.transform(image, mask, rng)
        return x, y, index

    def preload(self, progress: bool = False) -> MaskDataset:  # small sets decode fast enough as they are
        return self


def _bad(path, error: BadImage) -> BadFile:
    """The file and the reason, worded as load_image words it ("PATH: reason")."""
    path = str(path)
    reason = str(error) if str(error).startswith(path) else f"{path}: {error}"
    return BadFile(path, reason)
