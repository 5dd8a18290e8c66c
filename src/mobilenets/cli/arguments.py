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


BYTE_UNITS = {"": 1, "B": 1, "K": 1024, "KB": 1024, "KIB": 1024, "M": 1024**2, "MB": 1024**2, "MIB": 1024**2}


def byte_size(text: str) -> int:
    """A size in bytes: 65536, 64K, 64KB, 64KiB, 1M (K and M are 1024-based, as microcontroller data
    sheets count SRAM and flash)."""
    import re

    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).upper() if match else None
    if not match or unit not in BYTE_UNITS:
        raise argparse.ArgumentTypeError(f"must be a size such as 65536, 64K or 1M, got {text!r}")
    return int(float(match.group(1)) * BYTE_UNITS[unit])


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value
