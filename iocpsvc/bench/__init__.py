"""
The load tool: N connections, K frames in flight on each, against an echo
server (the default C{twistd iocpsvc}), for a fixed time; every echoed byte
is verified, and the result is frames/s, MB/s, latency percentiles and
errors::

    python -m iocpsvc.bench --port 9983 --connections 100 --in-flight 32 \\
        --size 64 --duration 10
    iocpsvc-bench --codec line --connections 5000 --processes 4 --json

It must cost far less CPU per frame than the server it measures, so the hot
path never decodes.  Every connection sends the same wire frame (a payload
of C{--size} bytes framed once, at start, by the C{--codec} encoder) over
and over, so the byte stream it must get back is that frame repeated:
each read is compared, with one C{bytes} comparison, against a precomputed
block of repeated frames at the offset where the stream stands::

    block (frame repeated, >= 64 KiB + one frame, built once)
    +---------+---------+---------+---------+---------+-- ...
    | frame   | frame   | frame   | frame   | frame   |
    +---------+---------+---------+---------+---------+-- ...
         ^ position = bytes received % frame size
         [ data of this read, compared with block[position:position+len] ]

Whole frames completed by a read are counted, their latencies recorded (one
timestamp per write, however many frames it carried), and as many new
frames are sent in one write, which keeps K in flight.  Payloads differ
between connections (64 KiB of memory per variant, up to 256 variants), so
bytes crossing between connections are caught too.

A run has phases: connecting (at most C{--connect-batch} connection
attempts pending at once, so the server's listen backlog is not overrun),
warm-up (not measured), measuring (C{--duration} seconds), draining (no new
frames; wait up to C{--drain-timeout} for outstanding echoes), closing.
It always ends: each phase has a deadline.

With C{--processes P} the parent starts P worker processes (this module with
C{--worker}), each with its share of the connections.  A worker writes one
JSON object per line to its stdout -- C{connected}, C{progress} every
second, and its C{result} with the latency histogram -- and starts its
warm-up when the parent writes C{go} (once every worker has connected), so
their measured windows line up.  The parent merges the results.

Figures: C{frames} and C{bytes} are frames echoed back and their wire bytes
during the measured window; latency is from the write of a frame to the
arrival of its last echoed byte (with K frames in flight, so it includes
queueing behind the others); C{client_cpu_seconds} is the CPU time (user +
system) the tool's processes used during the measured window.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from twisted.internet import protocol
from twisted.internet.defer import Deferred
from twisted.internet.protocol import connectionDone
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from iocpsvc.bench.histogram import LatencyHistogram
from iocpsvc.bench.load import EchoLoadProtocol, LoadRun, cpuSeconds, runLoad
from iocpsvc.bench.patterns import FramePattern, FramePatterns
from iocpsvc.bench.report import (
    CLOSED,
    CONNECT,
    ERROR_KINDS,
    MAX_ERROR_EXAMPLES,
    MISMATCH,
    TIMEOUT,
    WORKER,
    ProcessResult,
    formatReport,
    makeReport,
)
from iocpsvc.bench.settings import DEFAULT_HOST, DEFAULT_PORT, LoadSettings
from iocpsvc.codecs import parseSize

__all__ = [
    "CLOSED",
    "CONNECT",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "ERROR_KINDS",
    "MAX_ERROR_EXAMPLES",
    "MISMATCH",
    "TIMEOUT",
    "WORKER",
    "EchoLoadProtocol",
    "FramePattern",
    "FramePatterns",
    "LatencyHistogram",
    "LoadRun",
    "LoadSettings",
    "ProcessResult",
    "cpuSeconds",
    "formatReport",
    "main",
    "makeParser",
    "makeReport",
    "printProgress",
    "runLoad",
    "runProcesses",
]

# Extra time a parent gives its workers (interpreter start, imports) beyond
# the run's own deadlines before killing them.
_WORKER_SLACK = 30.0


# Several processes.


class _WorkerProcess(protocol.ProcessProtocol):
    """The parent's end of one worker: reads its JSON lines."""

    def __init__(self, pool: _WorkerPool, number: int, connections: int) -> None:
        self.pool = pool
        self.number = number
        self.connections = connections
        self.buffer = b""
        self.errorOutput = b""
        self.connected = False
        self.latest: dict[str, Any] | None = None
        self.result: ProcessResult | None = None
        self.ended = False

    def outReceived(self, data: bytes) -> None:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            if line.strip():
                self.lineReceived(line)

    def lineReceived(self, line: bytes) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            sys.stderr.write(f"worker {self.number}: {line.decode(errors='replace')}\n")
            return
        if "progress" in message:
            self.latest = message["progress"]
            if self.latest is not None and self.latest.get("phase") != "connecting":
                self.connected = True
                self.pool.workerConnected()
        elif "result" in message:
            self.result = ProcessResult.fromJSON(message["result"])

    def errReceived(self, data: bytes) -> None:
        self.errorOutput = (self.errorOutput + data)[-4000:]

    def processEnded(self, reason: Failure) -> None:
        self.ended = True
        self.connected = True
        self.pool.workerEnded(self, reason)


