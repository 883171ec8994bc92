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
becomes the 13 bytes C{{"op":"echo"}}.

Whatever the decoder yields, the encoder encodes, so an echo never fails on
the way back.  Python's C{json.loads} takes a few things that its encoder
(with C{allow_nan=False}) or UTF-8 cannot write; the decoder refuses them
with L{CorruptFrame} (C{protocol-error}) and says what it found::

    FRAME                                CorruptFrame: "invalid JSON: ..."

    NaN   [Infinity]   -Infinity         "NaN is not a JSON number"

    1e999   -1e400   (a float of 210     "the number 1e999 is too large
    digits or more before its point)      for a float"

    "\\ud800"   {"\\udc00":1}            "\\ud800 in a string is a lone
    (an escape with no partner)           surrogate, which has no UTF-8 form"

    +----+----------+----+               "not valid utf-8: invalid
    | 22 | ED A0 80 | 22 |                continuation byte at byte 1"
    +----+----------+----+               (U+D800 in UTF-8 form, which
                                          json.loads decodes with
                                          surrogatepass)

    [[[ ... 257 levels ... ]]]           "nested deeper than 256 levels"

A pair of escapes (C{"\\ud83d\\ude00"}) is one character and passes; so
does C{"\\\\ud800"}, an escaped backslash before the letters.  Nesting is
limited to L{MAX_DEPTH} (256) levels because both the parser and the
encoder recurse: a document that only just parses could otherwise fail to
encode deeper in the reactor's stack.

