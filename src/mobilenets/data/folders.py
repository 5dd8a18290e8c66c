"""Image folders: robust decoding, one sub-folder per class, train / val splits, transforms.

A run never dies on one bad file: a corrupt, truncated, zero-byte or non-image file, or a decompression
bomb, becomes a :class:`BadFile` record that travels out of the DataLoader worker with the batch, is
warned about once (naming the file), counted, and listed in the run's report.
"""

from __future__ import annotations

import os
import random
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..weights.preprocessing import Preprocessing

# Pixels above which a file is treated as a decompression bomb (Pillow warns at 89M and fails at 179M).
MAX_PIXELS = 64_000_000
SPLIT_DIRS = (("train", "val"), ("train", "valid"), ("train", "validation"))


class BadImage(Exception):
    """A file that cannot be used as an image; the message says which and why."""


@dataclass(frozen=True)
class BadFile:
    path: str
    reason: str


def load_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode any common image as 8-bit RGB: grayscale, RGBA, palette, CMYK and 16-bit are converted."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise BadImage(f"{path}: empty file (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise BadImage(
                        f"{path}: {width}x{height} exceeds {max_pixels:,} pixels (decompression bomb?)"
                    )
                image.load()  # a truncated file fails here
                return to_rgb(image)
    except BadImage:
        raise
    except UnidentifiedImageError:
        raise BadImage(f"{path}: not an image Pillow can read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise BadImage(f"{path}: decompression bomb refused ({error})") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise BadImage(f"{path}: corrupt or truncated image ({error})") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB from any Pillow mode; 16-bit and float images are scaled, not clipped."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        if image.mode == "F":
            top = max(float(array.max()), 1e-12)
        array = np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(array, "L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", image.size, (255, 255, 255))  # transparent pixels become white
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return background
    return image.convert("RGB")


# ---------------------------------------------------------------------------------------------------
# Folders
# ---------------------------------------------------------------------------------------------------


@dataclass
class Split:
    """(path, label) samples of the train and val splits, and the class names (sorted folder names)."""

    classes: list[str]
    train: list[tuple[str, int]]
    val: list[tuple[str, int]]
    source: str  # "folders" (train/ and val/ present) or "split" (seeded stratified split)
    problems: list[BadFile] = field(default_factory=list)  # what the scan skipped (none for folders)


def class_folders(root: Path) -> list[str]:
    return sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def scan(root: Path, classes: list[str] | None = None) -> tuple[list[str], list[tuple[str, int]]]:
    """Every non-hidden file under each class folder (bad ones are found at decode time)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {root} does not exist")
    classes = classes or class_folders(root)
    if not classes:
        raise ValueError(f"{root} has no class sub-folders: expected {root}/<class name>/<images>")
    samples = []
    for label, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            samples += [(str(Path(dirpath) / f), label) for f in sorted(filenames) if not f.startswith(".")]
    if not samples:
        raise ValueError(f"{root} has class folders ({', '.join(classes[:5])}) but no files in them")
    return classes, samples


def split_folder(root: str | os.PathLike, val_fraction: float = 0.2, seed: int = 0) -> Split:
    """train/ and val/ sub-folders when present, otherwise a seeded split that keeps class proportions."""
    root = Path(root)
    for train_name, val_name in SPLIT_DIRS:
        if (root / train_name).is_dir() and (root / val_name).is_dir():
            classes, train = scan(root / train_name)
            _, val = scan(root / val_name, classes)
            return Split(classes, train, val, "folders")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    classes, samples = scan(root)
    by_class: dict[int, list[tuple[str, int]]] = defaultdict(list)
    for sample in samples:
        by_class[sample[1]].append(sample)
    rng = random.Random(seed)
    train, val = [], []
    for label in sorted(by_class):
        items = by_class[label][:]
        rng.shuffle(items)
        n_val = max(1, round(len(items) * val_fraction)) if len(items) > 1 else 0
        val += items[:n_val]
        train += items[n_val:]
    return Split(classes, sorted(train), sorted(val), "split")


class FolderDataset(torch.utils.data.Dataset):
    """(image tensor, label, index) per sample; a file that fails to decode yields a BadFile instead.

    ``preload()`` decodes every file once into memory (uint8), for small datasets where decoding, not
    the network, would bound the speed on a few cores.
    """

    def __init__(self, samples: list[tuple[str, int]], transform, max_pixels: int = MAX_PIXELS):
        self.samples, self.transform, self.max_pixels = samples, transform, max_pixels
        self.cache: list[torch.Tensor | BadFile] | None = None

    def preload(self, progress: bool = False) -> FolderDataset:
        from torchvision.transforms.v2.functional import pil_to_tensor
        from tqdm import tqdm

        cache: list[torch.Tensor | BadFile] = []
        for path, _ in tqdm(self.samples, desc="decoding", unit="img", disable=not progress, leave=False):
            try:
                cache.append(pil_to_tensor(load_image(path, self.max_pixels)))
            except BadImage as error:
                cache.append(BadFile(path, str(error)))
        self.cache = cache
        return self

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        if self.cache is not None:
            image = self.cache[index]
            return image if isinstance(image, BadFile) else (self.transform(image), label, index)
        try:
            image = load_image(path, self.max_pixels)
        except BadImage as error:
            return BadFile(path, str(error))
        return self.transform(image), label, index


def collate_skip_bad(batch):
    """Stack the good samples; hand the BadFile records on instead of failing the batch."""
    bad = [item for item in batch if isinstance(item, BadFile)]
    good = [item for item in batch if not isinstance(item, BadFile)]
    if not good:
        return None, None, None, bad
    images = torch.stack([item[0] for item in good])
    targets = [item[1] for item in good]  # class indices, or per-pixel masks (segmentation)
    labels = torch.stack(targets) if isinstance(targets[0], torch.Tensor) else torch.tensor(targets)
    indices = torch.tensor([item[2] for item in good])
    return images, labels, indices, bad


class BadFileLog:
    """Warn once per bad file (or per problem in one file: an annotations file may hold several bad
    entries), count them, and keep the list for the run's report."""

    def __init__(self):
        self.files: dict[tuple[str, str], None] = {}  # (path, reason), in the order met

    def add(self, records: list[BadFile]) -> None:
        for record in records:
            if (record.path, record.reason) not in self.files:
                self.files[(record.path, record.reason)] = None
                warnings.warn(f"skipping {record.reason}", stacklevel=2)

    def merge(self, files: dict[tuple[str, str], None]) -> None:
        """Files another process found (it warned about them already)."""
        for key in files:
            self.files.setdefault(key, None)

    def __len__(self) -> int:
        return len(self.files)

    def report(self) -> list[dict]:
        return [{"path": path, "reason": reason} for path, reason in sorted(self.files)]


# ---------------------------------------------------------------------------------------------------
# Transforms (torchvision.transforms.v2)
# ---------------------------------------------------------------------------------------------------

AUGMENTS = ("none", "trivialaugment", "randaugment")


def train_transform(
    size: int,
    preprocessing: Preprocessing,
    augment: str = "none",
    random_erasing: float = 0.0,
    scale=(0.25, 1.0),
    ratio=(3 / 4, 4 / 3),
):
    """RandomResizedCrop + flip [+ TrivialAugmentWide / RandAugment] + normalise [+ random erasing]; with
    one mean and std (a grayscale model) the image is made grayscale after the augmentations."""
    from torchvision.transforms import InterpolationMode, v2

    if augment not in AUGMENTS:
        raise ValueError(f"augment must be one of {AUGMENTS}, got {augment!r}")
    interpolation = InterpolationMode(preprocessing.interpolation)
    steps = [
        v2.ToImage(),
        v2.RandomResizedCrop(size, scale=scale, ratio=ratio, interpolation=interpolation, antialias=True),
    ]
    steps.append(v2.RandomHorizontalFlip())
    if augment == "trivialaugment":
        steps.append(v2.TrivialAugmentWide(interpolation=interpolation))
    elif augment == "randaugment":
        steps.append(v2.RandAugment(interpolation=interpolation))
    if len(preprocessing.mean) == 1:
        steps.append(v2.Grayscale(1))
    steps += [
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(preprocessing.mean), list(preprocessing.std)),
    ]
    if random_erasing > 0:
        steps.append(v2.RandomErasing(p=random_erasing, value=0))
    return v2.Compose(steps)


def eval_transform(size: int, preprocessing: Preprocessing):
    """Resize to size / crop-ratio, centre-crop to ``size`` (the checkpoint's crop ratio kept)."""
    ratio = preprocessing.crop / preprocessing.resize
    return Preprocessing(
        resize=int(round(size / ratio)),
        crop=size,
        interpolation=preprocessing.interpolation,
        mean=preprocessing.mean,
        std=preprocessing.std,
    ).transform()


def list_images(target: str | os.PathLike) -> list[str]:
    """One file, or every file under a folder (recursively, hidden ones skipped; bad ones found later)."""
    path = Path(target)
    if path.is_file():
        return [str(path)]
    if not path.is_dir():
        raise FileNotFoundError(f"{path} does not exist")
    files = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files += [str(Path(dirpath) / f) for f in sorted(filenames) if not f.startswith(".")]
    return files
