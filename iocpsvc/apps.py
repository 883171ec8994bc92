"""
The built-in applications: the contexts that C{--context} names, C{echo}
and C{chat}.  (L{iocpsvc.context} is the context class they build on.)
"""

from __future__ import annotations

from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure

from iocpsvc.cluster import MAX_NODE_ID, nodeOfContext
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
    online, prefixed with the sender's nick.  C{/nick NAME} changes it;
    C{/msg ID text} sends C{text} to the user with that id only (the join
    line shows each user's id).  In a cluster (C{--cluster}) the room spans
    every node, and C{/msg} reaches users on any node.

    Its own codec is C{line+text} (used unless C{--codec} says otherwise);
    any framer followed by C{+text} works (C{length+text}); a framer alone
    is completed with C{+text} at start.
    """

    __slots__ = ("nick",)

    defaultCodec = "line+text"
    objectType = str  # it writes text, and reads lines as text

    def connectionMade(self) -> None:
        self.nick = f"user{self.contextId}"
        self.factory.broadcast(f"* {self.nick} joined (id {self.contextId})")

    def objectReceived(self, obj: object) -> None:
        line = obj if isinstance(obj, str) else bytes(obj).decode("utf-8", "replace")  # type: ignore[call-overload]
        if line.startswith("/nick "):
            old, self.nick = self.nick, line[6:].strip()[:32] or self.nick
            self.factory.broadcast(f"* {old} is now {self.nick}")
            return
        if line.startswith("/msg ") or line == "/msg":
            self.privateMessage(line[5:])
            return
        self.factory.broadcast(f"{self.nick}: {line}")

    def privateMessage(self, rest: str) -> None:
        """C{/msg ID text}: send C{text} to that user only, or say why not."""
        target, _, text = rest.strip().partition(" ")
        text = text.strip()
        if not (target.isascii() and target.isdigit()) or not text:
            self.writeObject("* usage: /msg ID text")
            return
        contextId = int(target)
        # An id no node could hold is refused here, before it reaches the bus.
        if contextId == 0 or nodeOfContext(contextId) > MAX_NODE_ID:
            sent = False
        else:
            message = f"* {self.nick} (id {self.contextId}) to you: {text}"
            sent = self.factory.sendTo(contextId, message)
        if not sent:
            self.writeObject(f"* no user with id {contextId} is online")

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.factory is not None:
            self.factory.broadcast(f"* {self.nick} left", exclude=self)


BUILTIN_CONTEXTS: dict[str, type[ConnectionContext]] = {
    "echo": EchoContext,
    "chat": ChatContext,
}
