"""
Tests for L{iocpsvc.accept}: listening ports that judge connections at
accept, refusals closed in the same reactor turn, and a server at its
descriptor limit that counts every connection it closes.
"""

from __future__ import annotations

import os
import socket
import struct
from typing import Any

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.python.runtime import platform
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from iocpsvc import errors
from iocpsvc.accept import GuardedReactor, GuardedTCPPort, findGate, guardedReactor, isProxied
from iocpsvc.apps import EchoContext
from iocpsvc.factory import ConnectionContextFactory
from iocpsvc.interfaces import IAcceptGate
from iocpsvc.limits import ServerLimits
from iocpsvc.service import SocketServerService
from tests.helpers import haproxyWrappingFactory
from tests.netutil import connectRaw, getJSON, servedNatively, spawnTwistd, temporaryDirectory, waitUntil


class GateTests(SynchronousTestCase):
    """Finding the gate and what the context factory answers as one."""

    def test_findGateThroughWrappers(self) -> None:
        """The gate is found past TLS and PROXY wrappers; a plain factory has none."""
        from twisted.internet.protocol import Factory
        from twisted.protocols.policies import WrappingFactory
        from twisted.protocols.tls import TLSMemoryBIOFactory

        factory = ConnectionContextFactory(EchoContext, reactor=Clock())
        self.assertIs(findGate(factory), factory)
        from twisted.internet.ssl import CertificateOptions

        wrapped = TLSMemoryBIOFactory(CertificateOptions(), False, WrappingFactory(factory))
        self.assertIs(findGate(wrapped), factory)
        self.assertIsNone(findGate(Factory()))
        self.assertFalse(isProxied(wrapped))

    def test_haproxyWrapperIsProxied(self) -> None:
        """Behind haproxy: the address accepted is the balancer's: only the limit is judged."""
        factory = ConnectionContextFactory(
            EchoContext, reactor=Clock(), limits=ServerLimits(deny=["192.0.2.0/24"])
        )
        wrapped = haproxyWrappingFactory(factory)
        self.assertTrue(isProxied(wrapped))
        balancer = IPv4Address("TCP", "192.0.2.9", 1)
        self.assertTrue(factory.admit(balancer, proxied=True))
        self.assertFalse(factory.admit(balancer, proxied=False))
        self.assertEqual(factory.counters.refusedTotal, 1)
        self.assertEqual(factory.counters.closedTotal[errors.REFUSED], 1)

    def test_admitAtTheLimit(self) -> None:
        """At maxConnections, admit refuses and counts; below it, it counts nothing."""
        from iocpsvc.testing import EmbeddedConnection

        clock = Clock()
        factory = ConnectionContextFactory(EchoContext, reactor=clock, limits=ServerLimits(maxConnections=1))
        address = IPv4Address("TCP", "192.0.2.1", 1)
        self.assertTrue(factory.admit(address, False))
        EmbeddedConnection(factory=factory, clock=clock)
        self.assertFalse(factory.admit(address, False))
        self.assertEqual((factory.counters.refusedTotal, factory.counters.acceptedTotal), (1, 1))

    def test_acceptFailedCounts(self) -> None:
        """Connections shed for want of a descriptor are refused, under their own reason."""
        factory = ConnectionContextFactory(EchoContext, reactor=Clock())
        factory.acceptFailed("EMFILE", 7)
        factory.acceptFailed("ENOBUFS", 0)
        self.assertEqual(factory.counters.acceptErrors, 2)
        self.assertEqual(factory.counters.refusedTotal, 7)
        self.assertEqual(factory.counters.closedTotal[errors.NO_DESCRIPTORS], 7)

    def test_acceptPeerRaising(self) -> None:
        """An acceptPeer that raises refuses the connection as a handler error."""

        class Picky(ConnectionContextFactory):
            def acceptPeer(self, address: Any) -> bool:
                raise KeyError("bug")

        factory = Picky(EchoContext, reactor=Clock())
        self.assertFalse(factory.admit(IPv4Address("TCP", "192.0.2.1", 1), False))
        self.assertEqual(factory.counters.handlerErrors, 1)
        self.assertEqual(factory.counters.closedTotal[errors.HANDLER_ERROR], 1)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_onlyPOSIXReactorsAreGuarded(self) -> None:
        """A test reactor is used as it is; a POSIX reactor gets a stand-in, once."""
        from twisted.internet import reactor
        from twisted.internet.testing import MemoryReactor

        memory = MemoryReactor()
        self.assertIs(guardedReactor(memory), memory)
        if platform.isWindows():
            raise self.skipTest("POSIX reactors only")
        guarded = guardedReactor(reactor)
        self.assertIsInstance(guarded, GuardedReactor)
        self.assertIs(guardedReactor(guarded), guarded)


