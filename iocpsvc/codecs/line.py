"""
Delimiter framing: text lines (C{line}) and frames ended by any byte string
(C{delimiter}), the semantics of Netty's C{LineBasedFrameDecoder} and
C{DelimiterBasedFrameDecoder}.

C{line} -- a frame ends with LF (C{0A}); a CR (C{0D}) just before the LF is
removed too, so both C{LF} and C{CRLF} lines decode (Twisted's
C{LineReceiver} sends C{CRLF})::

    BEFORE (15 bytes)
    +---------+----+---------+-------+-----+----+
    | "HELLO" | 0A | "WORLD" | 0D 0A | "!" | 0A |
    +---------+----+---------+-------+-----+----+
    AFTER (3 frames)
    +---------+ +---------+ +-----+
    | "HELLO" | | "WORLD" | | "!" |
    +---------+ +---------+ +-----+

C{delimiter:delim=0x00} -- any delimiter, removed from the frame; nothing
else is stripped::

    BEFORE (7 bytes)                      AFTER (2 frames)
    +-------+----+------+----+            +-------+ +------+
    | "ABC" | 00 | "DE" | 00 |    --->    | "ABC" | | "DE" |
    +-------+----+------+----+            +-------+ +------+

A frame that has not been ended yet stays buffered, and the search for its
end resumes where the previous call stopped (a multi-byte delimiter may
straddle two reads: C{"GET" 0D | 0A} is found)::

    BEFORE (4 bytes, delim=\\r\\n)        AFTER
    +-------+----+                        nothing yet, 0 bytes consumed;
    | "GET" | 0D |                 --->   the frame "GET" once the next
    +-------+----+                        read brings 0A

Parameters (spec names)::

    max      the longest frame, delimiter (and line CR) not counted;
             default --max-frame-length, else 1 MiB
    discard  false (default): a frame longer than max raises FrameTooLong;
             true: it is skipped up to its delimiter and decoding goes on
    eol      (line only) what the encoder appends: \\n (default) or \\r\\n
    delim    (delimiter only, required) the delimiter, with backslash
             escapes or in hex after 0x: \\r\\n, \\x00, END, 0x0d0a

Failure, as in Netty with C{failFast=true}: a frame longer than C{max} raises
L{FrameTooLong} as soon as that is certain.  A whole frame found in one read
reports its length; otherwise the decoder does not wait for the delimiter:
once more than C{max} bytes are buffered without one (and their last bytes
cannot be the start of a delimiter ending a frame of at most C{max} bytes)
it raises, and the error says the length is unknown::

    max=4                                 FrameTooLong(None, 4): "no frame
    +---------------------+               end within the maximum of 4 bytes"
    | "TOO L"  (no 0A)    |        --->   raised after 5 bytes, before the
    +---------------------+               rest of the line arrives

With C{discard=true} the decoder never raises: it drops the long frame up to
and including its delimiter, consuming its bytes as they arrive (so the
buffer stays small), counts it in C{discardedFrames}, and goes on::

    max=4:discard=true
    BEFORE (12 bytes)                     AFTER (1 frame)
    +------------+----+------+----+       +------+
    | "TOO LONG" | 0A | "OK" | 0A |  ---> | "OK" |     discardedFrames == 1
    +------------+----+------+----+       +------+

End of stream: a last frame without its delimiter is discarded
(C{decodeLast} returns C{[]}), so a peer that dies in the middle of a line
never delivers half of it.

Encoding appends the delimiter (C{line}: C{eol}).  A payload that contains
the delimiter would decode as two frames, so the encoder refuses it with
L{EncodeError} (one C-speed scan of the payload).

A stray CR is data, both ways.  The decoder removes exactly one CR before
the LF, so a line that ends with CR on the wire keeps its other CRs; and
the encoder, given a payload that ends with CR, ends it with CRLF even when
C{eol} is LF, so that the CR the decoder removes is the one it added::

    BEFORE (6 bytes)                      AFTER (1 frame)
    +-------+----+-------+                +----------+
    | "abc" | 0D | 0D 0A |       --->     | "abc" 0D |
    +-------+----+-------+                +----------+

    encode("abc" 0D), eol=\\n  --->  "abc" 0D 0D 0A   (the same 6 bytes)

So whatever C{line} decodes, its encoder sends back as the same line, and
an echo of C{"abc" 0D 0D 0A} is byte-exact.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from zope.interface import implementer

from iocpsvc import accel
from iocpsvc.codecs._base import (
    JOIN_LIMIT,
    CodecPlugin,
    compiledTwinClass,
    copyFrame,
    parseBool,
    parseBytes,
    payloadBytes,
)
from iocpsvc.errors import EncodeError, FrameTooLong
from iocpsvc.interfaces import IDecoder, IEncoder
from iocpsvc.units import MiB, parseSize

DEFAULT_MAX_FRAME_LENGTH = 1 * MiB

_CR = 13  # data[i] of bytes or bytearray is an int


class _DelimitedDecoder:
    """
    The delimiter search shared by L{LineDecoder} and L{DelimiterDecoder}.

    State kept between calls, relative to the start of the unconsumed data:
    C{_scanned}, how many bytes of the current (unfinished) frame have been
    searched without finding the delimiter; and C{_discarding}, whether the
    bytes being received belong to a frame that is being skipped.

    @ivar discardedFrames: how many frames were skipped for being longer than
        C{maxFrameLength} (only with C{discard}).
    """

    __slots__ = (
        "maxFrameLength",
        "delimiter",
        "discard",
        "discardedFrames",
        "_stripCR",
        "_scanned",
        "_discarding",
    )

    def __init__(
        self,
        delimiter: bytes,
        maxFrameLength: int,
        discard: bool,
        stripCR: bool,
    ) -> None:
        if not isinstance(delimiter, bytes) or not delimiter:
            raise ValueError(f"delim must be non-empty bytes, not {delimiter!r}")
        if maxFrameLength <= 0:
            raise ValueError(f"max must be > 0, not {maxFrameLength}")
        self.maxFrameLength = maxFrameLength
        self.delimiter = delimiter
        self.discard = discard
        self.discardedFrames = 0
        self._stripCR = stripCR
        self._scanned = 0
        self._discarding = False

    def decode(self, data: bytes | bytearray, out: list[object]) -> int:
        # Hot path.  Every byte is searched once by find/rfind (C speed).
        # When one read holds several frames (sticky packets) the per-frame
        # work happens inside bytes.split rather than in a Python loop: 4-8
        # times faster per frame, though the region is copied before it is
        # split (two copies instead of one; the loop costs far more).
        delimiter = self.delimiter
        delimiterLength = len(delimiter)
        end = len(data)
        position = 0
        scanned = self._scanned
        if self._discarding:
            found = data.find(delimiter, max(0, scanned - delimiterLength + 1))
            if found < 0:
                # Consume what was skipped; keep only bytes that may be the
                # first part of a delimiter split across two reads.
                position = max(0, end - delimiterLength + 1)
                self._scanned = end - position
                return position
            position = found + delimiterLength
            self._discarding = False
            scanned = 0
        first = data.find(delimiter, position + max(0, scanned - delimiterLength + 1))
        if first >= 0:
            last = data.rfind(delimiter, first + delimiterLength)
            if last < 0:
                # Exactly one frame: a plain slice is cheaper than a split.
                stop = first
                if self._stripCR and stop > position and data[stop - 1] == _CR:
                    stop -= 1
                if stop - position > self.maxFrameLength:
                    self._tooLong(stop - position)
                else:
                    out.append(copyFrame(data, position, stop))
                position = first + delimiterLength
            else:
                position = self._decodeMany(data, position, last + delimiterLength, out)
        # data[position:end] holds no whole delimiter: it is all scanned.
        unfinished = end - position
        if unfinished > self.maxFrameLength and not self._mayEnd(data, position, end):
            if not self.discard:
                raise FrameTooLong(None, self.maxFrameLength)
            self.discardedFrames += 1
            self._discarding = True
            kept = max(position, end - delimiterLength + 1)
            self._scanned = end - kept
            return kept
        self._scanned = unfinished
        return position

    def _decodeMany(self, data: bytes | bytearray, start: int, stop: int, out: list[object]) -> int:
        """
        Decode the frames of C{data[start:stop]}, which ends with a delimiter
        and holds at least two.

        @return: where the next frame starts (C{stop}, unless the delimiter
            overlaps itself, e.g. C{00 00} in C{"x" 00 00 00}).
        """
        if data.__class__ is bytes:
            region = data[start:stop]
        else:
            # One copy, as bytes: splitting a bytearray would give bytearrays.
            with memoryview(data) as view:
                region = bytes(view[start:stop])
        if self._stripCR and b"\r" in region:
            region = region.replace(b"\r\n", b"\n")
        frames = region.split(self.delimiter)
        rest = frames.pop()  # b"" unless the delimiter overlaps itself
        maxFrameLength = self.maxFrameLength
        # No frame can exceed the maximum if the whole region does not.
        if len(region) > maxFrameLength and max(map(len, frames)) > maxFrameLength:
            if not self.discard:
                for index, frame in enumerate(frames):
                    if len(frame) > maxFrameLength:
                        out.extend(frames[:index])
                        raise FrameTooLong(len(frame), maxFrameLength)
            kept = [frame for frame in frames if len(frame) <= maxFrameLength]
            self.discardedFrames += len(frames) - len(kept)
            frames = kept
        out.extend(frames)
        return stop - len(rest)

    def _tooLong(self, length: int) -> None:
        """A whole frame of C{length} bytes is too long: raise or skip it."""
        if not self.discard:
            raise FrameTooLong(length, self.maxFrameLength)
        self.discardedFrames += 1

    def _mayEnd(self, data: bytes | bytearray, start: int, end: int) -> bool:
        """
        Whether C{data[start:end]}, longer than the maximum and without a
        delimiter, can still become a frame of at most the maximum: only if
        its tail may be the first part of the delimiter (or, for lines, a CR
        whose LF is still to come).  Runs only once the maximum is exceeded.
        """
        maxFrameLength = self.maxFrameLength
        if self._stripCR:
            return end - start == maxFrameLength + 1 and data[end - 1] == _CR
        delimiter = self.delimiter
        first = max(start, end - len(delimiter) + 1)
        for begin in range(first, start + maxFrameLength + 1):
            if delimiter.startswith(data[begin:end]):
                return True
        return False

    def decodeLast(self, data: bytes) -> list[object]:
        """A last frame without its delimiter is discarded."""
        return []


@implementer(IDecoder)
class LineDecoder(_DelimitedDecoder):
    """
    Split a stream into lines ended by LF, removing the LF and a CR just
    before it (see the module docstring).  One instance per connection.
    """

    __slots__ = ()

    def __init__(self, maxFrameLength: int = DEFAULT_MAX_FRAME_LENGTH, discard: bool = False) -> None:
        super().__init__(b"\n", maxFrameLength, discard, stripCR=True)


@implementer(IDecoder)
class DelimiterDecoder(_DelimitedDecoder):
    """
    Split a stream into frames ended by C{delimiter}, removing it (see the
    module docstring).  One instance per connection.
    """

    __slots__ = ()

    def __init__(
        self,
        delimiter: bytes,
        maxFrameLength: int = DEFAULT_MAX_FRAME_LENGTH,
        discard: bool = False,
    ) -> None:
        super().__init__(delimiter, maxFrameLength, discard, stripCR=False)


@implementer(IEncoder)
class LineEncoder:
    """
    Append C{eol} (LF or CRLF) to each payload; a payload ending with CR
    always gets CRLF, since the decoder removes one CR before the LF (see
    the module docstring).  A payload containing LF is refused: it would be
    two lines.
    """

    __slots__ = ("eol",)

    def __init__(self, eol: bytes = b"\n") -> None:
        if eol not in (b"\n", b"\r\n"):
            raise ValueError(f"eol must be \\n or \\r\\n, not {eol!r}")
        self.eol = eol

    def encode(self, obj: object) -> bytes | tuple[bytes, bytes]:
        if obj.__class__ is not bytes:
            obj = payloadBytes(obj)
        payload: bytes = obj  # narrowed by the class check above
        if b"\n" in payload:
            raise EncodeError("a line must not contain LF (\\n): it ends the line")
        eol = self.eol
        # A trailing CR is data: add the CR that the decoder removes.  (An
        # index and an int compare: cheaper than endswith's method call.)
        if payload and payload[-1] == _CR:
            eol = b"\r\n"
        if len(payload) > JOIN_LIMIT:
            return (payload, eol)
        return payload + eol


@implementer(IEncoder)
class DelimiterEncoder:
    """
    Append C{delimiter} to each payload.  A payload in which the decoder
    would find the delimiter before the appended one is refused.
    """

    __slots__ = ("delimiter",)

    def __init__(self, delimiter: bytes) -> None:
        if not isinstance(delimiter, bytes) or not delimiter:
            raise ValueError(f"delim must be non-empty bytes, not {delimiter!r}")
        self.delimiter = delimiter

    def encode(self, obj: object) -> bytes | tuple[bytes, bytes]:
        if obj.__class__ is not bytes:
            obj = payloadBytes(obj)
        payload: bytes = obj  # narrowed by the class check above
        delimiter = self.delimiter
        if delimiter in payload:
            raise EncodeError(f"the payload contains the delimiter {delimiter!r}")
        if len(delimiter) > 1:
            # The payload's tail and the delimiter's head may form a
            # delimiter that ends the frame early: "x0" + "00" with "00".
            tail = payload[1 - len(delimiter) :] + delimiter
            if tail.find(delimiter) != len(tail) - len(delimiter):
                raise EncodeError(f"the payload's last bytes run into the delimiter {delimiter!r}")
        if len(payload) > JOIN_LIMIT:
            return (payload, delimiter)
        return payload + delimiter


def _maximum(defaultMaxFrameLength: int | None, max: int | None) -> int:
    if max is None:
        max = defaultMaxFrameLength or DEFAULT_MAX_FRAME_LENGTH
    if max <= 0:
        raise ValueError(f"max must be > 0, not {max}")
    return max


def _buildLine(
    defaultMaxFrameLength: int | None,
    max: int | None = None,
    discard: bool = False,
    eol: bytes = b"\n",
) -> tuple[Callable[[], Any], Any]:
    maxFrameLength = _maximum(defaultMaxFrameLength, max)
    if accel.speedups is not None:
        compiledDecoder, compiledEncoder, _ = _compiledClasses(accel.speedups)
        return (
            functools.partial(compiledDecoder, b"\n", maxFrameLength, discard, True),
            compiledEncoder(LineEncoder(eol)),
        )
    decoderFactory = functools.partial(LineDecoder, maxFrameLength=maxFrameLength, discard=discard)
    return decoderFactory, LineEncoder(eol)


def _buildDelimiter(
    defaultMaxFrameLength: int | None,
    delim: bytes | None = None,
    max: int | None = None,
    discard: bool = False,
) -> tuple[Callable[[], Any], Any]:
    if delim is None:
        raise ValueError("the delimiter codec needs delim=..., e.g. delimiter:delim=\\r\\n")
    maxFrameLength = _maximum(defaultMaxFrameLength, max)
    encoder = DelimiterEncoder(delim)  # validates delim
    if accel.speedups is not None:
        compiledDecoder, _, compiledEncoder = _compiledClasses(accel.speedups)
        return (
            functools.partial(compiledDecoder, delim, maxFrameLength, discard, False),
            compiledEncoder(encoder),
        )
    decoderFactory = functools.partial(
        DelimiterDecoder, delim, maxFrameLength=maxFrameLength, discard=discard
    )
    return decoderFactory, encoder


@functools.cache
def _compiledClasses(speedups: Any) -> tuple[type, type, type]:
    """The compiled twins of this module's decoders and encoders (iocpsvc.accel)."""

    @implementer(IDecoder)
    class CompiledDelimitedDecoder(speedups.DelimitedDecoder):
        """
        The delimiter search of L{LineDecoder} and L{DelimiterDecoder},
        compiled.  Its state has the pure decoder's names, and the pure
        decode runs on it for discarding and for every error.
        """

        __slots__ = ()
        _slowDecode = _DelimitedDecoder.decode
        _decodeMany = _DelimitedDecoder._decodeMany
        _tooLong = _DelimitedDecoder._tooLong
        _mayEnd = _DelimitedDecoder._mayEnd
        decodeLast = _DelimitedDecoder.decodeLast

    lineEncoder = compiledTwinClass(
        speedups.FrameEncoder, LineEncoder, lambda twin: dict(kind=speedups.ENC_LINE, trailer=twin.eol)
    )
    delimiterEncoder = compiledTwinClass(
        speedups.FrameEncoder,
        DelimiterEncoder,
        lambda twin: dict(kind=speedups.ENC_DELIMITER, trailer=twin.delimiter),
    )
    return CompiledDelimitedDecoder, lineEncoder, delimiterEncoder


def _eol(text: str) -> bytes:
    value = parseBytes(text)
    if value not in (b"\n", b"\r\n"):
        raise ValueError(f"{text!r} is not a line end (\\n or \\r\\n)")
    return value


linePlugin = CodecPlugin(
    name="line",
    kind="framer",
    description="lines ended by LF (a CR before it is stripped); "
    "LineReceiver and Netty LineBasedFrameDecoder compatible",
    parameters={"max": parseSize, "discard": parseBool, "eol": _eol},
    builder=_buildLine,
)

delimiterPlugin = CodecPlugin(
    name="delimiter",
    kind="framer",
    description="frames ended by a delimiter given as delim=... (Netty DelimiterBasedFrameDecoder)",
    parameters={"delim": parseBytes, "max": parseSize, "discard": parseBool},
    builder=_buildDelimiter,
)

# Two codecs in one module: the registry reads a module's ``plugins``.
plugins = (linePlugin, delimiterPlugin)
