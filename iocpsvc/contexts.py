"""
The built-in contexts that C{--context} names: C{echo} and C{chat}.
"""

from __future__ import annotations

from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure

from iocpsvc.context import ConnectionContext


class EchoContext(ConnectionContext):
    """
    Writes every object back as it came (the default server).  With a
    framing codec alone the echo is byte-exact.
    """

    __slots__ = ()

    # Echoing an object is writing it: the method itself, with no call in
    # between (one Python call fewer per frame).
    objectReceived = ConnectionContext.writeObject


class ChatContext(ConnectionContext):
    """
    A line-based chat room: every line a client sends goes to everyone
    online, prefixed with the sender's nick.  C{/nick NAME} changes it.

    Its own codec is C{line+text} (used unless C{--codec} says otherwise).
    """

    __slots__ = ("nick",)

    defaultCodec = "line+text"

    def connectionMade(self) -> None:
        self.nick = f"user{self.contextId}"
        self.factory.broadcast(f"* {self.nick} joined")  # type: ignore[union-attr]

    def objectReceived(self, obj: object) -> None:
        line = obj if isinstance(obj, str) else bytes(obj).decode("utf-8", "replace")  # type: ignore[call-overload]
        if line.startswith("/nick "):
            old, self.nick = self.nick, line[6:].strip()[:32] or self.nick
            self.factory.broadcast(f"* {old} is now {self.nick}")  # type: ignore[union-attr]
            return
        self.factory.broadcast(f"{self.nick}: {line}")  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.factory is not None and hasattr(self, "nick"):
            self.factory.broadcast(f"* {self.nick} left", exclude=self)


BUILTIN_CONTEXTS: dict[str, type[ConnectionContext]] = {
    "echo": EchoContext,
    "chat": ChatContext,
}
