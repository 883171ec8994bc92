"""
What every codec module shares: the plugin record that names a codec in spec
strings, converters for spec parameters, and the payload coercion that lets a
framer encode an application's message class through an L{IEncoder} adapter.
"""

from __future__ import annotations

import codecs as _stdcodecs
import functools
from collections.abc import Callable, Mapping
from typing import Any

from twisted.plugin import IPlugin
from zope.interface import classImplements, implementedBy, implementer

from iocpsvc import accel
from iocpsvc.errors import EncodeError
from iocpsvc.interfaces import IBatchEncoder, ICodecPlugin, IDecoder, IEncoder
from iocpsvc.units import KiB

JOIN_LIMIT = 4 * KiB
"""
Framers join a header (or delimiter) to payloads up to this size and send
larger payloads as a chunk of their own: above it the copy costs more than
the extra chunk.
"""

VIEW_COPY_LIMIT = 32 * KiB
"""
From this size a frame is copied out of a C{bytearray} through a
C{memoryview} (one copy) rather than slice-then-C{bytes()} (two copies);
below it the view's set-up costs more than the second copy.
"""


def parseByteOrder(text: str) -> str:
    """
    Parse a byte order: C{big} (also C{be}, C{network}) or C{little} (C{le}).

    @return: C{'big'} or C{'little'}, as C{int.from_bytes} wants.
    """
    value = str(text).lower()
    if value in ("big", "be", "network"):
        return "big"
    if value in ("little", "le"):
        return "little"
    raise ValueError(f"{text!r} is not a byte order (big or little)")


def parseBool(text: str) -> bool:
    """Parse C{true/false}, C{yes/no}, C{1/0}, C{on/off}."""
    value = str(text).lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{text!r} is not a boolean (true or false)")


def parseBytes(text: str) -> bytes:
    """
    Parse a byte string given in a spec: backslash escapes as in Python
    (C{\\r\\n}, C{\\x00}), or hexadecimal digits after C{0x} (C{0x0d0a}).
    """
    value = str(text)
    if value.lower().startswith("0x"):
        try:
            return bytes.fromhex(value[2:])
        except ValueError:
            raise ValueError(f"{text!r} is not valid hex") from None
    result: bytes = _stdcodecs.escape_decode(value.encode("utf-8"))[0]
    if not result:
        raise ValueError("must not be empty")
    return result


def copyFrame(data: bytes | bytearray, start: int, stop: int) -> bytes:
    """
    C{data[start:stop]} as C{bytes}, copied once.  Decoders keep the
    C{bytes} case inline on their hot path (a slice of C{bytes} is already a
    copy) and call this for a C{bytearray} buffer.
    """
    if data.__class__ is bytes:
        return data[start:stop]
    if stop - start < VIEW_COPY_LIMIT:
        return bytes(data[start:stop])
    with memoryview(data) as view:
        return bytes(view[start:stop])


def encodedBytes(encoded: object) -> bytes:
    """
    What an L{IEncoder} returned (C{bytes}, or a sequence of C{bytes}
    chunks) as one C{bytes}: the chunks joined, C{bytes} as they are.
    """
    if encoded.__class__ is bytes:
        return encoded
    return b"".join(encoded)  # type: ignore[arg-type]


def payloadBytes(obj: object) -> bytes:
    """
    Coerce what a framer is asked to encode into one C{bytes} payload.

    Framers call this only when C{obj} is not already C{bytes} (the fast path
    checks that first).  C{bytearray} and C{memoryview} are copied; anything
    else is encoded through its L{IEncoder} adapter, which is how an
    application's own message class is written with C{writeObject}.

    @raise EncodeError: C{obj} is not bytes-like and has no adapter.
    """
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj)
    adapter = IEncoder(obj, None)
    if adapter is None:
        raise EncodeError(
            f"cannot encode a {type(obj).__name__}: this framer takes bytes; "
            f"register an IEncoder adapter for {type(obj).__name__} or add an "
            f"object codec (e.g. +text, +json) to the codec spec"
        )
    return encodedBytes(adapter.encode(obj))


