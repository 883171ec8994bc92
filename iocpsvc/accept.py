"""
The accept path: listening ports that judge each new connection in the
reactor turn that accepted it, and count what they could not accept.

Twisted's own TCP port builds a protocol for every accepted socket and
leaves a refusal to that protocol, which closes the socket a reactor turn
later.  During a burst past the connection limit, one turn accepts dozens
of sockets before any is closed, the spare descriptors run out, and
Twisted's C{EMFILE} recovery then closes queued connections itself, one
unrate-limited log line each and counted nowhere.  Here::

    accept() -> socket, address
      -> gate.admit(address)       the limit, the accept filter: refused?
           no  -> close the socket now (RST), counted by the gate
           yes -> factory.buildProtocol -> transport -> makeConnection
    accept() fails with EMFILE/ENFILE
      -> give back the reserve descriptor, accept and close what waits,
         take the reserve again; the gate counts them and the error

The gate is the first L{iocpsvc.interfaces.IAcceptGate} found in the
chain of factories the port serves (past C{ssl:}/C{tls:}/C{haproxy:}
wrappers, which keep theirs in C{wrappedFactory}): the context factory for
the service, the monitor's own gate for the monitor.  A port without one
works as Twisted's does.

L{guardedReactor} gives a stand-in for a POSIX reactor whose
C{listenTCP}, C{listenSSL}, C{listenUNIX} and C{adoptStreamPort} make
these ports, so Twisted's endpoint parsers (C{tcp:}, C{ssl:}, C{tls:},
C{unix:}, C{systemd:}, C{haproxy:}) work unchanged.  Other reactors (IOCP,
test reactors) are used as they are; the context factory then refuses
through the protocol it builds, as before.

This module is the only one that knows the internals of Twisted's
listening ports.
"""

from __future__ import annotations

import errno
import os
import socket
from typing import Any

from twisted.internet import tcp
from twisted.internet.protocol import Protocol
from twisted.logger import Logger

from iocpsvc.interfaces import IAcceptGate
from iocpsvc.transports import abortOrClose, proxyWrapperClass, resetOnClose

_log = Logger(namespace="iocpsvc.accept")

# accept() errors that mean "no descriptor for it": the reserve helps.
_OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE)
# accept() errors that leave the connection queued for a later try.
_TRANSIENT = (errno.ENOBUFS, errno.ENOMEM)
# accept() errors about one connection only: go on with the next.
_SKIP = (errno.EPERM, errno.ECONNABORTED, errno.EPROTO)
_AGAIN = (errno.EAGAIN, errno.EWOULDBLOCK)


def findGate(factory: Any) -> Any:
    """
    The first L{IAcceptGate} in C{factory}'s chain of wrapped factories, or
    C{None}.
    """
    for _ in range(8):
        if factory is None:
            return None
        if IAcceptGate.providedBy(factory):
            return factory
        factory = getattr(factory, "wrappedFactory", None)
    return None


def isProxied(factory: Any) -> bool:
    """
    Whether C{factory}'s chain holds a PROXY-protocol wrapper (C{haproxy:}):
    then the address accepted is the balancer's, not the client's.
    """
    proxyWrapper = proxyWrapperClass()
    if proxyWrapper is None:
        return False  # not imported: no haproxy: endpoint was made
    for _ in range(8):
        if factory is None:
            return False
        wrapper = getattr(factory, "protocol", None)
        if isinstance(wrapper, type) and issubclass(wrapper, proxyWrapper):
            return True
        factory = getattr(factory, "wrappedFactory", None)
    return False


