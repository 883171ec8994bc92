"""Small helpers shared by the test modules."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def feedChunks(decoder: Any, chunks: Iterable[bytes]) -> list[object]:
    """
    Feed C{chunks} to C{decoder} the way a context does (append to one
    buffer, decode, drop what was consumed) and return every object.
    """
    buffer = bytearray()
    out: list[object] = []
    for chunk in chunks:
        buffer += chunk
        consumed = decoder.decode(buffer, out)
        del buffer[:consumed]
    return out
