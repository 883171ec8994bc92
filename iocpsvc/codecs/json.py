"""
The C{json} object codec: each frame is one JSON document (RFC 8259) in
UTF-8.

C{line+json}, C{length+json}, ... -- the framer cuts the frame, this stage
parses it::

    FRAME (23 bytes)                       OBJECT (a dict)
    +-------------------------+            +-----------------------------+
    | {"op":"echo","n":[1,2]} |   --->     | {"op": "echo", "n": [1, 2]} |
    +-------------------------+            +-----------------------------+

    FRAME (2 bytes)
    +------+
    | "{1" |   --->   CorruptFrame: "invalid JSON: Expecting property name
    +------+          enclosed in double quotes: line 1 column 2 (char 1)"

Encoding writes compact JSON (no spaces after C{,} and C{:}) with non-ASCII
characters as UTF-8 rather than C{\\uXXXX} escapes, so C{{"op": "echo"}}
becomes the 13 bytes C{{"op":"echo"}}.  NaN and the infinities are refused
with L{EncodeError}: they are not JSON and other languages' parsers reject
them (the decoder, like Python's, still accepts them).

An object that C{json} cannot serialise is encoded by its L{IEncoder}
adapter if one is registered (which should produce JSON in UTF-8), and is
otherwise an L{EncodeError}.  C{bytes} are taken as an already encoded
document (a cached reply, say) and pass through unchanged.

No parameters.  Decoding detects UTF-16 and UTF-32 as C{json.loads} does,
but peers should send UTF-8.
"""

from __future__ import annotations

import json

from zope.interface import implementer

from iocpsvc.codecs._base import CodecPlugin, encodedBytes
from iocpsvc.errors import CorruptFrame, EncodeError
from iocpsvc.interfaces import IEncoder, IObjectDecoder

# A module named json.py importing json: with absolute imports (Python 3)
# this is the standard library, never this module.
_loads = json.loads


@implementer(IObjectDecoder)
class JSONDecoder:
    """Parse each frame as JSON.  Stateless; shared by all connections."""

    __slots__ = ()

    def decodeObject(self, frame: object) -> object:
        try:
            # json.loads takes bytes and bytearray directly (no decode step
            # of our own) and str, for a chain like line+text+json.
            return _loads(frame)  # type: ignore[arg-type]
        except ValueError as e:
            # JSONDecodeError, UnicodeDecodeError, and int() refusing a
            # number of more than 4300 digits are all ValueErrors.
            raise CorruptFrame(f"invalid JSON: {e}") from e
        except RecursionError:
            # A peer can nest arrays deeper than the parser's recursion limit.
            raise CorruptFrame("invalid JSON: nested too deeply") from None
        except TypeError:
            raise CorruptFrame(f"the json codec decodes bytes or str, not {type(frame).__name__}") from None


@implementer(IEncoder)
class JSONEncoder:
    """Serialise objects as compact UTF-8 JSON.  Stateless once built."""

    __slots__ = ("_encode",)

    def __init__(self) -> None:
        # One prebuilt encoder: json.dumps with arguments builds a new one
        # on every call.
        self._encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode

    def encode(self, obj: object) -> bytes:
        if obj.__class__ is bytes:
            return obj  # narrowed by the class check
        try:
            text = self._encode(obj)
        except TypeError as e:
            return _adapted(obj, e)
        except (ValueError, RecursionError) as e:
            # NaN or infinity, a circular reference, or nesting too deep.
            raise EncodeError(f"cannot encode as JSON: {e}") from e
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError as e:
            # A lone surrogate in a str has no UTF-8 form.
            raise EncodeError(f"cannot encode as JSON: {e}") from e


def _adapted(obj: object, error: TypeError) -> bytes:
    """Encode C{obj}, which json cannot serialise, through its adapter."""
    adapter = IEncoder(obj, None)
    if adapter is None:
        name = type(obj).__name__
        raise EncodeError(
            f"cannot encode as JSON: {error}; register an IEncoder adapter for {name}"
        ) from error
    return encodedBytes(adapter.encode(obj))


def _build(defaultMaxFrameLength: int | None) -> tuple[JSONDecoder, JSONEncoder]:
    return JSONDecoder(), JSONEncoder()


plugin = CodecPlugin(
    name="json",
    kind="object",
    description="frames as compact UTF-8 JSON documents",
    parameters={},
    builder=_build,
)
