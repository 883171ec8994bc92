"""
What runs in a worker process (C{twistd iocpsvc ... --worker-of ...},
started by L{iocpsvc.workers.parent}): the listeners adopt the sockets the
parent opened (L{SocketAdoptingReactor}, L{adoptedEndpoint}), the control
service answers the parent on descriptors 3 and 4
(L{WorkerControlService}), and without C{--cluster} the cluster bus is the
parent's relay (L{ParentBus}).  What the worker inherits, and its
C{--worker-of} argument, are described in L{iocpsvc.workers.handover}.
"""

from __future__ import annotations

import base64
import socket
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet import endpoints
from twisted.internet.defer import succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from iocpsvc.cluster import BROADCAST, TO_CONTEXT, deliver, packMessage
from iocpsvc.errors import NoInheritedSocket
from iocpsvc.interfaces import IClusterBus
from iocpsvc.workers.channel import ControlChannel
from iocpsvc.workers.handover import CONTROL_IN, CONTROL_OUT, FIRST_LISTENER, RELAY_BUS_KIND

_log = Logger(namespace="iocpsvc.workers")


class SocketAdoptingReactor:
    """
    Stands for the reactor when a worker builds its endpoints from the same
    C{--port} descriptions as its parent: each C{listenTCP} / C{listenSSL}
    / C{adoptStreamPort} takes the next inherited socket instead of
    opening one, so Twisted's endpoint parsers and wrappers (C{ssl:},
    C{haproxy:}) work unchanged.
    """

    def __init__(self, reactor: Any, modes: list[str], firstDescriptor: int = FIRST_LISTENER) -> None:
        """
        @param modes: the C{MODE:BACKLOG} entries of C{--worker-of}, one per
            inherited listening socket (only counted: each socket is
            adopted as the parent opened it).
        """
        self._reactor = reactor
        self._modes = list(modes)
        self._next = firstDescriptor

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)

    def _take(self) -> int:
        if not self._modes:
            raise NoInheritedSocket("more listeners than sockets handed over by the parent")
        self._modes.pop(0)
        fd = self._next
        self._next += 1
        return fd

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
        # The parent opened it listening (this worker slot's own socket in
        # reuseport mode, the one shared socket otherwise).
        inherited = socket.socket(fileno=self._take())
        try:
            return self._reactor.adoptStreamPort(inherited.fileno(), inherited.family, factory)
        finally:
            inherited.close()  # adoptStreamPort keeps its own copy

    def listenSSL(
        self, port: int, factory: Any, contextFactory: Any, backlog: int = 50, interface: str = ""
    ) -> Any:
        # Imported here: TLS needs pyOpenSSL, which a server without ssl: does not.
        from twisted.protocols.tls import TLSMemoryBIOFactory

        # What the reactor's own listenSSL does: TLS in memory over TCP.
        return self.listenTCP(port, TLSMemoryBIOFactory(contextFactory, False, factory), backlog, interface)

    def adoptStreamPort(self, fileDescriptor: int, addressFamily: Any, factory: Any) -> Any:
        fd = self._take()
        # (AdoptedStreamServerEndpoint closes the descriptor it gave.)
        return self._reactor.adoptStreamPort(fd, addressFamily, factory)


@implementer(IClusterBus)
class ParentBus:
    """
    The cluster bus of workers without C{--cluster}: broadcasts and
    C{sendTo} for other workers go through the parent, which passes them
    on (see L{iocpsvc.cluster} for the message format).
    """

    def __init__(self, nodeId: int) -> None:
        self.nodeId = nodeId
        self.channel: ControlChannel | None = None
        self.receiver: Any = None
        self.publishedTotal = 0
        self.receivedTotal = 0
        self.droppedTotal = 0

    @property
    def connected(self) -> bool:
        return self.channel is not None and not self.channel.lost

    def start(self, receiver: Any) -> None:
        self.receiver = receiver

    def stop(self) -> None:
        self.receiver = None

    def _publish(self, message: bytes) -> None:
        channel = self.channel
        if (
            channel is None
            or channel.lost
            or not channel.send("bus", m=base64.b64encode(message).decode("ascii"))
        ):
            # Closed, or the parent is not reading: drop rather than buffer.
            self.droppedTotal += 1
            return
        self.publishedTotal += 1

    def publishBroadcast(self, payload: bytes, excludeContextId: int) -> None:
        self._publish(packMessage(BROADCAST, self.nodeId, excludeContextId, payload))

    def publishTo(self, contextId: int, payload: bytes) -> None:
        self._publish(packMessage(TO_CONTEXT, self.nodeId, contextId, payload))

    def received(self, message: dict[str, Any]) -> None:
        """A message the parent passed on."""
        if self.receiver is None:
            return
        self.receivedTotal += 1
        deliver(self.receiver, self.nodeId, base64.b64decode(message["m"]))

    def stats(self) -> dict[str, object]:
        return {
            "kind": RELAY_BUS_KIND,
            "connected": self.connected,
            "node_id": self.nodeId,
            "published_total": self.publishedTotal,
            "received_total": self.receivedTotal,
            "dropped_total": self.droppedTotal,
        }


