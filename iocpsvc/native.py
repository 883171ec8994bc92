"""
Native transports: under Twisted's asyncio reactor (C{twistd -r uvloop},
C{-r asyncio}), the context factory's plain stream listeners are served by
the event loop's own servers, so that accept, read and write run in the
loop (in C, on libuv, under uvloop) and not in Twisted's Python reactor.

Twisted still opens, binds and closes the listening socket (its port
classes, with their error messages, C{port 0}, adopted descriptors,
C{systemd:} and UNIX-socket modes); only the serving moves::

    tcp:/tcp6:/unix:/systemd:/worker socket
      -> Twisted's port binds and listens            as on any reactor
      -> loop.create_server(sock=<its socket>)       instead of startReading
           accepted connection
             -> NativeConnection.connection_made
                  -> gate.admit(peer)                 the limit, the filter:
                       refused -> reset and closed       before any read
                  -> factory.buildProtocol(peer)
                  -> context.makeConnection(NativeConnection)
             data_received  -> context.dataReceived
             pause_writing / resume_writing
                            -> the registered producer's pause/resumeProducing
             connection_lost -> context.connectionLost

L{NativeConnection} is at once the loop's C{asyncio.Protocol} and the
context's Twisted transport (C{ITCPTransport}: C{write},
C{writeSequence}, C{loseConnection}, C{abortConnection}, C{getPeer},
C{getHost}, the producer API, TCP options), one small object per
connection.

Which listeners: those whose factory is a context factory with
C{nativeTransports} true (the default), made through
L{iocpsvc.accept.GuardedReactor} (every listener of the service and of
the worker processes).  C{ssl:}, C{haproxy:} and other endpoints wrap the
factory, and keep Twisted's own transports on the same reactor; the
monitor's web site does too.

What libuv does itself: when the process runs out of descriptors, libuv
accepts and closes what waits with a reserve descriptor of its own (as
L{iocpsvc.accept} does on Twisted's ports), but it does not say so, so
those connections are not counted in C{acceptErrors}.
"""

from __future__ import annotations

import socket
import sys
from typing import Any

from twisted.internet import address as _address
from twisted.internet import error, tcp
from twisted.internet.interfaces import IPushProducer, ITCPTransport
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from iocpsvc.interfaces import IAcceptGate
from iocpsvc.transports import resetOnClose, setKeepAlive

_log = Logger(namespace="iocpsvc.native")


def eventLoopOf(reactor: Any) -> Any:
    """
    The asyncio event loop beneath C{reactor} (Twisted's asyncio reactor),
    or C{None} for any other reactor.
    """
    return getattr(reactor, "_asyncioEventloop", None)