# IPlugin too: Twisted's plugin scan only records objects that provide it.
@implementer(IPlugin, ICodecPlugin)
class CodecPlugin:
    """
    A codec's entry in the spec registry.

    @ivar name: the name used in spec strings.
    @ivar kind: C{'framer'} or C{'object'}.
    @ivar description: one line for help text.
    @ivar parameters: parameter name -> converter from the spec string.
    @ivar builder: called as C{builder(defaultMaxFrameLength, **params)}.
    @ivar objectType: what the stage hands to the context and takes from it
        when it is the last of a chain: C{bytes} for a framer (the default),
        C{str} for text, C{object} for any value (JSON), C{None} if unknown.
    """

    def __init__(
        self,
        name: str,
        kind: str,
        description: str,
        parameters: Mapping[str, Callable[[str], Any]],
        builder: Callable[..., tuple[Any, Any]],
        objectType: type | None = None,
    ) -> None:
        if kind not in ("framer", "object"):
            raise ValueError(f"kind must be 'framer' or 'object', not {kind!r}")
        self.name = name
        self.kind = kind
        self.description = description
        self.parameters = dict(parameters)
        self.builder = builder
        self.objectType = bytes if objectType is None and kind == "framer" else objectType

    def build(self, defaultMaxFrameLength: int | None, **params: Any) -> tuple[Any, Any]:
        return self.builder(defaultMaxFrameLength, **params)

    def __repr__(self) -> str:
        return f"<CodecPlugin {self.name} ({self.kind})>"


# -- the compiled accelerator's side (iocpsvc.accel) -------------------------


def withCompiledTwins(
    decoderFactory: Callable[[], Any],
    encoder: Any,
    compiledClasses: Callable[[Any], tuple[type, type]],
) -> tuple[Callable[[], Any], Any]:
    """
    A stateless framer's C{decoderFactory} and C{encoder}, or, when codecs
    are built compiled (L{iocpsvc.accel}), their compiled twins: the classes
    C{compiledClasses(speedups)} returns, each made from a pure instance.
    """
    speedups = accel.speedups
    if speedups is None:
        return decoderFactory, encoder
    compiledDecoder, compiledEncoder = compiledClasses(speedups)
    return functools.partial(compiledDecoder, decoderFactory()), compiledEncoder(encoder)


class CompiledTwin:
    """
    Mixed into a built-in codec's compiled class (a subclass of a type of
    C{iocpsvc._speedups}) that keeps the pure-Python decoder or encoder of
    the same configuration as C{_twin}: the compiled loop hands it whatever
    it does not handle itself (every error, and payloads that are not
    exactly C{bytes}), so both implementations fail with the same words.
    The twin's attributes (C{lengthFieldOffset}, C{headerFlag} ...) are
    readable on the compiled object too.
    """

    __slots__ = ()

    _twin: Any

    def _slowDecode(self, data: bytes, out: list[object]) -> int:
        return self._twin.decode(data, out)

    def _slowEncode(self, obj: object) -> Any:
        return self._twin.encode(obj)

    def decodeLast(self, data: bytes) -> list[object]:
        return self._twin.decodeLast(data)

    def __getattr__(self, name: str) -> Any:
        if name == "_twin":
            raise AttributeError(name)
        return getattr(self._twin, name)

    def __repr__(self) -> str:
        return f"<compiled {self._twin!r}>"


def compiledTwinClass(base: type, pure: type, arguments: Callable[[Any], dict[str, Any]]) -> type:
    """
    The compiled twin class of the pure decoder or encoder class C{pure}: a
    subclass of C{base}, a type of C{iocpsvc._speedups}, made from a pure
    instance (its C{_twin}), whose C{base} is initialised with
    C{arguments(twin)}.  It provides what C{pure} provides (a decoder) or
    L{IBatchEncoder} (an encoder), and is C{stateless} if C{pure} is.
    """

    compiledBase: Any = base

    class Compiled(CompiledTwin, compiledBase):
        __slots__ = ("_twin",)
        stateless = getattr(pure, "stateless", False)

        def __init__(self, twin: Any) -> None:
            super().__init__(**arguments(twin))
            self._twin = twin

    # Through Any: mypy-zope checks classImplements only with a literal interface.
    declare: Any = classImplements
    declare(Compiled, IDecoder if IDecoder in implementedBy(pure) else IBatchEncoder)

    Compiled.__name__ = Compiled.__qualname__ = f"Compiled{pure.__name__}"
    Compiled.__doc__ = (
        f"L{{{pure.__name__}}}, compiled (iocpsvc.accel); its errors and refusals are the pure one's."
    )
    return Compiled
