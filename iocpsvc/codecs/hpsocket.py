"""
HP-Socket's Pack model: wire compatible with C{CTcpPackServer},
C{CTcpPackAgent} and C{CTcpPackClient} of HP-Socket
(U{https://github.com/ldcsaa/HP-Socket}; header parsing in C{ParsePack},
C{Windows/Src/MiscHelper.h}; header writing in C{AddPackHeader},
C{Windows/Src/MiscHelper.cpp}; limits in C{Windows/Src/InternalDef.h}).

Each pack is a 4-byte header and the body.  The header is one DWORD, sent
little-endian (C{HToLE32}), that holds two fields::

    bit     31 ........ 22 21 ............................ 0
            +-------------+-------------------------------+
            | flag (10)   | body length (22)              |
            +-------------+-------------------------------+

    flag    TCP_PACK_LENGTH_BITS = 22, so the flag is the top 10 bits:
            0..0x3FF (TCP_PACK_HEADER_FLAG_LIMIT); default 0
    length  the body only, never the header (TCP_PACK_LENGTH_MASK =
            0x3FFFFF); 1..max, max at most 0x3FFFFF (TCP_PACK_MAX_SIZE_LIMIT),
            default 0x40000 = 256 KiB (TCP_PACK_DEFAULT_MAX_SIZE)

C{hpsocket}, the body C{"hello"}: header = 5 = 0x00000005::

    BEFORE (9 bytes)
    +-------------+----------------+
    | header      | body           |
    | 05 00 00 00 | 68 65 6C 6C 6F |
    +-------------+----------------+
    AFTER (1 frame)
    +---------+
    | "hello" |
    +---------+

C{hpsocket:flag=0x155}, the same body: header = (0x155 << 22) | 5 =
0x55400005, least significant byte first::

    +-------------+----------------+
    | 05 00 40 55 | 68 65 6C 6C 6F |   -> "hello"
    +-------------+----------------+

Parameters (spec names)::

    flag    the header flag, 0..0x3FF (default 0).  When it is not 0, every
            received header must carry it; when it is 0, the flag bits of
            received headers are not checked at all (as in HP-Socket)
    max     the longest body, 1..0x3FFFFF; default 256 KiB, or
            --max-frame-length when given (capped at 0x3FFFFF, all the
            22-bit field can carry)

Failure, checked as soon as the 4-byte header is complete, before any of the
body arrives, in HP-Socket's order.  HP-Socket's C{ParsePack} returns
C{HR_ERROR} for each, and the server closes the connection (C{OnClose} with
operation C{SO_RECEIVE}); the error it records first is the one shown::

    flag set and header flag != flag   CorruptFrame   ERROR_INVALID_DATA
    body length 0                      CorruptFrame   ERROR_BAD_LENGTH
    body length > max                  FrameTooLong   ERROR_BAD_LENGTH

The encoder refuses what HP-Socket's C{Send} refuses (C{AddPackHeader}
fails with C{ERROR_BAD_LENGTH}): an empty body, or one longer than C{max};
both raise L{EncodeError}.  So there is no keep-alive pack in this format.

End of stream: a partial pack is discarded (C{decodeLast} returns C{[]}).
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable
from typing import Any

from zope.interface import implementer

from iocpsvc.codecs._base import (
    JOIN_LIMIT,
    CodecPlugin,
    compiledTwinClass,
    copyFrame,
    payloadBytes,
    withCompiledTwins,
)
from iocpsvc.errors import CorruptFrame, EncodeError, FrameTooLong
from iocpsvc.interfaces import IDecoder, IEncoder
from iocpsvc.units import KiB, parseInt, parseSize

LENGTH_BITS = 22
"""HP-Socket's C{TCP_PACK_LENGTH_BITS}."""

LENGTH_MASK = 0x3FFFFF
"""HP-Socket's C{TCP_PACK_LENGTH_MASK}."""

MAX_SIZE_LIMIT = 0x3FFFFF
"""HP-Socket's C{TCP_PACK_MAX_SIZE_LIMIT}: the largest C{max} allowed."""

DEFAULT_MAX_FRAME_LENGTH = 256 * KiB
"""HP-Socket's C{TCP_PACK_DEFAULT_MAX_SIZE} (0x40000)."""

HEADER_FLAG_LIMIT = 0x3FF
"""HP-Socket's C{TCP_PACK_HEADER_FLAG_LIMIT}: the largest flag allowed."""

HEADER_LENGTH = 4

_HEADER = struct.Struct("<I")


def _checkParameters(maxFrameLength: int, headerFlag: int) -> None:
    """The checks of HP-Socket's C{CheckParams}, as C{ValueError}s."""
    if not 0 < maxFrameLength <= MAX_SIZE_LIMIT:
        raise ValueError(
            f"max must be between 1 and {MAX_SIZE_LIMIT:#x} ({MAX_SIZE_LIMIT}), not {maxFrameLength}"
        )
    if not 0 <= headerFlag <= HEADER_FLAG_LIMIT:
        raise ValueError(f"flag must be between 0 and {HEADER_FLAG_LIMIT:#x}, not {headerFlag}")


