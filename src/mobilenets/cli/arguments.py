"""Argument types shared by the commands."""

from __future__ import annotations

import argparse


def resolution_arg(text: str) -> int | tuple[int, int]:
    """224, or HEIGHTxWIDTH such as 1024x2048 (Cityscapes, as V3 Table 7 counts it)."""
    parts = text.lower().split("x")
    try:
        values = [int(part) for part in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"must be a size in pixels, N or HEIGHTxWIDTH (1024x2048), got {text}"
        )
    return values[0] if len(values) == 1 else (values[0], values[1])


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value
