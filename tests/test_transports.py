"""
Tests for L{iocpsvc.transports}: the unsent bytes read from Twisted's own
descriptor buffer, through a protocol wrapper, and behind Twisted's TLS at
each place where it holds bytes -- all in memory, on Twisted's real
descriptor and TLS classes, with Python's C{ssl} module as the client.
"""

from __future__ import annotations

import ssl
import sys
from typing import Any

from twisted.internet.abstract import FileDescriptor
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionAborted
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from iocpsvc.transports import unsentBytes
from tests.certs import CertificateFiles, issueCertificates
from tests.netutil import temporaryDirectory


class MemorySocket(FileDescriptor):
    """
    Twisted's own descriptor write buffer (C{dataBuffer}, C{offset},
    C{_tempDataBuffer}, its producer paused past C{bufferSize}) over no
    socket: the "kernel" takes only what L{transmit} lets it, so a client
    that never reads is one the test never transmits to.
    """

    def __init__(self, reactor: Any) -> None:
        super().__init__(reactor)
        self.connected = 1
        self.protocol: Any = None
        self._room = 0
        self._taken = bytearray()

    def writeSomeData(self, data: bytes) -> int:
        taken = min(len(data), self._room)
        self._taken += data[:taken]
        self._room -= taken
        return taken

    def transmit(self, limit: int | None = None) -> bytes:
        """Let the socket take up to C{limit} bytes (all by default) of what waits; return them."""
        self._room = sys.maxsize if limit is None else limit
        while self.connected and self._room and len(self.dataBuffer) - self.offset + self._tempDataLen:
            self.doWrite()
        taken, self._taken = bytes(self._taken), bytearray()
        return taken

    def abortConnection(self) -> None:
        """As Twisted's TCP transport does: drop what waits, lose the connection next turn."""
        self.stopWriting()
        self.reactor.callLater(0, self.connectionLost, Failure(ConnectionAborted()))

    def connectionLost(self, reason: Failure) -> None:
        if not self.connected:
            return
        super().connectionLost(reason)
        if self.protocol is not None:
            self.protocol.connectionLost(reason)

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 9983)

    def getPeer(self) -> IPv4Address:
        return IPv4Address("TCP", "192.0.2.1", 40000)


class MemoryTLSConnection:
    """
    The server side of a TLS connection as C{ssl:} builds it (Twisted's
    C{TLSMemoryBIOFactory} around C{wrappedFactory}) over a L{MemorySocket},
    with Python's C{ssl} module at the other end through memory BIOs.  The
    reactor, which is also the clock of Twisted's small-write aggregator,
    is a C{MemoryReactorClock}: C{reactor.advance(0)} is the next turn.

    @ivar tls: the server's TLS transport (the context's C{transport}).
    @ivar socket: the L{MemorySocket} beneath it.
    """

    def __init__(self, testCase: Any, wrappedFactory: Any) -> None:
        from OpenSSL.crypto import FILETYPE_PEM
        from twisted.internet.ssl import Certificate, CertificateOptions, KeyPair
        from twisted.protocols.tls import TLSMemoryBIOFactory

        certificates = issueCertificates(temporaryDirectory(testCase))
        options = CertificateOptions(
            privateKey=KeyPair.load(_read(certificates.key), FILETYPE_PEM).original,
            certificate=Certificate.loadPEM(_read(certificates.cert)).original,
            extraCertChain=[Certificate.loadPEM(_read(certificates.chain)).original],
        )
        self.reactor = MemoryReactorClock()
        self.socket = MemorySocket(self.reactor)
        self.tls: Any = TLSMemoryBIOFactory(options, False, wrappedFactory, clock=self.reactor).buildProtocol(
            self.socket.getPeer()
        )
        self.socket.protocol = self.tls
        self.tls.makeConnection(self.socket)
        self._fromServer, self._toServer = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.client = _clientContext(certificates).wrap_bio(
            self._fromServer, self._toServer, server_hostname="127.0.0.1"
        )

    def sendHello(self) -> None:
        """The client's first flight (its ClientHello) reaches the server."""
        try:
            self.client.do_handshake()
        except ssl.SSLWantReadError:
            pass
        self.tls.dataReceived(self._toServer.read())

    def handshake(self) -> None:
        """Run the handshake to its end, each flight delivered whole."""
        while True:
            try:
                self.client.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.tls.dataReceived(self._toServer.read())
                self._fromServer.write(self.socket.transmit())
        self.tls.dataReceived(self._toServer.read())  # the client's Finished

    def deliver(self) -> bytes:
        """The socket sends the client all that waits; return the plaintext the client reads."""
        return self.clientReads(self.socket.transmit())

    def clientReads(self, ciphertext: bytes) -> bytes:
        """The plaintext the client makes of C{ciphertext} from the server."""
        self._fromServer.write(ciphertext)
        plaintext = bytearray()
        while True:
            try:
                plaintext += self.client.read(65536)
            except ssl.SSLWantReadError:
                return bytes(plaintext)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _clientContext(certificates: CertificateFiles) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=certificates.root)