@implementer(IAcceptGate)
class Turnstile:
    """A gate that lets C{room} connections in and records what it saw."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.refused = 0
        self.failures: list[tuple[str, int]] = []

    def admit(self, address: Any, proxied: bool) -> bool:
        if self.room > 0:
            self.room -= 1
            return True
        self.refused += 1
        return False

    def acceptFailed(self, error: str, closed: int) -> None:
        self.failures.append((error, closed))


class PortTests(TestCase):
    """Guarded ports over real TCP on 127.0.0.1."""

    if platform.isWindows():
        skip = "guarded ports are Twisted's POSIX ports"

    @defer.inlineCallbacks
    def test_refusedInTheSameTurn(self) -> Any:
        """A refused socket is closed before the port returns to the reactor."""
        from twisted.internet import reactor
        from twisted.internet.protocol import Factory, Protocol

        class Gated(Factory):
            protocol = Protocol

        gate = Turnstile(room=2)
        factory = Gated()
        factory.wrappedFactory = gate  # type: ignore[attr-defined]
        port = GuardedReactor(reactor).listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.assertIsInstance(port, GuardedTCPPort)
        number = port.getHost().port
        clients = [socket.create_connection(("127.0.0.1", number)) for _ in range(5)]
        self.addCleanup(lambda: [c.close() for c in clients])
        # One doRead accepts all five; the three refused are closed in it.
        yield waitUntil(reactor, lambda: gate.refused == 3)
        port.stopReading()  # nothing more is accepted: what follows was decided already
        for client in clients:
            client.setblocking(False)

        def isReset(client: socket.socket) -> bool:
            try:
                return client.recv(1) == b""
            except BlockingIOError:
                return False  # open and silent: admitted
            except ConnectionResetError:
                return True

        resets: set[int] = set()

        def threeReset() -> bool:
            resets.update(index for index, client in enumerate(clients) if isReset(client))
            return len(resets) == 3

        yield waitUntil(reactor, threeReset, timeout=5)
        self.assertEqual(len(resets), 3)

    @defer.inlineCallbacks
    def test_burstPastTheLimitIsCountedExactly(self) -> Any:
        """In-process: 40 held, a burst of 200 past a limit of 50: refused + accepted == attempted."""
        from twisted.internet import reactor

        factory = ConnectionContextFactory(
            EchoContext, reactor=reactor, limits=ServerLimits(maxConnections=50)
        )
        service = SocketServerService(
            factory, ["tcp:0:interface=127.0.0.1"], reactor=reactor, shutdownTimeout=5
        )
        service.startService()
        self.addCleanup(service.stopService)
        number = service.ports[0].getHost().port
        held = yield connectRaw(reactor, number, 40)
        burst = yield connectRaw(reactor, number, 200)
        attempted = 240
        yield waitUntil(
            reactor, lambda: factory.counters.refusedTotal + factory.counters.acceptedTotal == attempted
        )
        self.assertEqual(factory.counters.acceptedTotal, 50)
        self.assertEqual(factory.counters.closedTotal[errors.REFUSED], 190)
        for client in held + burst:
            client.transport.abortConnection()
        yield defer.gatherResults([c.lost for c in held + burst])


class DescriptorLimitTests(TestCase):
    """
    A twistd server under a small open-files limit, sent a burst of
    connections past what it can hold: every connection that reached it
    is counted, as accepted or refused.
    """

    timeout = 120
    if not platform.isLinux():
        skip = "open-files limits and /proc: Linux"

    @defer.inlineCallbacks
    def burst(self, *options: str, openFiles: int, held: int, burst: int, exact: bool = True) -> Any:
        """
        Hold C{held} echoing connections, then open C{burst} more; once all
        have left, the server's counters (and, with C{exact}, only once
        every connection is counted, as accepted or refused).  After the
        burst, a new connection is still served.
        """
        from twisted.internet import reactor

        process, transport = spawnTwistd(
            reactor,
            temporaryDirectory(self),
            "iocpsvc",
            "--port",
            "tcp:0:interface=127.0.0.1",
            "--monitor",
            "tcp:0:interface=127.0.0.1",
            "--stats-interval",
            "0",
            *options,
            openFiles=openFiles,
        )
        port = yield process.listening
        yield waitUntil(reactor, lambda: b"monitor on" in process.output)
        self.addCleanup(self.stop, process, transport)
        holders = yield connectRaw(reactor, port, held)
        for holder in holders:
            holder.transport.write(struct.pack(">I", 2) + b"hi")
        yield waitUntil(reactor, lambda: all(len(h.received) == 6 for h in holders))
        extras = yield connectRaw(reactor, port, burst)
        for extra in extras:
            if not extra.lost.called:
                extra.transport.write(struct.pack(">I", 2) + b"hi")
        # Each extra is either served (its echo comes back) or closed.
        yield waitUntil(reactor, lambda: all(len(c.received) == 6 or c.lost.called for c in extras))
        # The clients leave, so that the monitor has descriptors to answer with.
        clients = holders + extras
        for client in clients:
            if not client.lost.called:
                client.transport.abortConnection()
        yield defer.gatherResults([c.lost for c in clients])
        stats: dict[str, Any] = {}

        @defer.inlineCallbacks
        def counted() -> Any:
            stats.update((yield getJSON(reactor, process.monitorURL() + "stats.json")))
            return stats["refused_total"] + stats["accepted_total"] == held + burst

        done = False
        for _ in range(100 if exact else 5):
            done = yield counted()
            if done:
                break
            yield waitUntil(reactor, lambda: True, step=0.2)
        if exact:
            self.assertTrue(done, stats)
        # The listener survived the burst: a new client is served.
        [after] = yield connectRaw(reactor, port, 1)
        after.transport.write(struct.pack(">I", 2) + b"hi")
        yield waitUntil(reactor, lambda: len(after.received) == 6)
        after.transport.loseConnection()
        yield after.lost
        return stats, bytes(process.output)

    @defer.inlineCallbacks
    def stop(self, process: Any, transport: Any) -> Any:
        if not process.ended.called:
            transport.signalProcess("TERM")
        yield process.ended

    @defer.inlineCallbacks
    def test_burstAtTheDefaultLimit(self) -> Any:
        """The derived limit leaves descriptors for refusals: every extra is refused, none lost."""
        stats, output = yield self.burst(openFiles=256, held=170, burst=300)
        limit = 256 - 64 - 16  # the reserve, the monitor's share
        self.assertEqual(stats["accepted_total"], limit)
        self.assertEqual(stats["closed_total"][errors.REFUSED], 170 + 300 - limit)
        self.assertEqual(stats["closed_total"][errors.NO_DESCRIPTORS], 0)
        self.assertEqual(stats["accept_errors_total"], 0)
        self.assertNotIn(b"EMFILE recovery", output)

    @defer.inlineCallbacks
    def test_burstPastTheDescriptors(self) -> Any:
        """A --max-connections above the descriptors: EMFILE sheds the queue, each one counted."""
        from twisted.internet import reactor

        stats, output = yield self.burst(
            "--max-connections", "5000", openFiles=256, held=150, burst=200, exact=not servedNatively(reactor)
        )
        self.assertIn(b"descriptors short", output)  # the start-time warning
        if servedNatively(reactor):
            # libuv sheds the queue itself (with a reserve descriptor of its
            # own) and does not say so: those connections are not counted.
            self.assertLessEqual(stats["accepted_total"] + stats["refused_total"], 350)
            self.assertEqual(stats["online"], 0)
            return
        self.assertGreater(stats["closed_total"][errors.NO_DESCRIPTORS], 0)
        self.assertGreater(stats["accept_errors_total"], 0)
        self.assertEqual(stats["accepted_total"] + stats["refused_total"], 350)
        self.assertIn(b"descriptors short", output)  # the start-time warning
        self.assertNotIn(b"EMFILE recovery", output)  # Twisted's own, uncounted, recovery never ran
        # One rate-limited line for many shed connections, not one each.
        self.assertLess(output.count(b"accept failed"), 12)


class Judging(ConnectionContextFactory):
    """
    A context factory whose C{acceptPeer} records every address it is asked
    about and lets in the even ports (a rule that gives the same answer
    however often it is asked, so that only the count of calls can tell).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.asked: list[Any] = []

    def acceptPeer(self, address: Any) -> bool:
        self.asked.append(address)
        return address.port % 2 == 0