@implementer(IDecoder)
class HPSocketPackDecoder:
    """
    Split an HP-Socket Pack-model byte stream into bodies (HP-Socket's
    C{ParsePack}); see the module docstring for the layout.

    Keeps no state between calls: an incomplete pack's header is re-read
    (4 bytes) on the next call.

    @ivar maxFrameLength: the longest body accepted.
    @ivar headerFlag: the flag every header must carry; 0 checks none.
    """

    # Nothing is kept between calls: one instance can serve every connection.
    stateless = True

    __slots__ = ("maxFrameLength", "headerFlag")

    def __init__(self, maxFrameLength: int = DEFAULT_MAX_FRAME_LENGTH, headerFlag: int = 0) -> None:
        _checkParameters(maxFrameLength, headerFlag)
        self.maxFrameLength = maxFrameLength
        self.headerFlag = headerFlag

    def decode(self, data: bytes | bytearray, out: list[object]) -> int:
        # Hot path: everything the loop touches is a local; one precompiled
        # struct read per header, straight from the buffer at `position`
        # (the rest of the buffer is never sliced); one copy per frame.
        readHeader = _HEADER.unpack_from
        maxFrameLength = self.maxFrameLength
        headerFlag = self.headerFlag
        append = out.append
        isBytes = data.__class__ is bytes
        end = len(data)
        position = 0
        while end - position >= HEADER_LENGTH:
            (header,) = readHeader(data, position)
            if headerFlag and header >> LENGTH_BITS != headerFlag:
                raise CorruptFrame(
                    f"HP-Socket pack header flag {header >> LENGTH_BITS:#x} does not match {headerFlag:#x}"
                )
            length = header & LENGTH_MASK
            if length > maxFrameLength:
                raise FrameTooLong(length, maxFrameLength)
            if not length:
                raise CorruptFrame("HP-Socket pack header with a body length of 0")
            start = position + HEADER_LENGTH
            stop = start + length
            if stop > end:
                break
            # A bytes slice is already its one copy; a bytearray goes through copyFrame.
            append(data[start:stop] if isBytes else copyFrame(data, start, stop))
            position = stop
        return position

    def decodeLast(self, data: bytes) -> list[object]:
        """A partial pack at the end of the stream is discarded."""
        return []


@implementer(IEncoder)
class HPSocketPackEncoder:
    """
    Prepend HP-Socket's pack header to each body (HP-Socket's
    C{AddPackHeader}).

    @ivar maxFrameLength: the longest body accepted.
    @ivar headerFlag: the flag written in every header.
    """

    __slots__ = ("maxFrameLength", "headerFlag", "_flagBits")

    def __init__(self, maxFrameLength: int = DEFAULT_MAX_FRAME_LENGTH, headerFlag: int = 0) -> None:
        _checkParameters(maxFrameLength, headerFlag)
        self.maxFrameLength = maxFrameLength
        self.headerFlag = headerFlag
        self._flagBits = headerFlag << LENGTH_BITS

    def encode(self, obj: object) -> bytes | tuple[bytes, bytes]:
        if obj.__class__ is not bytes:
            obj = payloadBytes(obj)
        payload: bytes = obj
        length = len(payload)
        if not 0 < length <= self.maxFrameLength:
            raise EncodeError(
                f"an HP-Socket pack body must be 1 to {self.maxFrameLength} bytes long, not {length}"
            )
        header = _HEADER.pack(self._flagBits | length)
        if length > JOIN_LIMIT:
            return (header, payload)
        return header + payload


def _build(
    defaultMaxFrameLength: int | None,
    max: int | None = None,
    flag: int = 0,
) -> tuple[Callable[[], Any], Any]:
    if max is None:
        # The process-wide default cannot exceed what the 22-bit field holds.
        max = (
            min(defaultMaxFrameLength, MAX_SIZE_LIMIT) if defaultMaxFrameLength else DEFAULT_MAX_FRAME_LENGTH
        )
    encoder: Any = HPSocketPackEncoder(max, flag)  # validates now, not per connection
    decoderFactory: Callable[[], Any] = functools.partial(
        HPSocketPackDecoder, maxFrameLength=max, headerFlag=flag
    )
    return withCompiledTwins(decoderFactory, encoder, _compiledClasses)


@functools.cache
def _compiledClasses(speedups: Any) -> tuple[type, type]:
    """The compiled twins of this module's decoder and encoder (iocpsvc.accel)."""
    return (
        compiledTwinClass(
            speedups.HeaderDecoder,
            HPSocketPackDecoder,
            lambda twin: dict(
                kind=speedups.KIND_HPSOCKET,
                maxFrameLength=twin.maxFrameLength,
                headerLength=HEADER_LENGTH,
                headerFlag=twin.headerFlag,
            ),
        ),
        compiledTwinClass(
            speedups.FrameEncoder,
            HPSocketPackEncoder,
            lambda twin: dict(
                kind=speedups.ENC_HPSOCKET,
                maxLength=twin.maxFrameLength,
                flagBits=twin.headerFlag << LENGTH_BITS,
            ),
        ),
    )


def _flag(text: str) -> int:
    value = parseInt(text)
    if not 0 <= value <= HEADER_FLAG_LIMIT:
        raise ValueError(f"{text!r} is not a pack header flag (0 to 0x3FF)")
    return value


plugin = CodecPlugin(
    name="hpsocket",
    kind="framer",
    description="HP-Socket Pack model: 4-byte little-endian header, 10-bit "
    "flag and 22-bit body length; default max 256 KiB",
    parameters={"flag": _flag, "max": parseSize},
    builder=_build,
)