class DescriptorTests(SynchronousTestCase):
    """Twisted's descriptor transports, and transports that do not tell."""

    def test_descriptorBuffer(self) -> None:
        """
        What a descriptor holds is counted wherever Twisted keeps it: the
        writes of this turn (C{_tempDataBuffer}) and the rest of the buffer
        past what the socket took (C{dataBuffer} from C{offset}).
        """
        socket = MemorySocket(MemoryReactorClock())
        socket.write(b"a" * 100)
        socket.write(b"b" * 50)
        self.assertEqual(unsentBytes(socket), 150)
        self.assertEqual(len(socket.transmit(30)), 30)
        self.assertEqual(unsentBytes(socket), 120)
        socket.write(b"c" * 5)
        self.assertEqual(unsentBytes(socket), 125)
        socket.transmit()
        self.assertEqual(unsentBytes(socket), 0)

    def test_transportsThatDoNotTell(self) -> None:
        """A transport without Twisted's buffer, or none at all, tells nothing: C{None}."""
        self.assertIsNone(unsentBytes(StringTransport()))
        self.assertIsNone(unsentBytes(None))

    def test_wrapperAsksBeneath(self) -> None:
        """
        A protocol wrapper that holds nothing itself (C{haproxy:}'s) tells
        what the transport beneath it holds, or nothing when that does not
        tell.
        """
        socket = MemorySocket(MemoryReactorClock())
        wrapper = ProtocolWrapper(WrappingFactory(Factory.forProtocol(Protocol)), Protocol())
        wrapper.makeConnection(socket)
        wrapper.write(b"x" * 42)
        self.assertEqual(unsentBytes(wrapper), 42)
        overString = ProtocolWrapper(WrappingFactory(Factory.forProtocol(Protocol)), Protocol())
        overString.makeConnection(StringTransport())
        self.assertIsNone(unsentBytes(overString))


