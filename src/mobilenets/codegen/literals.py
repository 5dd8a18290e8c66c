"""C literals for values taken from a model file: strings, comments and numbers that no file can turn
into code.

JSON escaping is not C escaping: under ``-std=c99`` the trigraph ``??/`` is a backslash, ``\\u`` escapes
name universal characters that C restricts, and a number printed as ``1f`` or ``inff`` does not compile.
So every byte of a string outside a small safe set is written as a three-digit octal escape (three
digits always: a shorter escape would absorb a following digit), ``?`` included, and every number is
checked finite and written with a decimal point or exponent.
"""

from __future__ import annotations

import math
import numbers
import re

import numpy as np

# Printable ASCII that means nothing special inside a C string literal (no ", \, ? or %: the names are
# printed with %s, never as a format, but a reader of the source should not have to check that).
_SAFE_IN_STRING = frozenset(
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _-.,:;()[]{}+=/<>@#&'!|~^$*"
)


FLT_MAX = 3.4028234663852886e38


class LiteralError(ValueError):
    """A value cannot be written as the C literal asked for; the message names it."""


def c_string(text: str) -> str:
    """``text`` (UTF-8) as a C99 string literal, byte by byte."""
    data = text.encode("utf-8", "surrogatepass")
    return '"' + "".join(chr(b) if b in _SAFE_IN_STRING else f"\\{b:03o}" for b in data) + '"'


def c_comment(text: str) -> str:
    """``text`` made safe inside a ``/* ... */`` comment: anything but letters, digits and ``._-`` becomes
    ``_`` (no ``*/`` can close the comment early, no ``??/`` or backslash can splice lines)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)[:200]


def c_float(value, what: str = "value", allow_infinite: bool = False) -> str:
    """A float literal (``1.0f``, ``1e-05f``) for a finite number; ±inf as ``(±HUGE_VALF)`` (math.h) when
    ``allow_infinite``. Anything else, NaN or not a number at all, is refused with ``what`` named."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):  # NumPy scalars are Real
        raise LiteralError(f"{what} must be a number, got {value!r:.40}")
    value = float(value)
    if (
        math.isfinite(value) and abs(value) > FLT_MAX
    ):  # beyond float: the compiler would warn and round to inf
        value = math.copysign(math.inf, value)
    if math.isinf(value) and allow_infinite:
        return "HUGE_VALF" if value > 0 else "(-HUGE_VALF)"
    if not math.isfinite(value):
        raise LiteralError(f"{what} must be finite, got {value}")
    text = repr(value)  # always holds '.' or 'e' for a finite float: '1.0', '1e-05', '1e+20'
    return f"{text}f"


def c_int(value, what: str = "value", low: int = 0, high: int = 2**31 - 1) -> str:
    """A decimal integer literal within [low, high] (an int's range by default)."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise LiteralError(f"{what} must be a whole number from {low} to {high}, got {value!r:.40}")
    return str(value)
