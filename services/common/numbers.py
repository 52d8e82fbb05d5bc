"""Decimal numbers a client sends (Content-Length, Content-Range, Range, `n`), bounded to what the
planes can carry.

Sizes and offsets travel as protobuf int64 and are stored as signed 64-bit integers, so a number
past 2^63 - 1 can never name a real byte or count. `wire_int` reads such numbers without ever
converting thousands of digits (Python refuses past 4300 of them) and reports any value past the
bound as `OUT_OF_RANGE`, for the caller to answer with the spec's 400 or 416.
"""

from __future__ import annotations

import re

MAX_INT64 = 2**63 - 1
# Larger than any size or offset a plane accepts; compares as such against real sizes.
OUT_OF_RANGE = MAX_INT64 + 1

_DIGITS = re.compile(r"[0-9]+")
_MAX_DIGITS = len(str(MAX_INT64))


def wire_int(text: str) -> int | None:
    """The value of `text` when it is a plain decimal number (ASCII digits only: no sign, space,
    underscore or other script's digits), capped at OUT_OF_RANGE; None when it is not one."""
    if not _DIGITS.fullmatch(text):
        return None
    significant = text.lstrip("0")
    if len(significant) > _MAX_DIGITS:
        return OUT_OF_RANGE
    return min(int(significant or "0"), OUT_OF_RANGE)
