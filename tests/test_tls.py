"""
TLS end to end on 127.0.0.1: C{ssl:} (and Twisted's C{tls:}) server
endpoints with every framing codec, Python's own C{ssl} module as the
client, a twistd child serving TLS, and what becomes of clients that never
speak TLS properly (garbage, silence, a stalled or broken handshake).
"""

from __future__ import annotations

import random
import shutil
import socket
import ssl
from typing import Any

from twisted.internet import defer, threads
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from iocpsvc import errors
from iocpsvc.apps import EchoContext
from iocpsvc.context import ConnectionContext
from iocpsvc.factory import ConnectionContextFactory
from iocpsvc.limits import ServerLimits
from iocpsvc.service import SocketServerService
from tests.certs import CertificateFiles, issueCertificates
from tests.helpers import encodeFrames, frame
from tests.netutil import connectRaw, spawnTwistd, temporaryDirectory, waitUntil
from tests.test_tcp import FRAMING_CODECS, EveryFramingCodec
from tests.test_transports import MemoryTLSConnection

# Not a TLS handshake, each in its own way; the server must answer every one
# with a prompt close (what OpenSSL says about each is in the comment).
GARBAGE = [
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",  # "http request"
    b"SSH-2.0-OpenSSH_9.6\r\n",  # "wrong version number"
    b"\x00" * 64,  # "wrong version number"
    b"\x16\x03\x01\x00\x05hello",  # a handshake record that is no ClientHello
    b"\x16\x03\x03\xff\xff" + b"\x01" * 100,  # a record longer than TLS allows
]


def framesFor(spec: str, seed: object, count: int = 6) -> list[bytes]:
    """C{count} frames of valid payloads for the codec C{spec}, each encoded on its own."""
    rng = random.Random(str(seed))
    return [encodeFrames(spec, [FRAMING_CODECS[spec](rng)]) for _ in range(count)]


def splitAndCoalesce(frames: list[bytes]) -> list[bytes]:
    """
    The writes a client makes of C{frames} (at least five), chosen so that
    the server meets both edges of framing: the first frame's first byte
    alone (a header cut short), the rest of it coalesced with two whole
    frames and half the fourth, the other half alone, the fifth frame's
    first bytes one per write, then everything left in one write.  Each
    write is its own TLS record, so the cuts survive decryption.
    """
    first, second, third, fourth, fifth, *rest = frames
    half = len(fourth) // 2
    writes = [first[:1], first[1:] + second + third + fourth[:half], fourth[half:]]
    writes += [fifth[i : i + 1] for i in range(min(8, len(fifth)))]
    writes.append(fifth[8:] + b"".join(rest))
    return [w for w in writes if w]


def verifyingContext(certificates: CertificateFiles) -> ssl.SSLContext:
    """A stdlib client context that trusts only the test root and checks the host name."""
    return ssl.create_default_context(cafile=certificates.root)


def tlsEcho(
    port: int,
    context: ssl.SSLContext,
    writes: list[bytes],
    serverHostname: str = "127.0.0.1",
    closeNotify: bool = False,
) -> bytes:
    """
    Blocking (run it in a thread): connect with the stdlib C{ssl} module,
    send C{writes} one C{sendall} each, read until as many bytes came back
    (or the server closed), then close -- with a TLS close_notify when
    C{closeNotify}, else by just closing the socket.
    """
    expected = sum(len(w) for w in writes)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        # Each small write must leave at once, not wait on Nagle for an ACK.
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with context.wrap_socket(raw, server_hostname=serverHostname) as tls:
            for piece in writes:
                tls.sendall(piece)
            received = bytearray()
            while len(received) < expected:
                data = tls.recv(65536)
                if not data:
                    break
                received += data
            if closeNotify:
                tls.unwrap()
            return bytes(received)


def clientHello(context: ssl.SSLContext) -> bytes:
    """The bytes of a ClientHello, made in memory (no socket)."""
    outgoing = ssl.MemoryBIO()
    tls = context.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname="127.0.0.1")
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass  # the hello is written; the server's answer would be read next
    return outgoing.read()