def loopName(loop: Any) -> str:
    """C{"uvloop"} for a uvloop loop, else C{"asyncio"}."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def servesNatively(factory: Any) -> bool:
    """
    Whether a listener for C{factory} is served natively: the factory is
    itself the accept gate (not wrapped by C{ssl:} or C{haproxy:}) and has
    not turned native transports off (C{nativeTransports = False}).
    """
    return IAcceptGate.providedBy(factory) and bool(getattr(factory, "nativeTransports", False))


@implementer(ITCPTransport, IPushProducer)
class NativeConnection:
    """
    One connection on a native listener: the event loop's protocol, and the
    context's transport.

    @ivar connected: 1 from the context's C{makeConnection} until the
        connection is lost.
    @ivar disconnecting: C{True} once L{loseConnection} was called.
    @ivar disconnected: C{True} once the connection is lost.
    """

    __slots__ = (
        "_port",
        "_transport",
        "_protocol",
        "_peer",
        "_host",
        "_producer",
        "_streaming",
        "_writingPaused",
        "_aborted",
        "connected",
        "disconnecting",
        "disconnected",
    )

    def __init__(self, port: Any) -> None:
        self._port = port
        self._transport: Any = None
        self._protocol: Any = None
        self._peer: Any = None
        self._host: Any = None
        self._producer: Any = None
        self._streaming = True
        self._writingPaused = False
        self._aborted = False
        self.connected = 0
        self.disconnecting = False
        self.disconnected = False

    # -- the event loop's side (asyncio.Protocol) ----------------------------

    def connection_made(self, transport: Any) -> None:
        self._transport = transport
        port = self._port
        try:
            name = transport.get_extra_info("peername")
            peer = port._peerAddress(name)
            gate = port._gate
            if gate is not None and not gate.admit(peer, False):
                self._refuse()
                return
            protocol = port.factory.buildProtocol(peer)
        except Exception:
            _log.failure("accepting on {port} failed", port=port)
            self._refuse()
            return
        if protocol is None:
            self._refuse()
            return
        # The peer's name, not its address object: an address is made when
        # asked for (as Twisted's transports do), which keeps about 300
        # bytes per connection out of the process.
        self._peer = name
        self._protocol = protocol
        self.connected = 1
        protocol.makeConnection(self)

    def data_received(self, data: bytes) -> None:
        # Hot path: one call on to the context, per read.  (A method, not an
        # attribute bound at connection_made: uvloop looks it up on the class.)
        self._protocol.dataReceived(data)

    def eof_received(self) -> None:
        # The peer will send no more: close, after what was written is sent
        # (Twisted's TCP transports end the connection at once instead).
        return None

    def connection_lost(self, exc: BaseException | None) -> None:
        protocol = self._protocol
        self._protocol = None
        self.connected = 0
        self.disconnected = True
        producer, self._producer = self._producer, None
        if protocol is None:
            return  # refused at accept
        if self._aborted:
            reason = Failure(error.ConnectionAborted())
        elif exc is None:
            reason = connectionDone
        else:
            reason = Failure(error.ConnectionLost(str(exc) or type(exc).__name__))
        if producer is not None:
            # As Twisted's transports do: the producer hears the end first.
            try:
                producer.stopProducing()
            except Exception:
                _log.failure("{producer}.stopProducing failed", producer=producer)
        protocol.connectionLost(reason)

    def pause_writing(self) -> None:
        """More than the high water mark waits to be sent."""
        self._writingPaused = True
        producer = self._producer
        if producer is not None and self._streaming:
            producer.pauseProducing()

    def resume_writing(self) -> None:
        """Everything written has been sent (the low water mark is 0)."""
        self._writingPaused = False
        producer = self._producer
        if producer is not None:
            if self._streaming:
                producer.resumeProducing()
            else:
                self._pull()

    def _refuse(self) -> None:
        """Close a refused connection at once, with a reset."""
        transport = self._transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            resetOnClose(sock)
        transport.abort()

    # -- the context's side (ITCPTransport) ------------------------------------

    def write(self, data: bytes) -> None:
        # Hot path: the loop sends at once when nothing is queued.  Writes
        # after the close are dropped, as Twisted's transports drop them.
        if self.connected and not self.disconnecting:
            self._transport.write(data)

    def writeSequence(self, data: Any) -> None:
        if self.connected and not self.disconnecting:
            self._transport.writelines(data)

    def loseConnection(self) -> None:
        """Close once what was written has been sent."""
        if self.disconnecting or self.disconnected:
            return
        self.disconnecting = True
        self._transport.close()

    def abortConnection(self) -> None:
        """Close at once, dropping what was not sent."""
        if self.disconnected or self._aborted:
            return
        self._aborted = True
        self.disconnecting = True
        self._transport.abort()

    def loseWriteConnection(self) -> None:
        """Half-close: send what was written, then end this side's stream."""
        if self.connected and not self.disconnecting and self._transport.can_write_eof():
            self._transport.write_eof()

    def getPeer(self) -> Any:
        name = self._peer
        return None if name is None else self._port._peerAddress(name)

    def getHost(self) -> Any:
        host = self._host
        if host is None:
            host = self._host = self._port._peerAddress(self._transport.get_extra_info("sockname"))
        return host

    def getHandle(self) -> Any:
        """The socket (the loop's own socket-like object: options, names, no I/O)."""
        return self._transport.get_extra_info("socket") if self._transport is not None else None

    def logPrefix(self) -> str:
        return type(self._protocol).__name__ if self._protocol is not None else "NativeConnection"

    # The write high water mark: pause the producer past this many unsent
    # bytes, resume it once everything has been sent (as Twisted's
    # transports do with bufferSize).
    @property
    def bufferSize(self) -> int:
        high: int = self._transport.get_write_buffer_limits()[1]
        return high

    @bufferSize.setter
    def bufferSize(self, size: int) -> None:
        self._transport.set_write_buffer_limits(high=size, low=0)

    @property
    def keepAliveInherited(self) -> bool:
        """Whether this socket took keep-alive from its listening socket (see C{enableKeepAlive})."""
        return bool(getattr(self._port, "keepAliveInherited", False))

    def unsentBytes(self) -> int:
        """Bytes written and not yet taken by the socket (libuv's queue included)."""
        transport = self._transport
        if transport is None or self.disconnected:
            return 0
        size: int = transport.get_write_buffer_size()
        return size

    # -- IConsumer ---------------------------------------------------------------

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        if self._producer is not None:
            raise RuntimeError(
                f"Cannot register producer {producer!r}, because producer {self._producer!r} "
                "was never unregistered."
            )
        if self.disconnected:
            producer.stopProducing()
            return
        self._producer = producer
        self._streaming = bool(streaming)
        if streaming:
            if self._writingPaused:
                producer.pauseProducing()
        else:
            self._pull()

    def unregisterProducer(self) -> None:
        self._producer = None

    def _pull(self) -> None:
        """Ask a pull producer for more, turn by turn, while the socket keeps up."""
        producer = self._producer
        if producer is None or self._streaming or self._writingPaused or not self.connected:
            return
        producer.resumeProducing()
        if self._producer is producer and not self._writingPaused:
            self._port._loop.call_soon(self._pull)

    # -- IPushProducer: the context pauses and resumes reading ---------------------

    def pauseProducing(self) -> None:
        if self.connected and not self.disconnecting:
            self._transport.pause_reading()

    def resumeProducing(self) -> None:
        if self.connected and not self.disconnecting:
            self._transport.resume_reading()

    def stopProducing(self) -> None:
        self.loseConnection()

    # -- TCP options -----------------------------------------------------------------

    def _option(self, level: int, name: int) -> bool:
        sock = self.getHandle()
        return bool(sock is not None and sock.getsockopt(level, name))

    def _setOption(self, level: int, name: int, enabled: Any) -> None:
        sock = self.getHandle()
        if sock is not None:
            sock.setsockopt(level, name, 1 if enabled else 0)

    def getTcpNoDelay(self) -> bool:
        return self._option(socket.IPPROTO_TCP, socket.TCP_NODELAY)

    def setTcpNoDelay(self, enabled: Any) -> None:
        self._setOption(socket.IPPROTO_TCP, socket.TCP_NODELAY, enabled)

    def getTcpKeepAlive(self) -> bool:
        return self._option(socket.SOL_SOCKET, socket.SO_KEEPALIVE)

    def setTcpKeepAlive(self, enabled: Any) -> None:
        self._setOption(socket.SOL_SOCKET, socket.SO_KEEPALIVE, enabled)

    def __repr__(self) -> str:
        return f"<NativeConnection peer={self.getPeer()}>"