The checks cost little on the hot path: a few C-speed passes over the frame
(C{translate}, C{find}, C{count}), which decide whether anything else runs,
and fewer Python steps than C{json.loads} takes to detect the encoding.
C{NaN} and the infinities go through a C{parse_constant} hook, which the C
parser calls for those only.  C{parse_float} stays C{float} (a hook would
be a Python call per float, about as much again on float-heavy documents)
unless the frame has an exponent of 3 digits or a long run of digits.  The
bytes are decoded strictly, where C{json.loads} uses C{surrogatepass}.
Surrogate escapes and the nesting depth are looked at again only in frames
that hold a C{\\u} escape of C{D800}-C{DFFF}, or more than 256 C{[} and
C{E{lb}}; that second look is also C-speed passes over the text, not a walk of
the parsed document.

An object that C{json} cannot serialise is encoded by its L{IEncoder}
adapter if one is registered (which should produce JSON in UTF-8), and is
otherwise an L{EncodeError}, as are NaN, the infinities and strings with
lone surrogates.  C{bytes} are taken as an already encoded document (a
cached reply, say) and pass through unchanged.

After a C{text} stage (C{line+text:encoding=gbk+json}) the decoder parses
the C{str} that stage made, and the encoder writes the document in that
stage's encoding rather than UTF-8 (see L{JSONEncoder.encoderIn}), so the
chain decodes what it sends.

No parameters.  Decoding detects UTF-16 and UTF-32 as C{json.loads} does,
but peers should send UTF-8.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Callable
from itertools import accumulate
from operator import sub

from zope.interface import implementer

from iocpsvc.codecs._base import CodecPlugin, encodedBytes
from iocpsvc.errors import CorruptFrame, EncodeError
from iocpsvc.interfaces import IEncoder, IObjectDecoder, ITextDocumentEncoder

MAX_DEPTH = 256
"""
How deeply a document may nest arrays and objects (C{[]} is one level,
C{[[]]} two); deeper documents are a L{CorruptFrame}.
"""

# Only a document longer than this can nest deeper than MAX_DEPTH: each
# level takes an opening and a closing bracket.
_DEPTH_CHECK_LENGTH = 2 * MAX_DEPTH

_INFINITY = float("inf")

# A lone surrogate (U+D800-U+DFFF) in a str: it has no UTF-8 form.
_surrogate = re.compile("[\\ud800-\\udfff]").search
# A \u escape of a surrogate, paired or not: a document with one is checked
# with _loneSurrogateEscape.
_surrogateEscape = re.compile(r"\\u[dD][89a-fA-F]").search
# A high surrogate escape not followed by a low one, or a low one not after
# a high one: what json decodes to a lone surrogate (it joins a high escape
# and the low escape right after it, and nothing else).  Both branches start
# with the literal \u, which the regex engine searches for at C speed.
# Only meaningful once escaped backslashes are out of the way (see
# _unescapedBackslashes).
_loneSurrogateEscape = re.compile(
    r"\\u[dD](?:[89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F])"
    r"|[c-fC-F][0-9a-fA-F]{2}(?<!\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}))"
).search

# For the nesting depth: quotes and brackets only, and brackets of one kind
# ([ and { are the same).
_OPENING_AND_CLOSING = bytes(91 if byte == 123 else 93 if byte == 125 else byte for byte in range(256))
_NOT_QUOTES_OR_BRACKETS = bytes(byte for byte in range(256) if byte not in b'"[]{}')
_bracketRuns = re.compile(rb"\[+|\]+").findall


def _refuseConstant(name: str) -> object:
    """The parser's C{parse_constant} hook: C{NaN} and the infinities are not JSON."""
    raise CorruptFrame(f"invalid JSON: {name} is not a JSON number")


def _finiteFloat(text: str) -> float:
    """The parser's C{parse_float} hook: a float, unless it overflows to infinity."""
    value = float(text)
    if value == _INFINITY or value == -_INFINITY:
        shown = text if len(text) <= 24 else f"{text[:20]}... ({len(text)} characters)"
        raise CorruptFrame(f"invalid JSON: the number {shown} is too large for a float")
    return value


# A module named json.py importing json: with absolute imports (Python 3)
# this is the standard library, never this module.  Prebuilt decoders
# (json.loads with arguments would build one per call).  The C parser calls
# parse_constant for NaN and the infinities only, and parse_float once per
# float; left as float, parse_float stays in C.  A hook is a Python call per
# float, which about doubles the time of a float-heavy document, so it is
# only used for documents whose numbers may overflow.
_parse = json.JSONDecoder(parse_constant=_refuseConstant).decode
_parseFloatsChecked = json.JSONDecoder(parse_float=_finiteFloat, parse_constant=_refuseConstant).decode
_detectEncoding = json.detect_encoding

# Shapes of a document, for C-speed searches (bytes.translate, then find and
# count): digits become "0", e and E "e", [ and { "[", anything else a
# space, and signs and NULs (UTF-16 and UTF-32) are deleted.
#
# A float overflows only if its exponent has 3 digits or more, or 210 digits
# come before its point (10**209 * 10**99 is still finite): only a document
# with "e000" or 210 "0"s in its shapes is parsed with the parse_float hook
# (strings may match too, which only costs the hook).  The "[" count bounds
# the nesting depth.
_SHAPES = bytes(
    48 if 48 <= byte <= 57 else 101 if byte in b"eE" else 91 if byte in b"[{" else 32 for byte in range(256)
)
_NOT_IN_SHAPES = b"+-\x00"
_LONG_DIGITS = b"0" * 210
# Searched for first: a short needle is cheap to search for (the long one
# costs a table built per search), and long runs of digits are rare.
_SOME_DIGITS = b"0" * 16


@implementer(IObjectDecoder)
class JSONDecoder:
    """
    Parse each frame as JSON, refusing what the encoder could not write
    back (see the module docstring).  Stateless; shared by all connections.
    """

    __slots__ = ()

    def decodeObject(self, frame: object) -> object:
        # Hot path: json.loads unrolled, so that the bytes are decoded
        # strictly and the parser is chosen by the C-speed searches above;
        # the nesting and the surrogate escapes are looked at again only in
        # the rare documents that the searches flag.
        kind = frame.__class__
        try:
            if kind is bytes or kind is bytearray:
                data: bytes = frame  # type: ignore[assignment]  # narrowed by the class check
                # Strictly: json.loads decodes with 'surrogatepass', which
                # takes the UTF-8 (or UTF-16/32) form of a lone surrogate.
                # Two non-NUL ASCII bytes first can only start UTF-8 (no BOM,
                # not UTF-16/32): json.detect_encoding costs more than all
                # the searches together, so it is left for the rest.
                if len(data) < 2 or (0 < data[0] < 128 and data[1]):
                    text = data.decode()
                else:
                    text = data.decode(_detectEncoding(data))
                shapes = data.translate(_SHAPES, _NOT_IN_SHAPES)
                if shapes.find(b"e000") >= 0 or (
                    shapes.find(_SOME_DIGITS) >= 0 and shapes.find(_LONG_DIGITS) >= 0
                ):
                    value = _parseFloatsChecked(text)
                else:
                    value = _parse(text)
                mayNestTooDeeply = len(data) > _DEPTH_CHECK_LENGTH and shapes.count(b"[") > MAX_DEPTH
            elif isinstance(frame, str):
                # From a text stage (line+text+json): the hook for every
                # float.  Only an exotic encoding (unicode_escape, ...) makes
                # raw surrogates, and only a non-ASCII str can hold one
                # (isascii() is O(1)).
                text = frame
                if not text.isascii():
                    _refuseSurrogate(text)
                value = _parseFloatsChecked(text)
                mayNestTooDeeply = (
                    len(text) > _DEPTH_CHECK_LENGTH and text.count("[") + text.count("{") > MAX_DEPTH
                )
            else:
                raise CorruptFrame(f"the json codec decodes bytes or str, not {kind.__name__}")
        except UnicodeDecodeError as e:
            raise CorruptFrame(f"invalid JSON: not valid {e.encoding}: {e.reason} at byte {e.start}") from e
        except ValueError as e:
            # JSONDecodeError, and int() refusing a number of more than
            # 4300 digits, are ValueErrors.
            raise CorruptFrame(f"invalid JSON: {e}") from e
        except RecursionError:
            # A peer can nest arrays deeper than the parser's recursion limit.
            raise CorruptFrame("invalid JSON: nested too deeply") from None
        if "\\u" in text and _surrogateEscape(text):
            _refuseLoneSurrogateEscape(text)
        if mayNestTooDeeply:
            _refuseDeepNesting(text)
        return value


def _refuseSurrogate(text: str) -> None:
    """Raise L{CorruptFrame} if C{text} holds a lone surrogate."""
    found = _surrogate(text)
    if found is not None:
        raise CorruptFrame(
            f"invalid JSON: a string holds the lone surrogate U+{ord(found.group()):04X}, "
            f"which has no UTF-8 form"
        )


def _unescapedBackslashes(text: str) -> str:
    """
    C{text}, a valid JSON document, with each escaped backslash (C{\\\\})
    replaced by C{_}.  In valid JSON a backslash only starts an escape, so
    what remains is one backslash per other escape: in C{\\\\ud800} (a
    backslash, then the letters) there is none left, in C{\\\\\\ud800}
    the escape stays.  Not by nothing: C{\\ud800\\\\\\udc00} must not
    become a pair.
    """
    return text.replace("\\\\", "_")


def _refuseLoneSurrogateEscape(text: str) -> None:
    """
    Raise L{CorruptFrame} if a string of C{text}, a valid JSON document,
    holds a C{\\uXXXX} escape that decodes to a lone surrogate.
    """
    found = _loneSurrogateEscape(_unescapedBackslashes(text))
    if found is not None:
        raise CorruptFrame(
            f"invalid JSON: {found.group()} in a string is a lone surrogate, which has no UTF-8 form"
        )


def _refuseDeepNesting(text: str) -> None:
    """
    Raise L{CorruptFrame} if C{text}, a valid JSON document, nests arrays
    and objects deeper than L{MAX_DEPTH}.

    C-speed passes over the text rather than a walk of the parsed document
    (which costs more than the parse): with escaped backslashes and quotes
    out of the way, every quote left opens or closes a string; keep only
    the quotes and the brackets; drop the brackets inside strings; drop two
    levels of empty pairs; add up the runs of brackets that remain.
    """
    # Most documents have no backslash at all: one search instead of two.
    unescaped = _unescapedBackslashes(text).replace('\\"', "_") if "\\" in text else text
    skeleton = unescaped.encode().translate(_OPENING_AND_CLOSING, _NOT_QUOTES_OR_BRACKETS)
    # Two quotes side by side here have no bracket between them: removing
    # them moves no bracket into or out of a string, and drops every string
    # without brackets (nearly all of them) before the split.
    skeleton = skeleton.replace(b'""', b"")
    if skeleton.find(b'"') >= 0:
        skeleton = b"".join(skeleton.split(b'"')[::2])
    brackets = skeleton
    for levels in (1, 2):
        # Removes every [] (of the brackets left): one level off every branch.
        brackets = brackets.replace(b"[]", b"")
        if len(brackets) <= 2 * (MAX_DEPTH - levels):
            return
    runs = list(map(len, _bracketRuns(brackets)))
    # Runs alternate, opening first; the depth peaks after an opening run.
    deepest = max(map(sub, accumulate(runs[0::2]), accumulate(runs[1::2], initial=0)))
    if deepest + 2 > MAX_DEPTH:
        raise CorruptFrame(f"invalid JSON: nested deeper than {MAX_DEPTH} levels")


@implementer(IEncoder, ITextDocumentEncoder)
class JSONEncoder:
    """Serialise objects as compact UTF-8 JSON.  Stateless once built."""

    __slots__ = ("_encode", "_encodeAscii")

    def __init__(self) -> None:
        # One prebuilt encoder: json.dumps with arguments builds a new one
        # on every call.
        self._encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
        self._encodeAscii = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode

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

    def encoderIn(self, encoding: str) -> Callable[[object], bytes]:
        """
        An encode function that writes documents in C{encoding} rather than
        UTF-8: what a chain uses for a C{text:encoding=...} stage just
        before this one (C{line+text:encoding=gbk+json}), in place of both
        stages' encoders, so that the chain decodes what it sends.

        A document with a character that C{encoding} lacks (C{"é"} in
        C{ascii}) is written with every non-ASCII character as a
        C{\\uXXXX} escape instead, which any JSON parser reads back as the
        same string.  C{bytes}, and what an L{IEncoder} adapter returns,
        pass through unchanged, as they do through both stages.
        """
        encoding = codecs.lookup(encoding).name
        if encoding == "utf-8":
            return self.encode
        encodeText = self._encode
        encodeAscii = self._encodeAscii

        def encode(obj: object) -> bytes:
            """Encode C{obj} as JSON in the text stage's encoding."""
            if obj.__class__ is bytes:
                return obj  # narrowed by the class check
            try:
                text = encodeText(obj)
            except TypeError as e:
                return _adapted(obj, e)
            except (ValueError, RecursionError) as e:
                raise EncodeError(f"cannot encode as JSON: {e}") from e
            try:
                return text.encode(encoding)
            except UnicodeEncodeError:
                pass
            found = _surrogate(text)
            if found is not None:
                raise EncodeError(f"cannot encode as JSON: lone surrogate U+{ord(found.group()):04X}")
            try:
                return encodeAscii(obj).encode(encoding)
            except UnicodeEncodeError as e:
                raise EncodeError(f"cannot encode JSON in {encoding}: {e.reason}") from e

        return encode


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
    objectType=object,  # any JSON value: objects, arrays, strings, numbers
)
