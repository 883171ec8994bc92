"""
The direct-send fast path: a reply goes straight to the socket when nothing
is queued on Twisted's own POSIX TCP transport, and everything else takes
the plain C{transport.write} path -- partial sends, TLS, unknown transports,
or the fast path switched off -- with order and bytes kept exact.
"""

from __future__ import annotations

import struct
from typing import Any

from twisted.internet import defer
from twisted.python.runtime import platform
from twisted.trial.unittest import SynchronousTestCase, TestCase

from iocpsvc.apps import EchoContext
from iocpsvc.factory import ConnectionContextFactory
from iocpsvc.limits import ServerLimits
from iocpsvc.service import SocketServerService
from iocpsvc.testing import EmbeddedConnection
from tests.certs import issueCertificates
from tests.helpers import bothImplementations, frame
from tests.netutil import connectRaw, echoMany, servedNatively, temporaryDirectory, waitUntil


class DirectSendTests(TestCase):
    """Over real sockets on 127.0.0.1."""

    timeout = 60

    def start(self, description: str = "tcp:0:interface=127.0.0.1", directWrites: bool = True) -> Any:
        from twisted.internet import reactor

        # Room for the 24 MiB write below (the default would close it as slow).
        limits = ServerLimits(maxPendingWrite=64 * 1024 * 1024)
        factory = ConnectionContextFactory(EchoContext, reactor=reactor, limits=limits)
        factory.directWrites = directWrites
        service = SocketServerService(factory, [description], reactor=reactor)
        service.startService()
        self.addCleanup(service.stopService)
        return factory, service.ports[0].getHost().port

    @defer.inlineCallbacks
    def test_plainTcpSendsDirectly(self) -> Any:
        """
        On plain TCP, replies go straight to the socket; echoes stay
        byte-exact.  On native transports (the asyncio reactor) the event
        loop's transport does that itself: no direct sends are counted.
        """
        from twisted.internet import reactor

        factory, port = self.start()
        wires = [b"".join(frame(b"%d" % i * 50) for i in range(20))] * 20
        received = yield echoMany(reactor, port, wires)
        self.assertEqual(received, wires)
        if servedNatively(reactor):
            self.assertEqual(factory.counters.directSends, 0)
        else:
            self.assertGreater(factory.counters.directSends, 0)

    @defer.inlineCallbacks
    def test_partialSendKeepsOrder(self) -> Any:
        """What the socket does not take goes through Twisted's buffer, before later replies."""
        from twisted.internet import reactor

        factory, port = self.start()
        [client] = yield connectRaw(reactor, port, 1)
        client.transport.pauseProducing()  # do not read yet: the socket fills
        big = bytes(range(256)) * (24 * 1024 * 4)  # 24 MiB: more than the kernel takes at once
        yield waitUntil(reactor, lambda: factory.onlineCount == 1)
        context = next(iter(factory.online.values()))
        context.writeObject(big)
        self.assertGreater(context.pendingWriteBytes, 0)  # a partial send: the rest is queued
        context.writeObject(b"after")  # must not overtake the queued rest
        client.transport.resumeProducing()
        expected = frame(big) + frame(b"after")
        yield waitUntil(reactor, lambda: len(client.received) >= len(expected), timeout=30)
        self.assertTrue(bytes(client.received) == expected)
        client.transport.loseConnection()
        yield client.lost

    @defer.inlineCallbacks
    def test_switchedOff(self) -> Any:
        """directWrites = False: every write goes through transport.write."""
        from twisted.internet import reactor

        factory, port = self.start(directWrites=False)
        wires = [frame(b"abc") * 5] * 5
        received = yield echoMany(reactor, port, wires)
        self.assertEqual(received, wires)
        self.assertEqual(factory.counters.directSends, 0)

    @defer.inlineCallbacks
    def test_tlsTakesThePlainPath(self) -> Any:
        """Behind TLS the socket carries ciphertext: no direct sends, echo intact."""
        import ssl

        from twisted.internet import threads

        certificates = issueCertificates(temporaryDirectory(self))
        factory, port = self.start(
            f"ssl:0:interface=127.0.0.1:privateKey={certificates.key}:certKey={certificates.cert}"
        )

        def client() -> bytes:
            import socket

            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                with context.wrap_socket(raw) as tls:
                    tls.sendall(frame(b"secret") * 3)
                    data = b""
                    while len(data) < 30:
                        data += tls.recv(4096)
                    return data

        data = yield threads.deferToThread(client)
        self.assertEqual(data, frame(b"secret") * 3)
        self.assertEqual(factory.counters.directSends, 0)

    if platform.isWindows():
        skip = "Twisted's POSIX TCP transport only"


class UnknownTransportTests(SynchronousTestCase):
    """Transports that are not Twisted's own POSIX TCP take the plain path."""

    def test_stringTransport(self) -> None:
        """An in-memory transport is written to with write/writeSequence only."""
        connection = EmbeddedConnection(EchoContext)
        connection.feed(frame(b"x") * 3)
        self.assertEqual(connection.readBytes(), frame(b"x") * 3)
        self.assertFalse(connection.context._direct)
        self.assertEqual(connection.factory.counters.directSends, 0)
        self.assertEqual(struct.unpack(">I", frame(b"ab")[:4])[0], 2)


# Every test above, again on the pure-Python implementation (iocpsvc.accel).
bothImplementations(globals())
