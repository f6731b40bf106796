"""Parsing numbers and lesion boxes out of user text (CLI options, form fields, environment variables).

ASCII only: ``str.isdigit()`` and ``int()`` also accept ``²``, ``٣`` or fullwidth ``１``, which either
crash (``int("²")``) or silently become numbers nobody typed. Lengths are capped so that a
thousand-digit "number" is refused as text rather than hitting Python's int-conversion limit.
"""

from __future__ import annotations

import re

from mammocad.errors import ConfigError

#: An optional sign and 1 to 18 ASCII digits (so the value fits in 64 bits).
_INT = re.compile(r"[+-]?[0-9]{1,18}")
#: Box coordinates: original-image pixels, so nine digits is already far beyond any image.
_COORDINATE = re.compile(r"-?[0-9]{1,9}")
_ECHO = 40

Box = tuple[int, int, int, int]


def parse_int(text: str) -> int | None:
    """``text`` (surrounding whitespace ignored) as an int when it is an ASCII decimal integer, else None."""
    stripped = text.strip()
    return int(stripped) if _INT.fullmatch(stripped) else None


def parse_box(text: str, label: str = "box") -> Box:
    """``x0,y0,x1,y1`` (ASCII integers, original pixels) -> a box; ConfigError naming ``label`` otherwise."""
    parts = [part.strip() for part in text.split(",")]
    if len(parts) != 4 or not all(_COORDINATE.fullmatch(part) for part in parts):
        raise ConfigError(f"{label} {echo(text)}: expected four integers x0,y0,x1,y1")
    x0, y0, x1, y1 = (int(part) for part in parts)
    if x1 <= x0 or y1 <= y0:
        raise ConfigError(f"{label} {echo(text)}: needs x1 > x0 and y1 > y0")
    return x0, y0, x1, y1


def echo(value: str, limit: int = _ECHO) -> str:
    """``repr`` of a user's value for an error message, cut to ``limit`` characters (one line, escaped)."""
    return repr(value if len(value) <= limit else value[:limit] + "...")