class _WorkerPool:
    """The parent of C{--processes P}: starts the workers, merges their results."""

    def __init__(
        self,
        reactor: Any,
        settings: LoadSettings,
        processes: int,
        progress: Callable[[dict[str, Any]], None] | None,
    ) -> None:
        self.reactor = reactor
        self.settings = settings
        self.progress = progress
        share, extra = divmod(settings.connections, processes)
        self.workers: list[_WorkerProcess] = []
        self.transports: list[Any] = []
        self._shares = [share + (1 if number < extra else 0) for number in range(processes)]
        self._goSent = False
        self._done: Deferred[list[ProcessResult]] = Deferred()
        self._started = 0.0
        self._ticker: LoopingCall | None = None
        self._deadline: Any = None

    def workerArguments(self, offset: int, connections: int) -> list[str]:
        """The command line of a worker with C{connections} connections from C{offset}."""
        s = self.settings
        options = {
            "--host": s.host,
            "--port": s.port,
            "--connections": connections,
            "--connection-offset": offset,
            "--total-connections": s.connections,
            "--in-flight": s.inFlight,
            "--size": s.size,
            "--codec": s.codec,
            "--duration": repr(s.duration),
            "--warmup": repr(s.warmup),
            "--drain-timeout": repr(s.drainTimeout),
            "--connect-timeout": repr(s.connectTimeout),
            # The server's backlog is shared: the batch is split between workers.
            "--connect-batch": max(1, s.connectBatch // len(self._shares)),
            "--progress-interval": repr(s.progressInterval),
        }
        argv = [sys.executable, "-m", "iocpsvc.bench", "--worker"]
        for name, value in options.items():
            argv += [name, str(value)]
        return argv

    def start(self) -> Deferred[list[ProcessResult]]:
        """Start every worker; fire with their results once all have ended."""
        self._started = time.perf_counter()
        # The directory holding the iocpsvc package, so the children import this same copy.
        package = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package, env.get("PYTHONPATH")) if p)
        offset = 0
        for number, connections in enumerate(self._shares):
            worker = _WorkerProcess(self, number, connections)
            self.workers.append(worker)
            argv = self.workerArguments(offset, connections)
            self.transports.append(self.reactor.spawnProcess(worker, sys.executable, argv, env=env))
            offset += connections
        self._deadline = self.reactor.callLater(self.settings.deadline() + _WORKER_SLACK, self._kill)
        if self.progress is not None:
            self._ticker = LoopingCall(self._report)
            self._ticker.clock = self.reactor
            self._ticker.start(self.settings.progressInterval, now=False)
        return self._done

    def workerConnected(self) -> None:
        """A worker has connected: once all have, tell them all to start."""
        if self._goSent or not all(w.connected for w in self.workers):
            return
        self._goSent = True
        for worker, transport in zip(self.workers, self.transports, strict=True):
            if not worker.ended:
                transport.write(b"go\n")

    def workerEnded(self, worker: _WorkerProcess, reason: Failure) -> None:
        """A worker exited; when all have, fire with the results."""
        self.workerConnected()
        if worker.result is None:
            tail = worker.errorOutput.decode(errors="replace").strip().splitlines()[-3:]
            worker.result = ProcessResult(connections=worker.connections)
            worker.result.addError(
                WORKER,
                f"worker {worker.number} ended without a result ({reason.getErrorMessage()})"
                + (": " + " | ".join(tail) if tail else ""),
            )
        if all(w.ended for w in self.workers) and not self._done.called:
            if self._deadline.active():
                self._deadline.cancel()
            if self._ticker is not None and self._ticker.running:
                self._ticker.stop()
            self._done.callback([w.result for w in self.workers if w.result is not None])

    def _kill(self) -> None:
        for worker, transport in zip(self.workers, self.transports, strict=True):
            if not worker.ended:
                try:
                    transport.signalProcess("KILL")
                except Exception:
                    pass  # it has just exited

    def _report(self) -> None:
        phases = [w.latest["phase"] for w in self.workers if w.latest is not None]
        order = ["connecting", "connected", "waiting", "warm-up", "measuring", "draining", "closing", "done"]
        phase = min(phases, key=order.index) if len(phases) == len(self.workers) else "starting"
        latest = [w.latest for w in self.workers if w.latest is not None]
        assert self.progress is not None
        self.progress(
            {
                "phase": phase,
                "elapsed": time.perf_counter() - self._started,
                "connected": sum(p["connected"] for p in latest),
                "connections": self.settings.connections,
                "frames": sum(p["frames"] for p in latest),
                "errors": sum(p["errors"] for p in latest),
            }
        )


