"""
Netstrings (D. J. Bernstein, U{https://cr.yp.to/proto/netstrings.txt}): the
payload's length in ASCII decimal, a colon, the payload, a comma.  Wire
compatible with Twisted's C{NetstringReceiver} in both directions,
including what it refuses.

C{netstring}, two frames in one read (C{3A} is C{:}, C{2C} is C{,})::

    BEFORE (11 bytes)
    +-----+----+---------+----+-----+----+----+
    | "5" | 3A | "HELLO" | 2C | "0" | 3A | 2C |
    +-----+----+---------+----+-----+----+----+
    AFTER (2 frames)
    +---------+ +----+
    | "HELLO" | | "" |
    +---------+ +----+

Once a header is complete it is consumed and remembered, so the payload of a
long netstring is never searched, only counted::

    BEFORE (5 bytes)                     AFTER
    +------+----+-------+                nothing yet, 3 bytes ("12:")
    | "12" | 3A | "HE"  |       --->     consumed; the frame once the other
    +------+----+-------+                10 bytes and the comma arrive

Parameters (spec names)::

    max      the longest payload (as NetstringReceiver.MAX_LENGTH);
             default --max-frame-length, else 1 MiB

Failure: the stream is rejected as soon as it cannot be a valid netstring,
without waiting for more bytes::

    "05:HELLO,"    CorruptFrame   a length with a leading zero (only "0"
                                  itself may start with 0, as in Twisted)
    ":HELLO,"      CorruptFrame   no length digits
    "5x"           CorruptFrame   not a digit, and not the colon
    "5:HELLO;"     CorruptFrame   the payload is not followed by a comma
    "2000000"      FrameTooLong   with max=1MiB: raised at the 7th digit,
                                  before the colon; so is a header with
                                  more digits than max has, at once

The length L{FrameTooLong} reports for a header still missing its colon is
the value of the digits received so far (the real length is at least that).
A partial header is re-read on the next call; it is never longer than the
digits of C{max} plus one, so this costs a few bytes, not a rescan.

End of stream: an unfinished netstring is discarded (C{decodeLast} returns
C{[]}).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from zope.interface import implementer

from iocpsvc import accel
from iocpsvc.codecs._base import JOIN_LIMIT, CodecPlugin, compiledTwinClass, copyFrame, payloadBytes
from iocpsvc.errors import CorruptFrame, FrameTooLong
from iocpsvc.interfaces import IDecoder, IEncoder
from iocpsvc.units import MiB, parseSize

DEFAULT_MAX_FRAME_LENGTH = 1 * MiB

_COMMA = 44  # data[i] of bytes or bytearray is an int
_ZERO = 48


@implementer(IDecoder)
class NetstringDecoder:
    """
    Split a stream of netstrings into their payloads (see the module
    docstring).  One instance per connection.

    State kept between calls: C{_payloadLength}, the length from a header
    already consumed whose payload has not fully arrived (C{-1} when the
    next bytes are a header).
    """

    __slots__ = ("maxFrameLength", "_headerLimit", "_payloadLength")

    def __init__(self, maxFrameLength: int = DEFAULT_MAX_FRAME_LENGTH) -> None:
        if maxFrameLength <= 0:
            raise ValueError(f"max must be > 0, not {maxFrameLength}")
        self.maxFrameLength = maxFrameLength
        # The longest valid header: the digits of the maximum, and the colon.
        self._headerLimit = len(str(maxFrameLength)) + 1
        self._payloadLength = -1

    def decode(self, data: bytes | bytearray, out: list[object]) -> int:
        # Hot path: locals only; the colon search is bounded by the longest
        # valid header; the rest of the buffer is walked with `position`,
        # never sliced.  A payload is copied once, except a small one from a
        # bytearray (slice, then bytes()), which measures faster that way
        # than through a memoryview.
        find = data.find
        append = out.append
        maxFrameLength = self.maxFrameLength
        headerLimit = self._headerLimit
        isBytes = data.__class__ is bytes
        end = len(data)
        position = 0
        length = self._payloadLength
        while True:
            if length < 0:
                colon = find(b":", position, position + headerLimit)
                if colon < 0:
                    if position < end:
                        self._checkPartialHeader(data, position, end)
                    break
                digits = data[position:colon]
                # isdigit() is ASCII-only for bytes, and False when empty.
                if not digits.isdigit() or (digits[0] == _ZERO and colon - position > 1):
                    raise CorruptFrame(f"bad netstring length {bytes(digits)!r}")
                length = int(digits)
                if length > maxFrameLength:
                    raise FrameTooLong(length, maxFrameLength)
                position = colon + 1
            stop = position + length
            if stop >= end:  # the payload, or its comma, is still to come
                break
            if data[stop] != _COMMA:
                raise CorruptFrame(
                    f"netstring of {length} bytes is followed by "
                    f"{bytes(data[stop : stop + 1])!r}, not a comma"
                )
            # A bytes slice is already its one copy; a bytearray goes through copyFrame.
            append(data[position:stop] if isBytes else copyFrame(data, position, stop))
            position = stop + 1
            length = -1
        self._payloadLength = length
        return position

    def _checkPartialHeader(self, data: bytes | bytearray, start: int, end: int) -> None:
        """
        Refuse a header without its colon as soon as no colon can make it
        valid.  It is at most C{_headerLimit} bytes: further bytes were not
        searched for the colon and cannot be part of a valid header.
        """
        digits = bytes(data[start : min(end, start + self._headerLimit)])
        if not digits.isdigit():
            raise CorruptFrame(f"bad netstring length {digits!r}")
        if digits[0] == _ZERO and len(digits) > 1:
            raise CorruptFrame(f"netstring length with a leading zero: {digits!r}")
        # More digits can only make the value larger.
        if int(digits) > self.maxFrameLength:
            raise FrameTooLong(int(digits), self.maxFrameLength)

    def decodeLast(self, data: bytes) -> list[object]:
        """An unfinished netstring is discarded."""
        return []


@implementer(IEncoder)
class NetstringEncoder:
    """
    Wrap each payload as C{<length>:<payload>,}.  Payloads over 4 KiB are
    returned as three chunks so that they are not copied.
    """

    __slots__ = ()

    def encode(self, obj: object) -> bytes | tuple[bytes, bytes, bytes]:
        if obj.__class__ is not bytes:
            obj = payloadBytes(obj)
        payload: bytes = obj  # narrowed by the class check above
        header = b"%d:" % len(payload)
        if len(payload) > JOIN_LIMIT:
            return (header, payload, b",")
        return header + payload + b","


def _build(defaultMaxFrameLength: int | None, max: int | None = None) -> tuple[Callable[[], Any], Any]:
    if max is None:
        max = defaultMaxFrameLength or DEFAULT_MAX_FRAME_LENGTH
    if max <= 0:
        raise ValueError(f"max must be > 0, not {max}")
    if accel.speedups is not None:
        compiledDecoder, compiledEncoder = _compiledClasses(accel.speedups)
        return functools.partial(compiledDecoder, max), compiledEncoder(NetstringEncoder())
    return functools.partial(NetstringDecoder, max), NetstringEncoder()


@functools.cache
def _compiledClasses(speedups: Any) -> tuple[type, type]:
    """The compiled twins of this module's decoder and encoder (iocpsvc.accel)."""

    @implementer(IDecoder)
    class CompiledNetstringDecoder(speedups.NetstringDecoder):
        """
        L{NetstringDecoder}'s loop, compiled.  Its state has the pure
        decoder's names, and the pure decode runs on it for every error.
        """

        __slots__ = ()
        _slowDecode = NetstringDecoder.decode
        _checkPartialHeader = NetstringDecoder._checkPartialHeader
        decodeLast = NetstringDecoder.decodeLast

    encoder = compiledTwinClass(
        speedups.FrameEncoder, NetstringEncoder, lambda twin: dict(kind=speedups.ENC_NETSTRING)
    )
    return CompiledNetstringDecoder, encoder


plugin = CodecPlugin(
    name="netstring",
    kind="framer",
    description="netstrings, <length>:<payload>, (Twisted NetstringReceiver compatible)",
    parameters={"max": parseSize},
    builder=_build,
)