class AcceptPeerOnceTests(TestCase):
    """
    An application's C{acceptPeer} is asked once per connection, about the
    client, and every connection is counted once, as accepted or refused,
    on every accept path: a guarded port (plain and behind C{haproxy:}), a
    worker's adopted socket, and Twisted's own port (the IOCP reactor's
    way: the factory judges in C{buildProtocol}).
    """

    if platform.isWindows():
        skip = "guarded ports are Twisted's POSIX ports"

    timeout = 30
    CLIENTS = 12

    def listen(self, how: str) -> tuple[Judging, int]:
        from twisted.internet import endpoints, reactor

        factory = Judging(EchoContext, reactor=reactor)
        factory.doStart()
        self.addCleanup(factory.doStop)
        if how == "guarded":
            port = guardedReactor(reactor).listenTCP(0, factory, interface="127.0.0.1")
        elif how == "guarded haproxy":
            endpoint = endpoints.serverFromString(
                guardedReactor(reactor), "haproxy:tcp:0:interface=127.0.0.1"
            )
            port = self.successResultOf(endpoint.listen(factory))
        elif how == "worker":
            from iocpsvc.workers import SocketAdoptingReactor

            listener = socket.socket()
            listener.bind(("127.0.0.1", 0))
            listener.listen(50)
            listener.setblocking(False)  # as a worker's parent hands it down
            self.addCleanup(listener.close)
            adopting = SocketAdoptingReactor(
                guardedReactor(reactor), ["shared:50"], firstDescriptor=os.dup(listener.fileno())
            )
            port = adopting.listenTCP(0, factory)
        elif how == "twisted":
            port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        else:
            port = reactor.listenTCP(0, haproxyWrappingFactory(factory), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return factory, port.getHost().port

    @defer.inlineCallbacks
    def judgedOnce(self, how: str, proxied: bool, balancerToo: bool = False) -> Any:
        """
        Connect C{CLIENTS} clients through C{how}; check that C{acceptPeer}
        was asked once about each client (and, with C{balancerToo}, once
        about the balancer's address of each connection) and that each
        connection was counted once.
        """
        from twisted.internet import reactor

        factory, number = self.listen(how)
        clients = yield connectRaw(reactor, number, self.CLIENTS)
        self.addCleanup(self.closeClients, clients)
        self.assertEqual(len(clients), self.CLIENTS)
        balancers = sorted(client.transport.getHost().port for client in clients)
        if proxied:
            # The header names the client: ports 2000, 2001, ... (half even).
            for index, client in enumerate(clients):
                client.transport.write(f"PROXY TCP4 203.0.113.7 192.0.2.1 {2000 + index} 9983\r\n".encode())
            clientPorts = [2000 + index for index in range(self.CLIENTS)]
        else:
            clientPorts = [client.transport.getHost().port for client in clients]
        counters = factory.counters
        yield waitUntil(reactor, lambda: counters.acceptedTotal + counters.refusedTotal >= self.CLIENTS)
        evens = sum(1 for port in clientPorts if port % 2 == 0)
        asked = factory.asked
        if balancerToo:
            self.assertEqual(sorted(a.port for a in asked if a.host == "127.0.0.1"), balancers)
            asked = [a for a in asked if a.host != "127.0.0.1"]
        if proxied:
            self.assertEqual([a.host for a in asked], ["203.0.113.7"] * self.CLIENTS)
        self.assertEqual(sorted(a.port for a in asked), sorted(clientPorts))
        self.assertEqual((counters.acceptedTotal, counters.refusedTotal), (evens, self.CLIENTS - evens))
        self.assertEqual(counters.closedTotal[errors.REFUSED], self.CLIENTS - evens)

    @defer.inlineCallbacks
    def closeClients(self, clients: list[Any]) -> Any:
        for client in clients:
            if not client.lost.called:
                client.transport.abortConnection()
        yield defer.gatherResults([c.lost for c in clients])

    def test_guardedPort(self) -> Any:
        """A guarded port (the default on POSIX): asked once, at accept."""
        return self.judgedOnce("guarded", proxied=False)

    def test_guardedPortBehindHAProxy(self) -> Any:
        """haproxy: on a guarded port: asked once, about the header's client."""
        return self.judgedOnce("guarded haproxy", proxied=True)

    def test_workerAdoptedSocket(self) -> Any:
        """A worker's port (an adopted socket, guarded): asked once."""
        return self.judgedOnce("worker", proxied=False)

    def test_twistedPort(self) -> Any:
        """Twisted's own port (as on the IOCP reactor): asked once, in buildProtocol."""
        return self.judgedOnce("twisted", proxied=False)

    def test_twistedPortBehindHAProxy(self) -> Any:
        """
        haproxy: on Twisted's own port: asked once about the header's
        client, and (as documented: the factory cannot tell yet that the
        connection is proxied) once about the balancer, whose answer is not
        used; each connection is still counted once.
        """
        return self.judgedOnce("twisted haproxy", proxied=True, balancerToo=True)

    @defer.inlineCallbacks
    def test_raisingAcceptPeerCountedOnce(self) -> Any:
        """
        An acceptPeer that raises refuses the connection as a handler error:
        counted once, as refused (refused + accepted == attempted), logged.
        """
        from twisted.internet import reactor

        class Raising(Judging):
            def acceptPeer(self, address: Any) -> bool:
                super().acceptPeer(address)
                raise KeyError("bug")

        factory = Raising(EchoContext, reactor=reactor)
        port = guardedReactor(reactor).listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        clients = yield connectRaw(reactor, port.getHost().port, 3)
        yield defer.gatherResults([c.lost for c in clients])
        counters = factory.counters
        yield waitUntil(reactor, lambda: len(factory.asked) == 3)
        self.assertEqual((counters.acceptedTotal, counters.refusedTotal), (0, 3))
        self.assertEqual((counters.handlerErrors, counters.closedTotal[errors.HANDLER_ERROR]), (3, 3))
        self.assertEqual(counters.closedTotal[errors.REFUSED], 0)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)  # the traceback once, then lines
