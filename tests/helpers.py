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


def encodedBytes(encoded: object) -> bytes:
    """
    Join what an L{IEncoder} returned (one C{bytes}, or a list or tuple of
    chunks) into the bytes that go on the wire.
    """
    if isinstance(encoded, bytes):
        return encoded
    assert isinstance(encoded, (list, tuple)), encoded
    return b"".join(encoded)


def cutAt(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    """
    Cut C{data} into chunks at the positions C{cuts} (any order; taken modulo
    C{len(data) + 1}, so arbitrary integers from a property test will do).
    """
    points = sorted({cut % (len(data) + 1) for cut in cuts} | {0, len(data)})
    return [data[start:stop] for start, stop in zip(points, points[1:], strict=False)]
