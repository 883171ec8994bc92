"""
The hostile-client battery, over real TCP on 127.0.0.1.

Each test runs an attack against a server and, beside it, a set of
well-behaved clients that must keep getting byte-exact echoes.  Counts and
times are bounded; timer logic (idle timeout) runs on a C{Clock} that the
test advances, while the sockets are real.
"""

from __future__ import annotations

import random
import signal
import struct
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.python.runtime import platform
from twisted.trial.unittest import TestCase

from benchmarks.hostile import ATTACKER_HOST, Booby, HookBomb
from iocpsvc import errors
from iocpsvc.apps import EchoContext
from iocpsvc.factory import ConnectionContextFactory
from iocpsvc.limits import ServerLimits
from iocpsvc.service import SocketServerService
from tests.helpers import bothImplementations, frame, startServer
from tests.netutil import connectRaw, echoMany, spawnTwistd, temporaryDirectory, waitUntil

GOOD = 20


def goodWires(seed: int, frames: int = 6) -> list[bytes]:
    rng = random.Random(seed)
    wires = []
    for _ in range(GOOD):
        payloads = [rng.randbytes(rng.randrange(0, 2000)) for _ in range(frames)]
        wires.append(b"".join(frame(p) for p in payloads))
    return wires


class BatteryTests(TestCase):
    """Attacks beside well-behaved clients."""

    timeout = 180

    def startServer(
        self, codec: str = "length", contextClass: Any = EchoContext, clock: Any = None, **limits: Any
    ) -> tuple[ConnectionContextFactory, int]:
        factory, port, _ = startServer(self, codec, contextClass, clock, **limits)
        return factory, port

    @defer.inlineCallbacks
    def checkGood(self, port: int, seed: int) -> Any:
        from twisted.internet import reactor

        wires = goodWires(seed)
        received = yield echoMany(reactor, port, wires)
        self.assertEqual([r == w for r, w in zip(received, wires, strict=True)], [True] * GOOD)

    @defer.inlineCallbacks
    def test_hugeLengthHeader(self) -> Any:
        """A 2 GiB length header closes that client at once (frame-too-long)."""
        from twisted.internet import reactor

        factory, port = self.startServer()
        attackers = yield connectRaw(reactor, port, 10)
        good = self.checkGood(port, 1)
        for attacker in attackers:
            attacker.transport.write(struct.pack(">I", 2**31) + b"\0" * 64)
        yield defer.gatherResults([a.lost for a in attackers])
        yield good
        self.assertEqual(factory.counters.closedTotal[errors.FRAME_TOO_LONG], 10)

    @defer.inlineCallbacks
    def test_garbage(self) -> Any:
        """Random bytes at a checked codec close as protocol-error or frame-too-long."""
        from twisted.internet import reactor

        factory, port = self.startServer("hpsocket:flag=0x155")
        attackers = yield connectRaw(reactor, port, 20)
        rng = random.Random(7)
        for attacker in attackers:
            attacker.transport.write(rng.randbytes(4096))
        rng2 = random.Random(2)
        wires = []
        for _ in range(GOOD):
            payloads = [rng2.randbytes(rng2.randrange(1, 2000)) for _ in range(5)]
            wires.append(b"".join(struct.pack("<I", (0x155 << 22) | len(p)) + p for p in payloads))
        received = yield echoMany(reactor, port, wires)
        yield defer.gatherResults([a.lost for a in attackers])
        self.assertEqual(received, wires)
        self.assertEqual(
            factory.counters.closedTotal[errors.PROTOCOL_ERROR]
            + factory.counters.closedTotal[errors.FRAME_TOO_LONG],
            20,
        )

    @defer.inlineCallbacks
    def test_slowloris(self) -> Any:
        """Thousands of half frames, then silence: the idle sweep clears them."""
        from twisted.internet import reactor

        clock = Clock()
        attackers_count = 1500
        factory, port = self.startServer(clock=clock, idleTimeout=60)
        factory.startFactory()  # the sweep runs on the test's clock
        self.addCleanup(factory.stopFactory)
        attackers = yield connectRaw(reactor, port, attackers_count)
        self.assertEqual(len(attackers), attackers_count)
        for attacker in attackers:
            attacker.transport.write(struct.pack(">I", 1000) + b"half")
        yield waitUntil(
            reactor, lambda: sum(c.bufferedBytes > 0 for c in factory.online.values()) == attackers_count
        )
        clock.advance(59)  # nobody idle for 60 s yet
        self.assertEqual(factory.counters.closedTotal[errors.IDLE], 0)
        yield self.checkGood(port, 2)  # good clients are active at t=59
        clock.advance(2)
        yield defer.gatherResults([a.lost for a in attackers])
        self.assertEqual(factory.counters.closedTotal[errors.IDLE], attackers_count)
        yield self.checkGood(port, 3)

    @defer.inlineCallbacks
    def test_clientsThatNeverRead(self) -> Any:
        """Requests without reading: reading stops; pushes past the limit close it."""
        from twisted.internet import reactor

        factory, port = self.startServer(writeHighWater=64 * 1024, maxPendingWrite=1024 * 1024)
        attackers = yield connectRaw(reactor, port, 5)
        for attacker in attackers:
            attacker.transport.pauseProducing()  # never read
            payload = b"r" * 60_000
            for _ in range(100):  # 6 MB of echo requests each
                attacker.transport.write(struct.pack(">I", len(payload)) + payload)
        peers = {a.transport.getHost().port for a in attackers}
        yield waitUntil(
            reactor,
            lambda: sum(c.paused for c in factory.online.values() if c.peer.port in peers) == 5,
        )
        worst = max(c.pendingWriteBytes for c in factory.online.values())
        self.assertLessEqual(worst, 1024 * 1024)
        good = self.checkGood(port, 4)
        # A push service keeps writing to them: past max-pending-write they go.
        for _ in range(40):
            for context in list(factory.online.values()):
                if context.peer.port in peers:
                    context.writeObject(b"p" * 50_000)
        yield good
        self.assertEqual(factory.counters.closedTotal[errors.SLOW_CLIENT], 5)
        for attacker in attackers:
            attacker.transport.abortConnection()
        yield defer.gatherResults([a.lost for a in attackers])

    @defer.inlineCallbacks
    def test_burstPastMaxConnections(self) -> Any:
        """A burst past the limit is refused at accept; those online are untouched."""
        from twisted.internet import reactor

        factory, port = self.startServer(maxConnections=GOOD + 5)
        holders = yield connectRaw(reactor, port, GOOD)
        yield waitUntil(reactor, lambda: factory.onlineCount == GOOD)
        burst = yield connectRaw(reactor, port, 200)
        yield waitUntil(reactor, lambda: factory.counters.refusedTotal >= 195)
        for client in burst:
            client.transport.loseConnection()
        yield defer.gatherResults([c.lost for c in burst])
        self.assertEqual(factory.counters.refusedTotal, 195)
        for holder in holders:
            holder.transport.write(struct.pack(">I", 2) + b"ok")
        yield waitUntil(reactor, lambda: all(bytes(h.received) == b"\0\0\0\x02ok" for h in holders))
        for holder in holders:
            holder.transport.loseConnection()
        yield defer.gatherResults([h.lost for h in holders])

    @defer.inlineCallbacks
    def test_refusedBehindHAProxyWrapper(self) -> Any:
        """Past the limit behind the haproxy: wrapper, a client is closed cleanly too."""
        from twisted.internet import reactor

        factory = ConnectionContextFactory(
            EchoContext, reactor=reactor, limits=ServerLimits(maxConnections=1, writeHighWater=16384)
        )
        service = SocketServerService(
            factory, ["haproxy:tcp:0:interface=127.0.0.1"], reactor=reactor, shutdownTimeout=5
        )
        service.startService()
        self.addCleanup(service.stopService)
        port = service.ports[0].getHost().port
        header = b"PROXY TCP4 198.51.100.7 192.0.2.1 40000 9983\r\n"
        [holder] = yield connectRaw(reactor, port, 1)
        holder.transport.write(header + struct.pack(">I", 2) + b"hi")
        yield waitUntil(reactor, lambda: bytes(holder.received) == b"\0\0\0\x02hi")
        # Refused in the accept's own turn, with a reset: the client may
        # hear of it before its connect completes, or just after.
        refusedClients = yield connectRaw(reactor, port, 1)
        for refused in refusedClients:
            refused.transport.write(header + struct.pack(">I", 2) + b"no")
            yield refused.lost
            self.assertEqual(bytes(refused.received), b"")
        yield waitUntil(reactor, lambda: factory.counters.refusedTotal == 1)
        self.assertEqual(factory.counters.closedTotal[errors.REFUSED], 1)
        self.assertEqual(factory.findContext(1).peer.host, "198.51.100.7")  # type: ignore[union-attr]
        from iocpsvc.transports import lowestTransport

        socketTransport = lowestTransport(factory.findContext(1).transport)  # type: ignore[union-attr]
        self.assertEqual(socketTransport.bufferSize, 16384)  # the mark reached the socket
        holder.transport.loseConnection()
        yield holder.lost

    @defer.inlineCallbacks
    def test_resetMidFrame(self) -> Any:
        """Clients that reset in the middle of a frame cost only themselves."""
        from twisted.internet import reactor

        factory, port = self.startServer()
        attackers = yield connectRaw(reactor, port, 50)
        for attacker in attackers:
            attacker.transport.write(struct.pack(">I", 500) + b"x" * 100)
        yield waitUntil(
            reactor,
            lambda: factory.onlineCount == 50 and all(c.bufferedBytes for c in factory.online.values()),
        )
        good = self.checkGood(port, 5)
        for attacker in attackers:
            attacker.transport.abortConnection()
        yield defer.gatherResults([a.lost for a in attackers])
        yield good
        yield waitUntil(reactor, lambda: factory.counters.closedTotal[errors.PEER] >= 50 + GOOD)
        self.assertEqual(factory.counters.truncatedFrames, 50)

    @defer.inlineCallbacks
    def test_handlerExceptions(self) -> Any:
        """A handler that raises closes that client, logs once each, serves the rest."""
        from twisted.internet import reactor

        factory, port = self.startServer(contextClass=Booby)
        attackers = yield connectRaw(reactor, port, 10)
        for attacker in attackers:
            attacker.transport.write(struct.pack(">I", 4) + b"boom")
        good = self.checkGood(port, 6)
        yield defer.gatherResults([a.lost for a in attackers])
        yield good
        self.assertEqual(factory.counters.closedTotal[errors.HANDLER_ERROR], 10)
        self.assertEqual(factory.counters.handlerErrors, 10)
        # The same bug: its traceback once, then one line per connection.
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    @defer.inlineCallbacks
    def test_failingConnectionHooks(self) -> Any:
        """
        1,000 connections whose connectionMade and connectionLost raise:
        each is closed as handler-error and counted, the neighbours are
        echoed, and the log grows by a bounded amount (one traceback per
        bug, then rate-limited lines).
        """
        from twisted.internet import reactor
        from twisted.logger import formatEvent, globalLogPublisher

        written: list[int] = []

        def measure(event: dict[str, Any]) -> None:
            if str(event.get("log_format", "")).startswith(("Starting factory", "Stopping factory")):
                return  # the test's own client connections
            failure = event.get("log_failure")
            size = len(formatEvent(event))
            if failure is not None:
                size += len(failure.getTraceback())
            written.append(size)

        globalLogPublisher.addObserver(measure)
        self.addCleanup(globalLogPublisher.removeObserver, measure)
        count = 1000
        # The rate limit's clock stands still: every event falls in one window.
        factory, port = self.startServer(contextClass=HookBomb, clock=Clock())
        attackers = yield connectRaw(reactor, port, count, source=ATTACKER_HOST)
        yield defer.gatherResults([a.lost for a in attackers])
        yield self.checkGood(port, 8)
        yield waitUntil(reactor, lambda: factory.onlineCount == 0)
        self.assertEqual(len(attackers), count)
        self.assertEqual(factory.counters.closedTotal[errors.HANDLER_ERROR], count)
        self.assertEqual(factory.counters.handlerErrors, 2 * count + GOOD)  # made and lost; lost only
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)  # one traceback per bug
        self.assertLess(sum(written), 24_000)


