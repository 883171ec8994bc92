"""
One process's load run: L{EchoLoadProtocol} keeps K frames in flight on a
connection and checks every echoed byte against the stream it sent
(L{iocpsvc.bench.patterns}); L{LoadRun} opens this process's connections
and takes them through the phases of a run; L{runLoad} is the whole load
test in this process.

Whole frames completed by a read are counted, their latencies recorded (one
timestamp per write, however many frames it carried), and as many new
frames are sent in one write, which keeps K in flight.

A run has phases: connecting (at most C{--connect-batch} connection
attempts pending at once, so the server's listen backlog is not overrun),
warm-up (not measured), measuring (C{--duration} seconds), draining (no new
frames; wait up to C{--drain-timeout} for outstanding echoes), closing.
It always ends: each phase has a deadline.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet import protocol
from twisted.internet.defer import Deferred
from twisted.internet.protocol import connectionDone
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from iocpsvc.bench.histogram import LatencyHistogram
from iocpsvc.bench.patterns import FramePattern, FramePatterns
from iocpsvc.bench.report import CLOSED, CONNECT, MISMATCH, TIMEOUT, WORKER, ProcessResult, makeReport
from iocpsvc.bench.settings import CLOSE_GRACE, DEFAULT_HOST, DEFAULT_PORT, LoadSettings
from iocpsvc.transports import canSendNow, sendNow


def cpuSeconds() -> float:
    """User + system CPU time this process has used so far."""
    times = os.times()
    return times.user + times.system


# Connection states.
_OPEN, _CLOSING, _FAILED = "open", "closing", "failed"


class EchoLoadProtocol(protocol.Protocol):
    """
    One load connection: keeps C{inFlight} frames in flight and checks the
    echo byte for byte against its pattern, without decoding.

    @ivar framesDone: frames echoed back completely so far.
    @ivar inFlight: frames sent and not yet echoed back completely.
    @ivar position: bytes of the current (incomplete) frame received.
    """

    def __init__(self, run: LoadRun, attempt: _Attempt, pattern: FramePattern) -> None:
        self.run = run
        self.attempt = attempt
        self.index = attempt.index
        self.frame = pattern.frame
        self.block = pattern.block
        self.blockSize = len(pattern.block)
        self.blockFrames = len(pattern.block) // len(pattern.frame)
        self.wireSize = len(pattern.frame)
        self.position = 0
        self.framesDone = 0
        self.inFlight = 0
        # [write time, frames it carried] per write, oldest first; the
        # count of the oldest is decremented as its frames come back.
        self.sentTimes: deque[list[Any]] = deque()
        self.state = _OPEN
        self.direct = False

    def connectionMade(self) -> None:
        transport: Any = self.transport
        transport.setTcpNoDelay(True)  # latency, not Nagle's delays, is measured
        self.direct = canSendNow(transport)
        self.run.connectionUp(self)
        if self.run.sending:
            self.send(self.run.settings.inFlight, time.perf_counter())

    def send(self, count: int, now: float) -> None:
        """Send C{count} more frames in one write; they were sent at C{now}."""
        self.sentTimes.append([now, count])
        self.inFlight += count
        size = count * self.wireSize
        if size <= self.blockSize:
            data = self.block[:size]
        else:
            whole, rest = divmod(count, self.blockFrames)
            data = b"".join([self.block] * whole + [self.block[: rest * self.wireSize]])
        transport: Any = self.transport
        # Twisted's write() only buffers: the send happens on a later
        # reactor turn, after registering for writability and before
        # unregistering again -- three system calls and an event per write,
        # more than the rest of a read's work.  When nothing is buffered, send
        # at once; whatever the socket does not take goes through write().
        if self.direct:
            sent = sendNow(transport, data)
            if sent == size:
                return
            if sent > 0:
                data = data[sent:]
        transport.write(data)

    def dataReceived(self, data: bytes) -> None:
        # Hot path: one C-level comparison per read (the echo must be the
        # frame repeated, so no decoding), then per write batch -- not per
        # frame -- one histogram entry, and one write for all the frames
        # this read completed.
        position = self.position
        end = position + len(data)
        if end <= self.blockSize:
            if self.block[position:end] != data:
                self.mismatch(data)
                return
        elif not self._matchesLong(data):
            self.mismatch(data)
            return
        completed, self.position = divmod(end, self.wireSize)
        if completed >= self.inFlight and (completed > self.inFlight or self.position):
            self.fail(MISMATCH, f"connection {self.index}: the server sent more bytes than it was sent")
            return
        if not completed:
            return
        now = time.perf_counter()
        self.framesDone += completed
        self.inFlight -= completed
        run = self.run
        record = run.histogram.record
        sentTimes = self.sentTimes
        remaining = completed
        while remaining:
            entry = sentTimes[0]
            count = entry[1]
            if count <= remaining:
                sentTimes.popleft()
                record(now - entry[0], count)
                remaining -= count
            else:
                entry[1] = count - remaining
                record(now - entry[0], remaining)
                break
        if run.sending:
            self.send(completed, now)
        elif not self.inFlight:
            self.close()

    def _matchesLong(self, data: bytes) -> bool:
        """Compare a read longer than the rest of the block, piece by piece."""
        offset = self.position
        start = 0
        length = len(data)
        while start < length:
            take = min(length - start, self.blockSize - offset)
            if data[start : start + take] != self.block[offset : offset + take]:
                return False
            start += take
            offset = (offset + take) % self.wireSize
        return True

    def mismatch(self, data: bytes) -> None:
        """Record where C{data} first differs from the expected stream, and abort."""
        streamOffset = self.framesDone * self.wireSize + self.position
        for at, got in enumerate(data):
            expected = self.frame[(self.position + at) % self.wireSize]
            if got != expected:
                where = streamOffset + at
                self.fail(
                    MISMATCH,
                    f"connection {self.index}: byte {where} (frame {where // self.wireSize}, offset "
                    f"{where % self.wireSize}) is {got:#04x}, expected {expected:#04x}",
                )
                return
        self.fail(MISMATCH, f"connection {self.index}: echo differs near byte {streamOffset}")

    def fail(self, kind: str, message: str) -> None:
        """Count an error and abort this connection."""
        if self.state == _FAILED:
            return
        self.state = _FAILED
        self.run.result.addError(kind, message)
        transport: Any = self.transport
        if transport is not None:
            transport.abortConnection()

    def close(self) -> None:
        """Close after what was written has been sent."""
        if self.state == _OPEN:
            self.state = _CLOSING
            transport: Any = self.transport
            transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.state == _OPEN:
            self.state = _FAILED
            self.run.result.addError(
                CLOSED,
                f"connection {self.index}: closed by the server with {self.inFlight} frames "
                f"in flight ({reason.getErrorMessage()})",
            )
        self.direct = False
        self.run.connectionDown(self)


class _Attempt(protocol.ClientFactory):
    """One connection attempt (a factory per attempt knows its index)."""

    noisy = False

    def __init__(self, run: LoadRun, index: int) -> None:
        self.run = run
        self.index = index

    def buildProtocol(self, addr: Any) -> EchoLoadProtocol:
        return EchoLoadProtocol(self.run, self, self.run.patterns.forConnection(self.index))

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.run.connectFailed(self, reason)


class LoadRun:
    """
    One process's share of a load run.  L{start} returns a Deferred that
    fires with its L{ProcessResult} when the run has ended.

    @param connectionOffset: the run-wide index of this process's first
        connection (payload variants follow the run-wide index).
    @param totalConnections: connections over all processes (default:
        C{settings.connections}).
    @param progress: called with a progress dict every
        C{settings.progressInterval} seconds and on each phase change.
    @param startSignal: when given, the warm-up waits (at most
        C{settings.connectTimeout} seconds) for it to fire after connecting.
    """

    def __init__(
        self,
        reactor: Any,
        settings: LoadSettings,
        *,
        connectionOffset: int = 0,
        totalConnections: int | None = None,
        progress: Callable[[dict[str, Any]], None] | None = None,
        startSignal: Deferred[Any] | None = None,
        patterns: FramePatterns | None = None,
    ) -> None:
        self.reactor = reactor
        self.settings = settings
        self.connectionOffset = connectionOffset
        if patterns is None:
            patterns = FramePatterns(settings.codec, settings.size, totalConnections or settings.connections)
        self.patterns = patterns
        self.progress = progress
        self.startSignal = startSignal
        self.result = ProcessResult(connections=settings.connections)
        # Latencies go here; outside the measured window, into a histogram
        # that is thrown away (swapping is cheaper than a check per read).
        self.histogram = LatencyHistogram()
        self.sending = True
        self.phase = "connecting"
        self.protocols: list[EchoLoadProtocol] = []
        self.open: set[EchoLoadProtocol] = set()
        self._nextAttempt = 0
        self._pending: dict[_Attempt, Any] = {}
        self._timers: list[Any] = []
        self._started = 0.0
        self._windowStart: tuple[float, float] = (0.0, 0.0)
        self._done: Deferred[ProcessResult] = Deferred()
        self._ticker: LoopingCall | None = None

    # The phases, in order.

    def start(self) -> Deferred[ProcessResult]:
        """Connect, warm up, measure, drain, close; fire with the result."""
        self._started = time.perf_counter()
        if self.progress is not None:
            self._ticker = LoopingCall(self._report)
            self._ticker.clock = self.reactor
            self._ticker.start(self.settings.progressInterval, now=False)
        self._later(self.settings.connectTimeout, self._connectingOver)
        for _ in range(min(self.settings.connectBatch, self.settings.connections)):
            if self.phase != "connecting":
                break
            self._attempt()
        return self._done

    def _attempt(self) -> None:
        if self._nextAttempt >= self.settings.connections:
            return
        index = self.connectionOffset + self._nextAttempt
        self._nextAttempt += 1
        attempt = _Attempt(self, index)
        self._pending[attempt] = self.reactor.connectTCP(
            self.settings.host, self.settings.port, attempt, timeout=self.settings.connectTimeout
        )

    def attemptDone(self, attempt: _Attempt) -> bool:
        """
        An attempt connected or failed: start the next one, or move on.

        @return: whether it was still pending (not given up on).
        """
        if self._pending.pop(attempt, None) is None:
            return False
        if self.phase == "connecting":
            if self._nextAttempt < self.settings.connections:
                self._attempt()
            elif not self._pending:
                self._connected()
        return True

    def connectFailed(self, attempt: _Attempt, reason: Failure) -> None:
        """
        Count a failed connection attempt (unless the connect deadline gave
        up on it and counted it already), then go on.
        """
        if attempt in self._pending:
            self.result.addError(CONNECT, f"connection {attempt.index}: {reason.getErrorMessage()}")
            self.attemptDone(attempt)

    def _connectingOver(self) -> None:
        """The connect deadline: give up on attempts not connected yet."""
        if self.phase != "connecting":
            return
        notStarted = self.settings.connections - self._nextAttempt
        self._nextAttempt = self.settings.connections
        pending, self._pending = self._pending, {}
        for attempt, connector in pending.items():
            self.result.addError(CONNECT, f"connection {attempt.index}: not connected within the timeout")
            connector.stopConnecting()
        for _ in range(notStarted):
            self.result.addError(CONNECT, "not attempted within the connect timeout")
        self._connected()

    def _connected(self) -> None:
        self._setPhase("connected")
        if not self.open:
            self._finish()
            return
        if self.startSignal is None:
            self._warmup()
            return
        self._setPhase("waiting")
        timer = self._later(self.settings.connectTimeout, self._warmup)

        def go(_: object) -> None:
            if timer.active():
                timer.cancel()
            self._warmup()

        self.startSignal.addCallback(go)

    def _warmup(self) -> None:
        if self.phase != "waiting" and self.phase != "connected":
            return
        self._setPhase("warm-up")
        if self.settings.warmup:
            self._later(self.settings.warmup, self._measure)
        else:
            self._measure()

    def _measure(self) -> None:
        self.histogram = LatencyHistogram()
        self._windowStart = (time.perf_counter(), cpuSeconds())
        self._setPhase("measuring")
        self._later(self.settings.duration, self._drain)

    def _drain(self) -> None:
        started, cpuStarted = self._windowStart
        result = self.result
        result.seconds = time.perf_counter() - started
        result.cpuSeconds = cpuSeconds() - cpuStarted
        result.histogram = self.histogram
        self.histogram = LatencyHistogram()
        # One latency per frame completed in the window; every variant's
        # frame has the same size on the wire.
        result.frames = result.histogram.count
        result.bytes = result.frames * self.patterns.wireSize
        self.sending = False
        self._setPhase("draining")
        for connection in list(self.open):
            if not connection.inFlight:
                connection.close()
        self._later(self.settings.drainTimeout, self._drainOver)
        self._checkClosed()

    def _drainOver(self) -> None:
        for connection in list(self.open):
            if connection.state == _OPEN:
                connection.fail(
                    TIMEOUT,
                    f"connection {connection.index}: {connection.inFlight} frames not echoed "
                    f"within the drain timeout",
                )
        self._later(CLOSE_GRACE, self._finish)

    def _checkClosed(self) -> None:
        if not self.open:
            if self.phase == "draining":
                self._finish()
            elif self.phase == "closing":
                self._complete()

    def _finish(self) -> None:
        """Abort what is still open; complete once it has closed."""
        if self.phase in ("closing", "done"):
            return
        if not self.open:
            self._complete()
            return
        self._setPhase("closing")
        self._cancelTimers()
        for connection in list(self.open):
            connection.state = _CLOSING  # closed by the run, not an error
            transport: Any = connection.transport
            transport.abortConnection()
        # An aborted connection is lost on the next reactor turn; this is
        # only a backstop.
        self._later(1.0, self._complete)

    def _complete(self) -> None:
        if self._done.called:
            return
        self._setPhase("done")
        if self._ticker is not None and self._ticker.running:
            self._ticker.stop()
        self._cancelTimers()
        self._done.callback(self.result)

    def _cancelTimers(self) -> None:
        for timer in self._timers:
            if timer.active():
                timer.cancel()
        self._timers = []

    def abort(self, why: str) -> None:
        """Stop now (say, the parent went away): abort every connection and finish."""
        if not self._done.called:
            self.result.addError(WORKER, why)
            self._finish()

    # Called by the connections.

    def connectionUp(self, connection: EchoLoadProtocol) -> None:
        """A connection is open (and its attempt is done)."""
        self.protocols.append(connection)
        self.open.add(connection)
        self.result.connected = max(self.result.connected, len(self.open))
        self.attemptDone(connection.attempt)

    def connectionDown(self, connection: EchoLoadProtocol) -> None:
        """A connection has closed."""
        self.open.discard(connection)
        self._checkClosed()

    # Helpers.

    def framesDone(self) -> int:
        """Frames echoed back on all connections so far."""
        return sum(connection.framesDone for connection in self.protocols)

    def errorCount(self) -> int:
        """Errors so far."""
        return sum(self.result.errors.values())

    def snapshot(self) -> dict[str, Any]:
        """The progress figures: phase, elapsed seconds, open connections, frames, errors."""
        return {
            "phase": self.phase,
            "elapsed": time.perf_counter() - self._started,
            "connected": len(self.open),
            "connections": self.settings.connections,
            "frames": self.framesDone(),
            "errors": self.errorCount(),
        }

    def _report(self) -> None:
        if self.progress is not None:
            self.progress(self.snapshot())

    def _setPhase(self, phase: str) -> None:
        self.phase = phase
        if phase in ("connected", "measuring", "draining", "done"):
            self._report()

    def _later(self, seconds: float, function: Callable[[], Any]) -> Any:
        timer = self.reactor.callLater(seconds, function)
        self._timers.append(timer)
        return timer


def runLoad(
    reactor: Any,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    progress: Callable[[dict[str, Any]], None] | None = None,
    **options: Any,
) -> Deferred[dict[str, Any]]:
    """
    Run a load test in this process, on C{reactor}, against C{host}:C{port}.

    @param options: the other L{LoadSettings} fields (C{connections},
        C{inFlight}, C{size}, C{codec}, C{duration}, C{warmup}, ...).
    @param progress: called with a progress dict every second.
    @return: a Deferred that fires with the report (see L{makeReport}).
    @raise ValueError: bad settings or codec.
    """
    settings = LoadSettings(host=host, port=port, **options)
    run = LoadRun(reactor, settings, progress=progress)
    d = run.start()
    return d.addCallback(lambda result: makeReport(settings, [result], wireSize=run.patterns.wireSize))
