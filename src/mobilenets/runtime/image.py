"""Images to model inputs with NumPy: binary PPM / PGM read natively; other formats through Pillow if present.

Preprocessing follows the model's metadata: resize the shorter side (bilinear, area-averaged when
shrinking), centre crop, scale to [0, 1], normalise with mean / std.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

MAX_PIXELS = 64_000_000  # as training's decompression-bomb limit (mobilenets.data.MAX_PIXELS)


def _pnm_header(data: bytes, path) -> tuple[int, int, int, int]:
    """Width, height, maxval and the offset of the pixels. Every step is bounded by the data: a
    truncated or malformed header is an error, never a loop past the end."""
    tokens, position = [], 2
    while len(tokens) < 3:
        while position < len(data) and data[position : position + 1].isspace():
            position += 1
        if position >= len(data):
            raise ValueError(f"{path}: truncated PPM/PGM header")
        if data[position : position + 1] == b"#":
            end = data.find(b"\n", position)
            if end < 0:
                raise ValueError(f"{path}: truncated PPM/PGM header")
            position = end + 1
            continue
        start = position
        while position < len(data) and data[position : position + 1].isdigit() and position - start < 10:
            position += 1
        if position == start or (position < len(data) and not data[position : position + 1].isspace()):
            raise ValueError(f"{path}: malformed PPM/PGM header (expected a number of at most 9 digits)")
        tokens.append(int(data[start:position]))
    width, height, maxval = tokens
    if width < 1 or height < 1 or not 1 <= maxval <= 65535:
        raise ValueError(
            f"{path}: PPM/PGM header {width}x{height}, maxval {maxval}: width and height must be at least 1, "
            "maxval 1..65535"
        )
    if width * height > MAX_PIXELS:
        raise ValueError(f"{path}: {width}x{height} exceeds {MAX_PIXELS:,} pixels")
    return width, height, maxval, position + 1  # one whitespace byte ends the header


def read_pnm(path: str | os.PathLike) -> np.ndarray:
    """A binary PPM (P6) or PGM (P5) as an (H, W, 3) uint8 array."""
    data = Path(path).read_bytes()
    magic = data[:2]
    if magic not in (b"P6", b"P5"):
        raise ValueError(f"{path} is not a binary PPM/PGM (magic {magic!r})")
    width, height, maxval, position = _pnm_header(data, path)
    channels = 3 if magic == b"P6" else 1
    dtype = np.dtype(np.uint8) if maxval < 256 else np.dtype(">u2")
    needed = width * height * channels * dtype.itemsize
    if len(data) - position < needed:
        raise ValueError(
            f"{path}: truncated: {width}x{height} needs {needed:,} bytes of pixels, has {max(0, len(data) - position):,}"
        )
    pixels = np.frombuffer(data, dtype=dtype, count=width * height * channels, offset=position)
    pixels = pixels.reshape(height, width, channels).astype(np.float32) * (255.0 / maxval)
    pixels = np.repeat(pixels, 3, axis=2) if channels == 1 else pixels
    return np.clip(pixels + 0.5, 0, 255).astype(np.uint8)


def read_image(path: str | os.PathLike) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    with open(path, "rb") as file:
        head = file.read(2)
    if head in (b"P6", b"P5"):
        return read_pnm(path)
    try:
        from PIL import Image
    except ImportError:
        raise ValueError(
            f"{path}: only binary PPM/PGM can be read without Pillow (pip install pillow)"
        ) from None
    try:
        with Image.open(path) as image:
            width, height = image.size  # from the header: checked before anything is decoded
            if width * height > MAX_PIXELS:
                raise ValueError(f"{width}x{height} exceeds {MAX_PIXELS:,} pixels")
            return np.asarray(image.convert("RGB"))
    except Exception as error:  # Pillow raises many types for bad files
        raise ValueError(f"{path} could not be read as an image ({error})") from None


def _resize_axis(array: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Linear interpolation along one axis; when shrinking, the kernel widens (area averaging, like antialias)."""
    old = array.shape[axis]
    scale = old / size
    support = max(scale, 1.0)
    centres = (np.arange(size) + 0.5) * scale - 0.5
    taps = np.arange(-int(np.ceil(support)), int(np.ceil(support)) + 1)
    positions = np.floor(centres)[:, None] + taps[None, :]
    weights = np.maximum(0, 1 - np.abs(positions - centres[:, None]) / support)
    weights /= weights.sum(1, keepdims=True)
    positions = np.clip(positions, 0, old - 1).astype(int)
    moved = np.moveaxis(array, axis, 0)
    out = np.einsum("st,st...->s...", weights, moved[positions])
    return np.moveaxis(out, 0, axis)


def preprocess(pixels: np.ndarray, preprocessing: dict, size: int, whole: bool = False) -> np.ndarray:
    """(H, W, 3) uint8 -> (1, C, size, size) float32, as the metadata says: the shorter side resized and
    the centre cropped, or with ``whole`` (a detector) the whole image resized to size x size; C is 1
    (luma) when the metadata gives one mean and std, else 3."""
    height, width = pixels.shape[:2]
    if whole:
        image = _resize_axis(_resize_axis(pixels.astype(np.float32), size, 0), size, 1) / 255.0
    else:
        ratio = preprocessing["crop"] / preprocessing["resize"]
        resize = int(round(size / ratio))
        scale = resize / min(height, width)
        new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
        image = _resize_axis(_resize_axis(pixels.astype(np.float32), new_h, 0), new_w, 1)
        top, left = (new_h - size) // 2, (new_w - size) // 2
        image = image[top : top + size, left : left + size] / 255.0
    if len(preprocessing["mean"]) == 1:  # a grayscale model: ITU-R 601 luma, as PIL's "L"
        image = image @ np.array([[0.299], [0.587], [0.114]], np.float32)
    image = (image - np.asarray(preprocessing["mean"], np.float32)) / np.asarray(
        preprocessing["std"], np.float32
    )
    return image.transpose(2, 0, 1)[None].astype(np.float32)