def runProcesses(
    reactor: Any,
    settings: LoadSettings,
    processes: int,
    progress: Callable[[dict[str, Any]], None] | None = None,
    wireSize: int | None = None,
) -> Deferred[dict[str, Any]]:
    """
    Run a load test in C{processes} worker processes (each with its share
    of the connections); fire with the merged report.  The report's CPU
    time includes this process's own.
    """
    processes = max(1, min(processes, settings.connections))
    pool = _WorkerPool(reactor, settings, processes, progress)
    cpuStarted = cpuSeconds()
    d = pool.start()
    return d.addCallback(
        lambda results: makeReport(
            settings, results, processes, extraCpuSeconds=cpuSeconds() - cpuStarted, wireSize=wireSize
        )
    )


class _WorkerChannel(protocol.Protocol):
    """A worker's stdin/stdout: JSON lines out, C{go} in."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.go: Deferred[None] = Deferred()
        self.run: LoadRun | None = None
        self.finished = False
        self.buffer = b""

    def send(self, message: dict[str, Any]) -> None:
        """Write one JSON line to the parent."""
        transport: Any = self.transport
        if transport is not None:
            transport.write(json.dumps(message).encode() + b"\n")

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if b"go\n" in self.buffer and not self.go.called:
            self.go.callback(None)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.finished and self.run is not None:
            self.finished = True
            self.run.abort("the parent process went away")
        if self.reactor.running:
            self.reactor.stop()


def _runWorker(settings: LoadSettings, patterns: FramePatterns, connectionOffset: int) -> int:
    """Worker mode: run this share, report over stdout, exit."""
    from twisted.internet import reactor
    from twisted.internet.stdio import StandardIO

    channel = _WorkerChannel(reactor)
    StandardIO(channel, reactor=reactor)
    run = LoadRun(
        reactor,
        settings,
        connectionOffset=connectionOffset,
        patterns=patterns,
        progress=lambda snapshot: channel.send({"progress": snapshot}),
        startSignal=channel.go,
    )
    channel.run = run

    def done(result: ProcessResult) -> None:
        if channel.finished:
            return
        channel.finished = True
        channel.send({"result": result.toJSON()})
        transport: Any = channel.transport
        transport.loseConnection()  # flushes, then stops the reactor

    reactor.callWhenRunning(lambda: run.start().addCallback(done))
    reactor.run()
    return 0


# The command line.


def _positiveFloat(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, not {text}")
    return value


def _nonNegativeFloat(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, not {text}")
    return value


def _positiveInt(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text}")
    return value


def _size(text: str) -> int:
    try:
        return parseSize(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def makeParser() -> argparse.ArgumentParser:
    """The C{iocpsvc-bench} command line."""
    parser = argparse.ArgumentParser(
        prog="iocpsvc-bench",
        description=(
            "Load an echo server (the default `twistd iocpsvc`) with N connections and K frames in "
            "flight on each; verify every echoed byte; report frames/s, MB/s, latency and errors."
        ),
        epilog=(
            "Exit status: 0 when the run had no errors, 1 when it had some, 2 for bad options. "
            "MB/s counts echoed wire bytes (10^6 bytes per MB). Codecs: the framers of "
            "`twistd iocpsvc --codecs` (length, line, delimiter, fixed, netstring, diocp, hpsocket) "
            "with their spec parameters; the server must use the same one."
        ),
    )
    add = parser.add_argument
    add("--host", default=DEFAULT_HOST, help="the server's address (default %(default)s)")
    add("--port", type=int, default=DEFAULT_PORT, help="the server's port (default %(default)s)")
    add("-c", "--connections", type=_positiveInt, default=100, help="connections (default %(default)s)")
    add(
        "-k",
        "--in-flight",
        type=_positiveInt,
        default=32,
        help="frames in flight per connection (default %(default)s)",
    )
    add(
        "-s",
        "--size",
        type=_size,
        default=64,
        help="payload bytes per frame: 64, 4KiB, ... (default %(default)s)",
    )
    add(
        "--codec",
        default="length",
        help="the framing codec spec, as the server's --codec (default %(default)s)",
    )
    add("-d", "--duration", type=_positiveFloat, default=10.0, help="seconds measured (default %(default)s)")
    add(
        "-w",
        "--warmup",
        type=_nonNegativeFloat,
        default=1.0,
        help="seconds before measuring, not counted (default %(default)s)",
    )
    add(
        "-p",
        "--processes",
        type=_positiveInt,
        default=1,
        help="worker processes sharing the connections (default %(default)s)",
    )
    add(
        "--connect-batch",
        type=_positiveInt,
        default=500,
        help="connection attempts pending at once (default %(default)s)",
    )
    add(
        "--connect-timeout",
        type=_positiveFloat,
        default=30.0,
        help="seconds to open every connection (default %(default)s)",
    )
    add(
        "--drain-timeout",
        type=_nonNegativeFloat,
        default=5.0,
        help="seconds to wait for outstanding echoes at the end (default %(default)s)",
    )
    add("--progress-interval", type=_positiveFloat, default=1.0, help=argparse.SUPPRESS)
    add("--json", action="store_true", help="print the result as one JSON object")
    add("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    # Worker mode (started by the parent of --processes).
    add("--worker", action="store_true", help=argparse.SUPPRESS)
    add("--connection-offset", type=int, default=0, help=argparse.SUPPRESS)
    add("--total-connections", type=int, default=None, help=argparse.SUPPRESS)
    return parser


def printProgress(snapshot: dict[str, Any], previous: list[Any], out: Any = None) -> None:
    """
    Print one progress line to C{out} (stderr): phase, connections up,
    frames/s since the previous line, errors.  C{previous} carries
    C{[elapsed, frames, rate]} between calls; a line that comes less than
    half a second after the previous one (a phase change) repeats its rate.
    """
    out = out or sys.stderr
    elapsed, frames = snapshot["elapsed"], snapshot["frames"]
    lastElapsed, lastFrames, rate = previous or (0.0, 0, 0.0)
    if elapsed - lastElapsed >= 0.5:
        rate = (frames - lastFrames) / (elapsed - lastElapsed)
        previous[:] = [elapsed, frames, rate]
    elif not previous:
        previous[:] = [lastElapsed, lastFrames, rate]
    out.write(
        f"[{elapsed:6.1f}s] {snapshot['phase']:<10} {snapshot['connected']:>6}/{snapshot['connections']} "
        f"connected  {rate:>12,.0f} frames/s  {snapshot['errors']} errors\n"
    )
    out.flush()


def main(argv: list[str] | None = None) -> int:
    """Run C{iocpsvc-bench}; return the exit status."""
    from iocpsvc.limits import RESERVED_FILES, raiseOpenFilesLimit

    parser = makeParser()
    args = parser.parse_args(argv)
    try:
        settings = LoadSettings(
            host=args.host,
            port=args.port,
            connections=args.connections,
            inFlight=args.in_flight,
            size=args.size,
            codec=args.codec,
            duration=args.duration,
            warmup=args.warmup,
            drainTimeout=args.drain_timeout,
            connectTimeout=args.connect_timeout,
            connectBatch=args.connect_batch,
            progressInterval=args.progress_interval,
        )
        patterns = FramePatterns(
            settings.codec, settings.size, args.total_connections or settings.connections
        )
    except ValueError as e:
        parser.error(str(e))
    limits = raiseOpenFilesLimit()
    perProcess = -(-settings.connections // args.processes)
    if limits is not None and perProcess + RESERVED_FILES > limits[1] and not args.worker:
        sys.stderr.write(
            f"iocpsvc-bench: warning: {perProcess} connections per process, but the open-files "
            f"limit is {limits[1]}; raise it (ulimit -n) or use more --processes\n"
        )
    if args.worker:
        return _runWorker(settings, patterns, args.connection_offset)

    from twisted.internet import reactor

    previous: list[Any] = []
    progress = None if args.quiet else (lambda snapshot: printProgress(snapshot, previous))
    if args.processes == 1:
        run = LoadRun(reactor, settings, progress=progress, patterns=patterns)
        d = run.start().addCallback(lambda result: makeReport(settings, [result], wireSize=patterns.wireSize))
    else:
        d = runProcesses(reactor, settings, args.processes, progress, wireSize=patterns.wireSize)
    outcome: list[Any] = []

    def stop(result: Any) -> None:
        outcome.append(result)
        reactor.stop()

    d.addBoth(stop)
    reactor.run()
    if not outcome:  # the reactor was stopped (Ctrl-C) before the run ended
        sys.stderr.write("iocpsvc-bench: interrupted\n")
        return 130
    report = outcome[0]
    if isinstance(report, Failure):
        sys.stderr.write(report.getTraceback())
        return 1
    print(json.dumps(report) if args.json else formatReport(report))
    return 1 if report["errors"] else 0
