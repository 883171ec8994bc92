"""
A custom context with its own decoder and an IEncoder adapter.

The wire format is one command per line, C{NAME ARGUMENT}.  The application
works with C{Command} objects only:

- C{CommandDecoder} (an L{IDecoder}) reuses the line framer and turns each
  line into a C{Command};
- C{CommandEncoder} is an L{IEncoder} *adapter* for C{Command}, registered
  with C{registerAdapter}: C{writeObject(Command(...))} finds it by
  adaptation and the line framer adds the newline.

C{CommandContext.defaultCodec} bundles the two, so the context runs from the
command line (twistd does not put the current directory on the path)::

    PYTHONPATH=. twistd -n iocpsvc --context examples.commands.CommandContext

then C{nc 127.0.0.1 9983} and type C{PING hello} or C{ADD 2 3}.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.python.components import registerAdapter
from zope.interface import implementer

from iocpsvc import Codec, ConnectionContext, ConnectionContextFactory, IDecoder, IEncoder, parseCodecSpec
from iocpsvc.codecs.line import LineDecoder
from iocpsvc.errors import CorruptFrame


@dataclass(frozen=True)
class Command:
    """One command: C{name} and its C{argument} text."""

    name: str
    argument: str = ""


@implementer(IEncoder)
class CommandEncoder:
    """Adapts a C{Command} to L{IEncoder}: C{NAME ARGUMENT} in UTF-8."""

    def __init__(self, original: Command) -> None:
        self.original = original

    def encode(self, obj: object) -> bytes:
        assert isinstance(obj, Command)
        return f"{obj.name} {obj.argument}".rstrip().encode("utf-8")


registerAdapter(CommandEncoder, Command, IEncoder)


@implementer(IDecoder)
class CommandDecoder:
    """Lines (at most 4 KiB) become C{Command}s; bad UTF-8 is a protocol error."""

    def __init__(self) -> None:
        self._lines = LineDecoder(maxFrameLength=4096)
        self.maxFrameLength = self._lines.maxFrameLength

    def decode(self, data: bytes | bytearray, out: list[object]) -> int:
        lines: list[object] = []
        try:
            return self._lines.decode(data, lines)
        finally:
            for line in lines:
                try:
                    text = bytes(line).decode("utf-8")  # type: ignore[call-overload]
                except UnicodeDecodeError:
                    raise CorruptFrame("a command is not valid UTF-8") from None
                name, _, argument = text.strip().partition(" ")
                out.append(Command(name.upper(), argument))

    def decodeLast(self, data: bytes) -> list[object]:
        return []


COMMANDS_CODEC = Codec(
    "commands (line framing)",
    ["line", "commands"],
    CommandDecoder,
    parseCodecSpec("line").encoder,  # its encoder adds the newline
)


class CommandContext(ConnectionContext):
    """Answers C{PING x} with C{PONG x} and C{ADD a b} with C{SUM a+b}."""

    __slots__ = ()

    # The codec a factory (and twistd) uses for this context unless told
    # otherwise.
    defaultCodec = COMMANDS_CODEC

    def objectReceived(self, obj: object) -> None:
        assert isinstance(obj, Command)
        if obj.name == "PING":
            self.writeObject(Command("PONG", obj.argument))
        elif obj.name == "ADD":
            total = sum(int(part) for part in obj.argument.split())
            self.writeObject(Command("SUM", str(total)))
        else:
            self.writeObject(Command("ERROR", f"unknown command {obj.name}"))


def makeFactory(reactor: object = None) -> ConnectionContextFactory:
    """The factory, registered DIOCP-style: context class, decoder, encoder."""
    factory = ConnectionContextFactory(reactor=reactor)
    factory.registerContextClass(CommandContext)
    factory.registerCodec("line")  # the line framer's encoder adds the newline
    factory.registerDecoder(CommandDecoder)  # our decoder replaces its decoder
    return factory
