"""
The built-in codecs and codec spec strings.

A spec names a framer and then any object codecs, joined with C{+}; each
part is C{NAME[:key=value]...}, in the style of Twisted's endpoint
descriptions::

    length                               4-byte big-endian length prefix
    length:size=2:order=little:max=64KiB+json
    line:max=8192+text
    delimiter:delim=\\r\\n
    diocp
    hpsocket:flag=0x155

A backslash escapes C{:}, C{+}, C{=} and itself inside a value; other
backslash sequences (C{\\r}, C{\\x00}) are left for the codec to read.

Built-in codecs are listed in C{BUILTIN_MODULES}.  Third-party codecs are
found as Twisted plugins providing L{iocpsvc.interfaces.ICodecPlugin} (see
the "writing a codec" page of the docs).
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable, Iterable
from typing import Any, cast

from iocpsvc.codecs._base import (
    CodecPlugin,
    encodedBytes,
    parseBool,
    parseByteOrder,
    parseBytes,
    payloadBytes,
)
from iocpsvc.codecs.chain import ChainDecoder, ChainEncoder
from iocpsvc.errors import CodecSpecError
from iocpsvc.interfaces import ICodecPlugin, IDecoder, IEncoder
from iocpsvc.units import KiB, MiB, parseInt, parseSize

BUILTIN_MODULES = (
    "iocpsvc.codecs.length",
    "iocpsvc.codecs.line",
    "iocpsvc.codecs.fixed",
    "iocpsvc.codecs.netstring",
    "iocpsvc.codecs.diocp",
    "iocpsvc.codecs.hpsocket",
    "iocpsvc.codecs.text",
    "iocpsvc.codecs.json",
)

_builtins: dict[str, Any] | None = None


def _builtinPlugins() -> dict[str, Any]:
    global _builtins
    if _builtins is None:
        found: dict[str, Any] = {}
        for name in BUILTIN_MODULES:
            for plugin in _pluginsOf(name):
                found[plugin.name] = plugin
        _builtins = found
    return _builtins


def _pluginsOf(moduleName: str) -> list[Any]:
    """The codecs a built-in module defines (its C{plugin} or C{plugins})."""
    module = importlib.import_module(moduleName)
    found: list[Any] = []
    for attribute in ("plugin", "plugins"):
        value = getattr(module, attribute, None)
        found.extend(p for p in (value if isinstance(value, (list, tuple)) else [value]) if p is not None)
    return found


def _builtinPlugin(name: str) -> Any:
    """
    The built-in codec C{name}, or C{None}.  One named after its module
    (most are) is found by importing that module alone: a server imports
    the codecs it uses, not all of them.
    """
    if _builtins is None and f"iocpsvc.codecs.{name}" in BUILTIN_MODULES:
        for plugin in _pluginsOf(f"iocpsvc.codecs.{name}"):
            if plugin.name == name:
                return plugin
    return _builtinPlugins().get(name)


def _thirdPartyPlugins() -> Iterable[Any]:
    # Imported here: scanning twisted.plugins imports every plugin module on
    # sys.path, which only an unknown codec name should pay for.
    from twisted.plugin import getPlugins

    return getPlugins(ICodecPlugin)


def availableCodecs() -> dict[str, Any]:
    """
    Every codec that a spec may name: built-in ones, then plugins (a plugin
    cannot replace a built-in name).

    @return: name -> L{ICodecPlugin} provider.
    """
    codecs = dict(_builtinPlugins())
    for plugin in _thirdPartyPlugins():
        codecs.setdefault(plugin.name, plugin)
    return codecs


def getCodecPlugin(name: str) -> Any:
    """
    Find the codec called C{name}.

    @raise CodecSpecError: there is none.
    """
    plugin = _builtinPlugin(name)
    if plugin is not None:
        return plugin
    for candidate in _thirdPartyPlugins():
        if candidate.name == name:
            return candidate
    known = ", ".join(sorted(availableCodecs()))
    raise CodecSpecError(f"unknown codec {name!r} (known: {known})")


def _split(text: str, separator: str) -> list[str]:
    """
    Split on unescaped C{separator}; keep backslash escapes of other
    characters for the next level.
    """
    parts: list[str] = []
    current: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text):
            current.append(text[index : index + 2])
            index += 2
            continue
        if char == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        index += 1
    parts.append("".join(current))
    return parts


def _unescape(text: str) -> str:
    """Remove the escapes of the spec's own separators."""
    out: list[str] = []
    index = 0
    while index < len(text):
        if text[index] == "\\" and index + 1 < len(text) and text[index + 1] in ":+=\\":
            out.append(text[index + 1])
            index += 2
        else:
            out.append(text[index])
            index += 1
    return "".join(out)


def decoderFactoryOf(decoder: Any) -> Callable[[], Any]:
    """
    Turn what L{ConnectionContextFactory.registerDecoder} accepts into a
    zero-argument callable that makes a fresh decoder per connection.
    """
    if isinstance(decoder, type) and IDecoder.implementedBy(decoder):
        try:
            cast(Any, decoder)()  # a class needing arguments would fail on every connection
        except TypeError as e:
            raise TypeError(
                f"{decoder.__name__}() cannot be made without arguments ({e}); register "
                f"an instance or a callable that makes one"
            ) from None
        return decoder  # a class: one instance per connection
    if IDecoder.providedBy(decoder):
        prototype = decoder
    elif callable(decoder) and not isinstance(decoder, type):
        made = decoder()
        if not IDecoder.providedBy(made):
            raise TypeError(f"{decoder!r}() returned {made!r}, which does not provide IDecoder")
        return decoder
    else:
        try:
            prototype = IDecoder(decoder)
        except TypeError:
            raise TypeError(
                f"{decoder!r} is neither an IDecoder class, a callable returning "
                f"an IDecoder, nor an object providing or adaptable to IDecoder"
            ) from None
    # A decoder keeps per-connection state: each connection gets its own
    # shallow copy of the registered instance.
    return lambda: copy.copy(prototype)


