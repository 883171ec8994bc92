"""
The C{text} object codec: each frame is one string in a text encoding
(UTF-8 unless C{encoding} says otherwise), decoded strictly.

C{line+text}, C{length+text:encoding=gbk}, ... -- the framer cuts the frame,
this stage turns its bytes into C{str}::

    FRAME (6 bytes)                        OBJECT (a str of 5 characters)
    +-------------------+                  +---------+
    | 63 61 66 C3 A9 21 |      --->        | "café!" |
    +-------------------+                  +---------+

    FRAME (2 bytes)
    +-------+
    | C3 28 |   --->   CorruptFrame: "frame is not valid utf-8: invalid
    +-------+          continuation byte at byte 0"

Parameters (spec names)::

    encoding   any Python text encoding: utf-8 (default), ascii, latin-1,
               gbk, utf-16, ...; errors are always strict

Encoding: a C{str} is encoded (a character the encoding cannot represent is
an L{EncodeError}); C{bytes} are taken as already encoded and pass through
unchanged; any other object is encoded by its L{IEncoder} adapter, if one is
registered, and is otherwise an L{EncodeError}.  Followed by C{json}
(C{line+text:encoding=gbk+json}), the two stages encode together: the
document is written in this stage's encoding (see L{iocpsvc.codecs.chain}).

Every frame this stage decodes encodes back to bytes that decode to the same
C{str}: a strict decode never yields a lone surrogate in the Unicode
encodings, and the others (C{latin-1}, C{gbk}, C{big5}, C{shift_jis}, ...)
map each character they decode back to bytes.  Two exceptions, left to the
application: the stateful C{iso2022_*} encodings decode some stray escape
bytes they cannot encode again; and an encoding that writes a byte order
mark (C{utf-16}, C{utf-32}, C{utf-8-sig}) writes one on every frame, whether
or not the peer's frame had one, so a frame may come back 2 to 4 bytes
longer -- after C{fixed}, which needs every frame the same length, use
C{utf-16-le} or C{utf-16-be}.
"""

from __future__ import annotations

import codecs

from zope.interface import implementer

from iocpsvc.codecs._base import CodecPlugin, encodedBytes
from iocpsvc.errors import CorruptFrame, EncodeError
from iocpsvc.interfaces import IEncoder, IObjectDecoder

DEFAULT_ENCODING = "utf-8"


def parseEncoding(text: str) -> str:
    """
    Check that C{text} names a text encoding and return its canonical name
    (C{UTF8} -> C{utf-8}).

    @raise ValueError: unknown, or a bytes-to-bytes codec such as C{base64}.
    """
    try:
        info = codecs.lookup(str(text))
    except LookupError:
        raise ValueError(f"{text!r} is not a known text encoding") from None
    if not getattr(info, "_is_text_encoding", True):
        raise ValueError(f"{text!r} is not a text encoding")
    return info.name


@implementer(IObjectDecoder)
class TextDecoder:
    """Decode each frame to C{str}.  Stateless; shared by all connections."""

    __slots__ = ("encoding",)

    def __init__(self, encoding: str = DEFAULT_ENCODING) -> None:
        self.encoding = parseEncoding(encoding)

    def decodeObject(self, frame: object) -> str:
        try:
            # str(buffer, encoding) takes bytes, bytearray and memoryview.
            return str(frame, self.encoding)  # type: ignore[call-overload]
        except UnicodeDecodeError as e:
            raise CorruptFrame(f"frame is not valid {self.encoding}: {e.reason} at byte {e.start}") from e
        except TypeError:
            raise CorruptFrame(f"the text codec decodes bytes, not {type(frame).__name__}") from None


@implementer(IEncoder)
class TextEncoder:
    """Encode C{str} to bytes.  Stateless; shared by all connections."""

    __slots__ = ("encoding",)

    def __init__(self, encoding: str = DEFAULT_ENCODING) -> None:
        self.encoding = parseEncoding(encoding)

    def encode(self, obj: object) -> bytes:
        if isinstance(obj, str):
            try:
                return obj.encode(self.encoding)
            except UnicodeEncodeError as e:
                raise EncodeError(
                    f"cannot encode {e.object[e.start : e.end]!r} in {self.encoding}: {e.reason}"
                ) from e
        if obj.__class__ is bytes:
            return obj  # narrowed by the class check
        return _adapted(obj, "the text codec encodes str")


def _adapted(obj: object, what: str) -> bytes:
    """
    Encode C{obj} as bytes-like, or through its L{IEncoder} adapter.

    @param what: the start of the error message, naming the codec.
    """
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj)
    adapter = IEncoder(obj, None)
    if adapter is None:
        name = type(obj).__name__
        raise EncodeError(f"{what}, not {name}; register an IEncoder adapter for {name}")
    return encodedBytes(adapter.encode(obj))


def _build(
    defaultMaxFrameLength: int | None, encoding: str = DEFAULT_ENCODING
) -> tuple[TextDecoder, TextEncoder]:
    return TextDecoder(encoding), TextEncoder(encoding)


plugin = CodecPlugin(
    name="text",
    kind="object",
    description="frames as str in a text encoding (encoding=utf-8 by default)",
    parameters={"encoding": parseEncoding},
    builder=_build,
    objectType=str,
)
