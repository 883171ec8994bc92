"""
Length-field framing: the semantics of Netty's C{LengthFieldBasedFrameDecoder}
and C{LengthFieldPrepender}, in full.

Parameters (spec names in brackets)::

    lengthFieldOffset   [offset]  where the length field starts in the frame
    lengthFieldLength   [size]    1, 2, 3, 4 or 8 bytes
    byteOrder           [order]   big (default) or little
    lengthAdjustment    [adjust]  added to the field's value to get the number
                                  of bytes that follow the length field
    initialBytesToStrip [strip]   bytes removed from the front of each frame
                                  before it is delivered
    maxFrameLength      [max]     the largest whole frame (header included)

The frame's total length is C{offset + size + value + adjust}.  The default
(C{length} with no parameters) is C{size=4:order=big:strip=4}: a 4-byte
big-endian length that excludes itself, the wire format of Twisted's
C{Int32StringReceiver} and Netty's C{LengthFieldPrepender(4)}::

    BEFORE (12 bytes)                    AFTER (8 bytes)
    +--------------+------------+        +------------+
    | Length       | Payload    |  --->  | Payload    |
    | 00 00 00 08  | "HELLO, W" |        | "HELLO, W" |
    +--------------+------------+        +------------+

The seven configurations of Netty's documentation, each a test in
C{tests/test_codec_length.py} (C{"HELLO, WORLD"} is 12 bytes)::

 1. size=2:strip=0 -- keep the header
    BEFORE (14 bytes)             AFTER (14 bytes)
    | 00 0C | "HELLO, WORLD" | -> | 00 0C | "HELLO, WORLD" |

 2. size=2:strip=2 -- strip the header
    | 00 0C | "HELLO, WORLD" | -> | "HELLO, WORLD" |

 3. size=2:adjust=-2:strip=0 -- the length counts the header too
    | 00 0E | "HELLO, WORLD" | -> | 00 0E | "HELLO, WORLD" |

 4. offset=2:size=3:strip=0 -- a 2-byte header before the length
    | CA FE | 00 00 0C | "HELLO, WORLD" | -> (same 17 bytes)

 5. size=3:adjust=2:strip=0 -- a 2-byte header after the length
    | 00 00 0C | CA FE | "HELLO, WORLD" | -> (same 17 bytes)

 6. offset=1:size=2:adjust=1:strip=3 -- HDR1, length, HDR2; keep HDR2
    | CA | 00 0C | FE | "HELLO, WORLD" | -> | FE | "HELLO, WORLD" |

 7. offset=1:size=2:adjust=-3:strip=3 -- as 6, the length counts all
    | CA | 00 10 | FE | "HELLO, WORLD" | -> | FE | "HELLO, WORLD" |

Failure, as in Netty with C{failFast=true}: a length field whose frame
exceeds C{max} raises L{FrameTooLong} as soon as the header is complete,
before any of the payload arrives; a frame shorter than its own length
field, or shorter than C{strip}, raises L{CorruptFrame}.  Fields are
unsigned unless C{signed=true}, when a negative value is a L{CorruptFrame}.

Encoding: with C{offset=0} and C{strip=size} the encoder prepends the length
(C{value = len(payload) - adjust}); with C{strip=0} the application writes
whole frames, header included, and the encoder passes them through after
checking their length field.  Other combinations cannot be encoded from the
delivered frame alone and are refused when the codec is built.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable
from typing import Any, Literal, cast

from zope.interface import implementer

from iocpsvc import accel
from iocpsvc.codecs._base import (
    JOIN_LIMIT,
    CodecPlugin,
    compiledTwinClass,
    parseBool,
    parseByteOrder,
    payloadBytes,
)
from iocpsvc.errors import CorruptFrame, EncodeError, FrameTooLong
from iocpsvc.interfaces import IDecoder, IEncoder
from iocpsvc.units import MiB, parseInt, parseSize

DEFAULT_MAX_FRAME_LENGTH = 1 * MiB

_FORMATS = {1: "B", 2: "H", 4: "I", 8: "Q"}


def _fieldReader(
    size: int, order: Literal["big", "little"], signed: bool
) -> Callable[[Any, int], tuple[int, ...]]:
    """
    Return C{unpack(data, position) -> (value,)} for one length field.
    Sizes 1, 2, 4 and 8 are a precompiled C{struct}'s C{unpack_from} itself
    (one C call per header, the fastest way to read an integer out of a
    buffer at an offset); 3 bytes has no struct code.
    """
    if size in _FORMATS:
        code = _FORMATS[size]
        if signed:
            code = code.lower()
        return struct.Struct(("<" if order == "little" else ">") + code).unpack_from
    if size == 3:

        def read3(data: Any, position: int) -> tuple[int]:
            return (int.from_bytes(data[position : position + 3], order, signed=signed),)

        return read3
    raise ValueError(f"size must be 1, 2, 3, 4 or 8, not {size}")


@implementer(IDecoder)
class LengthFieldDecoder:
    """
    Split a stream into frames by a length field (see the module docstring).
    One instance per connection; it keeps no state between calls beyond its
    configuration, because the header is re-read (a few bytes) on each call.
    """

    # Nothing is kept between calls: one instance can serve every connection.
    stateless = True

    __slots__ = (
        "maxFrameLength",
        "lengthFieldOffset",
        "lengthFieldLength",
        "lengthAdjustment",
        "initialBytesToStrip",
        "byteOrder",
        "signed",
        "_read",
        "_headerEnd",
        "_checkStrip",
        "_rareChecks",
    )

    def __init__(
        self,
        maxFrameLength: int = DEFAULT_MAX_FRAME_LENGTH,
        lengthFieldOffset: int = 0,
        lengthFieldLength: int = 4,
        lengthAdjustment: int = 0,
        initialBytesToStrip: int | None = None,
        byteOrder: str = "big",
        signed: bool = False,
    ) -> None:
        if lengthFieldOffset < 0:
            raise ValueError(f"offset must be >= 0, not {lengthFieldOffset}")
        if maxFrameLength <= 0:
            raise ValueError(f"max must be > 0, not {maxFrameLength}")
        headerEnd = lengthFieldOffset + lengthFieldLength
        if initialBytesToStrip is None:
            initialBytesToStrip = headerEnd
        if initialBytesToStrip < 0:
            raise ValueError(f"strip must be >= 0, not {initialBytesToStrip}")
        if maxFrameLength < headerEnd:
            raise ValueError(f"max ({maxFrameLength}) must be at least offset + size ({headerEnd})")
        self.maxFrameLength = maxFrameLength
        self.lengthFieldOffset = lengthFieldOffset
        self.lengthFieldLength = lengthFieldLength
        self.lengthAdjustment = lengthAdjustment
        self.initialBytesToStrip = initialBytesToStrip
        self.byteOrder = byteOrder
        self.signed = signed
        self._read = _fieldReader(lengthFieldLength, cast(Literal["big", "little"], byteOrder), signed)
        self._headerEnd = headerEnd
        # Only a strip beyond the length field can exceed a valid frame.
        self._checkStrip = initialBytesToStrip > headerEnd
        # Only these configurations can produce a negative value or a frame
        # shorter than its header: the common ones skip those checks.
        self._rareChecks = signed or lengthAdjustment < 0 or self._checkStrip

    def decode(self, data: bytes | bytearray, out: list[object]) -> int:
        # Hot path: everything the loop touches is a local; one header read
        # and one slice (the frame's only copy) per frame; the rest of the
        # buffer is never sliced -- `position` walks it instead.
        read = self._read
        fieldOffset = self.lengthFieldOffset
        headerEnd = self._headerEnd
        extra = self.lengthAdjustment + headerEnd
        strip = self.initialBytesToStrip
        maxFrameLength = self.maxFrameLength
        rareChecks = self._rareChecks
        append = out.append
        end = len(data)
        position = 0
        # Slicing a bytearray and converting to bytes would copy each frame
        # twice; a memoryview slice is copied once.  The view is released
        # before returning so the caller can resize its buffer.
        view = memoryview(data) if data.__class__ is bytearray else None
        try:
            source = data if view is None else view
            while end - position >= headerEnd:
                value = read(data, position + fieldOffset)[0]
                frameLength = value + extra
                if frameLength > maxFrameLength:
                    raise FrameTooLong(frameLength, maxFrameLength)
                if rareChecks:
                    self._checkFrame(value, frameLength)
                frameEnd = position + frameLength
                if frameEnd > end:
                    break
                # bytes[a:b] is already a copy; a view slice needs bytes().
                frame = source[position + strip : frameEnd]
                append(frame if view is None else bytes(frame))
                position = frameEnd
        finally:
            if view is not None:
                view.release()
        return position

    def _checkFrame(self, value: int, frameLength: int) -> None:
        """The checks only signed, negatively adjusted or over-stripped fields need."""
        if value < 0:
            raise CorruptFrame(f"negative length field: {value}")
        if frameLength < self._headerEnd:
            raise CorruptFrame(
                f"adjusted frame length ({frameLength}) is shorter than the "
                f"length field's end ({self._headerEnd})"
            )
        if self._checkStrip and self.initialBytesToStrip > frameLength:
            raise CorruptFrame(
                f"frame length ({frameLength}) is shorter than the bytes to strip "
                f"({self.initialBytesToStrip})"
            )

    def decodeLast(self, data: bytes) -> list[object]:
        """A partial frame at the end of the stream is discarded."""
        return []


@implementer(IEncoder)
class LengthFieldPrepender:
    """
    Prepend a length field to each payload: C{value = len(payload) - adjust}
    (with C{adjust=-size} the length counts the header itself).
    """

    # ``encode`` is a per-instance closure (a slot, not a method): its
    # settings are closure cells, read faster than attributes, once per frame.
    __slots__ = ("lengthFieldLength", "lengthAdjustment", "byteOrder", "limit", "encode")

    def __init__(
        self,
        lengthFieldLength: int = 4,
        lengthAdjustment: int = 0,
        byteOrder: str = "big",
        signed: bool = False,
    ) -> None:
        self.lengthFieldLength = lengthFieldLength
        self.lengthAdjustment = lengthAdjustment
        self.byteOrder = byteOrder
        # A signed field holds half the range: never write what reads back
        # as negative.
        limit = self.limit = (1 << (8 * lengthFieldLength - (1 if signed else 0))) - 1
        pack: Callable[[int], bytes]
        if lengthFieldLength in _FORMATS:
            fmt = ("<" if byteOrder == "little" else ">") + _FORMATS[lengthFieldLength]
            pack = struct.Struct(fmt).pack
        elif lengthFieldLength == 3:
            order = cast(Literal["big", "little"], byteOrder)

            def pack(value: int) -> bytes:
                return value.to_bytes(3, order)

        else:
            raise ValueError(f"size must be 1, 2, 3, 4 or 8, not {lengthFieldLength}")
        adjust = lengthAdjustment

        def encode(obj: object) -> bytes | tuple[bytes, bytes]:
            """Prepend the length field (see the class docstring)."""
            if obj.__class__ is not bytes:
                obj = payloadBytes(obj)
            size = len(obj)
            value = size - adjust
            if value > limit or value < 0:
                raise EncodeError(
                    f"a payload of {size} bytes does not fit a {lengthFieldLength}-byte length field"
                )
            if size > JOIN_LIMIT:
                return (pack(value), obj)
            return pack(value) + obj

        self.encode = encode


@implementer(IEncoder)
class WholeFrameEncoder:
    """
    The encoder for C{strip=0}: the application writes whole frames with
    their header, which go out unchanged once their length field has been
    checked against their size.
    """

    __slots__ = ("_decoder",)

    def __init__(self, decoder: LengthFieldDecoder) -> None:
        self._decoder = decoder

    def encode(self, obj: object) -> bytes:
        if obj.__class__ is not bytes:
            obj = payloadBytes(obj)
        frame: bytes = obj
        decoder = self._decoder
        if len(frame) < decoder._headerEnd:
            raise EncodeError(f"a {len(frame)}-byte frame has no complete length field")
        value = decoder._read(frame, decoder.lengthFieldOffset)[0]
        if value + decoder.lengthAdjustment + decoder._headerEnd != len(frame):
            raise EncodeError(
                f"the frame's length field ({value}) does not match its size ({len(frame)} bytes)"
            )
        return frame


@functools.cache
def _compiledClasses(speedups: Any) -> tuple[type, type]:
    """The compiled twins of this module's decoder and prepender (iocpsvc.accel)."""
    return (
        compiledTwinClass(
            speedups.HeaderDecoder,
            LengthFieldDecoder,
            lambda twin: dict(
                kind=speedups.KIND_LENGTH,
                maxFrameLength=twin.maxFrameLength,
                headerLength=twin._headerEnd,
                fieldOffset=twin.lengthFieldOffset,
                fieldSize=twin.lengthFieldLength,
                bigEndian=twin.byteOrder == "big",
                signed=twin.signed,
                adjust=twin.lengthAdjustment,
                strip=twin.initialBytesToStrip,
            ),
        ),
        compiledTwinClass(
            speedups.FrameEncoder,
            LengthFieldPrepender,
            lambda twin: dict(
                kind=speedups.ENC_LENGTH,
                fieldSize=twin.lengthFieldLength,
                bigEndian=twin.byteOrder == "big",
                adjust=twin.lengthAdjustment,
                limit=twin.limit,
            ),
        ),
    )


