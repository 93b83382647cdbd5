"""A whole column of numbers as texts, in one C-level call: orjson.

The collector writes hundreds of thousands of metrics rows a second, and
Python's float ``repr``, called per value, was its largest cost. orjson
writes the same shortest round-trip digits for a whole list at once.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import orjson

__all__ = ["float_texts", "int_texts"]

# Where orjson's text of a float differs from repr's: a one-digit negative
# exponent ("1e-7", repr "1e-07"), and 1e-5 <= |x| < 1e-4 written without
# one ("0.00001234", repr "1.234e-05"). The digits are the same.
_SHORT_EXPONENT = re.compile(r"e-(\d)(?=[,\]])")
_FOUR_ZEROS = re.compile(r"(?<=[\[,])-?0\.0000\d+")


def float_texts(column: Sequence[float]) -> list[str]:
    """Each finite float's ``repr``, for a whole column at once."""
    text = orjson.dumps(column).decode()
    if "e-" in text:
        text = _SHORT_EXPONENT.sub(r"e-0\1", text)
    if "0.0000" in text:
        text = _FOUR_ZEROS.sub(_repr_of_match, text)
    return text[1:-1].split(",")


def _repr_of_match(match: re.Match) -> str:
    return float.__repr__(float(match.group()))


def int_texts(column: Sequence[int]) -> list[str]:
    """Each int's decimal text, for a whole column at once."""
    try:
        return orjson.dumps(column).decode()[1:-1].split(",")
    except orjson.JSONEncodeError:  # beyond 64 bits
        return list(map(int.__repr__, column))
