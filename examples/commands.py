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

A bad command is answered, not punished: C{ADD x y}, an unknown name or a
line that is not UTF-8 gets an C{ERROR ...} line and the connection stays
open.  Only a line longer than 4 KiB closes it (C{frame-too-long}): the
limit that keeps one client from filling the server's memory.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.python.components import registerAdapter
from zope.interface import implementer

from iocpsvc import Codec, ConnectionContext, ConnectionContextFactory, IDecoder, IEncoder, parseCodecSpec
from iocpsvc.codecs.line import LineDecoder


@dataclass(frozen=True)
class Command:
    """One command: C{name} and its C{argument} text."""

    name: str
    argument: str = ""


@dataclass(frozen=True)
class BadCommand:
    """A line that is not a command: C{reason} says why; answered with an error."""

    reason: str


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
    """
    Lines (at most 4 KiB) become C{Command}s; a line that is not UTF-8
    becomes a C{BadCommand}, for the context to answer.
    """

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
                    out.append(BadCommand("a command must be UTF-8 text"))
                    continue
                name, _, argument = text.strip().partition(" ")
                out.append(Command(name.upper(), argument.strip()))

    def decodeLast(self, data: bytes) -> list[object]:
        return []


COMMANDS_CODEC = Codec(
    "commands (line framing)",
    ["line", "commands"],
    CommandDecoder,
    parseCodecSpec("line").encoder,  # its encoder adds the newline
)


class CommandContext(ConnectionContext):
    """
    Answers C{PING x} with C{PONG x} and C{ADD a b ...} with C{SUM a+b+...};
    anything else with C{ERROR why}, keeping the connection.
    """

    __slots__ = ()

    # The codec a factory (and twistd) uses for this context unless told
    # otherwise.
    defaultCodec = COMMANDS_CODEC

    def objectReceived(self, obj: object) -> None:
        if isinstance(obj, BadCommand):
            self.writeObject(Command("ERROR", obj.reason))
        elif not isinstance(obj, Command) or not obj.name:
            self.writeObject(Command("ERROR", "empty line; try PING hello or ADD 2 3"))
        elif obj.name == "PING":
            self.writeObject(Command("PONG", obj.argument))
        elif obj.name == "ADD":
            self.add(obj.argument)
        else:
            self.writeObject(Command("ERROR", f"unknown command {obj.name}; known: PING, ADD"))

    def add(self, argument: str) -> None:
        """C{ADD 2 3}: the sum of whole numbers, or an error saying which one is not."""
        total = 0
        for part in argument.split():
            try:
                total += int(part)
            except ValueError:
                self.writeObject(Command("ERROR", f"ADD takes whole numbers, not {part[:32]!r}"))
                return
        self.writeObject(Command("SUM", str(total)))


def makeFactory(reactor: object = None) -> ConnectionContextFactory:
    """The factory, registered DIOCP-style: context class, decoder, encoder."""
    factory = ConnectionContextFactory(reactor=reactor)
    factory.registerContextClass(CommandContext)
    factory.registerCodec("line")  # the line framer's encoder adds the newline
    factory.registerDecoder(CommandDecoder)  # our decoder replaces its decoder
    return factory