class WorkerControlService(Service):
    """
    A worker's end of the control channel: answers the parent's questions
    (its figures, its connections), carries the L{ParentBus}, and stops
    the worker when the parent goes away.
    """

    def __init__(self, figures: Any, reactor: Any, index: int, bus: ParentBus | None) -> None:
        """
        @param figures: what the parent's questions are answered from: an
            object with C{collect()} and C{connections(sort, limit,
            descending)}, as a monitor reads one process (the monitor's
            L{iocpsvc.monitor.stats.FactorySource} of this worker's factory).
        @param index: this worker's slot.
        @param bus: the cluster bus to carry, if the parent relays it.
        """
        self.figures = figures
        self.reactor = reactor
        self.index = index
        self.bus = bus
        self.channel: ControlChannel | None = None

    def startService(self) -> None:
        super().startService()
        # Imported here: on Windows (where there are no workers) importing
        # it needs pywin32, and this module is imported everywhere.
        from twisted.internet.stdio import StandardIO

        self.channel = ControlChannel(self.controlHandlers())
        self.channel.onLost = self._parentGone
        if self.bus is not None:
            self.bus.channel = self.channel
        StandardIO(self.channel, stdin=CONTROL_IN, stdout=CONTROL_OUT, reactor=self.reactor)  # type: ignore[call-arg]
        # The sockets were adopted when the server service started (before
        # this child service): this worker accepts from now on.
        self.channel.send("ready")

    def controlHandlers(self) -> dict[str, Callable[[dict[str, Any]], Any]]:
        """
        What the parent may ask or send: C{stats}, C{connections} (with
        C{stats} in its answer), and C{bus} with a L{ParentBus}.
        """
        # The parent asks what its own monitor would read in one process.
        figures = self.figures
        handlers: dict[str, Callable[[dict[str, Any]], Any]] = {
            "stats": lambda message: figures.collect(),
            "connections": self._connections,
        }
        if self.bus is not None:
            handlers["bus"] = self.bus.received
        return handlers

    def _connections(self, message: dict[str, Any]) -> dict[str, Any]:
        """
        The C{connections} answer: the listing asked for, and under
        C{stats} this worker's figures taken in the same turn, so that the
        parent's C{/stats.json} agrees with the rows it lists.
        """
        listing = dict(
            self.figures.connections(
                message.get("sort", "id"), int(message.get("limit", 100)), message.get("descending")
            )
        )
        listing["stats"] = self.figures.collect()
        return listing

    def _parentGone(self, reason: Failure) -> None:
        if not self.running:
            return
        _log.warn("worker {worker}: the parent process is gone; stopping", worker=self.index)
        self.reactor.stop()

    def stopService(self) -> Any:
        super().stopService()
        if self.channel is not None and self.channel.transport is not None:
            self.channel.onLost = None
            self.channel.transport.loseConnection()
        return succeed(None)


def adoptedEndpoint(reactor: Any, description: str, position: int) -> Any:
    """
    A worker's endpoint for the C{systemd:} description at C{position} in
    C{--port} order: the parent adopted systemd's socket and handed it down
    as descriptor C{FIRST_LISTENER + position}.
    """
    fields = dict(field.split("=", 1) for field in description.split(":")[1:] if "=" in field)
    family = getattr(socket, "AF_" + fields.get("domain", "INET"))
    return endpoints.AdoptedStreamServerEndpoint(reactor, FIRST_LISTENER + position, family)