def _build(
    defaultMaxFrameLength: int | None,
    size: int = 4,
    order: str = "big",
    offset: int = 0,
    adjust: int = 0,
    strip: int | None = None,
    max: int | None = None,
    signed: bool = False,
) -> tuple[Callable[[], LengthFieldDecoder], IEncoder]:
    if max is None:
        max = defaultMaxFrameLength or DEFAULT_MAX_FRAME_LENGTH
    if strip is None:
        strip = offset + size
    decoderFactory = functools.partial(
        LengthFieldDecoder,
        maxFrameLength=max,
        lengthFieldOffset=offset,
        lengthFieldLength=size,
        lengthAdjustment=adjust,
        initialBytesToStrip=strip,
        byteOrder=order,
        signed=signed,
    )
    prototype = decoderFactory()  # validates the parameters now, not per connection
    encoder: IEncoder
    if strip == 0:
        encoder = WholeFrameEncoder(prototype)
    elif offset == 0 and strip == size:
        encoder = LengthFieldPrepender(size, adjust, order, signed)
    else:
        raise ValueError(
            f"cannot encode frames with offset={offset} and strip={strip}: the "
            f"stripped header bytes are lost; use strip=0 (write whole frames) "
            f"or offset=0 with strip={size}"
        )
    speedups = accel.speedups
    # The compiled loop keeps the adjustment in a C long long (pure Python
    # takes any size).
    if speedups is not None and -(2**62) < adjust < 2**62:
        compiledDecoder, compiledEncoder = _compiledClasses(speedups)
        # Stateless: one compiled decoder serves every connection.
        decoderFactory = functools.partial(compiledDecoder, prototype)
        if isinstance(encoder, LengthFieldPrepender):
            encoder = compiledEncoder(encoder)
    return decoderFactory, encoder


def _size(text: str) -> int:
    value = parseInt(text)
    if value not in (1, 2, 3, 4, 8):
        raise ValueError(f"{text!r} is not a length field size (1, 2, 3, 4 or 8)")
    return value


def _nonNegative(text: str) -> int:
    value = parseInt(text)
    if value < 0:
        raise ValueError(f"{text!r} must be >= 0")
    return value


plugin = CodecPlugin(
    name="length",
    kind="framer",
    description="length-field framing (Netty LengthFieldBasedFrameDecoder); "
    "default: 4-byte big-endian length excluding itself (Int32StringReceiver)",
    parameters={
        "size": _size,
        "order": parseByteOrder,
        "offset": _nonNegative,
        "adjust": parseInt,
        "strip": _nonNegative,
        "max": parseSize,
        "signed": parseBool,
    },
    builder=_build,
)
