"""
Fixed-length framing: every frame is exactly C{size} bytes, with no header
and no delimiter -- the semantics of Netty's C{FixedLengthFrameDecoder}.

C{fixed:size=3}::

    BEFORE (9 bytes, in any number of reads)    AFTER (3 frames)
    +-------+-------+-------+                   +-------+ +-------+ +-------+
    | "ABC" | "DEF" | "GHI" |        --->       | "ABC" | | "DEF" | | "GHI" |
    +-------+-------+-------+                   +-------+ +-------+ +-------+

    BEFORE (4 bytes)                            AFTER (1 frame)
    +-------+-----+                             +-------+
    | "ABC" | "D" |                  --->       | "ABC" |   "D" stays buffered
    +-------+-----+                             +-------+   (3 bytes consumed)

Parameters (spec names)::

    size     required, > 0: the length of every frame (1, 64, 4KiB, ...);
             it is also the maximum frame length, so there is no max

The decoder cannot fail: any stream of bytes is a sequence of frames.  At
the end of the stream, a last partial frame is discarded (C{decodeLast}
returns C{[]}).  The encoder sends payloads unchanged and refuses, with
L{EncodeError}, a payload that is not exactly C{size} bytes.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable
from operator import itemgetter
from typing import Any

from zope.interface import implementer

from iocpsvc.codecs._base import CodecPlugin, compiledTwinClass, payloadBytes, withCompiledTwins
from iocpsvc.errors import EncodeError
from iocpsvc.interfaces import IDecoder, IEncoder
from iocpsvc.units import parseSize

_first = itemgetter(0)


@implementer(IDecoder)
class FixedLengthDecoder:
    """
    Split a stream into frames of C{frameLength} bytes.  One instance per
    connection; it keeps no state between calls (the unconsumed remainder is
    always shorter than a frame).
    """

    # Nothing is kept between calls: one instance can serve every connection.
    stateless = True

    __slots__ = ("frameLength", "maxFrameLength", "_iterUnpack")

    def __init__(self, frameLength: int) -> None:
        if frameLength <= 0:
            raise ValueError(f"size must be > 0, not {frameLength}")
        self.frameLength = frameLength
        self.maxFrameLength = frameLength
        # struct's "<n>s" format cuts n-byte strings out of a buffer in C:
        # for many frames per read it is 2-4 times faster than slicing in a
        # Python loop, and copies each frame once even from a bytearray.
        self._iterUnpack = struct.Struct(f"{frameLength}s").iter_unpack

    def decode(self, data: bytes | bytearray, out: list[object]) -> int:
        size = self.frameLength
        end = len(data)
        if end < size:
            return 0
        if end < 2 * size:
            # One frame, the common case for large frames: a plain slice is
            # cheaper than setting up the unpacker.
            frame = data[:size]
            out.append(frame if frame.__class__ is bytes else bytes(frame))
            return size
        stop = end - end % size
        with memoryview(data) as view:
            # The slice is a view (no copy); the view is released before
            # returning, so the caller can resize its bytearray.
            out.extend(map(_first, self._iterUnpack(view[:stop])))
        return stop

    def decodeLast(self, data: bytes) -> list[object]:
        """A last partial frame is discarded."""
        return []


@implementer(IEncoder)
class FixedLengthEncoder:
    """
    Send each payload as it is, after checking that it is exactly
    C{frameLength} bytes.
    """

    __slots__ = ("frameLength",)

    def __init__(self, frameLength: int) -> None:
        if frameLength <= 0:
            raise ValueError(f"size must be > 0, not {frameLength}")
        self.frameLength = frameLength

    def encode(self, obj: object) -> bytes:
        if obj.__class__ is not bytes:
            obj = payloadBytes(obj)
        payload: bytes = obj  # narrowed by the class check above
        if len(payload) != self.frameLength:
            raise EncodeError(
                f"a {len(payload)}-byte payload does not fit fixed-length frames of {self.frameLength} bytes"
            )
        return payload


def _build(defaultMaxFrameLength: int | None, size: int | None = None) -> tuple[Callable[[], Any], Any]:
    # defaultMaxFrameLength does not apply: the spec states the one frame
    # length there is, so a larger --max-frame-length or a smaller one would
    # only contradict it.
    if size is None:
        raise ValueError("the fixed codec needs size=..., e.g. fixed:size=64")
    if size <= 0:
        raise ValueError(f"size must be > 0, not {size}")
    decoderFactory: Callable[[], Any] = functools.partial(FixedLengthDecoder, size)
    encoder: Any = FixedLengthEncoder(size)
    return withCompiledTwins(decoderFactory, encoder, _compiledClasses)


@functools.cache
def _compiledClasses(speedups: Any) -> tuple[type, type]:
    """The compiled twins of this module's decoder and encoder (iocpsvc.accel)."""
    return (
        compiledTwinClass(
            speedups.FixedDecoder, FixedLengthDecoder, lambda twin: dict(frameLength=twin.frameLength)
        ),
        compiledTwinClass(
            speedups.FrameEncoder,
            FixedLengthEncoder,
            lambda twin: dict(kind=speedups.ENC_FIXED, maxLength=twin.frameLength),
        ),
    )


plugin = CodecPlugin(
    name="fixed",
    kind="framer",
    description="fixed-length frames of size=... bytes, no header (Netty FixedLengthFrameDecoder)",
    parameters={"size": parseSize},
    builder=_build,
)