class SigtermUnderLoadTests(TestCase):
    """SIGTERM during load: exit within the shutdown timeout, cleanly."""

    timeout = 120
    if platform.isWindows():
        skip = "POSIX signals"

    @defer.inlineCallbacks
    def test_sigtermDuringLoad(self) -> Any:
        """Echoing and never-reading clients; SIGTERM; exit status 0 or SIGTERM, no traceback."""
        from twisted.internet import reactor

        process, transport = spawnTwistd(
            reactor,
            temporaryDirectory(self),
            "iocpsvc",
            "--port",
            "tcp:0:interface=127.0.0.1",
            "--shutdown-timeout",
            "3",
        )
        port = yield process.listening
        stuck = yield connectRaw(reactor, port, 5)
        for client in stuck:
            client.transport.pauseProducing()
            payload = b"s" * 60_000
            for _ in range(40):
                client.transport.write(struct.pack(">I", len(payload)) + payload)
        busy = yield connectRaw(reactor, port, 50)
        for client in busy:
            client.transport.write(struct.pack(">I", 5) + b"hello")
        yield waitUntil(reactor, lambda: all(len(c.received) >= 9 for c in busy))
        started = reactor.seconds()
        transport.signalProcess("TERM")
        status = yield process.ended
        elapsed = reactor.seconds() - started
        for client in stuck + busy:
            if client.transport.connected:
                client.transport.abortConnection()
        yield defer.gatherResults([c.lost for c in stuck + busy])
        output = bytes(process.output)
        self.assertNotIn(b"Traceback", output)
        self.assertIn(getattr(status, "exitCode", None), (0, None))
        self.assertIn(getattr(status, "signal", None), (None, signal.SIGTERM))
        # The shutdown timeout is 3 s; allow generously for a loaded machine.
        self.assertLess(elapsed, 30, output.decode(errors="replace")[-2000:])
        self.assertIn(b"closing", output)


# Every test above, again on the pure-Python implementation (iocpsvc.accel).
bothImplementations(globals())
