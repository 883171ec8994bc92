"""
The completion-port centre (DIOCP's TIocpObject): a service that owns the
listeners and the context factory, starts listening, and stops cleanly.

The reactor does the completion-port work: Twisted's IOCP reactor on Windows
(C{twistd -r iocp}), epoll on Linux.  This module only uses Twisted's public
endpoint and transport APIs, so it runs on either.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet import endpoints
from twisted.internet.defer import Deferred, DeferredList, gatherResults, maybeDeferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from iocpsvc import errors
from iocpsvc.accept import guardedReactor
from iocpsvc.addresses import describeAddress, withDefaultBacklog
from iocpsvc.apps import BUILTIN_CONTEXTS
from iocpsvc.factory import ConnectionContextFactory
from iocpsvc.machine import reactorOrGlobal
from iocpsvc.native import eventLoopOf, loopName

_log = Logger(namespace="iocpsvc.service")


def listenOrRaise(
    endpointList: list[IStreamServerEndpoint], factory: Any, ports: list[IListeningPort]
) -> Deferred[Any]:
    """
    Listen with C{factory} on each endpoint, appending each port to
    C{ports}.  A listener that fails at once (as TCP does when the port is
    taken) makes this raise, after stopping those that started, so that
    twistd exits with the error.

    @return: a Deferred that fires when every endpoint listens.
    """
    waiting = [e.listen(factory) for e in endpointList]
    failures: list[Failure] = []
    for d in waiting:
        d.addCallback(ports.append)
        d.addErrback(failures.append)
    if failures:
        for port in ports:
            port.stopListening()
        del ports[:]
        failures[0].raiseException()
    return gatherResults(waiting)


def exitOneLine(option: str, descriptions: list[str], error: BaseException) -> SystemExit:
    """
    The one-line exit for a listener that cannot listen: the option, the
    value given (the description whose port failed, when it can be told)
    and the system's reason, e.g. C{iocpsvc: --listen tcp:9983: cannot
    listen on port 9983: address already in use}.

    @param error: a L{CannotListenError}, or what else a listener raised
        when it started (an C{OSError} of a UNIX socket's lock file, say).
    """
    if isinstance(error, CannotListenError):
        reason = error.socketError
        port = error.port
        matching = [d for d in descriptions if str(port) in d.split(":")]
        if isinstance(port, (bytes, str)):  # a UNIX socket's path
            where = port.decode("utf-8", "replace") if isinstance(port, bytes) else port
        else:
            where = f"{error.interface}:{port}" if error.interface else f"port {port}"
    else:
        reason, matching, where = error, [], ""
    why = getattr(reason, "strerror", None) or str(reason) or type(reason).__name__
    given = matching[0] if len(matching) == 1 else " / ".join(descriptions)
    on = f" on {where}" if where else ""
    return SystemExit(f"iocpsvc: {option} {given}: cannot listen{on}: {str(why).lower()}")


def describeReactor(reactor: Any) -> str:
    """The reactor's short name: C{epollreactor}, C{asyncioreactor on uvloop}."""
    loop = eventLoopOf(reactor)
    if loop is not None:  # Twisted's asyncio reactor (or iocpsvc's uvloop subclass of it)
        return "asyncioreactor on " + loopName(loop)
    return type(reactor).__module__.rsplit(".", 1)[-1]


def describeContext(contextClass: type) -> str:
    """A context class as C{--context} names it: C{echo}, or its dotted name."""
    names = {cls: name for name, cls in BUILTIN_CONTEXTS.items()}
    return names.get(contextClass, f"{contextClass.__module__}.{contextClass.__qualname__}")


def describeTransports(reactor: Any, ports: list[Any]) -> str:
    """
    Which transports serve each listener, for the start log: said on the
    asyncio reactor (where a listener takes the event loop's own transports
    or Twisted's), and nothing on other reactors (always Twisted's).
    """
    if eventLoopOf(reactor) is None:
        return ""
    kinds = [getattr(port, "describeTransport", "Twisted") for port in ports]
    if len(set(kinds)) <= 1:
        return f"; transports={kinds[0] if kinds else 'none'}"
    return "; transports=" + ", ".join(
        f"{describeAddress(port.getHost())}: {kind}" for port, kind in zip(ports, kinds, strict=True)
    )


class SocketServerService(MultiService):
    """
    Listens on each endpoint with one L{ConnectionContextFactory}, and on
    stop: stops accepting, closes every context gracefully (what each has
    been asked to write is sent first), and aborts what is left after
    C{shutdownTimeout} seconds.

    @ivar factory: the context factory.
    @ivar endpoints: the server endpoints.
    @ivar ports: the listening ports, once listening.
    """

    def __init__(
        self,
        factory: ConnectionContextFactory,
        endpointsOrDescriptions: list[str | IStreamServerEndpoint],
        reactor: Any = None,
        shutdownTimeout: float = 10.0,
        startNotes: list[str] | None = None,
        descriptions: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.startNotes = list(startNotes or [])
        self.reactor = reactor = reactorOrGlobal(reactor)
        self.factory = factory
        self.shutdownTimeout = shutdownTimeout
        self.descriptions = descriptions or [
            e if isinstance(e, str) else repr(e) for e in endpointsOrDescriptions
        ]
        self.endpoints: list[IStreamServerEndpoint] = [
            endpoints.serverFromString(guardedReactor(reactor), withDefaultBacklog(e))
            if isinstance(e, str)
            else e
            for e in endpointsOrDescriptions
        ]
        self.ports: list[IListeningPort] = []
        self._listening: Deferred[Any] | None = None

    def privilegedStartService(self) -> None:
        """
        Start listening (as root, before twistd drops privileges, so that
        low ports work).  A listener that fails at once, as TCP does when
        the port is taken, raises here so that twistd exits with the error.
        """
        # Its own listeners first: one that cannot listen stops the start
        # before the children (the monitor) have listened or logged.
        self._listen()
        super().privilegedStartService()

    def startService(self) -> None:
        if self._listening is None:
            self._listen()
        super().startService()

    exitOnListenError = False
    """
    Set by C{twistd iocpsvc} (L{iocpsvc.tap.makeService}): a listener that
    cannot listen stops the process with one line naming the option and
    the value (L{exitOneLine}) instead of a traceback.
    """

    listenOption = "--listen"
    """The option the listeners were given with, for that line."""

    def _listen(self) -> None:
        try:
            self._listening = listenOrRaise(self.endpoints, self.factory, self.ports)
        except (CannotListenError, OSError) as e:
            if not self.exitOnListenError:
                raise
            raise exitOneLine(self.listenOption, self.descriptions, e) from None
        self._listening.addCallback(lambda _: self._started())

    def _started(self) -> None:
        contextName = describeContext(self.factory.contextClass)
        limits = self.factory.limits
        _log.info(
            "iocpsvc listening on {addresses}; codec={codec}; context={context}; reactor={reactor}"
            "{transports}",
            addresses=", ".join(describeAddress(p.getHost()) for p in self.ports),
            transports=describeTransports(self.reactor, self.ports),
            codec=self.factory.describeCodec(),
            context=contextName,
            reactor=describeReactor(self.reactor),
        )
        _log.info(
            "iocpsvc limits: max connections {maxConnections}; idle timeout {idleTimeout}s; "
            "keep-alive {keepAlive}; write high water {writeHighWater} bytes; max pending write "
            "{maxPendingWrite} bytes{derived}; max pending objects {maxPendingObjects} "
            "({maxPendingObjectBytes} bytes); close timeout "
            "{closeTimeout}s; shutdown timeout {shutdownTimeout}s{proxy}{notes}",
            maxConnections=limits.maxConnections or "unlimited",
            idleTimeout=limits.idleTimeout or "off",
            keepAlive="on" if limits.keepAlive else "off",
            writeHighWater=limits.writeHighWater,
            maxPendingWrite=self.factory.maxPendingWrite,
            derived=" (from the codec's largest frame)" if limits.maxPendingWrite is None else "",
            maxPendingObjects=limits.maxPendingObjects,
            maxPendingObjectBytes=limits.maxPendingObjectBytes,
            closeTimeout=limits.closeTimeout,
            shutdownTimeout=self.shutdownTimeout,
            proxy=(
                f"; PROXY header timeout {limits.proxyHeaderTimeout or limits.idleTimeout}s"
                if any(d.startswith("haproxy:") for d in self.descriptions)
                else ""
            ),
            notes="".join(f"; {note}" for note in self.startNotes),
        )
        maxFrameLength = self.factory.maxFrameLength
        if maxFrameLength is not None and self.factory.maxPendingWrite < maxFrameLength:
            _log.warn(
                "max pending write {maxPendingWrite} bytes is below the codec's largest frame, "
                "{maxFrameLength} bytes: a reply that large closes its connection as slow-client "
                "(raise --max-pending-write, or leave it to its default)",
                maxPendingWrite=self.factory.maxPendingWrite,
                maxFrameLength=maxFrameLength,
            )

    def stopService(self) -> Deferred[Any]:
        """
        Stop accepting, then close every context within C{shutdownTimeout}.
        """
        super().stopService()
        ports, self.ports = self.ports, []
        self._listening = None
        stopped = DeferredList([maybeDeferred(p.stopListening) for p in ports], consumeErrors=True)
        online = self.factory.onlineCount
        if online:
            _log.info(
                "iocpsvc stopping: closing {online} connections (at most {timeout}s)",
                online=online,
                timeout=self.shutdownTimeout,
            )
        closed = self.factory.closeAll(errors.SHUTDOWN, self.shutdownTimeout)
        return DeferredList([stopped, closed], consumeErrors=True)


class ClusterService(Service):
    """
    Runs an L{IClusterBus} for a factory: starts delivering to it (and
    connecting) on start, disconnects on stop.
    """

    def __init__(self, bus: Any, factory: ConnectionContextFactory) -> None:
        self.bus = bus
        self.factory = factory

    def startService(self) -> None:
        super().startService()
        self.bus.start(self.factory)

    def stopService(self) -> Any:
        super().stopService()
        return maybeDeferred(self.bus.stop)
