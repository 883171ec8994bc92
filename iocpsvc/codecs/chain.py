"""
Codec chains: one framer (bytes <-> frames) followed by object codecs
(frame <-> object), e.g. C{line+text} or C{length+json}.

Decoding runs the framer, then each object stage in order; encoding runs the
object stages in reverse, then the framer::

    bytes --framer.decode--> frame --text--> str --json--> object
    bytes <--framer.encode-- frame <--text-- str <--json-- object

One pair of stages is encoded together.  In C{text:encoding=gbk+json} the
decoder parses the C{str} that C{text} read in GBK; but C{json} writes
UTF-8 C{bytes}, which C{text} would pass through unchanged, so the peer
(and this decoder) would read UTF-8 as GBK.  So on the way out the chain
replaces a C{text} stage and an L{ITextDocumentEncoder} just after it by
that encoder's C{encoderIn(encoding)}, which writes the document in the
text stage's encoding (with C{utf-8}, that is the json encoder itself)::

    bytes <--framer.encode-- frame <--json.encoderIn("gbk")-- object
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from zope.interface import implementer

from iocpsvc.codecs._base import encodedBytes
from iocpsvc.codecs.text import TextEncoder
from iocpsvc.interfaces import IDecoder, IEncoder, IObjectDecoder, ITextDocumentEncoder


@implementer(IDecoder)
class ChainDecoder:
    """
    An L{IDecoder} that runs a framer's decoder and then object stages on
    every frame.
    """

    __slots__ = ("_framer", "_stages", "maxFrameLength", "stateless")

    def __init__(self, framer: IDecoder, stages: Sequence[IObjectDecoder]) -> None:
        self._framer = framer
        self._stages = tuple(stage.decodeObject for stage in stages)
        self.maxFrameLength = framer.maxFrameLength
        # Object stages are stateless, so the chain is as stateless as its framer.
        self.stateless = getattr(framer, "stateless", False)

    def decode(self, data: bytes | bytearray, out: list[object]) -> int:
        frames: list[object] = []
        try:
            return self._framer.decode(data, frames)
        finally:
            # Frames split before a framing error are still delivered (the
            # IDecoder contract), so the stages run even when decode raised.
            self._convert(frames, out)

    def _convert(self, frames: list[object], out: list[object]) -> None:
        stages = self._stages
        append = out.append
        if len(stages) == 1:
            # The common chain (one object stage): no inner loop per frame.
            convert = stages[0]
            for frame in frames:
                append(convert(frame))
            return
        for frame in frames:
            for convert in stages:
                frame = convert(frame)
            append(frame)

    @property
    def discardedFrames(self) -> int:
        """The framer's count of frames skipped in discard mode, if it keeps one."""
        return getattr(self._framer, "discardedFrames", 0)

    def decodeLast(self, data: bytes) -> list[object]:
        out: list[object] = []
        self._convert(self._framer.decodeLast(data), out)
        return out


@implementer(IEncoder)
class ChainEncoder:
    """
    An L{IEncoder} that runs object stages in reverse order and then the
    framer's encoder.
    """

    __slots__ = ("_framer", "_stages", "keepAliveFrame")

    def __init__(self, framer: IEncoder, stages: Sequence[IEncoder]) -> None:
        """
        @param stages: the object stages' encoders in spec order (the one
            next to the framer first).
        """
        self._framer = framer.encode
        # The chain's keep-alive is its framer's.
        self.keepAliveFrame: bytes | None = getattr(framer, "keepAliveFrame", None)
        self._stages = _encodeFunctions(stages)

    def encode(self, obj: object) -> bytes | list[bytes] | tuple[bytes, ...]:
        for stage in self._stages:
            obj = encodedBytes(stage(obj))
        return self._framer(obj)


def _encodeFunctions(stages: Sequence[IEncoder]) -> tuple[Callable[[object], object], ...]:
    """
    The object stages' encode functions in the order they run (the last
    stage first), with a C{text} stage and an L{ITextDocumentEncoder} just
    after it replaced by that encoder's C{encoderIn(encoding)}.
    """
    functions: list[Callable[[object], object]] = []
    index = len(stages) - 1
    while index >= 0:
        stage = stages[index]
        before = stages[index - 1] if index > 0 else None
        if isinstance(before, TextEncoder) and ITextDocumentEncoder.providedBy(stage):
            functions.append(stage.encoderIn(before.encoding))
            index -= 2
        else:
            functions.append(stage.encode)
            index -= 1
    return tuple(functions)
