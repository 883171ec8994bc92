"""
The frames the load tool sends, and the bytes it expects back.

The load tool must cost far less CPU per frame than the server it
measures, so its hot path never decodes.  Every connection sends the same
wire frame (a payload of C{--size} bytes framed once, at start, by the
C{--codec} encoder) over and over, so the byte stream it must get back is
that frame repeated: each read is compared, with one C{bytes} comparison,
against a precomputed block of repeated frames at the offset where the
stream stands (L{iocpsvc.bench.load.EchoLoadProtocol})::

    block (frame repeated, >= 64 KiB + one frame, built once)
    +---------+---------+---------+---------+---------+-- ...
    | frame   | frame   | frame   | frame   | frame   |
    +---------+---------+---------+---------+---------+-- ...
         ^ position = bytes received % frame size
         [ data of this read, compared with block[position:position+len] ]

New frames are sliced from the same block.  Payloads differ between
connections (64 KiB of memory per variant, up to 256 variants), so bytes
crossing between connections are caught too.
"""

from __future__ import annotations

from dataclasses import dataclass

from iocpsvc.codecs import parseCodecSpec
from iocpsvc.errors import CodecSpecError, DecodeError, EncodeError

# The verification block holds at least one socket read (Twisted reads at
# most 64 KiB at a time) plus one frame, so a read is normally one compare.
_READ_SIZE = 65536
# Memory spent on payload variants (each a verification block).
_VARIANT_MEMORY = 64 * 1024 * 1024
_MAX_VARIANTS = 256


def _joined(encoded: object) -> bytes:
    """The wire bytes of what an encoder returned (bytes or chunks)."""
    if isinstance(encoded, bytes):
        return encoded
    if isinstance(encoded, (list, tuple)):
        return b"".join(bytes(chunk) for chunk in encoded)
    return bytes(encoded)  # type: ignore[call-overload]


@dataclass(frozen=True)
class FramePattern:
    """
    One payload variant: its wire frame, and the frame repeated into the
    block that received bytes are compared with and new frames are sliced
    from.
    """

    payload: bytes
    frame: bytes
    block: bytes

    @property
    def wireSize(self) -> int:
        """The frame's size on the wire."""
        return len(self.frame)


class FramePatterns:
    """
    The frames a run sends: a payload of C{size} bytes framed once by the
    codec C{spec}, in up to C{variants} variants (each a rotation of the
    same byte sequence) built when first used.

    A payload avoids CR, LF and every byte of the codec's empty frame (a
    delimiter framer's delimiter), so no framer can cut it short; each
    variant is checked by decoding two frames of it with the codec.

    @raise ValueError: C{spec} is not a single framing codec, or cannot
        frame such a payload (say, C{fixed} with another size).
    """

    def __init__(self, spec: str, size: int, variants: int = 1) -> None:
        if size < 0:
            raise ValueError(f"size must be >= 0, not {size}")
        try:
            self.codec = parseCodecSpec(spec)
        except CodecSpecError as e:
            raise ValueError(str(e)) from None
        if len(self.codec.names) > 1:
            raise ValueError(
                f"{spec!r} has object stages ({'+'.join(self.codec.names[1:])}); the load tool "
                f"needs a framing codec alone, which echo servers echo byte-exact"
            )
        self.spec = spec
        self.size = size
        excluded = {0x0A, 0x0D}
        try:
            excluded.update(_joined(self.codec.encoder.encode(b"")))
        except Exception:
            pass  # the codec frames no empty payload (fixed, ...): nothing to avoid
        self.alphabet = bytes(b for b in range(256) if b not in excluded)
        self._patterns: dict[int, FramePattern] = {}
        first = self.pattern(0)
        blockSize = len(first.block)
        self.variants = max(1, min(variants, len(self.alphabet), _MAX_VARIANTS, _VARIANT_MEMORY // blockSize))

    @property
    def wireSize(self) -> int:
        """The size of a frame on the wire (variant 0's)."""
        return self.pattern(0).wireSize

    def forConnection(self, index: int) -> FramePattern:
        """The pattern connection number C{index} (counted over the whole run) uses."""
        return self.pattern(index % self.variants)

    def pattern(self, variant: int) -> FramePattern:
        """Variant C{variant}, built and checked on first use."""
        found = self._patterns.get(variant)
        if found is None:
            found = self._patterns[variant] = self._build(variant)
        return found

    def _build(self, variant: int) -> FramePattern:
        alphabet = self.alphabet
        shift = variant % len(alphabet)
        rotated = alphabet[shift:] + alphabet[:shift]
        payload = (rotated * (self.size // len(rotated) + 1))[: self.size]
        try:
            frame = _joined(self.codec.encoder.encode(payload))
        except EncodeError as e:
            raise ValueError(f"codec {self.spec!r} cannot frame a {self.size}-byte payload: {e}") from None
        if not frame:
            raise ValueError(f"codec {self.spec!r} framed a {self.size}-byte payload as nothing")
        self._checkRoundTrip(payload, frame)
        repeat = max(2, -(-(_READ_SIZE + len(frame)) // len(frame)))
        return FramePattern(payload, frame, frame * repeat)

    def _checkRoundTrip(self, payload: bytes, frame: bytes) -> None:
        """Two frames must decode to the payload twice, with nothing left."""
        decoder = self.codec.newDecoder()
        buffer = bytearray(frame * 2)
        out: list[object] = []
        try:
            while buffer:
                consumed = decoder.decode(buffer, out)
                if not consumed:
                    break
                del buffer[:consumed]
        except DecodeError as e:
            raise ValueError(f"codec {self.spec!r} cannot carry a {self.size}-byte payload: {e}") from None
        decoded = [bytes(obj) for obj in out]  # type: ignore[call-overload]
        if buffer or decoded != [payload, payload]:
            raise ValueError(f"codec {self.spec!r} does not decode its own frames of {self.size} bytes back")
