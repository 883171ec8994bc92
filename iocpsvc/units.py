"""
Sizes and durations as people write them, for options and codec specs:
C{64KiB}, C{1MiB}, C{0x10000}; C{30}, C{1.5s}, C{250ms}, C{5m}, C{1h}.
"""

from __future__ import annotations

import re

KiB = 1024
MiB = 1024 * 1024
GiB = 1024 * MiB

_SIZE = re.compile(r"^\s*(\d+)\s*(b|k|kb|kib|m|mb|mib|g|gb|gib)?\s*$", re.IGNORECASE)
_UNITS = {
    None: 1,
    "b": 1,
    "k": KiB,
    "kb": KiB,
    "kib": KiB,
    "m": MiB,
    "mb": MiB,
    "mib": MiB,
    "g": GiB,
    "gb": GiB,
    "gib": GiB,
}


def parseSize(text: str) -> int:
    """
    Parse a byte count: C{65536}, C{64KiB}, C{1MiB}, C{0x10000}.  Units are
    binary (C{KB} and C{KiB} both mean 1024).

    @raise ValueError: not a non-negative size.
    """
    text = str(text)
    if text.lower().startswith("0x"):
        return parseInt(text)
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a size (examples: 65536, 64KiB, 1MiB)")
    unit = match.group(2).lower() if match.group(2) else None
    return int(match.group(1)) * _UNITS[unit]


def parseInt(text: str) -> int:
    """
    Parse an integer in decimal or with a C{0x}/C{0o}/C{0b} prefix.

    @raise ValueError: not an integer.
    """
    try:
        return int(str(text), 0)
    except ValueError:
        raise ValueError(f"{text!r} is not an integer") from None


_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|sec|m|min|h)?\s*$", re.IGNORECASE)
_SECONDS = {None: 1.0, "ms": 0.001, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parseDuration(text: str) -> float:
    """
    Parse a duration into seconds: a number of seconds (C{30}, C{1.5}) or a
    number with a unit: C{ms}, C{s}, C{m} (minutes), C{h}.

    @raise ValueError: not a non-negative duration.
    """
    match = _DURATION.match(str(text))
    if match is None:
        raise ValueError(f"{text!r} is not a duration (examples: 30, 1.5s, 250ms, 5m, 1h)")
    unit = match.group(2).lower() if match.group(2) else None
    return float(match.group(1)) * _SECONDS[unit]