def sharedIfStateless(decoderFactory: Callable[[], Any]) -> Callable[[], Any]:
    """
    C{decoderFactory}, or, when the decoders it makes are C{stateless}, a
    factory that hands every connection the same one.
    """
    probe = decoderFactory()
    if getattr(probe, "stateless", False) is True:
        return lambda: probe
    return decoderFactory


class Codec:
    """
    A parsed codec spec: how to make a decoder for a new connection, and the
    encoder all connections share.

    @ivar spec: the spec string it was parsed from.
    @ivar names: the stage names, framer first.
    @ivar encoder: the shared L{IEncoder}.
    @ivar maxFrameLength: the framer's maximum frame length.
    @ivar objectType: what the chain hands to the context and takes from
        it: C{bytes} (a framer alone), C{str} (C{+text}), C{object} (any
        value, C{+json}), or C{None} when its last stage does not say.
    @ivar note: how the spec was changed to suit the context
        (L{iocpsvc.factory.agreeWithContext}), for the start log; C{None} if it was not.
    """

    def __init__(
        self,
        spec: str,
        names: list[str],
        decoderFactory: Callable[[], Any],
        encoder: Any,
        objectType: type | None = None,
    ) -> None:
        """
        Build a codec directly (spec strings are parsed by
        L{parseCodecSpec}): C{decoderFactory()} makes a connection's
        L{IDecoder}, C{encoder} is the shared L{IEncoder}; C{spec} and
        C{names} describe it in logs.
        """
        self.spec = spec
        self.names = names
        self.newDecoder = sharedIfStateless(decoderFactory)
        self.encoder = encoder
        self.maxFrameLength: int = self.newDecoder().maxFrameLength
        self.objectType = objectType
        self.note: str | None = None

    def __repr__(self) -> str:
        return f"<Codec {self.spec}>"


def parseCodecSpec(spec: str | Codec, defaultMaxFrameLength: int | None = None) -> Codec:
    """
    Parse a codec spec string into a L{Codec}.

    @param defaultMaxFrameLength: the maximum frame length for the framer
        when the spec gives no C{max} (C{--max-frame-length}); C{None} keeps
        each codec's own default.

    @raise CodecSpecError: the spec is malformed; the message names the bad
        part.
    """
    if isinstance(spec, Codec):
        return spec  # already built (e.g. a context class's own codec)
    if not isinstance(spec, str) or not spec.strip():
        raise CodecSpecError("empty codec spec")
    names: list[str] = []
    built: list[tuple[Any, Any]] = []
    for position, part in enumerate(_split(spec.strip(), "+")):
        fields = _split(part, ":")
        name = _unescape(fields[0]).strip()
        if not name:
            raise CodecSpecError(f"empty codec name in {spec!r}")
        plugin = getCodecPlugin(name)
        if position == 0 and plugin.kind != "framer":
            raise CodecSpecError(
                f"{name!r} is an object codec; a spec starts with a framer "
                f"(for example line+{name} or length+{name})"
            )
        if position > 0 and plugin.kind != "object":
            raise CodecSpecError(
                f"{name!r} is a framer; only the first part of a spec may be "
                f"a framer (found it in position {position + 1} of {spec!r})"
            )
        params: dict[str, Any] = {}
        for field in fields[1:]:
            key, equals, raw = field.partition("=")
            key = key.strip()
            if not equals:
                raise CodecSpecError(f"{name}: {field!r} is not key=value")
            converter = plugin.parameters.get(key)
            if converter is None:
                allowed = ", ".join(sorted(plugin.parameters)) or "none"
                raise CodecSpecError(f"{name}: unknown parameter {key!r} (allowed: {allowed})")
            if key in params:
                raise CodecSpecError(f"{name}: parameter {key!r} given twice")
            try:
                params[key] = converter(_unescape(raw))
            except ValueError as e:
                raise CodecSpecError(f"{name}:{key}: {e}") from None
        try:
            built.append(plugin.build(defaultMaxFrameLength, **params))
        except ValueError as e:
            raise CodecSpecError(f"{name}: {e}") from None
        names.append(name)

    # What the chain carries is what its last stage does (a third-party
    # plugin that does not say: bytes for a framer, unknown for the rest).
    objectType = getattr(plugin, "objectType", bytes if plugin.kind == "framer" else None)
    framerDecoderFactory, framerEncoder = built[0]
    if len(built) == 1:
        # No object stages: the framer's own decoder and encoder, unwrapped,
        # so the hot path pays for no chain.
        return Codec(spec, names, framerDecoderFactory, IEncoder(framerEncoder), objectType)
    stageDecoders = [decoder for decoder, _ in built[1:]]
    stageEncoders = [encoder for _, encoder in built[1:]]
    encoder = ChainEncoder(framerEncoder, stageEncoders)

    def decoderFactory() -> IDecoder:
        return ChainDecoder(framerDecoderFactory(), stageDecoders)

    return Codec(spec, names, decoderFactory, encoder, objectType)


__all__ = [
    "Codec",
    "CodecPlugin",
    "CodecSpecError",
    "KiB",
    "MiB",
    "availableCodecs",
    "decoderFactoryOf",
    "encodedBytes",
    "getCodecPlugin",
    "parseBool",
    "parseByteOrder",
    "parseBytes",
    "parseCodecSpec",
    "parseInt",
    "parseSize",
    "payloadBytes",
]