class TLSTests(SynchronousTestCase):
    """
    Behind Twisted's TLS every byte not yet taken by the socket is counted:
    plaintext where TLS has not encrypted it yet, ciphertext after; so what
    is counted is what then leaves through the socket, or the plaintext
    that becomes it.
    """

    def connect(self) -> MemoryTLSConnection:
        return MemoryTLSConnection(self, Factory.forProtocol(Protocol))

    def test_aggregatorWithoutItsCount(self) -> None:
        """
        The aggregator's held bytes come from its running count where
        Twisted keeps one, and are summed where it does not (Twisted 23.10).
        """
        from types import SimpleNamespace

        from iocpsvc.transports import _tlsHeldBytes

        counted = SimpleNamespace(_buffer=[b"ab", b"cde"], _bufferLeft=95, MAX_BUFFER_SIZE=100)
        self.assertEqual(_tlsHeldBytes(SimpleNamespace(_aggregator=counted)), 5)
        uncounted = SimpleNamespace(_buffer=[b"ab", b"cde", b"f"])
        self.assertEqual(_tlsHeldBytes(SimpleNamespace(_aggregator=uncounted)), 6)
        self.assertEqual(_tlsHeldBytes(SimpleNamespace(_aggregator=SimpleNamespace())), 0)

    def test_smallWritesWaitForTheNextTurn(self) -> None:
        """
        A small write waits, as plaintext, in Twisted's aggregator until the
        next reactor turn; then it is ciphertext in the socket's buffer,
        and what is counted is exactly what the socket then sends.
        """
        connection = self.connect()
        connection.handshake()
        connection.deliver()  # the session tickets that follow the handshake
        connection.tls.write(b"x" * 1000)
        self.assertEqual(unsentBytes(connection.tls), 1000)
        connection.reactor.advance(0)
        pending = unsentBytes(connection.tls)
        sent = connection.socket.transmit()
        self.assertEqual(pending, len(sent))
        self.assertGreater(pending, 1000)  # a record's header and tag
        self.assertEqual(connection.clientReads(sent), b"x" * 1000)
        self.assertEqual(unsentBytes(connection.tls), 0)

    def test_writesBeforeTheHandshake(self) -> None:
        """
        Plaintext written before the handshake has finished waits in TLS's
        C{_appSendBuffer} and is counted, beside the handshake bytes the
        socket has not taken and a small write still in the aggregator; once
        the handshake is done it is all ciphertext in the socket's buffer,
        counted exactly.
        """
        connection = self.connect()
        connection.tls.write(b"a" * 70_000)  # past the aggregator's limit: into TLS now
        connection.tls.write(b"b" * 1000)  # for the next turn
        self.assertEqual(unsentBytes(connection.tls), 71_000)
        connection.sendHello()
        pending = unsentBytes(connection.tls)
        serverFlight = connection.socket.transmit()
        self.assertEqual(pending, 71_000 + len(serverFlight))
        connection.reactor.advance(0)  # the aggregator hands its write to TLS, which still waits
        self.assertEqual(unsentBytes(connection.tls), 71_000)

        # (Delivering the server's flight again would confuse the client:
        # run the rest of the handshake from where it is.)
        connection._fromServer.write(serverFlight)
        connection.handshake()
        pending = unsentBytes(connection.tls)
        sent = connection.socket.transmit()
        self.assertEqual(pending, len(sent))
        self.assertEqual(connection.clientReads(sent), b"a" * 70_000 + b"b" * 1000)

    def test_ciphertextInTheMemoryBio(self) -> None:
        """
        Ciphertext OpenSSL wrote into its memory BIO and Twisted has not
        moved to the socket yet is counted, without taking it out.
        """
        connection = self.connect()
        connection.handshake()
        connection.socket.transmit()
        handle = connection.tls.getHandle()
        handle.send(b"z" * 100)  # encrypted into the BIO; Twisted only moves it on its next flush
        pending = unsentBytes(connection.tls)
        self.assertEqual(unsentBytes(connection.tls), pending)  # reading took nothing out
        record = handle.bio_read(65536)
        self.assertEqual(pending, len(record))
        self.assertEqual(unsentBytes(connection.tls), 0)

    def test_theSocketBeneath(self) -> None:
        """
        Ciphertext in the socket's buffer is counted down as the socket
        takes it.
        """
        connection = self.connect()
        connection.handshake()
        connection.socket.transmit()
        connection.tls.write(b"y" * 100_000)  # past the aggregator's limit: encrypted at once
        pending = unsentBytes(connection.tls)
        self.assertGreater(pending, 100_000)
        connection.socket.transmit(10_000)
        self.assertEqual(unsentBytes(connection.tls), pending - 10_000)

    def test_afterTheConnectionIsLost(self) -> None:
        """Once the TLS connection is gone, the reading still answers (no OpenSSL connection left)."""
        connection = self.connect()
        connection.handshake()
        connection.tls.write(b"q" * 10)
        connection.tls.abortConnection()
        connection.reactor.advance(0)
        self.assertIsNone(connection.tls.getHandle())
        self.assertIsInstance(unsentBytes(connection.tls), int)
