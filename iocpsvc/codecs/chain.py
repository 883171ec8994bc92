"""
Codec chains: one framer (bytes <-> frames) followed by object codecs
(frame <-> object), e.g. C{line+text} or C{length+json}.

Decoding runs the framer, then each object stage in order; encoding runs the
object stages in reverse, then the framer::

    bytes --framer.decode--> frame --text--> str --json--> object
    bytes <--framer.encode-- frame <--text-- str <--json-- object
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from zope.interface import implementer

from iocpsvc.codecs._base import encodedBytes
from iocpsvc.interfaces import IDecoder, IEncoder, IObjectDecoder


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
        self._framer = framer.encode
        # The chain's keep-alive is its framer's.
        self.keepAliveFrame: bytes | None = getattr(framer, "keepAliveFrame", None)
        self._stages: tuple[Callable[[object], object], ...] = tuple(
            stage.encode for stage in reversed(stages)
        )

    def encode(self, obj: object) -> bytes | list[bytes] | tuple[bytes, ...]:
        for stage in self._stages:
            obj = encodedBytes(stage(obj))
        return self._framer(obj)