class DescriptorReserve:
    """
    One descriptor held open (on the null device) so that it can be given
    back when the process has none left, to accept and close connections
    that would otherwise wait in the listen queue.
    """

    def __init__(self) -> None:
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def take(self) -> None:
        """Hold the reserve descriptor, if there is one to take."""
        if self._fd is None:
            try:
                self._fd = os.open(os.devnull, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            except OSError:
                self._fd = None

    def give(self) -> None:
        """Close the reserve descriptor, so that one can be opened."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


RESERVE = DescriptorReserve()
"""The process's reserve descriptor, shared by every guarded port."""


def closeNow(skt: socket.socket) -> None:
    """Close an accepted socket at once, with a reset."""
    resetOnClose(skt)
    skt.close()


class Refuse(Protocol):
    """
    Closes a refused connection at once, before reading anything: what a
    factory returns for a refused connection on a port that does not judge
    at accept (not C{None}, which wrapping factories such as C{ssl:} and
    C{haproxy:} would wrap).  The socket is closed a reactor turn later.
    """

    def makeConnection(self, transport: Any) -> None:
        abortOrClose(transport)


class _GuardedAccept:
    """
    The accept loop of a guarded port (mixed into Twisted's TCP and UNIX
    port classes, whose C{doRead} it replaces).
    """

    _gate: Any = None
    _proxied = False
    # Twisted's port attributes, for the type checker (the values are its own).
    numberAccepts: int
    sessionno: int

    def startListening(self) -> None:
        RESERVE.take()
        self._gate = findGate(self.factory)  # type: ignore[attr-defined]
        self._proxied = isProxied(self.factory)  # type: ignore[attr-defined]
        super().startListening()  # type: ignore[misc]

    def doRead(self) -> None:
        """Accept what waits, judging each connection before any protocol is built."""
        listener: socket.socket = self.socket  # type: ignore[attr-defined]
        gate = self._gate
        accepted = 0
        limit = self.numberAccepts
        try:
            while accepted < limit:
                try:
                    skt, addr = listener.accept()
                except OSError as e:
                    if e.errno in _AGAIN:
                        break
                    if e.errno in _SKIP:
                        continue
                    if e.errno in _OUT_OF_DESCRIPTORS:
                        self._outOfDescriptors(listener, e.errno)
                        break
                    if e.errno in _TRANSIENT:
                        if gate is not None:
                            gate.acceptFailed(errno.errorcode[e.errno], 0)
                        break
                    raise
                accepted += 1
                self._serve(skt, addr, gate)
        except Exception:
            _log.failure("accepting on {port} failed", port=self)
        # As Twisted does: a full loop means more may wait; try more next time.
        self.numberAccepts = limit + 20 if accepted >= limit else max(1, accepted)

    def _serve(self, skt: socket.socket, addr: Any, gate: Any) -> None:
        if isinstance(addr, tuple) and len(addr) == 4:
            # IPv6: the numeric host with its scope id, as Twisted gives it.
            host = socket.getnameinfo(addr, socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)[0]
            addr = (host, *addr[1:])
        address = self._buildAddr(addr)  # type: ignore[attr-defined]
        if gate is not None and not gate.admit(address, self._proxied):
            closeNow(skt)  # in this turn: the descriptor is free again at once
            return
        protocol = self.factory.buildProtocol(address)  # type: ignore[attr-defined]
        if protocol is None:
            skt.close()
            return
        session = self.sessionno
        self.sessionno = session + 1
        transport = self.transport(skt, protocol, addr, self, session, self.reactor)  # type: ignore[attr-defined]
        protocol.makeConnection(transport)

    def _outOfDescriptors(self, listener: socket.socket, code: int) -> None:
        """
        No descriptor for the next connection: with the reserve given back,
        accept and close (with a reset) every connection waiting, so that
        clients hear at once rather than time out in the queue.
        """
        closed = 0
        if RESERVE.held:
            RESERVE.give()
            try:
                # At most one loop's worth: under a steady flood the queue
                # never empties, and other connections need their turn.
                for _ in range(max(100, self.numberAccepts)):
                    try:
                        skt, _ = listener.accept()
                    except OSError as e:
                        if e.errno in _SKIP:
                            continue
                        break
                    closeNow(skt)
                    closed += 1
            finally:
                RESERVE.take()
        gate = self._gate
        if gate is not None:
            gate.acceptFailed(errno.errorcode[code], closed)
        else:
            _log.warn(
                "accept failed ({error}): closed {closed} waiting connections",
                error=errno.errorcode[code],
                closed=closed,
            )


class GuardedTCPPort(_GuardedAccept, tcp.Port):
    """Twisted's TCP port, judging connections at accept (see the module docstring)."""


def _guardedUNIXPort() -> Any:
    from twisted.internet import unix

    class GuardedUNIXPort(_GuardedAccept, unix.Port):
        """Twisted's UNIX-socket port, judging connections at accept."""

    return GuardedUNIXPort


class GuardedReactor:
    """
    Stands for a POSIX reactor when endpoints listen: its listening ports
    are guarded ports; everything else is the reactor's own.
    """

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        # Twisted's asyncio reactor: the context factory's listeners are
        # served by its event loop (iocpsvc.native).
        self._native = getattr(reactor, "_asyncioEventloop", None) is not None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)

    def _portClass(self, factory: Any, unixSocket: bool = False) -> Any:
        """The port class for C{factory}: native on the asyncio reactor, where it can be."""
        if self._native:
            from iocpsvc import native

            if native.servesNatively(factory):
                return native.nativeUNIXPort() if unixSocket else native.NativeTCPPort
        return _guardedUNIXPort() if unixSocket else GuardedTCPPort

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
        listening = self._portClass(factory)(port, factory, backlog, interface, self._reactor)
        listening.startListening()
        return listening

    def listenSSL(
        self, port: int, factory: Any, contextFactory: Any, backlog: int = 50, interface: str = ""
    ) -> Any:
        from twisted.protocols.tls import TLSMemoryBIOFactory

        # What the reactor's own listenSSL does: TLS in memory over TCP.
        listening = self.listenTCP(
            port, TLSMemoryBIOFactory(contextFactory, False, factory), backlog, interface
        )
        listening._type = "TLS"
        return listening

    def listenUNIX(
        self, address: str, factory: Any, backlog: int = 50, mode: int = 0o666, wantPID: int = 0
    ) -> Any:
        listening = self._portClass(factory, True)(address, factory, backlog, mode, self._reactor, wantPID)
        listening.startListening()
        return listening

    def adoptStreamPort(self, fileDescriptor: int, addressFamily: Any, factory: Any) -> Any:
        if addressFamily == getattr(socket, "AF_UNIX", None):
            listening = self._portClass(factory, True)._fromListeningDescriptor(
                self._reactor, fileDescriptor, factory
            )
        elif addressFamily in (socket.AF_INET, socket.AF_INET6):
            listening = self._portClass(factory)._fromListeningDescriptor(
                self._reactor, fileDescriptor, addressFamily, factory
            )
        else:
            return self._reactor.adoptStreamPort(fileDescriptor, addressFamily, factory)
        listening.startListening()
        return listening


def guardedReactor(reactor: Any) -> Any:
    """
    C{reactor} itself, or, for a POSIX reactor whose ports are Twisted's
    own (epoll, poll, select, asyncio), a L{GuardedReactor} standing for it.
    """
    if isinstance(reactor, GuardedReactor):
        return reactor
    try:
        from twisted.internet.posixbase import PosixReactorBase
    except ImportError:  # pragma: no cover - Windows without POSIX support
        return reactor
    if isinstance(reactor, PosixReactorBase):
        return GuardedReactor(reactor)
    return reactor