def memoryHandshake(raw: socket.socket, context: ssl.SSLContext) -> tuple[ssl.SSLObject, ssl.MemoryBIO]:
    """
    Blocking: run a real TLS handshake over the plain socket C{raw}
    (through memory BIOs, so the socket stays ours and nothing more is read
    from it than the handshake needs).  Return the TLS object and the BIO
    its records leave by, which still holds our Finished: send it with the
    first bytes that follow.
    """
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    while True:
        try:
            tls.do_handshake()
            return tls, outgoing
        except ssl.SSLWantReadError:
            raw.sendall(outgoing.read())
            data = raw.recv(65536)
            if not data:
                raise ConnectionError("closed during the handshake") from None
            incoming.write(data)


def handshakeThenGarbage(port: int, context: ssl.SSLContext, garbage: bytes) -> bytes:
    """
    Blocking: complete a real TLS handshake over a plain socket, then send
    C{garbage} as if it were a TLS record; return what arrives until the
    server closes.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        _, outgoing = memoryHandshake(raw, context)
        raw.sendall(outgoing.read() + garbage)  # our Finished, then the garbage
        rest = bytearray()
        while data := raw.recv(65536):
            rest += data
        return bytes(rest)


def floodWithoutReading(port: int, context: ssl.SSLContext | None, request: bytes, cap: int) -> int:
    """
    Blocking: connect (over TLS when C{context} is given, completing the
    handshake: the last time this client reads), then send C{request} again
    and again without ever reading, until the server closes the connection;
    return how many bytes of requests were sent.

    @raise AssertionError: C{cap} bytes went out and the server had still
        not closed it.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        tls, outgoing = memoryHandshake(raw, context) if context is not None else (None, None)
        sent = 0
        try:
            while sent < cap:
                if tls is not None and outgoing is not None:
                    tls.write(request)
                    raw.sendall(outgoing.read())  # (the first time, our Finished too)
                else:
                    raw.sendall(request)
                sent += len(request)
        except (ConnectionResetError, BrokenPipeError):
            return sent
    raise AssertionError(f"the server never closed a client that does not read ({cap} bytes sent)")


def sslDescription(certificates: CertificateFiles, chain: bool = True) -> str:
    """C{ssl:0} on 127.0.0.1 with the test key and certificate (and the chain)."""
    description = f"ssl:0:interface=127.0.0.1:privateKey={certificates.key}:certKey={certificates.cert}"
    return description + (f":extraCertChain={certificates.chain}" if chain else "")


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


class TLSServerMixin:
    """Start a server from an endpoint description; stop it after the test."""

    def startServer(
        self,
        description: str,
        codec: str = "length",
        clock: Clock | None = None,
        limits: ServerLimits | None = None,
        contextClass: type[ConnectionContext] = EchoContext,
    ) -> tuple[ConnectionContextFactory, int]:
        """
        Listen on C{description} with an echo server (or C{contextClass})
        using C{codec}; when C{clock} is given, the factory keeps its time
        by it (idle sweeps, log rate limits) while the sockets run on the
        real reactor.
        """
        from twisted.internet import reactor

        factory = ConnectionContextFactory(contextClass, codec, reactor=clock or reactor, limits=limits)
        service = SocketServerService(factory, [description], reactor=reactor, shutdownTimeout=5)
        service.startService()
        self.addCleanup(service.stopService)  # type: ignore[attr-defined]
        return factory, service.ports[0].getHost().port  # type: ignore[attr-defined]

    def captureLog(self) -> list[dict[str, Any]]:
        """Every log event emitted from now until the test ends."""
        events: list[dict[str, Any]] = []
        observer: Any = events.append  # any callable taking an event is an observer
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)  # type: ignore[attr-defined]
        return events


