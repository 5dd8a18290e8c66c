"""The metadata our ONNX exports carry (class names, preprocessing), read from files nobody here wrote.

Every value is checked before it is used: the NumPy runner sizes arrays from it and the C generator
writes it into source code, so a hostile file must get a clear error, never a huge allocation, a
division by zero or a string where a number goes.
"""

from __future__ import annotations

import json
import math

MAX_SIDE = 8192  # pixels: resize and crop sizes beyond this are refused, not allocated
MAX_CLASSES = 1_000_000
MAX_NAME_BYTES = 4096

DEFAULT_PREPROCESSING = {
    "resize": 256,
    "crop": 224,
    "interpolation": "bilinear",
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
}


class MetadataError(ValueError):
    """A metadata entry is not what our exports write; the message names the entry."""


def _json(metadata: dict, key: str):
    try:
        return json.loads(metadata[key])
    except (ValueError, RecursionError):
        raise MetadataError(f"metadata {key!r} is not valid JSON") from None


def _finite(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise MetadataError(f"{what} must be a finite number, got {value!r:.40}")
    return float(value)


def class_names(metadata: dict) -> list[str] | None:
    """The ``class_names`` entry: a list of strings, or None when absent or null."""
    if not metadata.get("class_names"):
        return None
    names = _json(metadata, "class_names")
    if names is None:
        return None
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise MetadataError("metadata 'class_names' must be a JSON list of strings")
    if len(names) > MAX_CLASSES or any(
        len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES for name in names
    ):
        raise MetadataError(
            f"metadata 'class_names' holds more than {MAX_CLASSES:,} names or a name over {MAX_NAME_BYTES} bytes"
        )
    return names


def preprocessing(metadata: dict, channels: int | None = None) -> dict:
    """The ``preprocessing`` entry merged over the ImageNet defaults, checked: ``resize`` and ``crop`` whole
    numbers in [1, MAX_SIDE] with crop <= resize, ``mean`` and ``std`` lists of finite numbers (one per
    input channel when ``channels`` is given, std non-zero)."""
    if not metadata.get("preprocessing"):
        return dict(DEFAULT_PREPROCESSING)
    given = _json(metadata, "preprocessing")
    if not isinstance(given, dict):
        raise MetadataError("metadata 'preprocessing' must be a JSON object")
    result = {**DEFAULT_PREPROCESSING, **given}
    for key in ("resize", "crop"):
        value = _finite(result[key], f"metadata preprocessing {key!r}")
        if value != int(value) or not 1 <= value <= MAX_SIDE:
            raise MetadataError(
                f"metadata preprocessing {key!r} must be a whole number from 1 to {MAX_SIDE}, got {value:g}"
            )
        result[key] = int(value)
    if result["crop"] > result["resize"]:
        raise MetadataError(
            f"metadata preprocessing 'crop' ({result['crop']}) is larger than 'resize' ({result['resize']})"
        )
    for key in ("mean", "std"):
        values = result[key]
        if not isinstance(values, list) or not 1 <= len(values) <= 4:
            raise MetadataError(f"metadata preprocessing {key!r} must be a list of 1 to 4 numbers")
        values = [_finite(v, f"metadata preprocessing {key!r}") for v in values]
        if channels is not None and len(values) not in (1, channels):
            raise MetadataError(
                f"metadata preprocessing {key!r} has {len(values)} values for a {channels}-channel input"
            )
        result[key] = values * channels if channels is not None and len(values) == 1 else values
    if any(v == 0 for v in result["std"]):
        raise MetadataError("metadata preprocessing 'std' must not contain 0")
    return result
