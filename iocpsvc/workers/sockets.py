"""
The parent's listening sockets: opened once, in the parent, from the
C{--port} descriptions, and handed down to the worker processes.

How workers share them (C{--worker-sockets}):

  - C{reuseport} (the default where the platform has C{SO_REUSEPORT}):
    one listening socket per worker slot, all on the same address with
    C{SO_REUSEPORT}, and the kernel spreads new connections over them by a
    hash of their addresses.  A slot's socket outlives its worker, so a
    replacement takes over its queue.
  - C{shared}: every worker accepts from one listening socket; the worker
    whose reactor wakes first takes the connection.  Sockets handed over
    by systemd are always shared.

Twisted's own endpoint parsers (C{tcp:}, C{ssl:}, C{haproxy:},
C{systemd:} ...) build the listeners, on a stand-in reactor that opens
sockets instead of accepting on them (L{SocketOpeningReactor}).
C{benchmarks/workers.py} measures both modes; the performance page has
the figures that chose the default.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

from twisted.internet import endpoints
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.error import CannotListenError
from twisted.python.failure import Failure

from iocpsvc.addresses import withDefaultBacklog
from iocpsvc.config import REUSEPORT, SHARED, WORKER_SOCKET_MODES

MODES = WORKER_SOCKET_MODES


def defaultMode() -> str:
    """C{reuseport} where the platform has C{SO_REUSEPORT}, else C{shared}."""
    return REUSEPORT if hasattr(socket, "SO_REUSEPORT") and sys.platform.startswith("linux") else SHARED


def openListeningSockets(
    reactor: Any, descriptions: list[str], mode: str, slots: int
) -> SocketOpeningReactor:
    """
    Open the listening sockets of C{descriptions} (C{--port} order) for
    C{slots} worker slots, shared as C{mode} says.  A listener that cannot
    be opened (a port taken) raises, as Twisted's endpoint does
    (C{CannotListenError}), after the sockets opened so far are closed.

    @return: what holds the sockets (its C{listeners}, C{modes} and
        C{addresses()}); close it to close them.
    """
    opener = SocketOpeningReactor(reactor, mode, slots)
    try:
        for description in descriptions:
            endpoint = endpoints.serverFromString(opener, withDefaultBacklog(description))
            listening = endpoint.listen(NoFactory())
            failures: list[Failure] = []
            listening.addErrback(failures.append)
            if failures:
                failures[0].raiseException()
    except BaseException:
        opener.close()
        raise
    return opener


class NoFactory:
    """The factory the parent's endpoints are given: it never accepts."""

    def doStart(self) -> None:
        pass

    def doStop(self) -> None:
        pass


class ReservedPort:
    """What the parent's socket-opening reactor returns for a listener."""

    def __init__(self, sock: socket.socket) -> None:
        self.socket = sock

    def getHost(self) -> Any:
        name = self.socket.getsockname()
        if self.socket.family == socket.AF_INET:
            return IPv4Address("TCP", name[0], name[1])
        if self.socket.family == socket.AF_INET6:
            return IPv6Address("TCP", name[0], name[1])
        return UNIXAddress(name)

    def stopListening(self) -> None:
        self.socket.close()

    def startListening(self) -> None:
        pass


class SocketOpeningReactor:
    """
    Stands for the reactor when the parent builds its endpoints from the
    C{--port} descriptions: Twisted's own endpoint parsers (C{tcp:},
    C{ssl:}, C{haproxy:}, C{systemd:} ...) call C{listenTCP} and friends,
    and this opens the listening sockets instead of accepting on them.

    @ivar listeners: per listener (in C{--port} order), the socket of each
        worker slot: the same socket for every slot in C{shared} mode, a
        socket of its own per slot in C{reuseport} mode.
    @ivar modes: per listener, how it is shared and its backlog, as
        C{MODE:BACKLOG} (its entry of C{--worker-of}, see
        L{iocpsvc.workers.handover}).
    """

    def __init__(self, reactor: Any, mode: str, slots: int) -> None:
        self._reactor = reactor
        self.mode = mode
        self.slots = slots
        self.listeners: list[list[socket.socket]] = []
        self.modes: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)

    def close(self) -> None:
        """Close every listening socket."""
        for slots in self.listeners:
            for sock in set(slots):
                sock.close()

    def addresses(self) -> list[Any]:
        """The address each listener is bound to, in C{--port} order."""
        return [ReservedPort(slots[0]).getHost() for slots in self.listeners]

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> ReservedPort:
        family = socket.AF_INET6 if ":" in interface else socket.AF_INET
        host = interface or ("::" if family == socket.AF_INET6 else "")
        opened: list[socket.socket] = []
        try:
            if self.mode == SHARED:
                opened.append(self._listen(family, (host, port), backlog, reusePort=False))
                slots = opened * self.slots
            else:
                # A port some other process listens on (even with
                # SO_REUSEPORT) must fail here, not be silently shared: a
                # plain bind tells, and picks the port when it is 0.
                probe = socket.socket(family, socket.SOCK_STREAM)
                try:
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    probe.bind((host, port))
                    port = probe.getsockname()[1]
                finally:
                    probe.close()
                # One listening socket per worker slot, opened here (before
                # privileges drop, so low ports work) and kept across the
                # slot's restarts: a replacement worker takes over its queue.
                for _ in range(self.slots):
                    opened.append(self._listen(family, (host, port), backlog, reusePort=True))
                slots = opened
        except OSError as e:
            for sock in opened:
                sock.close()
            raise CannotListenError(interface, port, e) from None
        self.listeners.append(slots)
        self.modes.append(f"{self.mode}:{backlog}")
        return ReservedPort(slots[0])

    @staticmethod
    def _listen(family: int, address: tuple[str, int], backlog: int, reusePort: bool) -> socket.socket:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reusePort:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    def listenSSL(
        self, port: int, factory: Any, contextFactory: Any, backlog: int = 50, interface: str = ""
    ) -> ReservedPort:
        return self.listenTCP(port, factory, backlog, interface)

    def listenUNIX(self, address: Any, *args: Any, **kwargs: Any) -> Any:
        raise ValueError("unix: endpoints cannot be shared by worker processes")

    def adoptStreamPort(self, fileDescriptor: int, addressFamily: Any, factory: Any) -> ReservedPort:
        # Sockets from systemd are listening already: always shared.
        sock = socket.socket(addressFamily, socket.SOCK_STREAM, fileno=os.dup(fileDescriptor))
        sock.setblocking(False)
        self.listeners.append([sock] * self.slots)
        self.modes.append(f"{SHARED}:0")
        return ReservedPort(sock)