def tlsLines(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The TLS-failure lines among C{events}."""
    return [e for e in events if "protocol-error: TLS" in e.get("log_format", "")]


class EveryCodecTests(EveryFramingCodec, TLSServerMixin, TestCase):
    """
    An C{ssl:} endpoint description with each framing codec: stdlib TLS
    clients that verify the chain get their frames back byte-exact.
    """

    timeout = 30

    @defer.inlineCallbacks
    def checkCodec(self, spec: str) -> Any:
        certificates = issueCertificates(temporaryDirectory(self))
        factory, port = self.startServer(sslDescription(certificates), spec)
        context = verifyingContext(certificates)
        wires = [framesFor(spec, (spec, client)) for client in range(3)]
        # Three clients at once; the last ends with a TLS close_notify, the
        # others just close their sockets.
        received = yield defer.gatherResults(
            [
                threads.deferToThread(
                    tlsEcho, port, context, splitAndCoalesce(frames), closeNotify=index == 2
                )
                for index, frames in enumerate(wires)
            ],
            consumeErrors=True,
        )
        self.assertEqual(received, [b"".join(frames) for frames in wires])
        yield waitUntil(_reactor(), lambda: factory.counters.closedTotal[errors.PEER] == 3, timeout=10)
        # Both ways of ending are the peer leaving, not a TLS failure.
        self.assertEqual(factory.counters.closedTotal[errors.PROTOCOL_ERROR], 0)
        self.assertEqual(factory.framesReceivedTotal, 18)
        # Behind TLS the socket carries ciphertext: never the direct path.
        self.assertEqual(factory.counters.directSends, 0)


def hasTLSServerEndpoint() -> bool:
    """Whether this Twisted has the C{tls:} server endpoint (new in Twisted 26.4)."""
    from twisted.internet.interfaces import IStreamServerEndpointStringParser
    from twisted.plugin import getPlugins

    return any(getattr(p, "prefix", None) == "tls" for p in getPlugins(IStreamServerEndpointStringParser))


class TwistedTLSEndpointTests(TLSServerMixin, TestCase):
    """
    Twisted's C{tls:} server endpoint (since Twisted 26.4): a directory of
    PEM files, certificates chosen by the name the client asks for (SNI).
    """

    if not hasTLSServerEndpoint():
        skip = "this Twisted has no tls: server endpoint (new in Twisted 26.4)"

    timeout = 30

    @defer.inlineCallbacks
    def test_pemDirectory(self) -> Any:
        """
        C{tls:DIR:port=0:interface=127.0.0.1} serves the key, certificate
        and intermediate found in DIR: a client naming C{localhost} and one
        sending no name (an IP address) both verify the chain and get their
        echo.
        """
        certificates = issueCertificates(temporaryDirectory(self))
        pems = temporaryDirectory(self)
        # Not the self-signed root: Twisted's chain builder would follow its
        # issuer to itself for ever (see docs/tls.rst).
        for path in (certificates.key, certificates.cert, certificates.chain):
            shutil.copy(path, pems)
        factory, port = self.startServer(f"tls:{pems}:port=0:interface=127.0.0.1", "netstring")
        context = verifyingContext(certificates)
        frames = framesFor("netstring", "tls:")
        received = yield defer.gatherResults(
            [
                threads.deferToThread(tlsEcho, port, context, splitAndCoalesce(frames), name)
                for name in ("localhost", "127.0.0.1")
            ],
            consumeErrors=True,
        )
        self.assertEqual(received, [b"".join(frames)] * 2)
        self.assertEqual(factory.counters.directSends, 0)


class BadHandshakeTests(TLSServerMixin, TestCase):
    """
    Clients that do not speak TLS properly are closed, counted under
    C{protocol-error} and logged one rate-limited line each, with no
    traceback; good clients beside them are untouched.
    """

    timeout = 30

    @defer.inlineCallbacks
    def test_garbageBesideGoodClients(self) -> Any:
        """
        Thirty clients sending garbage instead of a ClientHello are closed at
        once (the factory's clock never moves, so no timeout closed them),
        while three good clients get their echoes; with the clock still,
        exactly C{burst} lines are logged, and the next line, a second
        later, says how many were left out.
        """
        clock = Clock()
        events = self.captureLog()
        certificates = issueCertificates(temporaryDirectory(self))
        factory, port = self.startServer(sslDescription(certificates), clock=clock)
        context = verifyingContext(certificates)
        wires = [framesFor("length", ("good", index)) for index in range(3)]
        good = [threads.deferToThread(tlsEcho, port, context, splitAndCoalesce(w)) for w in wires]
        bad = yield connectRaw(_reactor(), port, 30)
        self.assertEqual(len(bad), 30)
        for index, client in enumerate(bad):
            client.transport.write(GARBAGE[index % len(GARBAGE)])
        yield defer.gatherResults([client.lost for client in bad])
        received = yield defer.gatherResults(good, consumeErrors=True)
        self.assertEqual(received, [b"".join(w) for w in wires])

        self.assertEqual(factory.counters.closedTotal[errors.PROTOCOL_ERROR], 30)
        self.assertEqual(factory.counters.closedTotal[errors.IDLE], 0)
        burst = factory.rateLimitedLog.burst
        lines = tlsLines(events)
        self.assertEqual(len(lines), burst)
        self.assertEqual(factory.rateLimitedLog.suppressedTotal, 30 - burst)
        for line in lines:
            self.assertEqual(line["log_level"].name, "warn")
            self.assertIn("TLS handshake failed: {error}", line["log_format"])
            self.assertEqual(line["closeReason"], errors.PROTOCOL_ERROR)
            self.assertTrue(line["error"])  # OpenSSL's reason, e.g. "wrong version number"

        clock.advance(factory.rateLimitedLog.interval)
        [late] = yield connectRaw(_reactor(), port, 1)
        late.transport.write(GARBAGE[0])
        yield late.lost
        yield waitUntil(_reactor(), lambda: len(tlsLines(events)) == burst + 1, timeout=10)
        self.assertIn("similar events suppressed", tlsLines(events)[-1]["log_format"])
        self.assertEqual(tlsLines(events)[-1]["suppressed"], 30 - burst)
        self.assertEqual([e for e in events if "log_failure" in e], [])

    @defer.inlineCallbacks
    def test_garbageAfterHandshake(self) -> Any:
        """
        A client that completes the handshake and then sends a forged record
        is closed as C{protocol-error}, logged as a TLS error (not a failed
        handshake).
        """
        events = self.captureLog()
        certificates = issueCertificates(temporaryDirectory(self))
        factory, port = self.startServer(sslDescription(certificates))
        forged = b"\x17\x03\x03\x00\x20" + bytes(range(32))  # application data, bad MAC
        yield threads.deferToThread(handshakeThenGarbage, port, verifyingContext(certificates), forged)
        yield waitUntil(
            _reactor(), lambda: factory.counters.closedTotal[errors.PROTOCOL_ERROR] == 1, timeout=10
        )
        [line] = tlsLines(events)
        self.assertIn("protocol-error: TLS error: {error}", line["log_format"])
        self.assertEqual([e for e in events if "log_failure" in e], [])

    @defer.inlineCallbacks
    def test_missingChain(self) -> Any:
        """
        Served without its intermediate (no C{extraCertChain=}), the
        certificate fails a verifying client; the server sees the client's
        alert as a failed handshake, which is how an operator finds the
        missing chain.
        """
        events = self.captureLog()
        certificates = issueCertificates(temporaryDirectory(self))
        factory, port = self.startServer(sslDescription(certificates, chain=False))
        attempt = threads.deferToThread(tlsEcho, port, verifyingContext(certificates), [b"\0\0\0\0"])
        yield self.assertFailure(attempt, ssl.SSLCertVerificationError)
        yield waitUntil(
            _reactor(), lambda: factory.counters.closedTotal[errors.PROTOCOL_ERROR] == 1, timeout=10
        )
        [line] = tlsLines(events)
        self.assertIn("TLS handshake failed", line["log_format"])
        self.assertIn("unknown ca", line["error"])

    @defer.inlineCallbacks
    def test_silentAndStalledClientsIdleOut(self) -> Any:
        """
        A client that connects and sends nothing, and one that stops halfway
        through its ClientHello, stay open until the idle timeout passes on
        the factory's clock; then both are closed as C{idle}, not as TLS
        failures.
        """
        clock = Clock()
        certificates = issueCertificates(temporaryDirectory(self))
        limits = ServerLimits(idleTimeout=5)
        factory, port = self.startServer(sslDescription(certificates), clock=clock, limits=limits)
        silent, stalled = yield connectRaw(_reactor(), port, 2)
        hello = clientHello(verifyingContext(certificates))
        stalled.transport.write(hello[: len(hello) // 2])
        yield waitUntil(_reactor(), lambda: factory.onlineCount == 2, timeout=10)

        # Up to the timeout, nothing is closed.
        clock.pump([limits.sweepInterval()] * int(limits.idleTimeout / limits.sweepInterval() - 1))
        self.assertEqual(factory.onlineCount, 2)
        self.assertFalse(silent.lost.called or stalled.lost.called)
        # One sweep past it, both go.
        clock.advance(2 * limits.sweepInterval())
        yield defer.gatherResults([silent.lost, stalled.lost])
        yield waitUntil(_reactor(), lambda: factory.onlineCount == 0, timeout=10)
        self.assertEqual(factory.counters.closedTotal[errors.IDLE], 2)
        self.assertEqual(factory.counters.closedTotal[errors.PROTOCOL_ERROR], 0)


class TwistdTLSTests(TestCase):
    """C{twistd -n iocpsvc --port ssl:...} in a child process."""

    timeout = 60

    @defer.inlineCallbacks
    def test_twistdServesTLS(self) -> Any:
        """
        twistd serves the line codec over C{ssl:} with the chain: a stdlib
        client that verifies it gets its echo, a client sending plain text
        is closed and logged as a failed handshake, and SIGTERM stops the
        server with no traceback.
        """
        reactor = _reactor()
        workdir = temporaryDirectory(self)
        certificates = issueCertificates(workdir)
        process, transport = spawnTwistd(
            reactor,
            workdir,
            "iocpsvc",
            "--port",
            sslDescription(certificates),
            "--codec",
            "line",
            "--monitor",
            "none",
        )
        try:
            port = yield process.listening
            frames = framesFor("line", "twistd")
            received = yield threads.deferToThread(
                tlsEcho, port, verifyingContext(certificates), splitAndCoalesce(frames)
            )
            self.assertEqual(received, b"".join(frames))
            [bad] = yield connectRaw(reactor, port, 1)
            bad.transport.write(GARBAGE[0])
            yield bad.lost
            yield waitUntil(reactor, lambda: b"TLS handshake failed" in process.output, timeout=10)
        finally:
            if not process.ended.called:
                transport.signalProcess("TERM")
            yield process.ended
        output = process.output.decode(errors="replace")
        self.assertIn("protocol-error: TLS handshake failed: http request", output)
        self.assertNotIn("Traceback", output)


def samplingEcho(samples: list[tuple[int, int]]) -> type[ConnectionContext]:
    """
    An echo context that keeps reading while its replies back up (as a
    proxy or a client does: C{pauseReadingWhenWriteBlocked} false), so a
    client that never reads makes it write on until C{maxPendingWrite}
    stops it.  After each read it appends to C{samples} its
    C{pendingWriteBytes} and the bytes that read's replies wrote.
    """

    class SamplingEcho(EchoContext):
        __slots__ = ()
        pauseReadingWhenWriteBlocked = False

        def dataReceived(self, data: bytes) -> None:
            before = self.bytesSent
            super().dataReceived(data)
            samples.append((self.pendingWriteBytes, self.bytesSent - before))

    return SamplingEcho


class NeverReadingClientsMixin(TLSServerMixin):
    """
    Clients that never read, each sending 60 KB echo requests until the
    server closes it, against an echo that keeps reading.  The same test
    runs over TLS and over plain TCP (L{useTLS}): the limit must hold at
    the same bound on both.
    """

    useTLS: bool
    clients = 4
    timeout = 120

    @defer.inlineCallbacks
    def test_closedAsSlowClientsWithinTheBound(self) -> Any:
        """
        Every client is closed as C{slow-client}, and after every read the
        server's C{pendingWriteBytes} is at most C{maxPendingWrite} plus
        one write (the largest a read made), with room for TLS's record
        headers and tags -- and it did pass the limit.  Over TLS each
        sample also counts at least what that read's replies wrote: Twisted
        writes nothing to the socket within the read, so all of it still
        waits somewhere in TLS or in the TCP transport, and is counted.
        """
        limits = ServerLimits(writeHighWater=64 * 1024, maxPendingWrite=1024 * 1024, idleTimeout=0)
        samples: list[tuple[int, int]] = []
        if self.useTLS:
            certificates = issueCertificates(temporaryDirectory(self))
            description, context = sslDescription(certificates), verifyingContext(certificates)
        else:
            description, context = "tcp:0:interface=127.0.0.1", None
        factory, port = self.startServer(description, limits=limits, contextClass=samplingEcho(samples))
        request = frame(b"r" * 60_000)
        yield defer.gatherResults(
            [
                threads.deferToThread(floodWithoutReading, port, context, request, 64 * 1024 * 1024)
                for _ in range(self.clients)
            ],
            consumeErrors=True,
        )
        yield waitUntil(_reactor(), lambda: factory.onlineCount == 0, timeout=30)
        self.assertEqual(factory.counters.closedTotal[errors.SLOW_CLIENT], self.clients)
        self.assertEqual(factory.counters.acceptedTotal, self.clients)

        largestWrite = max(written for _, written in samples)
        recordOverhead = limits.maxPendingWrite // 64  # TLS adds ~0.15%; 1.6% is room enough
        worst = max(pending for pending, _ in samples)
        self.assertGreater(worst, limits.maxPendingWrite)
        self.assertLessEqual(worst, limits.maxPendingWrite + largestWrite + recordOverhead)
        if self.useTLS:
            # (Over TCP a reply may go straight to the socket within the read.)
            hidden = [(pending, written) for pending, written in samples if pending < written]
            self.assertEqual(hidden, [])


class NeverReadingTLSClientsTests(NeverReadingClientsMixin, TestCase):
    """Never-reading clients over C{ssl:}."""

    useTLS = True


class NeverReadingTCPClientsTests(NeverReadingClientsMixin, TestCase):
    """The same clients over plain C{tcp:}, for the same bound."""

    useTLS = False


class PushBeforeHandshakeTests(SynchronousTestCase):
    """Writes that TLS cannot take yet, in memory."""

    def test_pushBeforeTheHandshakeCounts(self) -> None:
        """
        Bytes written to a client whose handshake has not finished wait
        inside TLS as plaintext; they are the context's
        C{pendingWriteBytes}, TLS pauses the context meanwhile, and once
        more than C{maxPendingWrite} waits the client is closed as
        C{slow-client}, as over TCP.
        """
        factory = ConnectionContextFactory(
            EchoContext,
            "length",
            reactor=Clock(),
            limits=ServerLimits(writeHighWater=64 * 1024, maxPendingWrite=1024 * 1024),
        )
        connection = MemoryTLSConnection(self, factory)
        context = connection.tls.wrappedProtocol
        context.writeBytes(b"p" * 600_000)
        self.assertEqual(context.pendingWriteBytes, 600_000)
        self.assertFalse(context.writable)
        self.assertIsNone(context.closeReason)
        context.writeBytes(b"p" * 600_000)
        self.assertEqual(context.closeReason, errors.SLOW_CLIENT)
        connection.reactor.advance(0)
        self.assertEqual(factory.counters.closedTotal[errors.SLOW_CLIENT], 1)
        self.assertEqual(factory.onlineCount, 0)