class _NativeServing:
    """
    Mixed into Twisted's TCP and UNIX port classes: the socket Twisted's
    port bound (or adopted) is served by the event loop's own server rather
    than read by the reactor.  Everything else -- binding, C{getHost},
    C{stopListening}, the factory's start and stop -- is Twisted's.
    """

    _gate: Any = None
    _server: Any = None
    _starting: Any = None
    _loop: Any = None
    keepAliveInherited = False
    """Whether accepted sockets take keep-alive from the listening socket."""

    # Twisted's port attributes, for the type checker.
    factory: Any
    reactor: Any
    socket: Any
    backlog: int

    def startListening(self) -> None:
        # Served natively only when the factory is itself the gate
        # (servesNatively): no wrapper to look past.
        self._gate = self.factory if IAcceptGate.providedBy(self.factory) else None
        self._loop = eventLoopOf(self.reactor)
        super().startListening()  # type: ignore[misc]

    def startReading(self) -> None:
        # Twisted's port calls this once its socket listens: hand a copy of
        # the socket to the loop, which listens on it from its next turn.
        if self._server is not None or self._starting is not None:
            return
        import functools

        loop = self._loop
        self._inheritKeepAlive()
        listening = self.socket.dup()
        # The loop listens again on the socket it is given: with the
        # port's backlog, or, for an adopted socket (which has none), the
        # system's largest (the kernel caps it at its own maximum).
        backlog = self.backlog if self.backlog else socket.SOMAXCONN
        protocolFactory = functools.partial(NativeConnection, self)
        if listening.family == getattr(socket, "AF_UNIX", None):
            coroutine = loop.create_unix_server(protocolFactory, sock=listening, backlog=backlog)
        else:
            coroutine = loop.create_server(protocolFactory, sock=listening, backlog=backlog)
        task = self._starting = loop.create_task(coroutine)
        task.add_done_callback(self._serving)

    def _inheritKeepAlive(self) -> None:
        """
        On Linux an accepted TCP socket takes keep-alive and its timing
        from the listening socket: set them there, once, rather than on
        each connection (four system calls and a socket object fewer per
        connection).
        """
        limits = getattr(self.factory, "limits", None)
        if (
            limits is None
            or not limits.keepAlive
            or not sys.platform.startswith("linux")
            or self.socket.family not in (socket.AF_INET, socket.AF_INET6)
        ):
            return
        self.keepAliveInherited = setKeepAlive(
            self.socket, limits.keepAliveIdle, limits.keepAliveInterval, limits.keepAliveCount
        )

    def _serving(self, task: Any) -> None:
        self._starting = None
        if task.cancelled():
            return
        failure = task.exception()
        if failure is not None:
            _log.error("the event loop could not serve {port}: {error}", port=self, error=failure)
            return
        self._server = task.result()

    def stopReading(self) -> None:
        starting, self._starting = self._starting, None
        if starting is not None:
            starting.cancel()
        server, self._server = self._server, None
        if server is not None:
            server.close()

    @property
    def describeTransport(self) -> str:
        """How this listener's connections are served, for the start log."""
        return f"native {loopName(self._loop)}"

    def _peerAddress(self, name: Any) -> Any:
        """The Twisted address of a peer, as the reactor's own port builds it."""
        if isinstance(name, tuple) and len(name) == 4:
            # IPv6: the numeric host with its scope id, as Twisted gives it.
            host = socket.getnameinfo(name, socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)[0]
            name = (host, *name[1:])
        return self._buildAddr(name)  # type: ignore[attr-defined]


class NativeTCPPort(_NativeServing, tcp.Port):
    """Twisted's TCP port, served by the asyncio event loop's own server."""


def nativeUNIXPort() -> type:
    """Twisted's UNIX-socket port, served by the event loop (made on first use)."""
    global _NativeUNIXPort
    if _NativeUNIXPort is None:
        from twisted.internet import unix

        class NativeUNIXPort(_NativeServing, unix.Port):
            """Twisted's UNIX-socket port, served by the asyncio event loop's own server."""

            def _peerAddress(self, name: Any) -> Any:
                return _address.UNIXAddress(name or None)

        _NativeUNIXPort = NativeUNIXPort
    return _NativeUNIXPort


_NativeUNIXPort: type | None = None
